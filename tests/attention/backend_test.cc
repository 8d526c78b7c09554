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

// The arguments of a partial attention of `shape` over buffers on the backend (the positions
// count only for a causal shape).
PartialAttentionArgs ArgsOf(const AttentionShape& shape, float scale, const BackendBuffer& q,
                            const BackendBuffer& k, const BackendBuffer& v,
                            const BackendBuffer& q_positions, const BackendBuffer& kv_positions,
                            const BackendBuffer& o, const BackendBuffer& m,
                            const BackendBuffer& l) {
  PartialAttentionArgs args;
  args.q = q.as<float>();
  args.k = k.data();
  args.v = v.data();
  args.kv_dtype = shape.dtype;
  if (shape.causal) {
    args.q_positions = q_positions.as<int32_t>();
    args.kv_positions = kv_positions.as<int32_t>();
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
  return args;
}

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

  ASSERT_OK(backend.PartialAttention(
      ArgsOf(shape, scale, q_buffer, k_buffer, v_buffer, qp_buffer, kp_buffer, o, m, l)));

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
  PartialAttentionArgs args{.q = q_buffer.as<float>(),
                            .k = k_buffer.data(),
                            .v = k_buffer.data(),
                            .kv_dtype = KvDType::kF32,
                            .q_positions = qp.as<int32_t>(),
                            .kv_positions = kp.as<int32_t>(),
                            .n_q = 1,
                            .n_kv = 4,
                            .n_heads = 1,
                            .n_kv_heads = 1,
                            .head_dim = 64,
                            .scale = 0.125f,
                            .o = o.as<float>(),
                            .m = m.as<float>(),
                            .l = l.as<float>()};
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
  ASSERT_OK(backend_->MergePartials({.o = o.as<float>(),
                                     .m = m.as<float>(),
                                     .l = l.as<float>(),
                                     .n_parts = kParts,
                                     .n_rows = kHeads,
                                     .head_dim = kDim,
                                     .out_o = out_o.as<float>(),
                                     .out_m = out_m.as<float>(),
                                     .out_l = out_l.as<float>()}));
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
  ASSERT_OK(backend_->MergePartials({.o = o_buffer.as<float>(),
                                     .m = m_buffer.as<float>(),
                                     .l = l_buffer.as<float>(),
                                     .n_parts = 2,
                                     .n_rows = 2,
                                     .head_dim = 2,
                                     .out_o = out_o.as<float>(),
                                     .out_m = out_m.as<float>(),
                                     .out_l = out_l.as<float>()}));
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
    for (const int head_dim : {32, 64, 80, 128, 256}) {
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

// The scramblers of `count` key blocks (seeds 1, 2, ...): one set per direction.
std::vector<Scrambler> ScramblersOf(int count, int head_dim, Mixer mixer) {
  std::vector<Scrambler> scramblers;
  scramblers.reserve(count);
  for (int i = 0; i < count; ++i) {
    Seed seed{};
    seed[0] = static_cast<uint8_t>(i + 1);
    absl::StatusOr<Scrambler> scrambler = Scrambler::Create(head_dim, seed, {mixer, 2.0});
    EXPECT_TRUE(scrambler.ok()) << scrambler.status();
    scramblers.push_back(*std::move(scrambler));
  }
  return scramblers;
}

template <typename Direction>
std::vector<const RowTransform*> TransformsOf(const std::vector<Scrambler>& scramblers,
                                              Direction direction) {
  std::vector<const RowTransform*> transforms;
  transforms.reserve(scramblers.size());
  for (const Scrambler& scrambler : scramblers) transforms.push_back(&(scrambler.*direction)());
  return transforms;
}

// Row r of `rows` ([n, width]) as a vector of its first `n` columns.
std::vector<float> RowOf(const std::vector<float>& rows, int width, int64_t r, int n) {
  return {rows.begin() + r * width, rows.begin() + r * width + n};
}

TEST_P(BackendTest, TransformRowsRunsEachRowByItsOwnTransformAndSource) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  ASSERT_OK(cpu);
  std::mt19937 rng(11);
  for (const Mixer mixer : {Mixer::kSphps, Mixer::kDense}) {
    for (const int head_dim : {32, 64, 80, 128, 256}) {
      SCOPED_TRACE(::testing::Message()
                   << "mixer " << static_cast<int>(mixer) << " head_dim " << head_dim);
      const std::vector<Scrambler> scramblers = ScramblersOf(3, head_dim, mixer);
      const std::vector<const RowTransform*> transforms =
          TransformsOf(scramblers, &Scrambler::inverse_transpose);
      ASSERT_OK_AND_ASSIGN(const BackendRowTransform set,
                           BackendRowTransform::UploadSet(*backend_, transforms));
      constexpr int kIn = 10, kOut = 25;
      const std::vector<float> in = RandomFloats(rng, kIn * head_dim);
      std::vector<int32_t> transform(kOut), source(kOut);
      for (int i = 0; i < kOut; ++i) {
        transform[i] = i % 3;
        source[i] = (7 * i) % kIn;
      }
      const int32_t out_dim = transforms[0]->out_dim;
      BackendBuffer in_buffer = Upload(*backend_, in);
      BackendBuffer transform_buffer = Upload(*backend_, transform);
      BackendBuffer source_buffer = Upload(*backend_, source);
      BackendBuffer out = AllocateFloats(*backend_, kOut * out_dim);
      RowTransformArgs args;
      args.in = in_buffer.as<float>();
      args.out = out.as<float>();
      args.n_rows = kOut;
      args.n_in_rows = kIn;
      args.in_stride = head_dim;
      args.out_stride = out_dim;
      args.transforms = set.set();
      args.transform = transform_buffer.as<int32_t>();
      args.source = source_buffer.as<int32_t>();
      ASSERT_OK(backend_->TransformRows(args));
      const std::vector<float> actual = Download(*backend_, out, kOut * out_dim);
      for (int i = 0; i < kOut; ++i) {
        const std::vector<float> expected =
            TransformOn(**cpu, *transforms[transform[i]], RowOf(in, head_dim, source[i], head_dim));
        ASSERT_LE(RelativeError(RowOf(actual, out_dim, i, out_dim), expected), 1e-6) << "row " << i;
      }
    }
  }
}

// Row indices live in the backend's memory: the CPU checks them, a CUDA kernel cannot return an
// error and writes the row as zeros instead.
TEST_P(BackendTest, TransformRowsOfAnOutOfRangeSource) {
  ASSERT_OK_AND_ASSIGN(const Scrambler scrambler, Scrambler::Create(64, Seed{}, {}));
  ASSERT_OK_AND_ASSIGN(const BackendRowTransform set,
                       BackendRowTransform::Upload(*backend_, scrambler.forward()));
  BackendBuffer in = Upload(*backend_, std::vector<float>(2 * 64, 1.0f));
  BackendBuffer source = Upload(*backend_, std::vector<int32_t>{1, 2});
  BackendBuffer out = Upload(*backend_, std::vector<float>(2 * 64, 5.0f));
  RowTransformArgs args;
  args.in = in.as<float>();
  args.out = out.as<float>();
  args.n_rows = 2;
  args.n_in_rows = 2;
  args.in_stride = args.out_stride = 64;
  args.transforms = set.set();
  args.source = source.as<int32_t>();
  if (GetParam() == BackendKind::kCpu) {
    EXPECT_THAT(backend_->TransformRows(args),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("reads row 2")));
    return;
  }
  ASSERT_OK(backend_->TransformRows(args));
  const std::vector<float> result = Download(*backend_, out, 2 * 64);
  EXPECT_THAT(std::vector<float>(result.begin() + 64, result.end()), ::testing::Each(0.0f));
  EXPECT_NE(result[0], 0.0f);
}

// The querier's merge of its own partial with the compute node's: parts 1 and 2 come scrambled
// (o′ = o·Ψ, padded), each row by the Ψ of its key block; the fused merge equals the plain merge
// of the plain partials.
TEST_P(BackendTest, MergeUnscramblesScrambledParts) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  ASSERT_OK(cpu);
  std::mt19937 rng(13);
  for (const Mixer mixer : {Mixer::kSphps, Mixer::kDense}) {
    for (const int head_dim : {32, 64, 80, 128, 256}) {
      SCOPED_TRACE(::testing::Message()
                   << "mixer " << static_cast<int>(mixer) << " head_dim " << head_dim);
      constexpr int kParts = 3, kRows = 6, kKeys = 4;
      const std::vector<Scrambler> scramblers = ScramblersOf(kKeys, head_dim, mixer);
      ASSERT_OK_AND_ASSIGN(
          const BackendRowTransform unscramble,
          BackendRowTransform::UploadSet(*backend_, TransformsOf(scramblers, &Scrambler::inverse)));
      const int width = scramblers[0].dim();
      const std::vector<float> plain = RandomFloats(rng, kParts * kRows * head_dim);
      std::vector<float> m = RandomFloats(rng, kParts * kRows);
      std::vector<float> l(kParts * kRows);
      for (float& value : l) value = std::uniform_real_distribution<float>(0.5f, 3.0f)(rng);
      l[1 * kRows + 2] = 0;  // an empty scrambled part row
      m[1 * kRows + 2] = -kInf;
      std::vector<int32_t> index(kParts * kRows, -1);
      std::vector<float> wire = RandomFloats(rng, kParts * kRows * width);  // garbage past head_dim
      for (int p = 0; p < kParts; ++p) {
        for (int r = 0; r < kRows; ++r) {
          const int part_row = p * kRows + r;
          const std::vector<float> row = RowOf(plain, head_dim, part_row, head_dim);
          if (p == 0) {
            std::copy(row.begin(), row.end(), wire.begin() + part_row * width);
            continue;
          }
          index[part_row] = (p - 1) * 2 + r % 2;
          const std::vector<float> scrambled =
              TransformOn(**cpu, scramblers[index[part_row]].forward(), row);
          std::copy(scrambled.begin(), scrambled.end(), wire.begin() + part_row * width);
        }
      }
      auto merge = [&](AttentionBackend& backend, const std::vector<float>& o, bool unscrambling,
                       const BackendRowTransform* set) {
        BackendBuffer o_buffer = Upload(backend, o);
        BackendBuffer m_buffer = Upload(backend, m);
        BackendBuffer l_buffer = Upload(backend, l);
        BackendBuffer index_buffer = Upload(backend, index);
        BackendBuffer out_o = AllocateFloats(backend, kRows * head_dim);
        BackendBuffer out_m = AllocateFloats(backend, kRows);
        BackendBuffer out_l = AllocateFloats(backend, kRows);
        MergeArgs args{.o = o_buffer.as<float>(),
                       .m = m_buffer.as<float>(),
                       .l = l_buffer.as<float>(),
                       .n_parts = kParts,
                       .n_rows = kRows,
                       .head_dim = head_dim,
                       .out_o = out_o.as<float>(),
                       .out_m = out_m.as<float>(),
                       .out_l = out_l.as<float>()};
        if (unscrambling) {
          args.unscramble = set->set();
          args.unscramble_index = index_buffer.as<int32_t>();
        }
        const absl::Status status = backend.MergePartials(args);
        EXPECT_TRUE(status.ok()) << status;
        std::vector<float> result = Download(backend, out_o, kRows * head_dim);
        for (const float value : Download(backend, out_m, kRows)) result.push_back(value);
        for (const float value : Download(backend, out_l, kRows)) result.push_back(value);
        return result;
      };
      const std::vector<float> expected = merge(**cpu, plain, false, nullptr);
      EXPECT_LE(RelativeError(merge(*backend_, wire, true, &unscramble), expected), 1e-5);
    }
  }
}

// The querier's step: its local partial attention writes part 0 and the unscrambling merge is
// launched right after it (it starts while that partial ends). A merge that read a part before
// the partial's end would merge the stale rows left there.
TEST_P(BackendTest, UnscramblingMergeWaitsForTheLocalPartial) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  ASSERT_OK(cpu);
  std::mt19937 rng(19);
  const AttentionShape shape = {1, 4096, 32, 8, 128, KvDType::kF16, false};
  constexpr int kParts = 3;
  const int rows = shape.n_heads;
  const std::vector<Scrambler> scramblers = ScramblersOf(kParts - 1, shape.head_dim, Mixer::kSphps);
  ASSERT_EQ(scramblers[0].dim(), shape.head_dim);  // a power of two: rows are not padded
  ASSERT_OK_AND_ASSIGN(
      const BackendRowTransform unscramble,
      BackendRowTransform::UploadSet(*backend_, TransformsOf(scramblers, &Scrambler::inverse)));
  const std::vector<float> q = RandomFloats(rng, rows * shape.head_dim);
  const size_t kv_size = static_cast<size_t>(shape.n_kv) * shape.n_kv_heads * shape.head_dim;
  const KvData k = EncodeKv(RandomFloats(rng, kv_size), shape.dtype);
  const KvData v = EncodeKv(RandomFloats(rng, kv_size), shape.dtype);
  // Parts 1 and 2 as the compute node sends them (scrambled); part 0 stale until the partial.
  std::vector<float> plain_o = RandomFloats(rng, kParts * rows * shape.head_dim, 100.0f);
  std::vector<float> wire_o = plain_o;
  std::vector<float> m = RandomFloats(rng, kParts * rows);
  std::vector<float> l(kParts * rows, 1.0f);
  std::vector<int32_t> index(kParts * rows, -1);
  for (int row = rows; row < kParts * rows; ++row) {
    index[row] = row / rows - 1;
    const std::vector<float> scrambled =
        TransformOn(**cpu, scramblers[index[row]].forward(),
                    RowOf(plain_o, shape.head_dim, row, shape.head_dim));
    std::copy(scrambled.begin(), scrambled.end(), wire_o.begin() + row * shape.head_dim);
  }
  auto step = [&](AttentionBackend& backend, const std::vector<float>& parts, bool unscrambling) {
    BackendBuffer q_buffer = Upload(backend, q);
    BackendBuffer k_buffer = Upload(backend, k.bytes);
    BackendBuffer v_buffer = Upload(backend, v.bytes);
    BackendBuffer o_buffer = Upload(backend, parts);
    BackendBuffer m_buffer = Upload(backend, m);
    BackendBuffer l_buffer = Upload(backend, l);
    BackendBuffer index_buffer = Upload(backend, index);
    BackendBuffer out = AllocateFloats(backend, rows * (shape.head_dim + 2));
    // Part 0 is the first rows of o, m and l.
    EXPECT_OK(backend.PartialAttention(
        ArgsOf(shape, 0.1f, q_buffer, k_buffer, v_buffer, {}, {}, o_buffer, m_buffer, l_buffer)));
    MergeArgs args{.o = o_buffer.as<float>(),
                   .m = m_buffer.as<float>(),
                   .l = l_buffer.as<float>(),
                   .n_parts = kParts,
                   .n_rows = rows,
                   .head_dim = shape.head_dim,
                   .out_o = out.as<float>(),
                   .out_m = out.as<float>() + rows * shape.head_dim,
                   .out_l = out.as<float>() + rows * (shape.head_dim + 1)};
    if (unscrambling) {
      args.unscramble = unscramble.set();
      args.unscramble_index = index_buffer.as<int32_t>();
    }
    EXPECT_OK(backend.MergePartials(args));
    return Download(backend, out, rows * (shape.head_dim + 2));
  };
  EXPECT_LE(RelativeError(step(*backend_, wire_o, true), step(**cpu, plain_o, false)), 1e-5);
}

TEST_P(BackendTest, MergeRefusesAnUnscrambleOfTheWrongShape) {
  const Seed seed{};
  ASSERT_OK_AND_ASSIGN(const Scrambler scrambler, Scrambler::Create(80, seed, {}));
  ASSERT_OK_AND_ASSIGN(const BackendRowTransform inverse,
                       BackendRowTransform::Upload(*backend_, scrambler.inverse()));
  BackendBuffer o = AllocateFloats(*backend_, 2 * 128);
  BackendBuffer stats = Upload(*backend_, std::vector<float>{0, 1, 0, 1});
  BackendBuffer index = Upload(*backend_, std::vector<int32_t>{-1, 0});
  BackendBuffer out = AllocateFloats(*backend_, 128 + 2);
  MergeArgs args{.o = o.as<float>(),
                 .m = stats.as<float>(),
                 .l = stats.as<float>() + 2,
                 .n_parts = 2,
                 .n_rows = 1,
                 .head_dim = 64,
                 .out_o = out.as<float>(),
                 .out_m = out.as<float>() + 128,
                 .out_l = out.as<float>() + 129};
  args.unscramble = inverse.set();
  args.unscramble_index = index.as<int32_t>();
  EXPECT_THAT(backend_->MergePartials(args),  // it unscrambles to 80 columns, not 64
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("head_dim")));
  args.head_dim = 80;
  EXPECT_OK(backend_->MergePartials(args));
}

// The querier's scrambled queries ride on its local partial attention: the transform's rows equal
// a separate TransformRows, and the attention is the same as without them. Shapes: split decode
// (the merge launch carries the rows), one split, and prefill (a launch of their own).
TEST_P(BackendTest, PartialAttentionAlsoTransformsRows) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  ASSERT_OK(cpu);
  std::mt19937 rng(17);
  const std::vector<AttentionShape> shapes = {{1, 4096, 32, 8, 128, KvDType::kF16, false},
                                              {1, 64, 8, 8, 64, KvDType::kF16, false},
                                              {20, 300, 8, 2, 80, KvDType::kF32, true}};
  for (const AttentionShape& shape : shapes) {
    SCOPED_TRACE(::testing::Message() << "n_q " << shape.n_q << " n_kv " << shape.n_kv);
    const int rows = shape.n_q * shape.n_heads;
    const std::vector<Scrambler> scramblers = ScramblersOf(2, shape.head_dim, Mixer::kSphps);
    const std::vector<const RowTransform*> transforms =
        TransformsOf(scramblers, &Scrambler::inverse_transpose);
    ASSERT_OK_AND_ASSIGN(const BackendRowTransform set,
                         BackendRowTransform::UploadSet(*backend_, transforms));
    const std::vector<float> q = RandomFloats(rng, rows * shape.head_dim);
    const size_t kv_size = static_cast<size_t>(shape.n_kv) * shape.n_kv_heads * shape.head_dim;
    const KvData k = EncodeKv(RandomFloats(rng, kv_size), shape.dtype);
    const KvData v = EncodeKv(RandomFloats(rng, kv_size), shape.dtype);
    std::vector<int32_t> q_positions(shape.n_q), kv_positions(shape.n_kv), transform(2 * rows),
        source(2 * rows);
    for (int i = 0; i < shape.n_q; ++i) q_positions[i] = shape.n_kv - shape.n_q + i;
    for (int j = 0; j < shape.n_kv; ++j) kv_positions[j] = j;
    for (int i = 0; i < 2 * rows; ++i) {
      transform[i] = i / rows;  // q′ for two key blocks
      source[i] = i % rows;
    }
    BackendBuffer q_buffer = Upload(*backend_, q);
    BackendBuffer k_buffer = Upload(*backend_, k.bytes);
    BackendBuffer v_buffer = Upload(*backend_, v.bytes);
    BackendBuffer qp = Upload(*backend_, q_positions);
    BackendBuffer kp = Upload(*backend_, kv_positions);
    BackendBuffer transform_buffer = Upload(*backend_, transform);
    BackendBuffer source_buffer = Upload(*backend_, source);
    const int out_dim = transforms[0]->out_dim;
    BackendBuffer scrambled = AllocateFloats(*backend_, 2 * rows * out_dim);
    auto attend = [&](bool also_transform) {
      BackendBuffer o = AllocateFloats(*backend_, rows * shape.head_dim);
      BackendBuffer m = AllocateFloats(*backend_, rows);
      BackendBuffer l = AllocateFloats(*backend_, rows);
      PartialAttentionArgs args =
          ArgsOf(shape, 0.1f, q_buffer, k_buffer, v_buffer, qp, kp, o, m, l);
      if (also_transform) {
        RowTransformArgs& t = args.also_transform;
        t.in = q_buffer.as<float>();
        t.out = scrambled.as<float>();
        t.n_rows = 2 * rows;
        t.n_in_rows = rows;
        t.in_stride = shape.head_dim;
        t.out_stride = out_dim;
        t.transforms = set.set();
        t.transform = transform_buffer.as<int32_t>();
        t.source = source_buffer.as<int32_t>();
      }
      const absl::Status status = backend_->PartialAttention(args);
      EXPECT_TRUE(status.ok()) << status;
      std::vector<float> result = Download(*backend_, o, rows * shape.head_dim);
      for (const float value : Download(*backend_, m, rows)) result.push_back(value);
      for (const float value : Download(*backend_, l, rows)) result.push_back(value);
      return result;
    };
    EXPECT_EQ(attend(true), attend(false));
    const std::vector<float> actual = Download(*backend_, scrambled, 2 * rows * out_dim);
    for (int i = 0; i < 2 * rows; ++i) {
      const std::vector<float> expected = TransformOn(
          **cpu, *transforms[transform[i]], RowOf(q, shape.head_dim, source[i], shape.head_dim));
      ASSERT_LE(RelativeError(RowOf(actual, out_dim, i, out_dim), expected), 1e-6) << "row " << i;
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
