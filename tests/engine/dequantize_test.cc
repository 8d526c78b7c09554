#include "engine/dequantize.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/dequantize_fixture.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;

// Every supported type against gguf-py's dequantization of the same random blocks.
TEST(Dequantize, MatchesGgufPyOnRandomBlocks) {
  const auto cases = testing::ReadDequantizeFixture();
  std::set<uint32_t> covered;
  for (const auto& c : cases) {
    if (c.kind != "case") continue;
    SCOPED_TRACE(::testing::Message() << "type " << c.type);
    ASSERT_EQ(static_cast<int64_t>(c.expected.size()), c.n_elements);
    std::vector<float> out(c.n_elements);
    ASSERT_OK(DequantizeRow(static_cast<GgmlType>(c.type), c.bytes, out));
    float scale = 0;
    for (const float x : c.expected) scale = std::max(scale, std::abs(x));
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_NEAR(out[i], c.expected[i], 1e-6f * scale) << "element " << i;
    }
    covered.insert(c.type);
  }
  // F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, BF16.
  EXPECT_EQ(covered, (std::set<uint32_t>{0, 1, 2, 3, 8, 12, 14, 30}));
}

TEST(Dequantize, RejectsWrongSizesAndUnsupportedTypes) {
  std::vector<uint8_t> data(34);
  std::vector<float> out(32);
  EXPECT_OK(DequantizeRow(GgmlType::kQ8_0, data, out));
  std::vector<float> partial(31);
  EXPECT_THAT(DequantizeRow(GgmlType::kQ8_0, data, partial),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("whole blocks")));
  EXPECT_THAT(DequantizeRow(GgmlType::kQ8_0, std::span(data).first(33), out),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("take 34 bytes")));
  std::vector<uint8_t> q5(22);
  EXPECT_THAT(DequantizeRow(GgmlType::kQ5_0, q5, out),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("not supported")));
  EXPECT_FALSE(CanDequantize(GgmlType::kQ5_K));
  EXPECT_TRUE(CanDequantize(GgmlType::kQ6_K));
}

}  // namespace
}  // namespace silo::engine
