// Bookkeeping of the KV cache: lengths, forks, truncation into a shared prefix, capacity.
// (What attention computes over the rows is tested in transformer_test.cc.)
#include "engine/kv_cache.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

using ::silo::testing::IsOkAndHolds;
using ::silo::testing::StatusIs;

ModelConfig Config() {
  ModelConfig config;
  config.n_layers = 2;
  config.n_heads = 2;
  config.n_kv_heads = 1;
  config.head_dim = 4;
  return config;
}

// Appends rows whose K and V elements all equal their position.
void Append(KvCache& cache, SequenceId s, const std::vector<int32_t>& positions) {
  ASSERT_OK_AND_ASSIGN(int64_t first, cache.AppendRows(s, positions));
  for (int32_t layer = 0; layer < 2; ++layer) {
    std::vector<float> rows;
    for (int32_t p : positions) rows.insert(rows.end(), 4, static_cast<float>(p));
    cache.WriteRows(s, layer, first, static_cast<int64_t>(positions.size()), rows.data(),
                    rows.data());
  }
}

std::vector<int32_t> VisiblePositions(const KvCache& cache, SequenceId s) {
  std::vector<int32_t> positions;
  for (const KvCache::Segment& segment : cache.Segments(s, 1)) {
    for (int64_t r = 0; r < segment.n_rows; ++r) {
      positions.push_back(segment.positions[r]);
      EXPECT_EQ(static_cast<const float*>(segment.k)[r * 4], segment.positions[r]);
    }
  }
  return positions;
}

TEST(KvCacheTest, ForkSeesAPrefixAndTruncationCanReachIntoIt) {
  KvCache cache(Config(), attention::KvDType::kF32, 100);
  const SequenceId root = cache.NewSequence();
  Append(cache, root, {0, 1, 2, 3});
  ASSERT_OK_AND_ASSIGN(SequenceId child, cache.Fork(root, 3));
  Append(cache, child, {3, 4});
  EXPECT_THAT(VisiblePositions(cache, child), ::testing::ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(cache.LastPosition(child), IsOkAndHolds(std::optional<int32_t>(4)));
  // Rolling the child back past the fork point leaves it a shorter view of the parent.
  ASSERT_OK(cache.Truncate(child, 2));
  EXPECT_THAT(VisiblePositions(cache, child), ::testing::ElementsAre(0, 1));
  Append(cache, child, {7});
  EXPECT_THAT(VisiblePositions(cache, child), ::testing::ElementsAre(0, 1, 7));
  // The parent may now drop rows the child no longer sees.
  ASSERT_OK(cache.Truncate(root, 2));
  EXPECT_THAT(cache.Truncate(root, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(cache.used_tokens(), 2 + 1);
}

TEST(KvCacheTest, ForkOfAForkChainsPrefixes) {
  KvCache cache(Config(), attention::KvDType::kF32, 100);
  const SequenceId a = cache.NewSequence();
  Append(cache, a, {0, 1});
  ASSERT_OK_AND_ASSIGN(SequenceId b, cache.Fork(a));
  Append(cache, b, {2, 3});
  ASSERT_OK_AND_ASSIGN(SequenceId c, cache.Fork(b, 3));
  Append(cache, c, {10});
  EXPECT_THAT(VisiblePositions(cache, c), ::testing::ElementsAre(0, 1, 2, 10));
  EXPECT_THAT(cache.Length(c), IsOkAndHolds(4));
}

TEST(KvCacheTest, CapacityAndUnknownSequences) {
  KvCache cache(Config(), attention::KvDType::kF32, 3);
  const SequenceId s = cache.NewSequence();
  Append(cache, s, {0, 1});
  EXPECT_THAT(cache.AppendRows(s, std::vector<int32_t>{2, 3}),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(cache.Length(s), IsOkAndHolds(2));
  EXPECT_THAT(cache.Length(s + 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(cache.Fork(s + 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(cache.Fork(s, 5), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(cache.Free(s + 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(cache.LastPosition(cache.NewSequence()), IsOkAndHolds(std::nullopt));
  ASSERT_OK(cache.Free(s));
  EXPECT_EQ(cache.used_tokens(), 0);
}

}  // namespace
}  // namespace silo::engine
