#include "attention/cpu/cpu_backend.h"

#ifdef __F16C__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::attention {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr size_t kAlignment = 64;

// Converts `n` elements of K or V starting at element `offset` to f32.
void ConvertRow(const void* base, KvDType dtype, int64_t offset, int32_t n, float* out) {
  switch (dtype) {
    case KvDType::kF32:
      std::memcpy(out, static_cast<const float*>(base) + offset, n * sizeof(float));
      return;
    case KvDType::kF16: {
      const uint16_t* in = static_cast<const uint16_t*>(base) + offset;
      int32_t c = 0;
#ifdef __F16C__
      for (; c + 8 <= n; c += 8) {
        const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + c));
        _mm256_storeu_ps(out + c, _mm256_cvtph_ps(half));
      }
#endif
      for (; c < n; ++c) out[c] = HalfToFloat(in[c]);
      return;
    }
    case KvDType::kBF16: {
      const uint16_t* in = static_cast<const uint16_t*>(base) + offset;
      for (int32_t c = 0; c < n; ++c) out[c] = Bf16ToFloat(in[c]);
      return;
    }
  }
}

// Dot product with eight running sums, so that the compiler can keep them in one vector.
float Dot(const float* a, const float* b, int32_t n) {
  float sums[8] = {};
  int32_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int32_t e = 0; e < 8; ++e) sums[e] += a[c + e] * b[c + e];
  }
  float dot = 0;
  for (; c < n; ++c) dot += a[c] * b[c];
  for (const float sum : sums) dot += sum;
  return dot;
}

// In-place normalized Walsh–Hadamard transform of x[0, n), n a power of two.
void Hadamard(float* x, int32_t n) {
  for (int32_t half = 1; half < n; half *= 2) {
    for (int32_t start = 0; start < n; start += 2 * half) {
      for (int32_t i = start; i < start + half; ++i) {
        const float a = x[i];
        const float b = x[i + half];
        x[i] = a + b;
        x[i + half] = a - b;
      }
    }
  }
  const float norm = 1.0f / std::sqrt(static_cast<float>(n));
  for (int32_t i = 0; i < n; ++i) x[i] *= norm;
}

// Transform `index` of the set on one row: in [in_dim] → out [out_dim]. t and u: dim floats of
// scratch.
void TransformRow(const RowTransformSet& set, int32_t index, const float* in, float* out,
                  std::vector<float>& t, std::vector<float>& u) {
  const int32_t n = set.dim;
  const int64_t offset = static_cast<int64_t>(index) * n;
  const float* pre_scale = set.pre_scale + offset;
  const int32_t* pre_gather = set.pre_gather != nullptr ? set.pre_gather + offset : nullptr;
  const int32_t* post_gather = set.post_gather != nullptr ? set.post_gather + offset : nullptr;
  const float* post_scale = set.post_scale + offset;
  for (int32_t c = 0; c < n; ++c) t[c] = c < set.in_dim ? in[c] * pre_scale[c] : 0.0f;
  for (int32_t c = 0; c < n; ++c) u[c] = pre_gather != nullptr ? t[pre_gather[c]] : t[c];
  if (set.mix == RowMix::kHadamard) {
    Hadamard(u.data(), n);
  } else {
    const float* matrix = set.matrix + offset * n;
    for (int32_t c = 0; c < n; ++c) {
      float sum = 0;
      for (int32_t k = 0; k < n; ++k) sum += u[k] * matrix[static_cast<int64_t>(k) * n + c];
      t[c] = sum;
    }
    u.swap(t);
  }
  for (int32_t c = 0; c < set.out_dim; ++c) {
    out[c] = (post_gather != nullptr ? u[post_gather[c]] : u[c]) * post_scale[c];
  }
}

// InvalidArgument unless every gather entry of the set lies in [0, dim): the CUDA kernels cannot
// check them, the CPU reference does.
absl::Status CheckGathers(std::string_view op, const RowTransformSet& set) {
  const int64_t n = static_cast<int64_t>(set.count) * set.dim;
  for (const int32_t* gather : {set.pre_gather, set.post_gather}) {
    if (gather == nullptr) continue;
    for (int64_t i = 0; i < n; ++i) {
      if (gather[i] < 0 || gather[i] >= set.dim) {
        return absl::InvalidArgumentError(
            StrCat(op, ": gather entry ", gather[i], " is outside [0, ", set.dim, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BackendBuffer> CpuBackend::Allocate(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* data = std::aligned_alloc(kAlignment, rounded);
  if (data == nullptr) {
    return absl::ResourceExhaustedError(StrCat("cpu backend: cannot allocate ", bytes, " bytes"));
  }
  return BackendBuffer(this, data, bytes);
}

void CpuBackend::Free(void* data) { std::free(data); }

absl::Status CpuBackend::CopyIn(void* backend_dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(backend_dst, host_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyOut(void* host_dst, const void* backend_src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, backend_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::PartialAttention(const PartialAttentionArgs& a) {
  SILO_RETURN_IF_ERROR(ValidatePartialAttention(a));
  if (a.also_transform.n_rows > 0) SILO_RETURN_IF_ERROR(TransformRows(a.also_transform));
  const int32_t group = a.n_heads / a.n_kv_heads;
  const int32_t d = a.head_dim;
  const int32_t rows = a.n_q * group;  // query rows × heads that read one KV head
  // Scores are kept for a block of rows at a time, at most kMaxScores floats (64 MiB).
  constexpr int64_t kMaxScores = int64_t{1} << 24;
  const int32_t block_rows =
      static_cast<int32_t>(std::clamp<int64_t>(kMaxScores / std::max(a.n_kv, 1), 1, rows));
  std::vector<float> scores(static_cast<size_t>(block_rows) * a.n_kv);  // [block_rows, n_kv]
  std::vector<float> kv_row(d);
  std::vector<float> m(block_rows), l(block_rows);
  std::vector<float> o(static_cast<size_t>(block_rows) * d);
  // Row r of one KV head is query r / group, head kv_head · group + r % group.
  auto row_of = [&](int32_t kv_head, int32_t r) {
    return static_cast<int64_t>(r / group) * a.n_heads + static_cast<int64_t>(kv_head) * group +
           r % group;
  };
  // One KV head and block of rows at a time; each key and value row converted to f32 once for
  // the whole block.
  for (int32_t kv_head = 0; kv_head < a.n_kv_heads; ++kv_head) {
    for (int32_t first = 0; first < rows; first += block_rows) {
      const int32_t n_rows = std::min(block_rows, rows - first);
      for (int32_t j = 0; j < a.n_kv; ++j) {
        const int64_t base = (static_cast<int64_t>(j) * a.n_kv_heads + kv_head) * d;
        ConvertRow(a.k, a.kv_dtype, base, d, kv_row.data());
        for (int32_t r = 0; r < n_rows; ++r) {
          float& score = scores[static_cast<size_t>(r) * a.n_kv + j];
          const int32_t query = (first + r) / group;
          if (a.q_positions != nullptr && a.kv_positions[j] > a.q_positions[query]) {
            score = kNegInf;  // masked
            continue;
          }
          score = Dot(a.q + row_of(kv_head, first + r) * d, kv_row.data(), d) * a.scale;
        }
      }
      // Softmax numerators in place: p = exp(s − m), l = Σ p (masked keys give 0).
      for (int32_t r = 0; r < n_rows; ++r) {
        float* s = &scores[static_cast<size_t>(r) * a.n_kv];
        m[r] = kNegInf;
        for (int32_t j = 0; j < a.n_kv; ++j) m[r] = std::max(m[r], s[j]);
        l[r] = 0;
        for (int32_t j = 0; j < a.n_kv; ++j) {
          s[j] = m[r] == kNegInf ? 0.0f : std::exp(s[j] - m[r]);
          l[r] += s[j];
        }
      }
      std::fill(o.begin(), o.end(), 0.0f);
      for (int32_t j = 0; j < a.n_kv; ++j) {
        const int64_t base = (static_cast<int64_t>(j) * a.n_kv_heads + kv_head) * d;
        ConvertRow(a.v, a.kv_dtype, base, d, kv_row.data());
        for (int32_t r = 0; r < n_rows; ++r) {
          const float p = scores[static_cast<size_t>(r) * a.n_kv + j];
          if (p == 0) continue;
          float* out = &o[static_cast<size_t>(r) * d];
          for (int32_t c = 0; c < d; ++c) out[c] += p * kv_row[c];
        }
      }
      for (int32_t r = 0; r < n_rows; ++r) {
        const int64_t row = row_of(kv_head, first + r);
        const float inverse_l = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        for (int32_t c = 0; c < d; ++c) {
          a.o[row * d + c] = o[static_cast<size_t>(r) * d + c] * inverse_l;
        }
        a.m[row] = l[r] > 0 ? m[r] : kNegInf;
        a.l[row] = l[r];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::MergePartials(const MergeArgs& a) {
  SILO_RETURN_IF_ERROR(ValidateMerge(a));
  const int32_t d = a.head_dim;
  const bool unscrambling = a.unscramble_index != nullptr;
  const int64_t width = unscrambling ? a.unscramble.in_dim : d;  // of o's rows
  if (unscrambling) {
    SILO_RETURN_IF_ERROR(CheckGathers("merge", a.unscramble));
    for (int64_t i = 0; i < static_cast<int64_t>(a.n_parts) * a.n_rows; ++i) {
      if (a.unscramble_index[i] < -1 || a.unscramble_index[i] >= a.unscramble.count) {
        return absl::InvalidArgumentError(StrCat("merge: unscramble index ",
                                                 a.unscramble_index[i], " is outside [-1, ",
                                                 a.unscramble.count, ")"));
      }
    }
  }
  std::vector<float> t(unscrambling ? a.unscramble.dim : 0), u(t.size()), plain(d);
  for (int32_t r = 0; r < a.n_rows; ++r) {
    float m = kNegInf;
    for (int32_t p = 0; p < a.n_parts; ++p) {
      const int64_t part_row = static_cast<int64_t>(p) * a.n_rows + r;
      if (a.l[part_row] > 0) m = std::max(m, a.m[part_row]);
    }
    float* out = a.out_o + static_cast<int64_t>(r) * d;
    std::fill(out, out + d, 0.0f);
    float l = 0;
    if (m != kNegInf) {
      for (int32_t p = 0; p < a.n_parts; ++p) {
        const int64_t part_row = static_cast<int64_t>(p) * a.n_rows + r;
        if (!(a.l[part_row] > 0)) continue;  // empty part (also guards m = -inf)
        const float weight = a.l[part_row] * std::exp(a.m[part_row] - m);
        l += weight;
        const float* o = a.o + part_row * width;
        if (unscrambling && a.unscramble_index[part_row] >= 0) {
          TransformRow(a.unscramble, a.unscramble_index[part_row], o, plain.data(), t, u);
          o = plain.data();
        }
        for (int32_t c = 0; c < d; ++c) out[c] += weight * o[c];
      }
      for (int32_t c = 0; c < d; ++c) out[c] /= l;
    }
    a.out_m[r] = m;
    a.out_l[r] = l;
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::TransformRows(const RowTransformArgs& a) {
  SILO_RETURN_IF_ERROR(ValidateTransformRows(a));
  SILO_RETURN_IF_ERROR(CheckGathers("row transform", a.transforms));
  for (int64_t r = 0; r < a.n_rows; ++r) {
    const int64_t source = a.source != nullptr ? a.source[r] : r;
    const int32_t index = a.transform != nullptr ? a.transform[r] : 0;
    if (source < 0 || source >= a.n_in_rows || index < 0 || index >= a.transforms.count) {
      return absl::InvalidArgumentError(StrCat("row transform: row ", r, " reads row ", source,
                                               " of ", a.n_in_rows, " with transform ", index,
                                               " of ", a.transforms.count));
    }
  }
  std::vector<float> t(a.transforms.dim), u(a.transforms.dim);
  for (int64_t r = 0; r < a.n_rows; ++r) {
    const int64_t source = a.source != nullptr ? a.source[r] : r;
    TransformRow(a.transforms, a.transform != nullptr ? a.transform[r] : 0,
                 a.in + source * a.in_stride, a.out + r * a.out_stride, t, u);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GatherRows(const GatherRowsArgs& a) {
  SILO_RETURN_IF_ERROR(ValidateGatherRows(a));
  for (int64_t i = 0; i < a.n_out; ++i) {
    if (a.rows[i] < 0 || a.rows[i] >= a.n_in) {
      return absl::InvalidArgumentError(
          StrCat("gather rows: row index ", a.rows[i], " is outside [0, ", a.n_in, ")"));
    }
  }
  for (int64_t i = 0; i < a.n_out; ++i) {
    std::memcpy(static_cast<char*>(a.out) + i * a.row_bytes,
                static_cast<const char*>(a.in) + a.rows[i] * a.row_bytes, a.row_bytes);
  }
  return absl::OkStatus();
}

}  // namespace silo::attention
