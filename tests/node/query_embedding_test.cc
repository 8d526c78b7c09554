// The query embedding on the wire: what EncodeQueryEmbedding writes, DecodeQueryEmbedding reads
// back; every malformed tensor is InvalidArgument.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/retrieval_service.h"
#include "tests/testing/status_matchers.h"

namespace silo::node {
namespace {

using ::silo::testing::StatusIs;

std::vector<float> Unit(int dim) {
  std::vector<float> values(static_cast<size_t>(dim));
  for (int i = 0; i < dim; ++i) values[static_cast<size_t>(i)] = static_cast<float>(i % 7) - 3.0F;
  double norm = 0;
  for (const float v : values) norm += static_cast<double>(v) * v;
  for (float& v : values) v = static_cast<float>(v / std::sqrt(norm));
  return values;
}

void SetValue(v1::Tensor& tensor, size_t index, float value) {
  std::memcpy(tensor.mutable_data()->data() + index * sizeof(float), &value, sizeof(float));
}

TEST(QueryEmbedding, RoundTrips) {
  const std::vector<float> unit = Unit(384);
  const v1::Tensor tensor = EncodeQueryEmbedding(unit);
  EXPECT_EQ(tensor.dtype(), v1::DTYPE_F32);
  ASSERT_EQ(tensor.shape_size(), 1);
  EXPECT_EQ(tensor.shape(0), 384);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> decoded, DecodeQueryEmbedding(tensor, 384));
  EXPECT_EQ(decoded, unit);
}

TEST(QueryEmbedding, RefusesMalformedTensors) {
  const v1::Tensor good = EncodeQueryEmbedding(Unit(384));
  const auto refused = [](const v1::Tensor& tensor) {
    return DecodeQueryEmbedding(tensor, 384).status().code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(refused(EncodeQueryEmbedding(Unit(383))));
  v1::Tensor tensor = good;
  tensor.set_dtype(v1::DTYPE_BF16);
  EXPECT_TRUE(refused(tensor));
  tensor = good;
  tensor.add_shape(1);
  EXPECT_TRUE(refused(tensor));
  tensor = good;
  tensor.mutable_data()->pop_back();
  EXPECT_TRUE(refused(tensor));
  tensor = good;
  tensor.add_row_scales(1.0F);
  EXPECT_TRUE(refused(tensor));
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 5.0F}) {
    tensor = good;
    SetValue(tensor, 3, bad);
    EXPECT_TRUE(refused(tensor)) << bad;
  }
  EXPECT_THAT(DecodeQueryEmbedding(v1::Tensor(), 384),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::node
