// DRAGON's arithmetic: the two sides' mixtures combine to the mixture over every chunk, the
// speculative-sampling verdict follows the target distribution (chi-square over many seeds),
// truncation and the wire format round-trip, and malformed distributions are refused.
#include "node/dragon_aggregation.h"

#include <cmath>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::node {
namespace {

using ::silo::testing::StatusIs;

std::vector<float> RandomLogits(int n, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0, 2);
  std::vector<float> logits(n);
  for (float& x : logits) x = normal(generator);
  return logits;
}

TEST(DragonAggregationTest, SidesMixToTheMixtureOverEveryChunk) {
  constexpr int kVocab = 50;
  const std::vector<float> logits = RandomLogits(5 * kVocab, 1);
  const std::vector<float> scores = {0.9f, 0.4f, -0.3f, 0.7f, 0.1f};
  for (const float temperature : {0.0f, 0.7f}) {
    ASSERT_OK_AND_ASSIGN(const SideMixture all, MixStreams(logits, scores, temperature));
    const std::span<const float> l(logits);
    const std::span<const float> s(scores);
    ASSERT_OK_AND_ASSIGN(const SideMixture a,
                         MixStreams(l.subspan(0, 2 * kVocab), s.subspan(0, 2), temperature));
    ASSERT_OK_AND_ASSIGN(const SideMixture b,
                         MixStreams(l.subspan(2 * kVocab), s.subspan(2), temperature));
    const std::vector<float> mixed = MixSides(a, b);
    double sum = 0;
    for (int i = 0; i < kVocab; ++i) {
      EXPECT_NEAR(mixed[i], all.p[i], 1e-6);
      sum += mixed[i];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_NEAR(std::log(std::exp(a.h) + std::exp(b.h)), all.h, 1e-5);
  }
  EXPECT_THAT(MixStreams(logits, {}, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MixStreams(std::span<const float>(logits).subspan(1), scores, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MixStreams(logits, scores, -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

// One step of sampling-mode DRAGON: a draft drawn from the proposal, verified against the
// target. The committed tokens must follow the target: chi-square over 40,000 seeds.
TEST(DragonAggregationTest, VerifiedDraftsFollowTheTargetDistribution) {
  const std::vector<float> target = {0.30f, 0.05f, 0.20f, 0.15f, 0.10f, 0.12f, 0.08f};
  const std::vector<float> proposal = {0.05f, 0.40f, 0.10f, 0.15f, 0.20f, 0.02f, 0.08f};
  constexpr int kTrials = 40000;
  std::vector<int> counts(target.size(), 0);
  int accepted = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::mt19937_64 generator(static_cast<uint64_t>(trial));
    const int32_t draft = DraftToken(proposal, false, generator);
    const DraftVerdict verdict = VerifyDraft(target, proposal, draft, false, generator);
    EXPECT_EQ(verdict.accepted, verdict.token == draft);
    ++counts[verdict.token];
    accepted += verdict.accepted ? 1 : 0;
  }
  double chi_square = 0;
  for (size_t i = 0; i < target.size(); ++i) {
    const double expected = target[i] * kTrials;
    chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  // 6 degrees of freedom: P(χ² > 22.46) = 0.001.
  EXPECT_LT(chi_square, 22.46);
  // The drafts alone (the proposal) fail the same test: the rule is doing the work.
  double proposal_chi_square = 0;
  for (size_t i = 0; i < target.size(); ++i) {
    const double expected = target[i] * kTrials;
    const double observed = proposal[i] * kTrials;
    proposal_chi_square += (observed - expected) * (observed - expected) / expected;
  }
  EXPECT_GT(proposal_chi_square, 1000);
  // Acceptance is Σ min(p, q) = 0.55 in expectation.
  EXPECT_NEAR(static_cast<double>(accepted) / kTrials, 0.55, 0.02);
}

TEST(DragonAggregationTest, GreedyCommitsTheTargetArgmax) {
  const std::vector<float> target = {0.1f, 0.6f, 0.3f};
  const std::vector<float> proposal = {0.1f, 0.2f, 0.7f};
  std::mt19937_64 generator(0);
  EXPECT_EQ(DraftToken(proposal, true, generator), 2);
  const DraftVerdict rejected = VerifyDraft(target, proposal, 2, true, generator);
  EXPECT_EQ(rejected.token, 1);
  EXPECT_FALSE(rejected.accepted);
  const DraftVerdict accepted = VerifyDraft(target, target, 1, true, generator);
  EXPECT_TRUE(accepted.accepted);
}

TEST(DragonAggregationTest, TruncationKeepsTheTopMassAndRoundTripsOnTheWire) {
  const std::vector<float> p = {0.05f, 0.5f, 0.02f, 0.3f, 0.13f};
  const std::vector<float> truncated = TruncateTopP(p, 0.9f);
  // 0.5 + 0.3 + 0.13 reaches 0.9: three tokens, renormalized.
  EXPECT_FLOAT_EQ(truncated[0], 0);
  EXPECT_FLOAT_EQ(truncated[2], 0);
  EXPECT_NEAR(truncated[1], 0.5 / 0.93, 1e-6);
  const v1::TokenDistribution wire = EncodeDistribution(truncated, false);
  ASSERT_TRUE(wire.has_top_p());
  EXPECT_THAT(wire.top_p().indices(), ::testing::ElementsAre(1, 3, 4));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> back, DecodeDistribution(wire, 5));
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(back[i], truncated[i], 1e-3);

  const v1::TokenDistribution full = EncodeDistribution(p, true);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> exact, DecodeDistribution(full, 5));
  double sum = 0;
  for (const float x : p) sum += x;
  for (size_t i = 0; i < p.size(); ++i) EXPECT_FLOAT_EQ(exact[i], static_cast<float>(p[i] / sum));
}

TEST(DragonAggregationTest, MalformedDistributionsAreRefused) {
  const std::vector<float> p = {0.25f, 0.25f, 0.5f};
  EXPECT_THAT(DecodeDistribution(EncodeDistribution(p, true), 4),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DecodeDistribution(v1::TokenDistribution(), 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::TokenDistribution repeated = EncodeDistribution(p, false);
  repeated.mutable_top_p()->set_indices(1, repeated.top_p().indices(0));
  EXPECT_THAT(DecodeDistribution(repeated, 3), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::TokenDistribution out_of_range = EncodeDistribution(p, false);
  out_of_range.mutable_top_p()->set_indices(0, 3);
  EXPECT_THAT(DecodeDistribution(out_of_range, 3), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::TokenDistribution short_values = EncodeDistribution(p, false);
  short_values.mutable_top_p()->mutable_values()->pop_back();
  EXPECT_THAT(DecodeDistribution(short_values, 3), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<float> negative = {0.5f, -0.1f, 0.6f};
  EXPECT_THAT(DecodeDistribution(EncodeDistribution(negative, true), 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<float> nan = {0.5f, NAN, 0.6f};
  EXPECT_THAT(DecodeDistribution(EncodeDistribution(nan, true), 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<float> zero = {0, 0, 0};
  EXPECT_THAT(DecodeDistribution(EncodeDistribution(zero, true), 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::node
