// silo-attention-bench: prints the speed of the attention ops on a backend.
//
//   silo-attention-bench [--backend cpu|cuda] [--iterations N]
//
// Decode partial attention (1 query row, 32 heads, 8 KV heads, head_dim 128, f16 K/V) at
// n_kv = 4096 and 32768: time per call and bandwidth = bytes of K and V read / time. Inputs rotate
// over enough copies to exceed the GPU's L2 cache, so the figures are DRAM figures. Then the
// querier's step (its local partial at n_kv 4096 and the merge with the compute node's partials)
// plain and scrambled, the scrambling fused into those two launches and in launches of its own
// (key_scope session, block with 64-row blocks, and the dense mixer), and the rate of scrambling
// K′/V′ for 4096 tokens.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
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

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct QuerierSetting {
  const char* name;
  Mixer mixer;
  int blocks;  // key blocks per KV head: 1 for session scope
};

// kQueryOnly and kOutputOnly: each half of kFused alone, to tell their costs apart.
enum StepMode { kPlain, kFused, kQueryOnly, kOutputOnly, kSeparateLaunches };

constexpr size_t kLocalKvBytes = 4096ull * kKvHeads * kHeadDim * 2;  // of K, or of V

// One layer of the querier's decode step: partial attention over its own n_kv 4096 keys, and
// the merge of that partial with the compute node's partials (one per key block), which come
// scrambled. Scrambling adds q′ = q·Φ^{-T} for every (head, key block), each KV head and block
// with its own Φ, and o = o′·Ψ⁻¹ of every remote partial. kFused: q′ written by the local
// partial's launch and Ψ⁻¹ applied inside the merge; kSeparateLaunches: q′ and o by launches of
// their own, before the plain merge. With `copied_in`, the compute node's partials are copied in
// from the host between the local partial and the merge, as they arrive in the protocol: the
// merge then has no kernel before it to overlap with.
struct QuerierStep {
  static constexpr int kLocalKeys = 4096;
  DecodeInputs local;
  std::optional<BackendRowTransform> query_transforms, output_transforms;
  BackendBuffer query_transform_index, query_source, scrambled_q;
  BackendBuffer parts_o, parts_m, parts_l, plain_o, unscramble_index;
  BackendBuffer merged_o, merged_m, merged_l;
  std::vector<float> remote_o, remote_m, remote_l;  // the compute node's partials, on the host
  int blocks = 0;
  int n_parts = 0;
  int width = 0;

  // `copies` of the local keys and values, rotated so that they are read from DRAM on a GPU.
  static QuerierStep Create(AttentionBackend& backend, std::mt19937& rng,
                            const QuerierSetting& setting, int copies) {
    QuerierStep step;
    step.blocks = setting.blocks;
    step.n_parts = 1 + setting.blocks;
    const size_t kv_bytes = kLocalKvBytes;
    for (int c = 0; c < copies; ++c) {
      step.local.k.push_back(Filled(backend, kv_bytes, rng, true));
      step.local.v.push_back(Filled(backend, kv_bytes, rng, true));
    }
    step.local.q = Filled(backend, kHeads * kHeadDim * 4, rng, false);
    // Φ and Ψ of every (key block, KV head); only their uploaded transforms are kept.
    const int keys = setting.blocks * kKvHeads;
    std::vector<Scrambler> phi, psi;
    std::vector<const RowTransform*> query, output;
    phi.reserve(keys);
    psi.reserve(keys);
    for (int key = 0; key < keys; ++key) {
      Seed seed{};
      seed[0] = static_cast<uint8_t>(key);
      seed[1] = static_cast<uint8_t>(key >> 8);
      query.push_back(
          &phi.emplace_back(Check(Scrambler::Create(kHeadDim, seed, {setting.mixer, 2.0})))
               .inverse_transpose());
      seed[2] = 1;
      output.push_back(
          &psi.emplace_back(Check(Scrambler::Create(kHeadDim, seed, {setting.mixer, 2.0})))
               .inverse());
    }
    step.query_transforms.emplace(Check(BackendRowTransform::UploadSet(backend, query)));
    step.output_transforms.emplace(Check(BackendRowTransform::UploadSet(backend, output)));
    // q′ row (block b, head h) reads q row h with the Φ of (b, h's KV head).
    const int q_rows = setting.blocks * kHeads;
    std::vector<int32_t> q_index(q_rows), q_source(q_rows);
    for (int i = 0; i < q_rows; ++i) {
      q_source[i] = i % kHeads;
      q_index[i] = (i / kHeads) * kKvHeads + q_source[i] / (kHeads / kKvHeads);
    }
    step.query_transform_index = Uploaded(backend, q_index);
    step.query_source = Uploaded(backend, q_source);
    step.scrambled_q = Check(backend.Allocate(q_rows * kHeadDim * 4));
    // Part 0 is the local partial, part 1 + b the compute node's for key block b.
    step.width = phi[0].dim();
    step.parts_o = Filled(backend, step.n_parts * kHeads * step.width * 4, rng, false);
    step.plain_o = Check(backend.Allocate(step.n_parts * kHeads * step.width * 4));
    step.parts_m = Filled(backend, step.n_parts * kHeads * 4, rng, false);
    std::vector<float> ones(step.n_parts * kHeads, 1.0f);
    step.parts_l = Uploaded(backend, ones);
    const size_t remote_rows = static_cast<size_t>(setting.blocks) * kHeads;
    step.remote_o.resize(remote_rows * step.width);
    Check(backend.CopyOut(step.remote_o.data(), step.parts_o.as<float>() + kHeads * step.width,
                          step.remote_o.size() * 4));
    step.remote_m.resize(remote_rows);
    Check(backend.CopyOut(step.remote_m.data(), step.parts_m.as<float>() + kHeads,
                          step.remote_m.size() * 4));
    step.remote_l.assign(remote_rows, 1.0f);
    std::vector<int32_t> index(step.n_parts * kHeads, -1);
    for (int b = 0; b < setting.blocks; ++b) {
      for (int h = 0; h < kHeads; ++h) {
        index[(1 + b) * kHeads + h] = b * kKvHeads + h / (kHeads / kKvHeads);
      }
    }
    step.unscramble_index = Uploaded(backend, index);
    step.merged_o = Check(backend.Allocate(kHeads * kHeadDim * 4));
    step.merged_m = Check(backend.Allocate(kHeads * 4));
    step.merged_l = Check(backend.Allocate(kHeads * 4));
    return step;
  }

  template <typename T>
  static BackendBuffer Uploaded(AttentionBackend& backend, const std::vector<T>& values) {
    BackendBuffer buffer = Check(backend.Allocate(values.size() * sizeof(T)));
    Check(backend.CopyIn(buffer.data(), values.data(), values.size() * sizeof(T)));
    return buffer;
  }

  RowTransformArgs QueryScramble() const {
    RowTransformArgs t;
    t.in = local.q.as<float>();
    t.out = scrambled_q.as<float>();
    t.n_rows = static_cast<int64_t>(blocks) * kHeads;
    t.n_in_rows = kHeads;
    t.in_stride = kHeadDim;
    t.out_stride = kHeadDim;
    t.transforms = query_transforms->set();
    t.transform = query_transform_index.as<int32_t>();
    t.source = query_source.as<int32_t>();
    return t;
  }

  void Run(AttentionBackend& backend, StepMode mode, int iteration, bool copied_in = false) {
    PartialAttentionArgs attention =
        DecodeArgs(local, kLocalKeys, iteration % static_cast<int>(local.k.size()));
    // Part 0 (width == head_dim at head_dim 128).
    attention.o = mode == kSeparateLaunches ? plain_o.as<float>() : parts_o.as<float>();
    attention.m = parts_m.as<float>();
    attention.l = parts_l.as<float>();
    if (mode == kFused || mode == kQueryOnly) attention.also_transform = QueryScramble();
    if (mode == kSeparateLaunches) Check(backend.TransformRows(QueryScramble()));
    Check(backend.PartialAttention(attention));
    if (copied_in) {
      Check(backend.CopyIn(parts_o.as<float>() + kHeads * width, remote_o.data(),
                           remote_o.size() * 4));
      Check(backend.CopyIn(parts_m.as<float>() + kHeads, remote_m.data(), remote_m.size() * 4));
      Check(backend.CopyIn(parts_l.as<float>() + kHeads, remote_l.data(), remote_l.size() * 4));
    }
    MergeArgs merge{.o = parts_o.as<float>(),
                    .m = parts_m.as<float>(),
                    .l = parts_l.as<float>(),
                    .n_parts = n_parts,
                    .n_rows = kHeads,
                    .head_dim = kHeadDim,
                    .out_o = merged_o.as<float>(),
                    .out_m = merged_m.as<float>(),
                    .out_l = merged_l.as<float>()};
    if (mode == kFused || mode == kOutputOnly) {
      merge.unscramble = output_transforms->set();
      merge.unscramble_index = unscramble_index.as<int32_t>();
    }
    if (mode == kSeparateLaunches) {
      // The remote parts' o through their Ψ⁻¹ in one launch, after the local part in plain_o.
      const int64_t local_floats = static_cast<int64_t>(kHeads) * width;
      RowTransformArgs t;
      t.in = parts_o.as<float>() + local_floats;
      t.out = plain_o.as<float>() + local_floats;
      t.n_rows = static_cast<int64_t>(blocks) * kHeads;
      t.n_in_rows = t.n_rows;
      t.in_stride = t.out_stride = width;
      t.transforms = output_transforms->set();
      t.transform = unscramble_index.as<int32_t>() + kHeads;
      Check(backend.TransformRows(t));
      merge.o = plain_o.as<float>();
    }
    Check(backend.MergePartials(merge));
  }
};

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
  double decode_4096_seconds = 0;  // the compute node's partial over as many keys, below
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
    std::printf("%-44s %12.2f %14.1f\n",
                (std::string("decode partial attention, n_kv ") + std::to_string(n_kv)).c_str(),
                seconds * 1e6, 2.0 * kv_bytes / seconds / 1e9);
    if (n_kv == 4096) decode_4096_seconds = seconds;
  }

  // The querier's decode step at n_kv 4096: its local partial attention and the merge of that
  // partial with the compute node's, plain and with scrambling: q′ for every head (and key
  // block) written by the local partial's launch, o′ unscrambled inside the merge.
  for (const QuerierSetting setting :
       {QuerierSetting{"session sphps", Mixer::kSphps, 1},
        QuerierSetting{"block 64 rows sphps", Mixer::kSphps, 4096 / 64},
        QuerierSetting{"session dense", Mixer::kDense, 1}}) {
    QuerierStep step = QuerierStep::Create(
        *backend, rng, setting, gpu ? static_cast<int>(kL2Bytes / (2 * kLocalKvBytes) + 1) : 1);
    // Alternating rounds, the median of each: the differences are a few percent of the step.
    constexpr StepMode kModes[] = {kPlain, kFused, kQueryOnly, kOutputOnly, kSeparateLaunches};
    std::vector<double> rounds[std::size(kModes)], copied_in_rounds[2];  // plain, fused
    for (int round = 0; round < 7; ++round) {
      for (size_t i = 0; i < std::size(kModes); ++i) {
        rounds[i].push_back(TimePerCall(*backend, iterations,
                                        [&](int call) { step.Run(*backend, kModes[i], call); }));
      }
      for (int i = 0; i < 2; ++i) {
        copied_in_rounds[i].push_back(TimePerCall(*backend, iterations, [&](int call) {
          step.Run(*backend, kModes[i], call, /*copied_in=*/true);
        }));
      }
    }
    const double plain = Median(rounds[0]);
    std::printf("%-44s %12.2f\n", (std::string("querier step n_kv 4096, ") + setting.name).c_str(),
                plain * 1e6);
    const char* labels[] = {nullptr, "  + scrambling, fused", "    q' alone, in the local partial",
                            "    o alone, in the merge", "  + scrambling, in launches of its own"};
    for (size_t i = 1; i < std::size(kModes); ++i) {
      const double seconds = Median(rounds[i]);
      std::printf("%-44s %12.2f %13.1f%% of the plain step\n", labels[i], seconds * 1e6,
                  100.0 * (seconds - plain) / plain);
    }
    // The same added time as a share of a step whose attention also counts the compute node's
    // partial over as many owner keys as the querier's own (4096, timed above on this backend):
    // the step's attention is both partials and the merge, though they run on two machines.
    const double fused = Median(rounds[1]);
    std::printf("%-44s %12s %13.1f%% of plain + a 4096-key remote partial\n",
                "  + scrambling, fused", "",
                100.0 * (fused - plain) / (plain + decode_4096_seconds));
    const double copied_plain = Median(copied_in_rounds[0]);
    const double copied_fused = Median(copied_in_rounds[1]);
    std::printf("%-44s %12.2f\n", "  protocol order: remote partial copied in", copied_plain * 1e6);
    std::printf("%-44s %12.2f %13.1f%% of that step\n", "  + scrambling, fused", copied_fused * 1e6,
                100.0 * (copied_fused - copied_plain) / copied_plain);
  }

  // Owner side: K' = Π·K·Φ and V' = Π·V·Ψ for 4096 tokens × 8 KV heads (f32 rows in and out).
  {
    Seed seed{};
    seed[0] = 7;
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
