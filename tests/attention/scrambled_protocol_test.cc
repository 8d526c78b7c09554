// The FedRAG protocol of DESIGN.md §6 in one process, for one layer: owners scramble their keys
// (after RoPE) and values per key block, the querier scrambles its query rows, a third party
// computes partials on scrambled tensors only, the querier unscrambles them and merges them with
// its own local partial. The result must equal plain attention over all keys, for every key
// scope and mixer, on every backend.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "attention/backend.h"
#include "attention/key_schedule.h"
#include "attention/scrambler.h"
#include "gtest/gtest.h"
#include "tests/attention/attention_testing.h"
#include "tests/testing/status_matchers.h"

namespace silo::attention {
namespace {

using ::silo::attention::testing::AllocateFloats;
using ::silo::attention::testing::Download;
using ::silo::attention::testing::EncodeKv;
using ::silo::attention::testing::KvData;
using ::silo::attention::testing::RandomFloats;
using ::silo::attention::testing::ReferenceAttention;
using ::silo::attention::testing::ReferencePartial;
using ::silo::attention::testing::RelativeError;
using ::silo::attention::testing::TransformOn;
using ::silo::attention::testing::Upload;

struct ProtocolCase {
  int head_dim;
  int group;                                       // query heads per KV head
  std::vector<std::vector<int32_t>> owner_chunks;  // rows of each chunk of each owner
  int n_local;  // the querier's own rows (question and generated tokens)
  int n_q;
  KvDType wire_dtype;
};

// Stand-in for crypto/'s DeriveScramblerSeeds: distinct seeds per (owner, kv_head, key, what).
Seed TestSeed(int owner, int kv_head, int key, int what) {
  Seed seed{};
  seed[0] = static_cast<uint8_t>(owner);
  seed[1] = static_cast<uint8_t>(kv_head);
  std::memcpy(&seed[2], &key, sizeof(key));
  seed[6] = static_cast<uint8_t>(what);
  seed[31] = 0xa5;
  return seed;
}

// Rows [begin, begin + n) of head `head` of a [n_rows, n_heads, d] tensor, as [n, d].
std::vector<float> HeadRows(const std::vector<float>& t, int n_heads, int d, int head, int begin,
                            int n) {
  std::vector<float> out(static_cast<size_t>(n) * d);
  for (int r = 0; r < n; ++r) {
    std::memcpy(&out[static_cast<size_t>(r) * d],
                &t[(static_cast<size_t>(begin + r) * n_heads + head) * d], d * sizeof(float));
  }
  return out;
}

class ScrambledProtocolTest
    : public ::testing::TestWithParam<std::tuple<BackendKind, KeyScope, Mixer>> {
 protected:
  void SetUp() override {
    auto backend = CreateBackend(std::get<0>(GetParam()));
    if (absl::IsUnavailable(backend.status())) GTEST_SKIP() << backend.status();
    ASSERT_OK(backend);
    backend_ = *std::move(backend);
  }

  // Runs the protocol and compares the querier's merged output [n_q, n_heads, head_dim] with
  // plain attention over every key.
  void Run(const ProtocolCase& s, double tolerance);

  std::unique_ptr<AttentionBackend> backend_;
};

void ScrambledProtocolTest::Run(const ProtocolCase& s, double tolerance) {
  const auto [kind, scope, mixer] = GetParam();
  AttentionBackend& backend = *backend_;
  constexpr int kKvHeads = 2;
  const int n_heads = kKvHeads * s.group;
  const int d = s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::mt19937 rng(d * 1000 + s.group * 10 + static_cast<int>(scope));
  SCOPED_TRACE(::testing::Message() << "head_dim " << d << " group " << s.group << " wire dtype "
                                    << static_cast<int>(s.wire_dtype));

  // Plain inputs: owners' K (after RoPE) and V, the querier's local K/V and its query rows.
  const std::vector<float> q = RandomFloats(rng, static_cast<size_t>(s.n_q) * n_heads * d);
  std::vector<std::vector<float>> owner_k, owner_v;
  std::vector<float> all_k, all_v;  // everything concatenated, for the reference
  int n_total = 0;
  for (const auto& chunks : s.owner_chunks) {
    int rows = 0;
    for (const int32_t chunk : chunks) rows += chunk;
    owner_k.push_back(RandomFloats(rng, static_cast<size_t>(rows) * kKvHeads * d));
    owner_v.push_back(RandomFloats(rng, static_cast<size_t>(rows) * kKvHeads * d));
    all_k.insert(all_k.end(), owner_k.back().begin(), owner_k.back().end());
    all_v.insert(all_v.end(), owner_v.back().begin(), owner_v.back().end());
    n_total += rows;
  }
  const std::vector<float> local_k =
      RandomFloats(rng, static_cast<size_t>(s.n_local) * kKvHeads * d);
  const std::vector<float> local_v =
      RandomFloats(rng, static_cast<size_t>(s.n_local) * kKvHeads * d);
  all_k.insert(all_k.end(), local_k.begin(), local_k.end());
  all_v.insert(all_v.end(), local_v.begin(), local_v.end());
  n_total += s.n_local;

  // Partials the querier collects, per KV head: [parts][n_q * group * d] etc.
  std::vector<float> merged(static_cast<size_t>(s.n_q) * n_heads * d);
  for (int h = 0; h < kKvHeads; ++h) {
    // Query rows of this KV head's group: [n_q, group, d].
    std::vector<float> q_group(static_cast<size_t>(s.n_q) * s.group * d);
    for (int i = 0; i < s.n_q; ++i) {
      std::memcpy(&q_group[static_cast<size_t>(i) * s.group * d],
                  &q[(static_cast<size_t>(i) * n_heads + h * s.group) * d],
                  s.group * d * sizeof(float));
    }
    const size_t part_rows = static_cast<size_t>(s.n_q) * s.group;
    std::vector<float> parts_o, parts_m, parts_l;

    auto compute_partial = [&](const std::vector<float>& q_rows, const KvData& k, const KvData& v,
                               KvDType dtype, int n_kv, int dim, std::vector<float>* o,
                               std::vector<float>* m, std::vector<float>* l) {
      BackendBuffer q_buffer = Upload(backend, q_rows);
      BackendBuffer k_buffer = Upload(backend, k.bytes);
      BackendBuffer v_buffer = Upload(backend, v.bytes);
      BackendBuffer o_buffer = AllocateFloats(backend, part_rows * dim);
      BackendBuffer m_buffer = AllocateFloats(backend, part_rows);
      BackendBuffer l_buffer = AllocateFloats(backend, part_rows);
      PartialAttentionArgs args;
      args.q = q_buffer.as<float>();
      args.k = k_buffer.data();
      args.v = v_buffer.data();
      args.kv_dtype = dtype;
      args.n_q = s.n_q;
      args.n_kv = n_kv;
      args.n_heads = s.group;
      args.n_kv_heads = 1;
      args.head_dim = dim;
      args.scale = scale;
      args.o = o_buffer.as<float>();
      args.m = m_buffer.as<float>();
      args.l = l_buffer.as<float>();
      ASSERT_OK(backend.PartialAttention(args));
      *o = Download(backend, o_buffer, part_rows * dim);
      *m = Download(backend, m_buffer, part_rows);
      *l = Download(backend, l_buffer, part_rows);
    };

    for (size_t owner = 0; owner < s.owner_chunks.size(); ++owner) {
      ASSERT_OK_AND_ASSIGN(const std::vector<KeyBlock> blocks,
                           PlanKeyBlocks(s.owner_chunks[owner], scope, /*block_rows=*/d));
      for (const KeyBlock& block : blocks) {
        ASSERT_OK_AND_ASSIGN(
            const Scrambler phi,
            Scrambler::Create(d, TestSeed(owner, h, block.key_index, 0), {mixer, 2.0}));
        ASSERT_OK_AND_ASSIGN(
            const Scrambler psi,
            Scrambler::Create(d, TestSeed(owner, h, block.key_index, 1), {mixer, 2.0}));
        const std::vector<int32_t> pi =
            RowPermutation(TestSeed(owner, h, block.key_index, 2), block.n_rows);
        const int dim = phi.dim();

        // Owner: K′ = Π·K·Φ, V′ = Π·V·Ψ, cast to the wire dtype.
        auto scramble_rows = [&](const std::vector<float>& plain, const Scrambler& scrambler,
                                 std::vector<float>* scrambled) {
          ASSERT_OK_AND_ASSIGN(const BackendRowTransform forward,
                               BackendRowTransform::Upload(backend, scrambler.forward()));
          BackendBuffer in = Upload(backend, plain);
          BackendBuffer mixed = AllocateFloats(backend, static_cast<size_t>(block.n_rows) * dim);
          BackendBuffer permuted = AllocateFloats(backend, static_cast<size_t>(block.n_rows) * dim);
          BackendBuffer rows = Upload(backend, pi);
          ASSERT_OK(forward.Run(backend, in.as<float>(), mixed.as<float>(), block.n_rows));
          ASSERT_OK(
              backend.GatherRows({mixed.data(), permuted.data(), rows.as<int32_t>(), block.n_rows,
                                  block.n_rows, static_cast<int64_t>(dim * sizeof(float))}));
          *scrambled = Download(backend, permuted, static_cast<size_t>(block.n_rows) * dim);
        };
        std::vector<float> k_scrambled, v_scrambled;
        scramble_rows(HeadRows(owner_k[owner], kKvHeads, d, h, block.row_begin, block.n_rows), phi,
                      &k_scrambled);
        scramble_rows(HeadRows(owner_v[owner], kKvHeads, d, h, block.row_begin, block.n_rows), psi,
                      &v_scrambled);
        ASSERT_FALSE(HasFatalFailure());
        const KvData k_wire = EncodeKv(k_scrambled, s.wire_dtype);
        const KvData v_wire = EncodeKv(v_scrambled, s.wire_dtype);

        // Querier: q′ = q·Φ^{-T}.
        const std::vector<float> q_scrambled =
            TransformOn(backend, phi.inverse_transpose(), q_group);

        // Compute node: a partial over scrambled tensors only.
        std::vector<float> o_scrambled, m, l;
        compute_partial(q_scrambled, k_wire, v_wire, s.wire_dtype, block.n_rows, dim, &o_scrambled,
                        &m, &l);

        // Querier: o = o′·Ψ⁻¹.
        const std::vector<float> o = TransformOn(backend, psi.inverse(), o_scrambled);
        parts_o.insert(parts_o.end(), o.begin(), o.end());
        parts_m.insert(parts_m.end(), m.begin(), m.end());
        parts_l.insert(parts_l.end(), l.begin(), l.end());
      }
    }
    // The querier's local partial, in plain form (f32: it never leaves the querier).
    {
      std::vector<float> o, m, l;
      compute_partial(q_group,
                      EncodeKv(HeadRows(local_k, kKvHeads, d, h, 0, s.n_local), KvDType::kF32),
                      EncodeKv(HeadRows(local_v, kKvHeads, d, h, 0, s.n_local), KvDType::kF32),
                      KvDType::kF32, s.n_local, d, &o, &m, &l);
      parts_o.insert(parts_o.end(), o.begin(), o.end());
      parts_m.insert(parts_m.end(), m.begin(), m.end());
      parts_l.insert(parts_l.end(), l.begin(), l.end());
    }
    // Merge every partial of this KV head's query rows.
    const int n_parts = static_cast<int>(parts_m.size() / part_rows);
    BackendBuffer o_buffer = Upload(backend, parts_o);
    BackendBuffer m_buffer = Upload(backend, parts_m);
    BackendBuffer l_buffer = Upload(backend, parts_l);
    BackendBuffer out_o = AllocateFloats(backend, part_rows * d);
    BackendBuffer out_m = AllocateFloats(backend, part_rows);
    BackendBuffer out_l = AllocateFloats(backend, part_rows);
    ASSERT_OK(backend.MergePartials({.o = o_buffer.as<float>(),
                                     .m = m_buffer.as<float>(),
                                     .l = l_buffer.as<float>(),
                                     .n_parts = n_parts,
                                     .n_rows = static_cast<int32_t>(part_rows),
                                     .head_dim = d,
                                     .out_o = out_o.as<float>(),
                                     .out_m = out_m.as<float>(),
                                     .out_l = out_l.as<float>()}));
    const std::vector<float> head_out = Download(backend, out_o, part_rows * d);
    for (int i = 0; i < s.n_q; ++i) {
      std::memcpy(&merged[(static_cast<size_t>(i) * n_heads + h * s.group) * d],
                  &head_out[static_cast<size_t>(i) * s.group * d], s.group * d * sizeof(float));
    }
  }

  // Plain attention over everything, with the owners' K/V rounded as the wire rounds them is
  // not possible (rounding happens after scrambling), so f16 gets the looser tolerance.
  const ReferencePartial expected =
      ReferenceAttention(q, all_k, all_v, s.n_q, n_total, n_heads, kKvHeads, d, scale);
  const double error = RelativeError(merged, expected.o);
  EXPECT_LE(error, tolerance);
  RecordProperty("relative_error", std::to_string(error));
}

TEST_P(ScrambledProtocolTest, EqualsPlainAttentionInF32) {
  Run({64, 1, {{100, 37}, {64}}, 20, 1, KvDType::kF32}, 1e-5);
  Run({80, 3, {{300}, {50, 50, 50}}, 9, 4, KvDType::kF32}, 1e-5);
  Run({128, 4, {{129, 1}, {256}, {7}}, 1, 1, KvDType::kF32}, 1e-5);
  Run({128, 8, {{2000, 2000}, {4192}}, 30, 2, KvDType::kF32}, 1e-5);  // 8192 owner rows
}

TEST_P(ScrambledProtocolTest, EqualsPlainAttentionWithF16Wire) {
  Run({64, 3, {{200}, {100, 28}}, 5, 1, KvDType::kF16}, 3e-3);
  Run({80, 4, {{129}, {300}}, 12, 3, KvDType::kF16}, 3e-3);
  Run({128, 8, {{1024, 3000}}, 7, 1, KvDType::kF16}, 3e-3);
}

std::string Name(const ::testing::TestParamInfo<std::tuple<BackendKind, KeyScope, Mixer>>& info) {
  const auto [kind, scope, mixer] = info.param;
  const char* scopes[] = {"Session", "Chunk", "Block"};
  return std::string(kind == BackendKind::kCpu ? "Cpu" : "Cuda") + scopes[static_cast<int>(scope)] +
         (mixer == Mixer::kSphps ? "Sphps" : "Dense");
}

INSTANTIATE_TEST_SUITE_P(
    ScopesAndMixers, ScrambledProtocolTest,
    ::testing::Combine(::testing::Values(BackendKind::kCpu, BackendKind::kCuda),
                       ::testing::Values(KeyScope::kSession, KeyScope::kChunk, KeyScope::kBlock),
                       ::testing::Values(Mixer::kSphps, Mixer::kDense)),
    Name);

}  // namespace
}  // namespace silo::attention
