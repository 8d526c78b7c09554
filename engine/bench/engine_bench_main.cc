// silo-engine-bench: prefill and decode speed of the CPU forward pass, measured the way
// llama.cpp's llama-bench measures them (random token ids; prefill of n_prompt tokens in one
// batch, then n_gen single-token steps), so that the two can run side by side.
//
//   silo-engine-bench --model PATH [--n-prompt 512] [--n-gen 128] [--threads N]
//                     [--repetitions 3] [--kv-f32] [--int8-activations]
//
// --int8-activations multiplies quantized weights with 8-bit activations as llama.cpp does
// (MatMulPrecision::kInt8) instead of the exact f32 products of the default.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"

namespace {

struct Flags {
  std::string model;
  int n_prompt = 512;
  int n_gen = 128;
  int threads = 0;
  int repetitions = 3;
  bool kv_f32 = false;
  bool int8_activations = false;
};

bool ParseInt(std::string_view text, int min, int* out) {
  char* end = nullptr;
  const long value = std::strtol(std::string(text).c_str(), &end, 10);
  if (end == nullptr || *end != '\0' || value < min || value > 1'000'000) return false;
  *out = static_cast<int>(value);
  return true;
}

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--model" && has_value) {
      flags->model = argv[++i];
    } else if (arg == "--n-prompt" && has_value) {
      if (!ParseInt(argv[++i], 1, &flags->n_prompt)) return false;
    } else if (arg == "--n-gen" && has_value) {
      if (!ParseInt(argv[++i], 1, &flags->n_gen)) return false;
    } else if (arg == "--threads" && has_value) {
      if (!ParseInt(argv[++i], 0, &flags->threads)) return false;
    } else if (arg == "--repetitions" && has_value) {
      if (!ParseInt(argv[++i], 1, &flags->repetitions)) return false;
    } else if (arg == "--kv-f32") {
      flags->kv_f32 = true;
    } else if (arg == "--int8-activations") {
      flags->int8_activations = true;
    } else {
      return false;
    }
  }
  return !flags->model.empty();
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using silo::engine::KvCache;
  using silo::engine::LogitsWanted;
  using silo::engine::SequenceInput;
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr,
                 "usage: silo-engine-bench --model PATH [--n-prompt N] [--n-gen N] "
                 "[--threads N] [--repetitions N] [--kv-f32] [--int8-activations]\n");
    return 2;
  }
  auto model = silo::engine::Model::Open(flags.model);
  if (!model.ok()) {
    std::fprintf(stderr, "silo-engine-bench: %s\n",
                 static_cast<std::string>(model.status().message()).c_str());
    return 1;
  }
  const silo::engine::ModelConfig& config = (*model)->config();
  silo::engine::ThreadPool pool(flags.threads);
  silo::engine::Transformer transformer(**model, pool,
                                        flags.int8_activations
                                            ? silo::engine::MatMulPrecision::kInt8
                                            : silo::engine::MatMulPrecision::kExact);
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> token(0, config.vocab_size - 1);
  std::vector<int32_t> prompt(flags.n_prompt);
  for (int32_t& id : prompt) id = token(rng);
  std::vector<int32_t> positions(flags.n_prompt);
  std::iota(positions.begin(), positions.end(), 0);

  std::vector<double> prefill_rates, decode_rates;
  std::vector<float> logits;
  for (int r = 0; r < flags.repetitions; ++r) {
    KvCache cache(config,
                  flags.kv_f32 ? silo::attention::KvDType::kF32 : silo::attention::KvDType::kF16,
                  flags.n_prompt + flags.n_gen);
    // Prefill and decode are timed in separate sequences, as llama-bench does (pp and tg runs).
    const auto prefill_sequence = cache.NewSequence();
    SequenceInput input{.sequence = prefill_sequence, .tokens = prompt, .positions = positions};
    auto start = std::chrono::steady_clock::now();
    absl::Status status = transformer.Forward({&input, 1}, cache, logits);
    const double prefill_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (status.ok()) status = cache.Free(prefill_sequence);
    const auto decode_sequence = cache.NewSequence();
    start = std::chrono::steady_clock::now();
    for (int32_t step = 0; step < flags.n_gen && status.ok(); ++step) {
      const int32_t id = token(rng);
      SequenceInput one{.sequence = decode_sequence, .tokens = {&id, 1}, .positions = {&step, 1}};
      status = transformer.Forward({&one, 1}, cache, logits);
    }
    const double decode_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!status.ok()) {
      std::fprintf(stderr, "silo-engine-bench: %s\n",
                   static_cast<std::string>(status.message()).c_str());
      return 1;
    }
    prefill_rates.push_back(flags.n_prompt / prefill_seconds);
    decode_rates.push_back(flags.n_gen / decode_seconds);
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("model %s: %d layers, dim %d, vocab %d\n", flags.model.c_str(), config.n_layers,
              config.dim, config.vocab_size);
  const int64_t kv_bytes = int64_t{2} * config.n_layers * config.kv_dim() *
                           (flags.n_prompt + flags.n_gen) * (flags.kv_f32 ? 4 : 2);
  std::printf("threads %d, KV cache %.1f MiB %s, %s activations, %d repetitions (median)\n",
              pool.size(), kv_bytes / 1048576.0, flags.kv_f32 ? "f32" : "f16",
              flags.int8_activations ? "int8" : "f32 (exact)", flags.repetitions);
  std::printf("prefill %d tokens: %.1f tok/s\n", flags.n_prompt, Median(prefill_rates));
  std::printf("decode %d tokens: %.1f tok/s\n", flags.n_gen, Median(decode_rates));
  std::printf("peak RSS %.1f MiB\n", usage.ru_maxrss / 1024.0);
  return 0;
}
