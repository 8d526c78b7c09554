// The global merge of owners' top-k lists: by score it equals sorting the union; reciprocal rank
// fusion interleaves the lists by rank; ties are broken deterministically.
#include "retrieval/federated_merge.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::StatusIs;

std::vector<std::pair<int, int>> ListsAndRanks(const std::vector<MergedHit>& hits) {
  std::vector<std::pair<int, int>> out;
  for (const MergedHit& hit : hits) out.emplace_back(hit.list, hit.rank);
  return out;
}

TEST(MergeRankedLists, ByScoreEqualsTheTopOfTheUnion) {
  const std::vector<std::vector<float>> scores = {{0.9F, 0.5F, 0.1F}, {0.8F, 0.7F}, {}, {0.95F}};
  ASSERT_OK_AND_ASSIGN(const std::vector<MergedHit> hits,
                       MergeRankedLists(scores, 4, MergeRule::kScore));
  EXPECT_EQ(ListsAndRanks(hits),
            (std::vector<std::pair<int, int>>{{3, 0}, {0, 0}, {1, 0}, {1, 1}}));
  EXPECT_FLOAT_EQ(static_cast<float>(hits[0].merged_score), 0.95F);
}

TEST(MergeRankedLists, KeepsAllWhenKExceedsTheUnion) {
  const std::vector<std::vector<float>> scores = {{0.2F}, {0.3F}};
  ASSERT_OK_AND_ASSIGN(const std::vector<MergedHit> hits,
                       MergeRankedLists(scores, 10, MergeRule::kScore));
  EXPECT_EQ(ListsAndRanks(hits), (std::vector<std::pair<int, int>>{{1, 0}, {0, 0}}));
}

TEST(MergeRankedLists, ReciprocalRankInterleavesByRankWhateverTheScales) {
  // List 1's scores are on another scale; fusion ranks by position only.
  const std::vector<std::vector<float>> scores = {{0.9F, 0.8F}, {90.0F, 80.0F, 70.0F}};
  ASSERT_OK_AND_ASSIGN(const std::vector<MergedHit> hits,
                       MergeRankedLists(scores, 5, MergeRule::kReciprocalRank));
  EXPECT_EQ(ListsAndRanks(hits),
            (std::vector<std::pair<int, int>>{{0, 0}, {1, 0}, {0, 1}, {1, 1}, {1, 2}}));
  EXPECT_DOUBLE_EQ(hits[0].merged_score, 1.0 / 61.0);
  EXPECT_DOUBLE_EQ(hits[4].merged_score, 1.0 / 63.0);
}

TEST(MergeRankedLists, TiesGoToTheLowerListThenRank) {
  const std::vector<std::vector<float>> scores = {{0.5F, 0.5F}, {0.5F}};
  ASSERT_OK_AND_ASSIGN(const std::vector<MergedHit> hits,
                       MergeRankedLists(scores, 3, MergeRule::kScore));
  EXPECT_EQ(ListsAndRanks(hits), (std::vector<std::pair<int, int>>{{0, 0}, {0, 1}, {1, 0}}));
}

TEST(MergeRankedLists, RejectsKBelowOne) {
  const std::vector<std::vector<float>> scores = {{0.5F}};
  EXPECT_THAT(MergeRankedLists(scores, 0, MergeRule::kScore),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseMergeRule, KnowsBothNames) {
  ASSERT_OK_AND_ASSIGN(const MergeRule score, ParseMergeRule("score"));
  EXPECT_EQ(score, MergeRule::kScore);
  ASSERT_OK_AND_ASSIGN(const MergeRule rrf, ParseMergeRule("rrf"));
  EXPECT_EQ(rrf, MergeRule::kReciprocalRank);
  EXPECT_THAT(ParseMergeRule("borda"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::retrieval
