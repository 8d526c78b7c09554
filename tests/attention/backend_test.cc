// Every backend against the f64 reference (and so against each other): partial attention, merge,
// row transforms and gathers. CUDA instances skip without a device.
#include "attention/backend.h"

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "attention/scrambler.h"
#include "gmock/gmock.h"
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
using ::silo::testing::StatusIs;

constexpr float kInf = std::numeric_limits<float>::infinity();

class BackendTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<AttentionBackend>> backend = CreateBackend(GetParam());
    if (absl::IsUnavailable(backend.status())) GTEST_SKIP() << backend.status();
    ASSERT_OK(backend);
    backend_ = *std::move(backend);
  }

  std::unique_ptr<AttentionBackend> backend_;
};

struct AttentionShape {
  int n_q, n_kv, n_heads, n_kv_heads, head_dim;
  KvDType dtype;
  bool causal;
};

// Runs one partial attention on the backend and compares it with the f64 reference.
void CheckPartialAttention(AttentionBackend& backend, const AttentionShape& shape, double tolerance,
                           float stddev = 1.0f) {
  SCOPED_TRACE(::testing::Message()
               << "n_q " << shape.n_q << " n_kv " << shape.n_kv << " heads " << shape.n_heads << "/"
               << shape.n_kv_heads << " head_dim " << shape.head_dim << " dtype "
               << static_cast<int>(shape.dtype) << " causal " << shape.causal);
  std::mt19937 rng(shape.n_q * 131 + shape.n_kv * 7 + shape.head_dim);
  const size_t q_size = static_cast<size_t>(shape.n_q) * shape.n_heads * shape.head_dim;
  const size_t kv_size = static_cast<size_t>(shape.n_kv) * shape.n_kv_heads * shape.head_dim;
  const std::vector<float> q = RandomFloats(rng, q_size, stddev);
  const KvData k = EncodeKv(RandomFloats(rng, kv_size, stddev), shape.dtype);
  const KvData v = EncodeKv(RandomFloats(rng, kv_size), shape.dtype);
  std::vector<int32_t> q_positions(shape.n_q), kv_positions(shape.n_kv);
  for (int i = 0; i < shape.n_q; ++i) q_positions[i] = shape.n_kv - shape.n_q + i;
  for (int j = 0; j < shape.n_kv; ++j) kv_positions[j] = j;
  const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));

  BackendBuffer q_buffer = Upload(backend, q);
  BackendBuffer k_buffer = Upload(backend, k.bytes);
  BackendBuffer v_buffer = Upload(backend, v.bytes);
  BackendBuffer qp_buffer = Upload(backend, q_positions);
  BackendBuffer kp_buffer = Upload(backend, kv_positions);
  const size_t rows = static_cast<size_t>(shape.n_q) * shape.n_heads;
  BackendBuffer o = AllocateFloats(backend, rows * shape.head_dim);
  BackendBuffer m = AllocateFloats(backend, rows);
  BackendBuffer l = AllocateFloats(backend, rows);

  PartialAttentionArgs args;
  args.q = q_buffer.as<float>();
  args.k = k_buffer.data();
  args.v = v_buffer.data();
  args.kv_dtype = shape.dtype;
  if (shape.causal) {
    args.q_positions = qp_buffer.as<int32_t>();
    args.kv_positions = kp_buffer.as<int32_t>();
  }
  args.n_q = shape.n_q;
  args.n_kv = shape.n_kv;
  args.n_heads = shape.n_heads;
  args.n_kv_heads = shape.n_kv_heads;
  args.head_dim = shape.head_dim;
  args.scale = scale;
  args.o = o.as<float>();
  args.m = m.as<float>();
  args.l = l.as<float>();
  ASSERT_OK(backend.PartialAttention(args));

  const ReferencePartial expected = ReferenceAttention(
      q, k.values, v.values, shape.n_q, shape.n_kv, shape.n_heads, shape.n_kv_heads, shape.head_dim,
      scale, shape.causal ? &q_positions : nullptr, shape.causal ? &kv_positions : nullptr);
  const std::vector<float> actual_o = Download(backend, o, rows * shape.head_dim);
  const std::vector<float> actual_m = Download(backend, m, rows);
  const std::vector<float> actual_l = Download(backend, l, rows);
  EXPECT_LE(RelativeError(actual_o, expected.o), tolerance);
  for (size_t r = 0; r < rows; ++r) {
    if (expected.l[r] == 0) {
      ASSERT_EQ(actual_m[r], -kInf) << "row " << r;
      ASSERT_EQ(actual_l[r], 0.0f) << "row " << r;
      continue;
    }
    ASSERT_NEAR(actual_m[r], expected.m[r], tolerance * std::max(1.0, std::abs(expected.m[r])));
    ASSERT_NEAR(actual_l[r], expected.l[r], tolerance * expected.l[r] * 4) << "row " << r;
  }
}

TEST_P(BackendTest, PartialAttentionMatchesTheReference) {
  // Decode (few rows, many keys) and prefill (many rows) shapes; query heads per KV head 1, 3, 4,
  // 8; head dims 64, 80, 128.
  const std::vector<AttentionShape> shapes = {
      {1, 1, 1, 1, 64, KvDType::kF32, false},    {1, 513, 8, 8, 64, KvDType::kF32, false},
      {2, 300, 9, 3, 64, KvDType::kF32, false},  {1, 4096, 32, 8, 128, KvDType::kF32, false},
      {3, 777, 16, 2, 80, KvDType::kF32, false}, {37, 200, 4, 1, 128, KvDType::kF32, true},
      {64, 64, 9, 3, 64, KvDType::kF32, true},   {5, 1000, 12, 4, 80, KvDType::kF32, true},
  };
  for (const AttentionShape& shape : shapes) CheckPartialAttention(*backend_, shape, 2e-5);
}

TEST_P(BackendTest, PartialAttentionReadsF16AndBf16KeysAndValues) {
  for (const KvDType dtype : {KvDType::kF16, KvDType::kBF16}) {
    CheckPartialAttention(*backend_, {1, 2049, 32, 8, 128, dtype, false}, 2e-5);
    CheckPartialAttention(*backend_, {20, 300, 8, 2, 64, dtype, true}, 2e-5);
    CheckPartialAttention(*backend_, {2, 100, 6, 2, 80, dtype, false}, 2e-5);
    // Decode shapes of the tensor-core kernel (f16, head_dim 64 and 128, 1 to 8 rows per KV
    // head, key counts off the 16-key tiles and across many splits, causal masks).
    CheckPartialAttention(*backend_, {1, 4097, 8, 8, 128, dtype, false}, 2e-5);
    CheckPartialAttention(*backend_, {1, 33, 24, 8, 128, dtype, false}, 2e-5);
    CheckPartialAttention(*backend_, {2, 1001, 8, 2, 64, dtype, true}, 2e-5);
    CheckPartialAttention(*backend_, {1, 40000, 32, 8, 128, dtype, false}, 2e-5);
    CheckPartialAttention(*backend_, {1, 7, 2, 1, 64, dtype, true}, 2e-5);
    CheckPartialAttention(*backend_, {2, 3001, 32, 8, 128, dtype, true}, 2e-5);
    CheckPartialAttention(*backend_, {2, 517, 24, 8, 128, dtype, false}, 2e-5);
    CheckPartialAttention(*backend_, {5, 129, 8, 8, 64, dtype, true}, 2e-5);
  }
}

TEST_P(BackendTest, PartialAttentionHandlesEmptyBlocksAndMaskedRows) {
  CheckPartialAttention(*backend_, {2, 0, 4, 2, 64, KvDType::kF32, false}, 0);
  // Causal with the query before every key: every row masked.
  std::vector<float> q(64, 1.0f), kv(4 * 64, 1.0f);
  BackendBuffer q_buffer = Upload(*backend_, q);
  BackendBuffer k_buffer = Upload(*backend_, kv);
  BackendBuffer qp = Upload(*backend_, std::vector<int32_t>{0});
  BackendBuffer kp = Upload(*backend_, std::vector<int32_t>{5, 6, 7, 8});
  BackendBuffer o = AllocateFloats(*backend_, 64);
  BackendBuffer m = AllocateFloats(*backend_, 1);
  BackendBuffer l = AllocateFloats(*backend_, 1);
  PartialAttentionArgs args{q_buffer.as<float>(),
                            k_buffer.data(),
                            k_buffer.data(),
                            KvDType::kF32,
                            qp.as<int32_t>(),
                            kp.as<int32_t>(),
                            1,
                            4,
                            1,
                            1,
                            64,
                            0.125f,
                            o.as<float>(),
                            m.as<float>(),
                            l.as<float>()};
  ASSERT_OK(backend_->PartialAttention(args));
  EXPECT_EQ(Download(*backend_, m, 1)[0], -kInf);
  EXPECT_EQ(Download(*backend_, l, 1)[0], 0.0f);
  EXPECT_THAT(Download(*backend_, o, 64), ::testing::Each(0.0f));
}

TEST_P(BackendTest, PartialAttentionSurvivesHugeScores) {
  // Scores around 1e4: exp would overflow without the running maximum.
  CheckPartialAttention(*backend_, {1, 500, 4, 4, 64, KvDType::kF32, false}, 1e-4, 30.0f);
}

// The CUDA kernels copy K and V 16 bytes at a time: a misaligned pointer is refused there (the
// device context would die), and works on the CPU.
TEST_P(BackendTest, PartialAttentionHandlesMisalignedKeys) {
  const std::vector<float> q(64, 0.5f), kv(4 * 64 + 4, 0.25f);
  BackendBuffer q_buffer = Upload(*backend_, q);
  BackendBuffer kv_buffer = Upload(*backend_, kv);
  BackendBuffer o = AllocateFloats(*backend_, 64);
  BackendBuffer m = AllocateFloats(*backend_, 1);
  BackendBuffer l = AllocateFloats(*backend_, 1);
  PartialAttentionArgs args;
  args.q = q_buffer.as<float>();
  args.k = kv_buffer.as<float>() + 1;  // 4 bytes past a 16-byte boundary
  args.v = kv_buffer.as<float>() + 1;
  args.n_q = args.n_heads = args.n_kv_heads = 1;
  args.n_kv = 4;
  args.head_dim = 64;
  args.scale = 0.125f;
  args.o = o.as<float>();
  args.m = m.as<float>();
  args.l = l.as<float>();
  if (GetParam() == BackendKind::kCuda) {
    EXPECT_THAT(backend_->PartialAttention(args),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("aligned")));
    // The backend is still usable.
    args.k = args.v = kv_buffer.data();
  }
  ASSERT_OK(backend_->PartialAttention(args));
  EXPECT_THAT(Download(*backend_, o, 64), ::testing::Each(0.25f));
}

TEST_P(BackendTest, PartialAttentionRejectsBadShapes) {
  PartialAttentionArgs args;
  args.n_q = 1;
  args.n_kv = 4;
  args.n_heads = 6;
  args.n_kv_heads = 4;
  args.head_dim = 64;
  args.scale = 0.125f;
  EXPECT_THAT(backend_->PartialAttention(args),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("multiple")));
  args.n_kv_heads = 2;
  args.head_dim = 0;
  EXPECT_THAT(backend_->PartialAttention(args), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(BackendTest, MergeOfSplitPartialsEqualsTheWhole) {
  std::mt19937 rng(5);
  constexpr int kNKv = 1000, kHeads = 4, kDim = 64, kParts = 5;
  const std::vector<float> q = RandomFloats(rng, kHeads * kDim);
  const std::vector<float> k = RandomFloats(rng, kNKv * kHeads * kDim);
  const std::vector<float> v = RandomFloats(rng, kNKv * kHeads * kDim);
  const float scale = 0.125f;
  // Parts of 0, 100, 200, 300 and 400 keys (an empty part included).
  const int sizes[kParts] = {0, 100, 200, 300, 400};
  BackendBuffer q_buffer = Upload(*backend_, q);
  BackendBuffer k_buffer = Upload(*backend_, k);
  BackendBuffer v_buffer = Upload(*backend_, v);
  BackendBuffer o = AllocateFloats(*backend_, kParts * kHeads * kDim);
  BackendBuffer m = AllocateFloats(*backend_, kParts * kHeads);
  BackendBuffer l = AllocateFloats(*backend_, kParts * kHeads);
  int begin = 0;
  for (int p = 0; p < kParts; ++p) {
    PartialAttentionArgs args;
    args.q = q_buffer.as<float>();
    args.k = k_buffer.as<float>() + static_cast<size_t>(begin) * kHeads * kDim;
    args.v = v_buffer.as<float>() + static_cast<size_t>(begin) * kHeads * kDim;
    args.n_q = 1;
    args.n_kv = sizes[p];
    args.n_heads = args.n_kv_heads = kHeads;
    args.head_dim = kDim;
    args.scale = scale;
    args.o = o.as<float>() + p * kHeads * kDim;
    args.m = m.as<float>() + p * kHeads;
    args.l = l.as<float>() + p * kHeads;
    ASSERT_OK(backend_->PartialAttention(args));
    begin += sizes[p];
  }
  BackendBuffer out_o = AllocateFloats(*backend_, kHeads * kDim);
  BackendBuffer out_m = AllocateFloats(*backend_, kHeads);
  BackendBuffer out_l = AllocateFloats(*backend_, kHeads);
  ASSERT_OK(
      backend_->MergePartials({o.as<float>(), m.as<float>(), l.as<float>(), kParts, kHeads, kDim,
                               out_o.as<float>(), out_m.as<float>(), out_l.as<float>()}));
  const ReferencePartial expected =
      ReferenceAttention(q, k, v, 1, kNKv, kHeads, kHeads, kDim, scale);
  EXPECT_LE(RelativeError(Download(*backend_, out_o, kHeads * kDim), expected.o), 1e-5);
  EXPECT_LE(RelativeError(Download(*backend_, out_l, kHeads), expected.l), 1e-5);
  EXPECT_LE(RelativeError(Download(*backend_, out_m, kHeads), expected.m), 1e-6);
}

TEST_P(BackendTest, MergeHandlesAllEmptyAndDominatingParts) {
  // Row 0: both parts empty. Row 1: part 1's maximum is 1e4 above part 0's.
  const std::vector<float> o = {0, 0, 1, 2, /*part 1*/ 0, 0, 5, 6};
  const std::vector<float> m = {-kInf, 0.0f, -kInf, 1e4f};
  const std::vector<float> l = {0.0f, 3.0f, 0.0f, 2.0f};
  BackendBuffer o_buffer = Upload(*backend_, o);
  BackendBuffer m_buffer = Upload(*backend_, m);
  BackendBuffer l_buffer = Upload(*backend_, l);
  BackendBuffer out_o = AllocateFloats(*backend_, 4);
  BackendBuffer out_m = AllocateFloats(*backend_, 2);
  BackendBuffer out_l = AllocateFloats(*backend_, 2);
  ASSERT_OK(
      backend_->MergePartials({o_buffer.as<float>(), m_buffer.as<float>(), l_buffer.as<float>(), 2,
                               2, 2, out_o.as<float>(), out_m.as<float>(), out_l.as<float>()}));
  EXPECT_THAT(Download(*backend_, out_o, 4), ::testing::ElementsAre(0, 0, 5, 6));
  EXPECT_THAT(Download(*backend_, out_m, 2), ::testing::ElementsAre(-kInf, 1e4f));
  EXPECT_THAT(Download(*backend_, out_l, 2), ::testing::ElementsAre(0.0f, 2.0f));
}

TEST_P(BackendTest, TransformRowsMatchesTheCpuReference) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  ASSERT_OK(cpu);
  Seed seed{};
  seed[0] = 42;
  std::mt19937 rng(9);
  for (const Mixer mixer : {Mixer::kSphps, Mixer::kDense}) {
    for (const int head_dim : {64, 80, 128}) {
      ASSERT_OK_AND_ASSIGN(const Scrambler scrambler,
                           Scrambler::Create(head_dim, seed, {mixer, 2.0}));
      for (const RowTransform* transform :
           {&scrambler.forward(), &scrambler.inverse_transpose(), &scrambler.inverse()}) {
        constexpr int kRows = 300;
        const std::vector<float> in = RandomFloats(rng, kRows * transform->in_dim);
        EXPECT_LE(RelativeError(TransformOn(*backend_, *transform, in),
                                TransformOn(**cpu, *transform, in)),
                  1e-6)
            << "mixer " << static_cast<int>(mixer) << " head_dim " << head_dim;
      }
    }
  }
}

TEST_P(BackendTest, GatherRowsPermutesRows) {
  const std::vector<float> table = {0, 1, 10, 11, 20, 21, 30, 31};
  BackendBuffer in = Upload(*backend_, table);
  BackendBuffer rows = Upload(*backend_, std::vector<int32_t>{3, 0, 2, 1});
  BackendBuffer out = AllocateFloats(*backend_, 8);
  ASSERT_OK(
      backend_->GatherRows({in.data(), out.data(), rows.as<int32_t>(), 4, 4, 2 * sizeof(float)}));
  EXPECT_THAT(Download(*backend_, out, 8), ::testing::ElementsAre(30, 31, 0, 1, 20, 21, 10, 11));
}

std::string BackendName(const ::testing::TestParamInfo<BackendKind>& info) {
  return info.param == BackendKind::kCpu ? "Cpu" : "Cuda";
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest,
                         ::testing::Values(BackendKind::kCpu, BackendKind::kCuda), BackendName);

}  // namespace
}  // namespace silo::attention
