#include "attention/seeded_generator.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "attention/scrambler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace silo::attention {
namespace {

Seed CountingSeed() {
  Seed seed;
  for (int i = 0; i < 32; ++i) seed[i] = static_cast<uint8_t>(i);
  return seed;
}

// RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block counter 1.
TEST(ChaCha20, MatchesTheRfc8439BlockFunctionVector) {
  const std::array<uint8_t, 12> nonce = {0, 0, 0, 9, 0, 0, 0, 0x4a, 0, 0, 0, 0};
  const std::array<uint8_t, 64> expected = {
      0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3,
      0x20, 0x71, 0xc4, 0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22,
      0xaa, 0x9a, 0xc3, 0xd4, 0x6c, 0x4e, 0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa,
      0x09, 0x14, 0xc2, 0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2, 0xb5, 0x12, 0x9c, 0xd1,
      0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e};
  EXPECT_EQ(ChaCha20Block(CountingSeed(), 1, nonce), expected);
}

TEST(SeededGenerator, IsDeterministicPerSeedAndStream) {
  SeededGenerator a(CountingSeed(), 7), b(CountingSeed(), 7), c(CountingSeed(), 8);
  Seed other = CountingSeed();
  other[31] ^= 1;
  SeededGenerator d(other, 7);
  std::vector<uint64_t> from_a, from_b, from_c, from_d;
  for (int i = 0; i < 100; ++i) {  // crosses several 64-byte blocks
    from_a.push_back(a.NextUint64());
    from_b.push_back(b.NextUint64());
    from_c.push_back(c.NextUint64());
    from_d.push_back(d.NextUint64());
  }
  EXPECT_EQ(from_a, from_b);
  EXPECT_NE(from_a, from_c);
  EXPECT_NE(from_a, from_d);
}

TEST(SeededGenerator, DrawsInRangeWithPlausibleMoments) {
  SeededGenerator generator(CountingSeed());
  constexpr int kDraws = 20000;
  std::vector<int> counts(7, 0);
  double sum = 0, sum_squares = 0, uniform_sum = 0;
  for (int i = 0; i < kDraws; ++i) {
    const uint64_t below = generator.Below(7);
    ASSERT_LT(below, 7u);
    ++counts[below];
    const double u = generator.UniformDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    uniform_sum += u;
    const double x = generator.Normal();
    sum += x;
    sum_squares += x * x;
  }
  for (const int count : counts) EXPECT_NEAR(count, kDraws / 7.0, 6 * std::sqrt(kDraws / 7.0));
  EXPECT_NEAR(uniform_sum / kDraws, 0.5, 0.01);
  EXPECT_NEAR(sum / kDraws, 0.0, 0.03);
  EXPECT_NEAR(sum_squares / kDraws, 1.0, 0.05);
}

TEST(RowPermutation, IsAPermutationThatDependsOnTheSeed) {
  const std::vector<int32_t> permutation = RowPermutation(CountingSeed(), 1000);
  std::vector<int32_t> sorted = permutation;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  Seed other = CountingSeed();
  other[0] ^= 0x80;
  EXPECT_NE(RowPermutation(other, 1000), permutation);
  const std::vector<int32_t> inverse = InversePermutation(permutation);
  for (int32_t i = 0; i < 1000; ++i) ASSERT_EQ(inverse[permutation[i]], i);
}

}  // namespace
}  // namespace silo::attention
