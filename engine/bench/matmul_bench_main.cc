// silo-matmul-bench: speed of MatMul for the default model's matrix shapes (SmolLM2-135M: dim
// 576, ffn 1536, kv_dim 192, vocab 49152) and every weight type, for decode (n_tokens 1) and
// prefill (n_tokens 512) on 1 and 2 threads. Prints GFLOP/s (2·rows·cols·n_tokens per call) and
// GB/s of weight bytes read, then the matrix time per token of the whole model (30 layers, and
// for decode the output matrix) as if all its matrices had that type.
//
// Decode rotates over enough copies of each matrix (≥ 128 MiB) that weights come from memory,
// as in a model; prefill reuses one copy.
//
//   silo-matmul-bench [--types f32,f16,bf16,q8_0,q4_0,q4_1,q4_k,q6_k] [--threads 1,2]
//                     [--min-seconds 0.3] [--int8-activations]
//
// Quantized types use exact f32 products unless --int8-activations (MatMulPrecision).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/half.h"
#include "engine/cpu/quantized_matmul.h"
#include "engine/gguf_file.h"
#include "engine/thread_pool.h"

namespace {

using silo::engine::GgmlType;
using silo::engine::ThreadPool;
using silo::engine::WeightMatrix;

struct Shape {
  const char* name;
  int64_t rows, cols;
  int per_model;  // matrices of this shape in the model (30 layers; 1 output matrix)
};
constexpr Shape kShapes[] = {
    {"attn_q/o", 576, 576, 60},  {"attn_k/v", 192, 576, 60}, {"ffn_gate/up", 1536, 576, 60},
    {"ffn_down", 576, 1536, 30}, {"output", 49152, 576, 1},
};

struct TypeName {
  const char* name;
  GgmlType type;
};
constexpr TypeName kTypeNames[] = {
    {"f32", GgmlType::kF32},   {"f16", GgmlType::kF16},   {"bf16", GgmlType::kBF16},
    {"q8_0", GgmlType::kQ8_0}, {"q4_0", GgmlType::kQ4_0}, {"q4_1", GgmlType::kQ4_1},
    {"q4_k", GgmlType::kQ4_K}, {"q6_k", GgmlType::kQ6_K},
};

std::vector<std::string> Split(std::string_view text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) parts.emplace_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return parts;
}

// Random weight bytes whose f16 scales are small finite values.
std::vector<uint8_t> RandomWeights(GgmlType type, int64_t n_blocks, int64_t block_bytes,
                                   std::mt19937& rng) {
  std::vector<uint8_t> bytes(n_blocks * block_bytes);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t scale = silo::FloatToHalf(0.01f);
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* block = bytes.data() + b * block_bytes;
    switch (type) {
      case GgmlType::kF32: {
        const float value = static_cast<float>(rng() % 2000) / 1000.0f - 1.0f;
        std::memcpy(block, &value, 4);
        break;
      }
      case GgmlType::kF16:
      case GgmlType::kQ8_0:
      case GgmlType::kQ4_0:
        std::memcpy(block, &scale, 2);
        break;
      case GgmlType::kBF16: {
        const uint16_t value = silo::FloatToBf16(0.01f);
        std::memcpy(block, &value, 2);
        break;
      }
      case GgmlType::kQ4_1:
      case GgmlType::kQ4_K:
        std::memcpy(block, &scale, 2);
        std::memcpy(block + 2, &scale, 2);
        break;
      case GgmlType::kQ6_K:
        std::memcpy(block + 208, &scale, 2);
        break;
      default:
        break;
    }
  }
  return bytes;
}

struct Result {
  double seconds_per_call = 0;
  double gflops = 0;
  double gbytes = 0;
};

Result Measure(GgmlType type, const Shape& shape, int64_t n_tokens, ThreadPool& pool,
               double min_seconds, silo::engine::MatMulPrecision precision) {
  const silo::engine::GgmlTypeLayout layout = *silo::engine::LayoutOf(static_cast<uint32_t>(type));
  const int64_t row_bytes = shape.cols / layout.block_elements * layout.block_bytes;
  const int64_t matrix_bytes = shape.rows * row_bytes;
  const int64_t copies =
      n_tokens == 1 ? std::clamp<int64_t>((128 << 20) / matrix_bytes + 1, 1, 256) : 1;
  std::mt19937 rng(1);
  // One random matrix, copied: the copies only have to live at other addresses.
  std::vector<uint8_t> weights =
      RandomWeights(type, shape.rows * shape.cols / layout.block_elements, layout.block_bytes, rng);
  weights.resize(copies * matrix_bytes);
  for (int64_t i = 1; i < copies; ++i) {
    std::memcpy(weights.data() + i * matrix_bytes, weights.data(), matrix_bytes);
  }
  std::vector<float> x(n_tokens * shape.cols), y(n_tokens * shape.rows);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  WeightMatrix w{.type = type,
                 .rows = shape.rows,
                 .cols = shape.cols,
                 .data = weights.data(),
                 .row_bytes = row_bytes};
  const absl::Status valid = silo::engine::ValidateWeightMatrix(w);
  if (!valid.ok()) {
    std::fprintf(stderr, "%s\n", valid.ToString().c_str());
    std::exit(1);
  }
  const auto call = [&](int64_t i) {
    w.data = weights.data() + (i % copies) * matrix_bytes;
    silo::engine::MatMul(w, x.data(), n_tokens, y.data(), pool, precision);
  };
  for (int64_t i = 0; i < std::min<int64_t>(copies, 8) + 2; ++i) call(i);  // warm up
  int64_t calls = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (calls < 3 || elapsed < min_seconds) {
    call(calls++);
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  Result r;
  r.seconds_per_call = elapsed / static_cast<double>(calls);
  r.gflops = 2.0 * shape.rows * shape.cols * n_tokens / r.seconds_per_call * 1e-9;
  r.gbytes = static_cast<double>(matrix_bytes) / r.seconds_per_call * 1e-9;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> types = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k"};
  std::vector<int> threads = {1, 2};
  double min_seconds = 0.3;
  auto precision = silo::engine::MatMulPrecision::kExact;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 < argc && arg == "--types") {
      types = Split(argv[++i]);
    } else if (i + 1 < argc && arg == "--threads") {
      threads.clear();
      for (const std::string& t : Split(argv[++i])) threads.push_back(std::atoi(t.c_str()));
    } else if (i + 1 < argc && arg == "--min-seconds") {
      min_seconds = std::atof(argv[++i]);
    } else if (arg == "--int8-activations") {
      precision = silo::engine::MatMulPrecision::kInt8;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--types f32,f16,bf16,q8_0,q4_0,q4_1,q4_k,q6_k] [--threads 1,2] "
                   "[--min-seconds 0.3] [--int8-activations]\n",
                   argv[0]);
      return 2;
    }
  }
  std::printf("%-5s %-12s %-12s %8s %3s %10s %9s %9s\n", "type", "shape", "[rows,cols]", "n_tokens",
              "thr", "us/call", "GFLOP/s", "GB/s(w)");
  for (const std::string& type_name : types) {
    const TypeName* found = nullptr;
    for (const TypeName& t : kTypeNames) {
      if (type_name == t.name) found = &t;
    }
    if (found == nullptr) {
      std::fprintf(stderr, "unknown type %s\n", type_name.c_str());
      return 2;
    }
    const int64_t block =
        silo::engine::LayoutOf(static_cast<uint32_t>(found->type))->block_elements;
    for (const int n_threads : threads) {
      ThreadPool pool(n_threads);
      for (const int64_t n_tokens : {int64_t{1}, int64_t{512}}) {
        double model_seconds = 0;
        bool whole_model = true;
        for (const Shape& shape : kShapes) {
          if (shape.cols % block != 0) {
            whole_model = false;
            continue;
          }
          const Result r = Measure(found->type, shape, n_tokens, pool, min_seconds, precision);
          // Prefill computes the output matrix for the last token only: leave it out.
          if (n_tokens == 1 || shape.rows != 49152) {
            model_seconds += r.seconds_per_call * shape.per_model;
          }
          char dims[32];
          std::snprintf(dims, sizeof(dims), "[%lld,%lld]", static_cast<long long>(shape.rows),
                        static_cast<long long>(shape.cols));
          std::printf("%-5s %-12s %-12s %8lld %3d %10.1f %9.1f %9.2f\n", found->name, shape.name,
                      dims, static_cast<long long>(n_tokens), n_threads, r.seconds_per_call * 1e6,
                      r.gflops, r.gbytes);
          std::fflush(stdout);
        }
        if (whole_model) {
          std::printf(
              "%-5s model matrices, n_tokens %lld, %d thread(s): %.2f ms per call = %.1f "
              "tokens/s\n",
              found->name, static_cast<long long>(n_tokens), n_threads, model_seconds * 1e3,
              static_cast<double>(n_tokens) / model_seconds);
        }
      }
    }
  }
  return 0;
}
