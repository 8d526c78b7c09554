#include "engine/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, -1.0f, 2.5f};

TEST(SamplerTest, GreedyTakesTheArgmaxAndReportsItsLogProbability) {
  Sampler sampler({});
  const SampledToken token = sampler.Sample(kLogits, {});
  EXPECT_EQ(token.id, 1);
  double total = 0;
  for (float logit : kLogits) total += std::exp(logit);
  EXPECT_NEAR(token.logprob, 3.0 - std::log(total), 1e-6);
}

TEST(SamplerTest, RepetitionPenaltyMovesAwayFromSeenTokens) {
  Sampler sampler({.repetition_penalty = 2.0f});
  EXPECT_EQ(sampler.Sample(kLogits, std::vector<int32_t>{1}).id, 4);  // 3/2 < 2.5
  EXPECT_EQ(sampler.Sample(kLogits, std::vector<int32_t>{}).id, 1);
}

TEST(SamplerTest, TopKOfOneIsGreedy) {
  Sampler sampler({.temperature = 1.5f, .top_k = 1, .seed = 7});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sampler.Sample(kLogits, {}).id, 1);
}

TEST(SamplerTest, SameSeedSameTokensOtherSeedOtherTokens) {
  auto draw = [](uint64_t seed) {
    Sampler sampler({.temperature = 1.0f, .seed = seed});
    std::vector<int32_t> ids;
    ids.reserve(64);
    for (int i = 0; i < 64; ++i) ids.push_back(sampler.Sample(kLogits, {}).id);
    return ids;
  };
  EXPECT_EQ(draw(3), draw(3));
  EXPECT_NE(draw(3), draw(4));
}

// Frequencies follow softmax(logits / T) within a chi-square bound (4 degrees of freedom,
// p = 0.001 → 18.47).
TEST(SamplerTest, SamplesFollowTheTemperedDistribution) {
  constexpr float kTemperature = 0.8f;
  constexpr int kDraws = 40000;
  Sampler sampler({.temperature = kTemperature, .seed = 11});
  std::vector<int> counts(kLogits.size());
  for (int i = 0; i < kDraws; ++i) ++counts[sampler.Sample(kLogits, {}).id];
  double total = 0;
  for (float logit : kLogits) total += std::exp(logit / kTemperature);
  double chi_square = 0;
  for (size_t i = 0; i < kLogits.size(); ++i) {
    const double expected = kDraws * std::exp(kLogits[i] / kTemperature) / total;
    chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi_square, 18.47);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // Probabilities at T = 1: 1 → 0.42, 4 → 0.26, 2 → 0.16, 0 → 0.06, 3 → 0.01 (about).
  Sampler sampler({.temperature = 1.0f, .top_p = 0.6f, .seed = 5});
  std::map<int32_t, int> seen;
  for (int i = 0; i < 2000; ++i) ++seen[sampler.Sample(kLogits, {}).id];
  EXPECT_EQ(seen.size(), 2u);  // tokens 1 and 4 reach 0.6
  EXPECT_TRUE(seen.contains(1) && seen.contains(4));
}

TEST(SamplerTest, InvalidParametersAreRejected) {
  EXPECT_THAT(ValidateSamplingParams({.temperature = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateSamplingParams({.temperature = NAN}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateSamplingParams({.top_k = -2}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateSamplingParams({.top_p = 0}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateSamplingParams({.top_p = 1.5f}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateSamplingParams({.repetition_penalty = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(ValidateSamplingParams({.temperature = 0.7f, .top_k = 40, .top_p = 0.9f}));
}

}  // namespace
}  // namespace silo::engine
