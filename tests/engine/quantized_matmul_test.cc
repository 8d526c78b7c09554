#include "engine/cpu/quantized_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "common/half.h"
#include "engine/dequantize.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;
using ::testing::HasSubstr;

constexpr GgmlType kTypes[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ8_0,
                               GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ4_K, GgmlType::kQ6_K};

bool IsQuantized(GgmlType type) {
  return type != GgmlType::kF32 && type != GgmlType::kF16 && type != GgmlType::kBF16;
}

void StoreHalf(float value, uint8_t* p) {
  const uint16_t half = FloatToHalf(value);
  std::memcpy(p, &half, sizeof(half));
}

// A [rows, cols] matrix of `type` from random bytes, with the f16 scales of the quantized blocks
// replaced by random finite values (so that no block is NaN or infinite).
struct TestMatrix {
  std::vector<uint8_t> bytes;
  WeightMatrix w;
};

TestMatrix RandomMatrix(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const GgmlTypeLayout layout = *LayoutOf(static_cast<uint32_t>(type));
  const int64_t row_bytes = cols / layout.block_elements * layout.block_bytes;
  TestMatrix m;
  m.bytes.resize(rows * row_bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : m.bytes) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n_blocks = rows * cols / layout.block_elements;
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* block = m.bytes.data() + b * layout.block_bytes;
    switch (type) {
      case GgmlType::kF32: {
        const float value = normal(rng);
        std::memcpy(block, &value, sizeof(value));
        break;
      }
      case GgmlType::kF16:
        StoreHalf(normal(rng), block);
        break;
      case GgmlType::kBF16: {
        const uint16_t bits = FloatToBf16(normal(rng));
        std::memcpy(block, &bits, sizeof(bits));
        break;
      }
      case GgmlType::kQ8_0:
      case GgmlType::kQ4_0:
        StoreHalf(scale(rng), block);
        break;
      case GgmlType::kQ4_1:
      case GgmlType::kQ4_K:  // d and dmin (or m)
        StoreHalf(scale(rng), block);
        StoreHalf(scale(rng), block + 2);
        break;
      case GgmlType::kQ6_K:
        StoreHalf(scale(rng) * 0.1f, block + 208);
        break;
      default:
        break;
    }
  }
  m.w = WeightMatrix{
      .type = type, .rows = rows, .cols = cols, .data = m.bytes.data(), .row_bytes = row_bytes};
  return m;
}

std::vector<float> RandomActivations(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n_tokens * cols);
  for (float& v : x) v = normal(rng);
  // Some outliers, as real activations have, and a block of zeros.
  for (size_t i = 0; i < x.size(); i += 61) x[i] *= 20.0f;
  if (cols >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
  return x;
}

// Checks MatMul against DequantizeRow followed by a dot product in double. Tolerance: for
// quantized weights with kInt8 the activation rounding bound Σ_c |W[r,c]|·max|x in c's block| /
// 254 (as the header states), for all types plus 1e-5·Σ|W||x| of f32 rounding.
void ExpectMatchesReference(const WeightMatrix& w, const std::vector<float>& x, int64_t n_tokens,
                            const std::vector<float>& y, MatMulPrecision precision) {
  const bool rounds_activations = precision == MatMulPrecision::kInt8 && IsQuantized(w.type);
  const int64_t act_block = w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ6_K ? 256 : 32;
  std::vector<float> row(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    ASSERT_OK(DequantizeRow(w.type, std::span(w.data + r * w.row_bytes, w.row_bytes), row));
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x.data() + t * w.cols;
      double exact = 0, magnitude = 0, rounding = 0;
      for (int64_t c0 = 0; c0 < w.cols; c0 += act_block) {
        double amax = 0, wsum = 0;
        for (int64_t c = c0; c < c0 + act_block && c < w.cols; ++c) {
          exact += static_cast<double>(row[c]) * xt[c];
          magnitude += std::abs(static_cast<double>(row[c]) * xt[c]);
          amax = std::max(amax, std::abs(static_cast<double>(xt[c])));
          wsum += std::abs(static_cast<double>(row[c]));
        }
        rounding += wsum * amax / 254.0;
      }
      const double tolerance =
          (rounds_activations ? 1.001 * rounding : 0.0) + 1e-5 * magnitude + 1e-30;
      ASSERT_NEAR(y[t * w.rows + r], exact, tolerance)
          << "row " << r << " token " << t << " Σ|W||x| " << magnitude;
    }
  }
}

class QuantizedMatMulPrecision : public ::testing::TestWithParam<MatMulPrecision> {};

TEST_P(QuantizedMatMulPrecision, MatchesDequantizedReference) {
  std::mt19937 rng(20240611);
  ThreadPool pool(3);
  for (const GgmlType type : kTypes) {
    const int64_t block = LayoutOf(static_cast<uint32_t>(type))->block_elements;
    const int64_t k_block = IsQuantized(type) && block == 256 ? 256 : 32;
    for (const int64_t cols : {32, 64, 96, 256, 576, 1536, 4096}) {
      if (cols % k_block != 0) continue;
      for (const int64_t rows : {1, 5, 13, 38}) {
        for (const int64_t n_tokens : {1, 2, 3, 17, 64}) {
          SCOPED_TRACE(::testing::Message() << "type " << static_cast<uint32_t>(type) << " ["
                                            << rows << ", " << cols << "] n_tokens " << n_tokens);
          const TestMatrix m = RandomMatrix(type, rows, cols, rng);
          ASSERT_OK(ValidateWeightMatrix(m.w));
          const std::vector<float> x = RandomActivations(n_tokens, cols, rng);
          std::vector<float> y(n_tokens * rows, NAN);
          MatMul(m.w, x.data(), n_tokens, y.data(), pool, GetParam());
          ExpectMatchesReference(m.w, x, n_tokens, y, GetParam());
        }
      }
    }
  }
}

// The same result whatever the thread count; a token's result does not depend on the other
// tokens of the call either (bit for bit with kInt8; kExact expands blocks in registers for one
// or two tokens and through scratch for more, which sums in another order).
TEST_P(QuantizedMatMulPrecision, SameResultForAnySplit) {
  std::mt19937 rng(7);
  ThreadPool one(1), three(3);
  for (const GgmlType type : kTypes) {
    SCOPED_TRACE(::testing::Message() << "type " << static_cast<uint32_t>(type));
    const int64_t rows = 45, cols = 512, n_tokens = 19;
    const TestMatrix m = RandomMatrix(type, rows, cols, rng);
    const std::vector<float> x = RandomActivations(n_tokens, cols, rng);
    std::vector<float> y1(n_tokens * rows), y3(n_tokens * rows), y_single(rows);
    MatMul(m.w, x.data(), n_tokens, y1.data(), one, GetParam());
    MatMul(m.w, x.data(), n_tokens, y3.data(), three, GetParam());
    EXPECT_EQ(y1, y3);
    const bool bitwise = GetParam() == MatMulPrecision::kInt8 || !IsQuantized(type);
    for (int64_t t = 0; t < n_tokens; ++t) {
      MatMul(m.w, x.data() + t * cols, 1, y_single.data(), three, GetParam());
      for (int64_t r = 0; r < rows; ++r) {
        if (bitwise) {
          ASSERT_EQ(y_single[r], y1[t * rows + r]) << t << " " << r;
        } else {
          ASSERT_NEAR(y_single[r], y1[t * rows + r], 1e-4f * (1 + std::abs(y1[t * rows + r])))
              << t << " " << r;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, QuantizedMatMulPrecision,
                         ::testing::Values(MatMulPrecision::kExact, MatMulPrecision::kInt8),
                         [](const ::testing::TestParamInfo<MatMulPrecision>& info) {
                           return info.param == MatMulPrecision::kExact ? "Exact" : "Int8";
                         });

TEST(QuantizedMatMul, ZeroTokensWritesNothing) {
  std::mt19937 rng(1);
  ThreadPool pool(2);
  const TestMatrix m = RandomMatrix(GgmlType::kQ4_1, 8, 64, rng);
  std::vector<float> y(8, 42.0f);
  MatMul(m.w, nullptr, 0, y.data(), pool);
  EXPECT_THAT(y, ::testing::Each(42.0f));
}

TEST(QuantizedMatMul, ValidateRejectsBadMatrices) {
  std::vector<uint8_t> data(20 * 4);
  WeightMatrix ok{
      .type = GgmlType::kQ4_1, .rows = 2, .cols = 64, .data = data.data(), .row_bytes = 40};
  EXPECT_OK(ValidateWeightMatrix(ok));
  for (const GgmlType type : kTypes) EXPECT_TRUE(CanMatMul(type));

  WeightMatrix w = ok;
  w.type = GgmlType::kQ5_0;
  w.row_bytes = 44;
  EXPECT_THAT(ValidateWeightMatrix(w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not supported")));
  EXPECT_FALSE(CanMatMul(GgmlType::kQ5_K));
  w = ok;
  w.type = static_cast<GgmlType>(99);
  EXPECT_THAT(ValidateWeightMatrix(w), StatusIs(absl::StatusCode::kInvalidArgument));
  w = ok;
  w.cols = 48;
  EXPECT_THAT(ValidateWeightMatrix(w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("whole blocks")));
  w = ok;
  w.row_bytes = 41;
  EXPECT_THAT(ValidateWeightMatrix(w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("takes 40 bytes, not 41")));
  w = ok;
  w.rows = 0;
  EXPECT_THAT(ValidateWeightMatrix(w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  w = ok;
  w.data = nullptr;
  EXPECT_THAT(ValidateWeightMatrix(w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
  w = ok;
  w.type = GgmlType::kQ6_K;
  w.cols = 256;
  w.row_bytes = 210;
  EXPECT_OK(ValidateWeightMatrix(w));
  w.type = GgmlType::kF16;
  w.cols = 7;
  w.row_bytes = 14;
  EXPECT_OK(ValidateWeightMatrix(w));
}

// F32/F16/BF16 rows need not be a multiple of 8 columns.
TEST(QuantizedMatMul, FloatWeightsWithOddColumnCounts) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (const GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16}) {
    for (const int64_t cols : {1, 7, 13, 100}) {
      const TestMatrix m = RandomMatrix(type, 9, cols, rng);
      const std::vector<float> x = RandomActivations(5, cols, rng);
      std::vector<float> y(5 * 9);
      MatMul(m.w, x.data(), 5, y.data(), pool);
      ExpectMatchesReference(m.w, x, 5, y, MatMulPrecision::kExact);
    }
  }
}

}  // namespace
}  // namespace silo::engine
