// silo-attention-bench: prints the speed of the attention ops on a backend.
//
//   silo-attention-bench [--backend cpu|cuda] [--iterations N]
//
// Decode partial attention (1 query row, 32 heads, 8 KV heads, head_dim 128, f16 K/V) at
// n_kv = 4096 and 32768: time per call and bandwidth = bytes of K and V read / time. Inputs rotate
// over enough copies to exceed the GPU's L2 cache, so the figures are DRAM figures. Then the cost
// of scrambling for one decode step beside that step's attention (key_scope session, block with
// 64-row blocks, and the dense mixer), and the rate of scrambling K′/V′ for 4096 tokens.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attention/backend.h"
#include "attention/scrambler.h"
#include "common/half.h"

namespace silo::attention {
namespace {

constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128;
constexpr size_t kL2Bytes = 64ull << 20;  // above the H100's 50 MB and H200's 60 MB

void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
    std::exit(1);
  }
}

template <typename T>
T Check(absl::StatusOr<T> value) {
  Check(value.status());
  return *std::move(value);
}

BackendBuffer Filled(AttentionBackend& backend, size_t bytes, std::mt19937& rng, bool half) {
  BackendBuffer buffer = Check(backend.Allocate(bytes));
  std::normal_distribution<float> normal;
  if (half) {
    std::vector<uint16_t> values(bytes / 2);
    for (uint16_t& v : values) v = FloatToHalf(normal(rng));
    Check(backend.CopyIn(buffer.data(), values.data(), bytes));
  } else {
    std::vector<float> values(bytes / 4);
    for (float& v : values) v = normal(rng);
    Check(backend.CopyIn(buffer.data(), values.data(), bytes));
  }
  return buffer;
}

// Mean seconds per call of `op` over `iterations` calls after a warm-up.
double TimePerCall(AttentionBackend& backend, int iterations, const std::function<void(int)>& op) {
  for (int i = 0; i < 3; ++i) op(i);
  Check(backend.Synchronize());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) op(i);
  Check(backend.Synchronize());
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count() / iterations;
}

struct DecodeInputs {
  std::vector<BackendBuffer> k, v;  // rotating copies
  BackendBuffer q, o, m, l;
};

PartialAttentionArgs DecodeArgs(const DecodeInputs& in, int n_kv, int copy) {
  PartialAttentionArgs args;
  args.q = in.q.as<float>();
  args.k = in.k[copy].data();
  args.v = in.v[copy].data();
  args.kv_dtype = KvDType::kF16;
  args.n_q = 1;
  args.n_kv = n_kv;
  args.n_heads = kHeads;
  args.n_kv_heads = kKvHeads;
  args.head_dim = kHeadDim;
  args.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  args.o = in.o.as<float>();
  args.m = in.m.as<float>();
  args.l = in.l.as<float>();
  return args;
}

int Main(int argc, char** argv) {
  BackendKind kind = BackendKind::kCpu;
  int iterations = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--backend" && i + 1 < argc) {
      const std::string value = argv[++i];
      if (value != "cpu" && value != "cuda") {
        std::fprintf(stderr, "--backend is cpu or cuda, not %s\n", value.c_str());
        return 2;
      }
      kind = value == "cuda" ? BackendKind::kCuda : BackendKind::kCpu;
    } else if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--backend cpu|cuda] [--iterations N]\n", argv[0]);
      return 2;
    }
  }
  const bool gpu = kind == BackendKind::kCuda;
  if (iterations <= 0) iterations = gpu ? 200 : 5;
  std::unique_ptr<AttentionBackend> backend = Check(CreateBackend(kind));
  std::mt19937 rng(1);

  std::printf("backend %s; decode: 1 query row, %ld heads, %ld KV heads, head_dim %ld, f16 K/V\n",
              backend->name().data(), static_cast<long>(kHeads), static_cast<long>(kKvHeads),
              static_cast<long>(kHeadDim));
  std::printf("%-44s %12s %14s\n", "op", "time (us)", "rate (GB/s)");
  double step_seconds_4096 = 0;
  for (const int n_kv : {4096, 32768}) {
    const size_t kv_bytes = static_cast<size_t>(n_kv) * kKvHeads * kHeadDim * 2;
    const int copies =
        gpu ? static_cast<int>(std::max<size_t>(2, kL2Bytes / (2 * kv_bytes) + 1)) : 1;
    DecodeInputs in;
    for (int c = 0; c < copies; ++c) {
      in.k.push_back(Filled(*backend, kv_bytes, rng, true));
      in.v.push_back(Filled(*backend, kv_bytes, rng, true));
    }
    in.q = Filled(*backend, kHeads * kHeadDim * 4, rng, false);
    in.o = Check(backend->Allocate(kHeads * kHeadDim * 4));
    in.m = Check(backend->Allocate(kHeads * 4));
    in.l = Check(backend->Allocate(kHeads * 4));
    const double seconds = TimePerCall(*backend, iterations, [&](int i) {
      Check(backend->PartialAttention(DecodeArgs(in, n_kv, i % copies)));
    });
    if (n_kv == 4096) step_seconds_4096 = seconds;
    std::printf("%-44s %12.2f %14.1f\n",
                (std::string("decode partial attention, n_kv ") + std::to_string(n_kv)).c_str(),
                seconds * 1e6, 2.0 * kv_bytes / seconds / 1e9);
  }

  // Scrambling one decode step: q' for every head (and block), o back for every head (and
  // block), and for blocks the merge of their partials.
  Seed seed{};
  seed[0] = 7;
  struct Setting {
    const char* name;
    Mixer mixer;
    int blocks;  // key blocks per KV head: 1 for session scope
  };
  for (const Setting setting : {Setting{"session, sphps", Mixer::kSphps, 1},
                                Setting{"block (64 rows), sphps", Mixer::kSphps, 4096 / 64},
                                Setting{"session, dense", Mixer::kDense, 1}}) {
    const Scrambler scrambler = Check(Scrambler::Create(kHeadDim, seed, {setting.mixer, 2.0}));
    const BackendRowTransform q_transform =
        Check(BackendRowTransform::Upload(*backend, scrambler.inverse_transpose()));
    const BackendRowTransform o_transform =
        Check(BackendRowTransform::Upload(*backend, scrambler.inverse()));
    const int64_t rows = static_cast<int64_t>(kHeads) * setting.blocks;
    BackendBuffer in = Filled(*backend, rows * kHeadDim * 4, rng, false);
    BackendBuffer out = Check(backend->Allocate(rows * kHeadDim * 4));
    BackendBuffer merged = Check(backend->Allocate(kHeads * kHeadDim * 4));
    BackendBuffer stats = Filled(*backend, rows * 4, rng, false);
    BackendBuffer merged_stats = Check(backend->Allocate(2 * kHeads * 4));
    const double seconds = TimePerCall(*backend, iterations, [&](int) {
      Check(q_transform.Run(*backend, in.as<float>(), out.as<float>(), rows));
      Check(o_transform.Run(*backend, out.as<float>(), in.as<float>(), rows));
      if (setting.blocks > 1) {
        Check(backend->MergePartials(
            {in.as<float>(), stats.as<float>(), stats.as<float>(), setting.blocks, kHeads, kHeadDim,
             merged.as<float>(), merged_stats.as<float>(), merged_stats.as<float>() + kHeads}));
      }
    });
    std::printf("%-44s %12.2f %13.1f%% of the n_kv 4096 step\n",
                (std::string("scramble q + unscramble o: ") + setting.name).c_str(), seconds * 1e6,
                100.0 * seconds / step_seconds_4096);
  }

  // Owner side: K' = Π·K·Φ and V' = Π·V·Ψ for 4096 tokens × 8 KV heads (f32 rows in and out).
  {
    const Scrambler phi = Check(Scrambler::Create(kHeadDim, seed, {}));
    const BackendRowTransform forward = Check(BackendRowTransform::Upload(*backend, phi.forward()));
    const int64_t rows = 4096LL * kKvHeads;
    std::vector<int32_t> permutation = RowPermutation(seed, static_cast<int32_t>(rows));
    BackendBuffer order = Check(backend->Allocate(rows * 4));
    Check(backend->CopyIn(order.data(), permutation.data(), rows * 4));
    BackendBuffer plain = Filled(*backend, rows * kHeadDim * 4, rng, false);
    BackendBuffer mixed = Check(backend->Allocate(rows * kHeadDim * 4));
    BackendBuffer permuted = Check(backend->Allocate(rows * kHeadDim * 4));
    const double seconds = TimePerCall(*backend, std::max(1, iterations / 10), [&](int) {
      for (int kv = 0; kv < 2; ++kv) {  // K and V
        Check(forward.Run(*backend, plain.as<float>(), mixed.as<float>(), rows));
        Check(backend->GatherRows(
            {mixed.data(), permuted.data(), order.as<int32_t>(), rows, rows, kHeadDim * 4}));
      }
    });
    const double bytes = 2.0 * rows * kHeadDim * 4;  // K and V, f32, as read once
    std::printf("%-44s %12.2f %14.1f\n", "scramble K'/V', 4096 tokens (f32 K and V bytes)",
                seconds * 1e6, bytes / seconds / 1e9);
  }
  return 0;
}

}  // namespace
}  // namespace silo::attention

int main(int argc, char** argv) { return silo::attention::Main(argc, argv); }
