#include "attention/scrambler.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "attention/key_schedule.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/attention/attention_testing.h"
#include "tests/testing/status_matchers.h"

namespace silo::attention {
namespace {

using ::silo::attention::testing::RandomFloats;
using ::silo::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::FieldsAre;

Seed MakeSeed(uint8_t first) {
  Seed seed{};
  seed[0] = first;
  seed[31] = 0x5a;
  return seed;
}

// Applies a transform to rows on the host, through the CPU backend.
std::vector<float> Apply(const RowTransform& transform, const std::vector<float>& in) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  EXPECT_TRUE(cpu.ok());
  return silo::attention::testing::TransformOn(**cpu, transform, in);
}

double Dot(const float* a, const float* b, int n) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

class ScramblerTest : public ::testing::TestWithParam<std::tuple<Mixer, int>> {};

TEST_P(ScramblerTest, ScrambledScoresEqualPlainScores) {
  const auto [mixer, head_dim] = GetParam();
  ASSERT_OK_AND_ASSIGN(const Scrambler phi, Scrambler::Create(head_dim, MakeSeed(1), {mixer, 2}));
  EXPECT_EQ(phi.dim(), mixer == Mixer::kSphps ? (head_dim == 80 ? 128 : head_dim) : head_dim);
  std::mt19937 rng(head_dim);
  constexpr int kRows = 50;
  const std::vector<float> q = RandomFloats(rng, kRows * head_dim);
  const std::vector<float> k = RandomFloats(rng, kRows * head_dim);
  const std::vector<float> q_scrambled = Apply(phi.inverse_transpose(), q);
  const std::vector<float> k_scrambled = Apply(phi.forward(), k);
  double max_error = 0, max_score = 0;
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < kRows; ++j) {
      const double plain = Dot(&q[i * head_dim], &k[j * head_dim], head_dim);
      const double scrambled =
          Dot(&q_scrambled[i * phi.dim()], &k_scrambled[j * phi.dim()], phi.dim());
      max_error = std::max(max_error, std::abs(plain - scrambled));
      max_score = std::max(max_score, std::abs(plain));
    }
  }
  EXPECT_LE(max_error / max_score, 1e-5);
  // And the scrambled rows are not the plain ones.
  EXPECT_GT(std::abs(k_scrambled[0] - k[0]) + std::abs(k_scrambled[1] - k[1]), 1e-3);
}

TEST_P(ScramblerTest, InverseUndoesForward) {
  const auto [mixer, head_dim] = GetParam();
  ASSERT_OK_AND_ASSIGN(const Scrambler psi, Scrambler::Create(head_dim, MakeSeed(2), {mixer, 2}));
  std::mt19937 rng(7);
  const std::vector<float> v = RandomFloats(rng, 20 * head_dim);
  const std::vector<float> back = Apply(psi.inverse(), Apply(psi.forward(), v));
  ASSERT_EQ(back.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(back[i], v[i], 1e-5) << i;
}

TEST_P(ScramblerTest, DependsOnlyOnTheSeed) {
  const auto [mixer, head_dim] = GetParam();
  ASSERT_OK_AND_ASSIGN(const Scrambler a, Scrambler::Create(head_dim, MakeSeed(3), {mixer, 2}));
  ASSERT_OK_AND_ASSIGN(const Scrambler b, Scrambler::Create(head_dim, MakeSeed(3), {mixer, 2}));
  ASSERT_OK_AND_ASSIGN(const Scrambler c, Scrambler::Create(head_dim, MakeSeed(4), {mixer, 2}));
  EXPECT_EQ(a.forward().pre_scale, b.forward().pre_scale);
  EXPECT_EQ(a.forward().matrix, b.forward().matrix);
  EXPECT_EQ(a.forward().post_gather, b.forward().post_gather);
  EXPECT_NE(a.forward().pre_scale, c.forward().pre_scale);
  for (const float scale : a.forward().pre_scale) {
    EXPECT_GE(std::abs(scale), 0.5f);
    EXPECT_LE(std::abs(scale), 2.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(MixersAndHeadDims, ScramblerTest,
                         ::testing::Combine(::testing::Values(Mixer::kSphps, Mixer::kDense),
                                            ::testing::Values(64, 80, 128)));

TEST(Scrambler, DenseMatrixIsOrthogonal) {
  ASSERT_OK_AND_ASSIGN(const Scrambler dense, Scrambler::Create(64, MakeSeed(5), {Mixer::kDense}));
  const std::vector<float>& q = dense.forward().matrix;
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < 64; ++j) {
      ASSERT_NEAR(Dot(&q[i * 64], &q[j * 64], 64), i == j ? 1.0 : 0.0, 1e-5);
    }
  }
}

TEST(Scrambler, RejectsBadOptions) {
  EXPECT_THAT(Scrambler::Create(0, MakeSeed(1), {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Scrambler::Create(64, MakeSeed(1), {Mixer::kSphps, 0.5}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("max_scale")));
}

// Why Φ is S·P·H·P·S and not a dense random matrix G: with f16 keys, K·G and q·G^{-T} lose
// accuracy in proportion to cond(G), which grows with d for a Gaussian G, while cond(Φ) stays
// at most max_scale⁴. Prints both errors; asserts the ordering.
TEST(Scrambler, F16ErrorOfPhiIsBelowADenseRandomMatrix) {
  constexpr int kDim = 128, kRows = 64;
  std::mt19937 rng(11);
  const std::vector<float> q = RandomFloats(rng, kRows * kDim);
  const std::vector<float> k = RandomFloats(rng, kRows * kDim);
  auto f16 = [](std::vector<float> values) {
    for (float& x : values) x = HalfToFloat(FloatToHalf(x));
    return values;
  };
  auto score_error = [&](const std::vector<float>& qs, const std::vector<float>& ks) {
    double max_error = 0, max_score = 0;
    for (int i = 0; i < kRows; ++i) {
      for (int j = 0; j < kRows; ++j) {
        const double plain = Dot(&q[i * kDim], &k[j * kDim], kDim);
        max_error = std::max(max_error, std::abs(Dot(&qs[i * kDim], &ks[j * kDim], kDim) - plain));
        max_score = std::max(max_score, std::abs(plain));
      }
    }
    return max_error / max_score;
  };
  const double plain_error = score_error(q, f16(k));
  ASSERT_OK_AND_ASSIGN(const Scrambler phi, Scrambler::Create(kDim, MakeSeed(6), {}));
  const double phi_error =
      score_error(Apply(phi.inverse_transpose(), q), f16(Apply(phi.forward(), k)));
  // Dense Gaussian G and its inverse transpose (Gauss–Jordan in f64).
  std::vector<double> g(kDim * kDim), inverse(kDim * kDim, 0.0);
  std::normal_distribution<double> normal;
  for (double& x : g) x = normal(rng);
  std::vector<double> work = g;
  for (int i = 0; i < kDim; ++i) inverse[i * kDim + i] = 1;
  for (int c = 0; c < kDim; ++c) {
    int pivot = c;
    for (int r = c + 1; r < kDim; ++r) {
      if (std::abs(work[r * kDim + c]) > std::abs(work[pivot * kDim + c])) pivot = r;
    }
    for (int j = 0; j < kDim; ++j) {
      std::swap(work[c * kDim + j], work[pivot * kDim + j]);
      std::swap(inverse[c * kDim + j], inverse[pivot * kDim + j]);
    }
    const double diagonal = work[c * kDim + c];
    for (int j = 0; j < kDim; ++j) {
      work[c * kDim + j] /= diagonal;
      inverse[c * kDim + j] /= diagonal;
    }
    for (int r = 0; r < kDim; ++r) {
      if (r == c) continue;
      const double factor = work[r * kDim + c];
      for (int j = 0; j < kDim; ++j) {
        work[r * kDim + j] -= factor * work[c * kDim + j];
        inverse[r * kDim + j] -= factor * inverse[c * kDim + j];
      }
    }
  }
  auto multiply = [&](const std::vector<float>& rows, bool by_inverse_transpose) {
    std::vector<float> out(rows.size());
    for (int r = 0; r < kRows; ++r) {
      for (int c = 0; c < kDim; ++c) {
        double sum = 0;
        for (int j = 0; j < kDim; ++j) {
          const double entry = by_inverse_transpose ? inverse[c * kDim + j] : g[j * kDim + c];
          sum += rows[r * kDim + j] * entry;
        }
        out[r * kDim + c] = static_cast<float>(sum);
      }
    }
    return out;
  };
  const double dense_error = score_error(multiply(q, true), f16(multiply(k, false)));
  std::printf(
      "f16 keys, relative score error: plain %.2e, Φ (sphps, max_scale 2) %.2e, "
      "dense Gaussian %.2e\n",
      plain_error, phi_error, dense_error);
  EXPECT_LT(phi_error, dense_error);
  EXPECT_LT(phi_error, 3e-3);
}

TEST(BackendRowTransform, RejectsParametersThatDoNotMatchDim) {
  auto cpu = CreateBackend(BackendKind::kCpu);
  ASSERT_OK(cpu);
  ASSERT_OK_AND_ASSIGN(const Scrambler phi, Scrambler::Create(64, MakeSeed(8), {}));
  RowTransform bad = phi.forward();
  bad.pre_gather[3] = 64;  // out of [0, dim)
  EXPECT_THAT(BackendRowTransform::Upload(**cpu, bad),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("dim 64")));
  bad = phi.forward();
  bad.post_scale.pop_back();
  EXPECT_THAT(BackendRowTransform::Upload(**cpu, bad),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(BackendRowTransform::Upload(**cpu, phi.forward()));
}

TEST(KeySchedule, PlansEachScope) {
  const std::vector<int32_t> chunks = {5, 0, 3};
  ASSERT_OK_AND_ASSIGN(auto session, PlanKeyBlocks(chunks, KeyScope::kSession, 0));
  EXPECT_THAT(session, ElementsAre(FieldsAre(0, 0, 8)));
  ASSERT_OK_AND_ASSIGN(auto per_chunk, PlanKeyBlocks(chunks, KeyScope::kChunk, 0));
  EXPECT_THAT(per_chunk, ElementsAre(FieldsAre(0, 0, 5), FieldsAre(1, 5, 3)));
  ASSERT_OK_AND_ASSIGN(auto blocks, PlanKeyBlocks(chunks, KeyScope::kBlock, 2));
  EXPECT_THAT(blocks, ElementsAre(FieldsAre(0, 0, 2), FieldsAre(1, 2, 2), FieldsAre(2, 4, 1),
                                  FieldsAre(3, 5, 2), FieldsAre(4, 7, 1)));
  EXPECT_THAT(PlanKeyBlocks(chunks, KeyScope::kBlock, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PlanKeyBlocks(std::vector<int32_t>{-1}, KeyScope::kChunk, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Block steps that would overflow int32 if added to the row.
  ASSERT_OK_AND_ASSIGN(auto wide, PlanKeyBlocks(std::vector<int32_t>{2'000'000'000},
                                                KeyScope::kBlock, 1'500'000'000));
  EXPECT_THAT(
      wide, ElementsAre(FieldsAre(0, 0, 1'500'000'000), FieldsAre(1, 1'500'000'000, 500'000'000)));
}

}  // namespace
}  // namespace silo::attention
