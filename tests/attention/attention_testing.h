// Helpers of the attention tests: random tensors, moving them to a backend and back, and a plain
// f64 attention that every backend's partials are compared with.
#ifndef SILO_TESTS_ATTENTION_ATTENTION_TESTING_H_
#define SILO_TESTS_ATTENTION_ATTENTION_TESTING_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "attention/backend.h"
#include "attention/scrambler.h"
#include "common/half.h"
#include "gtest/gtest.h"

namespace silo::attention::testing {

inline std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> values(n);
  for (float& value : values) value = normal(rng);
  return values;
}

// Values as stored in kv_dtype: the bytes to upload, and the values they hold (rounded).
struct KvData {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

inline KvData EncodeKv(const std::vector<float>& values, KvDType dtype) {
  KvData data;
  data.values = values;
  data.bytes.resize(values.size() * KvDTypeBytes(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == KvDType::kF32) {
      std::memcpy(&data.bytes[4 * i], &values[i], 4);
      continue;
    }
    const uint16_t bits = dtype == KvDType::kF16 ? FloatToHalf(values[i]) : FloatToBf16(values[i]);
    data.values[i] = dtype == KvDType::kF16 ? HalfToFloat(bits) : Bf16ToFloat(bits);
    std::memcpy(&data.bytes[2 * i], &bits, 2);
  }
  return data;
}

template <typename T>
BackendBuffer Upload(AttentionBackend& backend, const std::vector<T>& values) {
  absl::StatusOr<BackendBuffer> buffer = backend.Allocate(values.size() * sizeof(T));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  if (!buffer.ok()) return BackendBuffer();
  const absl::Status copied =
      backend.CopyIn(buffer->data(), values.data(), values.size() * sizeof(T));
  EXPECT_TRUE(copied.ok()) << copied;
  return *std::move(buffer);
}

inline BackendBuffer AllocateFloats(AttentionBackend& backend, size_t n) {
  absl::StatusOr<BackendBuffer> buffer = backend.Allocate(n * sizeof(float));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  return buffer.ok() ? *std::move(buffer) : BackendBuffer();
}

inline std::vector<float> Download(AttentionBackend& backend, const BackendBuffer& buffer,
                                   size_t n) {
  std::vector<float> values(n);
  const absl::Status copied = backend.CopyOut(values.data(), buffer.data(), n * sizeof(float));
  EXPECT_TRUE(copied.ok()) << copied;
  return values;
}

// Runs `transform` on `backend` over the rows of `in` ([n_rows, in_dim]); returns
// [n_rows, out_dim].
inline std::vector<float> TransformOn(AttentionBackend& backend, const RowTransform& transform,
                                      const std::vector<float>& in) {
  absl::StatusOr<BackendRowTransform> uploaded = BackendRowTransform::Upload(backend, transform);
  EXPECT_TRUE(uploaded.ok()) << uploaded.status();
  if (!uploaded.ok()) return {};
  const int64_t n_rows = static_cast<int64_t>(in.size()) / transform.in_dim;
  const size_t n_out = static_cast<size_t>(n_rows) * transform.out_dim;
  BackendBuffer in_buffer = Upload(backend, in);
  BackendBuffer out_buffer = AllocateFloats(backend, n_out);
  const absl::Status status =
      uploaded->Run(backend, in_buffer.as<float>(), out_buffer.as<float>(), n_rows);
  EXPECT_TRUE(status.ok()) << status;
  return Download(backend, out_buffer, n_out);
}

// Plain attention in f64 with the partial's conventions (attention_args.h).
struct ReferencePartial {
  std::vector<double> o;  // [n_q, n_heads, head_dim]
  std::vector<double> m;  // [n_q, n_heads]
  std::vector<double> l;
};

inline ReferencePartial ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k,
                                           const std::vector<float>& v, int n_q, int n_kv,
                                           int n_heads, int n_kv_heads, int head_dim, double scale,
                                           const std::vector<int32_t>* q_positions = nullptr,
                                           const std::vector<int32_t>* kv_positions = nullptr) {
  ReferencePartial out;
  out.o.assign(static_cast<size_t>(n_q) * n_heads * head_dim, 0.0);
  out.m.assign(static_cast<size_t>(n_q) * n_heads, -std::numeric_limits<double>::infinity());
  out.l.assign(static_cast<size_t>(n_q) * n_heads, 0.0);
  const int group = n_heads / n_kv_heads;
  std::vector<double> s(n_kv);
  for (int i = 0; i < n_q; ++i) {
    for (int h = 0; h < n_heads; ++h) {
      const size_t row = static_cast<size_t>(i) * n_heads + h;
      double m = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < n_kv; ++j) {
        s[j] = -std::numeric_limits<double>::infinity();
        if (q_positions != nullptr && (*kv_positions)[j] > (*q_positions)[i]) continue;
        double dot = 0;
        for (int c = 0; c < head_dim; ++c) {
          dot += static_cast<double>(q[row * head_dim + c]) *
                 k[(static_cast<size_t>(j) * n_kv_heads + h / group) * head_dim + c];
        }
        s[j] = dot * scale;
        m = std::max(m, s[j]);
      }
      if (m == -std::numeric_limits<double>::infinity()) continue;
      double l = 0;
      for (int j = 0; j < n_kv; ++j) {
        if (s[j] == -std::numeric_limits<double>::infinity()) continue;
        const double p = std::exp(s[j] - m);
        l += p;
        for (int c = 0; c < head_dim; ++c) {
          out.o[row * head_dim + c] +=
              p * v[(static_cast<size_t>(j) * n_kv_heads + h / group) * head_dim + c];
        }
      }
      for (int c = 0; c < head_dim; ++c) out.o[row * head_dim + c] /= l;
      out.m[row] = m;
      out.l[row] = l;
    }
  }
  return out;
}

// max |a − b| / max(max |b|, tiny): one relative error for a whole tensor.
template <typename A, typename B>
double RelativeError(const std::vector<A>& actual, const std::vector<B>& expected) {
  double max_diff = 0, max_ref = 1e-30;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(actual[i]) - expected[i]));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(expected[i])));
  }
  return max_diff / max_ref;
}

}  // namespace silo::attention::testing

#endif  // SILO_TESTS_ATTENTION_ATTENTION_TESTING_H_
