#include "engine/cpu/quantized_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "engine/dequantize.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SILO_MATMUL_AVX2 1
#include <immintrin.h>
#else
#define SILO_MATMUL_AVX2 0
#endif

namespace silo::engine {
namespace {

// ---------------------------------------------------------------------------------------------
// Activation blocks: the 8-bit copy of x that quantized weights multiply.

// 32 activations: x ≈ d·q, and sum = d·Σq (for the offset terms of Q4_0 and Q4_1).
struct ActQ8 {
  float d;
  float sum;
  int8_t q[32];
};

// 256 activations: x ≈ d·q; bsums[i] = Σ q over elements 16i..16i+15 (for Q4_K mins and Q6_K's
// offset of 32).
struct ActQ8K {
  float d;
  int8_t q[256];
  int16_t bsums[16];
};

// Weight block sizes, in bytes.
constexpr int64_t kQ4_0Bytes = 18;   // f16 d, 16 bytes of nibbles
constexpr int64_t kQ4_1Bytes = 20;   // f16 d, f16 m, 16 bytes of nibbles
constexpr int64_t kQ8_0Bytes = 34;   // f16 d, 32 int8
constexpr int64_t kQ4_KBytes = 144;  // f16 d, f16 dmin, 12 bytes of scales, 128 of nibbles
constexpr int64_t kQ6_KBytes = 210;  // 128 low nibbles, 64 high pairs, 16 int8 scales, f16 d

uint16_t Load16(const uint8_t* p) {
  uint16_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

// 6-bit scale and min of sub-block j of a Q4_K superblock (12 packed bytes).
void ScaleMinK4(int j, const uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

#if SILO_MATMUL_AVX2

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

int HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

float LoadHalf(const uint8_t* p) { return _cvtsh_ss(Load16(p)); }

// Quantizes 32 floats with the multiplier `inverse`: 32 int8 to q; returns the four int32
// vectors' sum as 8 lanes (elements 0-7, 8-15, 16-23, 24-31 in v[0..3] before the sum).
void Quantize32(const float* x, __m256 inverse, int8_t* q, __m256i v[4]) {
  for (int64_t i = 0; i < 4; ++i) {
    v[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), inverse));
  }
  const __m256i packed =
      _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(packed, order));
}

float MaxAbs(const float* x, int n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void QuantizeRowQ8(const float* x, int64_t cols, ActQ8* out) {
  for (int64_t b = 0; b < cols / 32; ++b, x += 32) {
    const float d = MaxAbs(x, 32) / 127.0f;
    __m256i v[4];
    Quantize32(x, _mm256_set1_ps(d != 0 ? 1.0f / d : 0.0f), out[b].q, v);
    const __m256i sum =
        _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
    out[b].d = d;
    out[b].sum = d * static_cast<float>(HorizontalSum(sum));
  }
}

void QuantizeRowQ8K(const float* x, int64_t cols, ActQ8K* out) {
  for (int64_t b = 0; b < cols / 256; ++b, x += 256) {
    const float d = MaxAbs(x, 256) / 127.0f;
    const __m256 inverse = _mm256_set1_ps(d != 0 ? 1.0f / d : 0.0f);
    for (int64_t c = 0; c < 8; ++c) {
      __m256i v[4];
      Quantize32(x + 32 * c, inverse, out[b].q + 32 * c, v);
      out[b].bsums[2 * c] = static_cast<int16_t>(HorizontalSum(_mm256_add_epi32(v[0], v[1])));
      out[b].bsums[2 * c + 1] = static_cast<int16_t>(HorizontalSum(_mm256_add_epi32(v[2], v[3])));
    }
    out[b].d = d;
  }
}

#else  // !SILO_MATMUL_AVX2

float LoadHalf(const uint8_t* p) { return HalfToFloat(Load16(p)); }

// Rounds x / d to the nearest integer in [-127, 127]; d = max|x| / 127.
void QuantizeScalar(const float* x, int n, float* d_out, int8_t* q) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::abs(x[i]));
  const float d = amax / 127.0f;
  const float inverse = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inverse));
  *d_out = d;
}

void QuantizeRowQ8(const float* x, int64_t cols, ActQ8* out) {
  for (int64_t b = 0; b < cols / 32; ++b, x += 32) {
    QuantizeScalar(x, 32, &out[b].d, out[b].q);
    int sum = 0;
    for (int i = 0; i < 32; ++i) sum += out[b].q[i];
    out[b].sum = out[b].d * static_cast<float>(sum);
  }
}

void QuantizeRowQ8K(const float* x, int64_t cols, ActQ8K* out) {
  for (int64_t b = 0; b < cols / 256; ++b, x += 256) {
    QuantizeScalar(x, 256, &out[b].d, out[b].q);
    for (int i = 0; i < 16; ++i) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += out[b].q[16 * i + j];
      out[b].bsums[i] = static_cast<int16_t>(sum);
    }
  }
}

#endif  // SILO_MATMUL_AVX2

// ---------------------------------------------------------------------------------------------
// Tiles. A tile multiplies RM consecutive weight rows by RN consecutive tokens over all columns.

struct TileArgs {
  const uint8_t* w;   // first row of the tile
  int64_t row_bytes;  // weight row stride
  const uint8_t* x;   // activations of the first token of the tile (f32, ActQ8 or ActQ8K)
  int64_t x_stride;   // bytes between the activations of consecutive tokens
  int64_t cols;
  float* y;          // y[0] is (first token, first row)
  int64_t y_stride;  // floats between consecutive tokens' outputs (the matrix's rows)
};

// Per-pair dot product of one weight row and one token's activations: a tile made of them.
template <class Dot, int RM, int RN>
void PairTile(const TileArgs& a) {
  for (int t = 0; t < RN; ++t) {
    for (int r = 0; r < RM; ++r) {
      a.y[t * a.y_stride + r] = Dot::Row(a.w + r * a.row_bytes, a.x + t * a.x_stride, a.cols);
    }
  }
}

#if SILO_MATMUL_AVX2

// --- Blocks of 32 against ActQ8. A kernel unpacks a weight block into `Unpacked` once per tile
// row and multiplies it with each token's 32 int8 (16 int16 pair sums, maddubs).

struct Q8_0Kernel {
  static constexpr int64_t kBlockBytes = kQ8_0Bytes;
  static constexpr bool kHasOffset = false;
  struct Unpacked {
    __m256i magnitude;  // |q|, unsigned for maddubs
    __m256i q;          // signs, moved onto the activations
    float d;
    float offset;
  };
  static Unpacked Unpack(const uint8_t* block) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
    return {_mm256_sign_epi8(q, q), q, LoadHalf(block), 0.0f};
  }
  static __m256i Products(const Unpacked& w, __m256i xq) {
    return _mm256_maddubs_epi16(w.magnitude, _mm256_sign_epi8(xq, w.q));
  }
};

// Nibbles 0..15 of a Q4_0/Q4_1 block in element order (low nibbles are elements 0..15).
inline __m256i UnpackNibbles(const uint8_t* qs) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// x = (q − 8)·d = q·d + offset with offset = −8d; the offset multiplies the activations' sum.
struct Q4_0Kernel {
  static constexpr int64_t kBlockBytes = kQ4_0Bytes;
  static constexpr bool kHasOffset = true;
  struct Unpacked {
    __m256i q;
    float d;
    float offset;
  };
  static Unpacked Unpack(const uint8_t* block) {
    const float d = LoadHalf(block);
    return {UnpackNibbles(block + 2), d, -8.0f * d};
  }
  static __m256i Products(const Unpacked& w, __m256i xq) { return _mm256_maddubs_epi16(w.q, xq); }
};

// x = q·d + m.
struct Q4_1Kernel {
  static constexpr int64_t kBlockBytes = kQ4_1Bytes;
  static constexpr bool kHasOffset = true;
  struct Unpacked {
    __m256i q;
    float d;
    float offset;
  };
  static Unpacked Unpack(const uint8_t* block) {
    return {UnpackNibbles(block + 4), LoadHalf(block), LoadHalf(block + 2)};
  }
  static __m256i Products(const Unpacked& w, __m256i xq) { return _mm256_maddubs_epi16(w.q, xq); }
};

constexpr int64_t kPrefetchBytes = 1024;

template <class K, int RM, int RN>
void Block32Tile(const TileArgs& a) {
  const int64_t n_blocks = a.cols / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[RM][RN];
  float offsets[RM][RN];
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < RN; ++t) {
      acc[r][t] = _mm256_setzero_ps();
      offsets[r][t] = 0.0f;
    }
  }
  // Each unpacked weight block is used at once by the RN tokens, so few registers stay live.
  for (int64_t b = 0; b < n_blocks; ++b) {
    for (int r = 0; r < RM; ++r) {
      const uint8_t* block = a.w + r * a.row_bytes + b * K::kBlockBytes;
      // RM interleaved streams defeat the hardware prefetcher: fetch ahead of each row.
      _mm_prefetch(reinterpret_cast<const char*>(block) + kPrefetchBytes, _MM_HINT_T0);
      const typename K::Unpacked w = K::Unpack(block);
      for (int t = 0; t < RN; ++t) {
        const ActQ8& x = reinterpret_cast<const ActQ8*>(a.x + t * a.x_stride)[b];
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q));
        const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(K::Products(w, xq), ones));
        acc[r][t] = _mm256_fmadd_ps(p, _mm256_set1_ps(w.d * x.d), acc[r][t]);
        // std::fma: the same rounding in every tile shape (no optional contraction).
        if constexpr (K::kHasOffset) offsets[r][t] = std::fma(w.offset, x.sum, offsets[r][t]);
      }
    }
  }
  for (int t = 0; t < RN; ++t) {
    for (int r = 0; r < RM; ++r) a.y[t * a.y_stride + r] = HorizontalSum(acc[r][t]) + offsets[r][t];
  }
}

// --- Superblocks of 256 against ActQ8K, one (row, token) pair at a time.

struct Q4_KDot {
  static float Row(const uint8_t* w, const uint8_t* x_bytes, int64_t cols) {
    const ActQ8K* x = reinterpret_cast<const ActQ8K*>(x_bytes);
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    float mins_total = 0;
    for (int64_t b = 0; b < cols / 256; ++b, w += kQ4_KBytes, ++x) {
      int scales[8], mins[8];
      for (int j = 0; j < 8; ++j) ScaleMinK4(j, w + 4, &scales[j], &mins[j]);
      const uint8_t* q = w + 16;
      __m256i sum = _mm256_setzero_si256();
      for (int64_t pair = 0; pair < 4; ++pair) {
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * pair));
        const __m256i low = _mm256_and_si256(bytes, low_mask);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_mask);
        const __m256i x_low =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->q + 64 * pair));
        const __m256i x_high =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->q + 64 * pair + 32));
        const __m256i p_low =
            _mm256_madd_epi16(_mm256_maddubs_epi16(low, x_low),
                              _mm256_set1_epi16(static_cast<int16_t>(scales[2 * pair])));
        const __m256i p_high =
            _mm256_madd_epi16(_mm256_maddubs_epi16(high, x_high),
                              _mm256_set1_epi16(static_cast<int16_t>(scales[2 * pair + 1])));
        sum = _mm256_add_epi32(sum, _mm256_add_epi32(p_low, p_high));
      }
      int mins_dot = 0;
      for (int64_t j = 0; j < 8; ++j) mins_dot += mins[j] * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(w) * x->d), _mm256_cvtepi32_ps(sum), acc);
      mins_total = std::fma(LoadHalf(w + 2) * x->d, static_cast<float>(mins_dot), mins_total);
    }
    return HorizontalSum(acc) - mins_total;
  }
};

struct Q6_KDot {
  static float Row(const uint8_t* w, const uint8_t* x_bytes, int64_t cols) {
    const ActQ8K* x = reinterpret_cast<const ActQ8K*>(x_bytes);
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    const __m256i high_mask = _mm256_set1_epi8(0x30);
    // Spreads int32 lane k = (s[2k], s[2k+1]) as int16 over the low and high 128-bit halves.
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,  //
                                            2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    float acc = 0;
    for (int64_t b = 0; b < cols / 256; ++b, w += kQ6_KBytes, ++x) {
      const uint8_t* ql = w;
      const uint8_t* qh = w + 128;
      const __m256i scales16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192)));
      __m256i sum = _mm256_setzero_si256();
      for (int64_t half = 0; half < 2; ++half) {
        const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * half));
        const __m256i l1 =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * half + 32));
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * half));
        // Groups of 32 elements: low nibbles of l0, l1, high nibbles of l0, l1; each with two
        // bits of h (bits 0-1, 2-3, 4-5, 6-7) as bits 4-5.
        const __m256i groups[4] = {
            _mm256_or_si256(_mm256_and_si256(l0, low_mask),
                            _mm256_and_si256(_mm256_slli_epi16(h, 4), high_mask)),
            _mm256_or_si256(_mm256_and_si256(l1, low_mask),
                            _mm256_and_si256(_mm256_slli_epi16(h, 2), high_mask)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low_mask),
                            _mm256_and_si256(h, high_mask)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low_mask),
                            _mm256_and_si256(_mm256_srli_epi16(h, 2), high_mask)),
        };
        for (int64_t g = 0; g < 4; ++g) {
          // Scales 2k (elements 0-15 of the group) and 2k+1.
          const int k = static_cast<int>(4 * half + g);
          const __m256i scale = _mm256_shuffle_epi8(
              _mm256_permutevar8x32_epi32(scales16, _mm256_set1_epi32(k)), spread);
          const __m256i xq =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->q + 128 * half + 32 * g));
          sum =
              _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(groups[g], xq), scale));
        }
      }
      // The stored q is the value + 32: subtract 32·Σ scale_i·bsums_i.
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x->bsums));
      const int offset = 32 * HorizontalSum(_mm256_madd_epi16(scales16, bsums));
      const int total = HorizontalSum(sum) - offset;
      acc = std::fma(LoadHalf(w + 208) * x->d, static_cast<float>(total), acc);
    }
    return acc;
  }
};

// --- F32, F16, BF16 weights against f32 activations, 8 columns at a time.

struct F32Load {
  static __m256 Load8(const uint8_t* row, int64_t c) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  }
  static float Load1(const uint8_t* row, int64_t c) {
    return reinterpret_cast<const float*>(row)[c];
  }
};
struct F16Load {
  static __m256 Load8(const uint8_t* row, int64_t c) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c)));
  }
  static float Load1(const uint8_t* row, int64_t c) { return LoadHalf(row + 2 * c); }
};
struct Bf16Load {
  static __m256 Load8(const uint8_t* row, int64_t c) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float Load1(const uint8_t* row, int64_t c) { return Bf16ToFloat(Load16(row + 2 * c)); }
};

template <class L, int RM, int RN>
void FloatTile(const TileArgs& a) {
  __m256 acc[RM][RN];
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < RN; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  int64_t c = 0;
  for (; c + 8 <= a.cols; c += 8) {
    __m256 w[RM];
    for (int r = 0; r < RM; ++r) w[r] = L::Load8(a.w + r * a.row_bytes, c);
    for (int t = 0; t < RN; ++t) {
      const __m256 x = _mm256_loadu_ps(reinterpret_cast<const float*>(a.x + t * a.x_stride) + c);
      for (int r = 0; r < RM; ++r) acc[r][t] = _mm256_fmadd_ps(w[r], x, acc[r][t]);
    }
  }
  for (int t = 0; t < RN; ++t) {
    const float* x = reinterpret_cast<const float*>(a.x + t * a.x_stride);
    for (int r = 0; r < RM; ++r) {
      float sum = HorizontalSum(acc[r][t]);
      for (int64_t k = c; k < a.cols; ++k)
        sum = std::fma(L::Load1(a.w + r * a.row_bytes, k), x[k], sum);
      a.y[t * a.y_stride + r] = sum;
    }
  }
}

// Tile shapes (rows × tokens): accumulators in registers, 16 ymm in all.
template <class K>
struct Block32Type {
  static constexpr int kRows = 4, kTokens = 2;
  template <int RM, int RN>
  static void Tile(const TileArgs& a) {
    Block32Tile<K, RM, RN>(a);
  }
};
template <class D>
struct PairType {
  static constexpr int kRows = 4, kTokens = 4;
  template <int RM, int RN>
  static void Tile(const TileArgs& a) {
    PairTile<D, RM, RN>(a);
  }
};
template <class L>
struct FloatType {
  static constexpr int kRows = 4, kTokens = 3;
  template <int RM, int RN>
  static void Tile(const TileArgs& a) {
    FloatTile<L, RM, RN>(a);
  }
};

using Q8_0Type = Block32Type<Q8_0Kernel>;
using Q4_0Type = Block32Type<Q4_0Kernel>;
using Q4_1Type = Block32Type<Q4_1Kernel>;
using Q4_KType = PairType<Q4_KDot>;
using Q6_KType = PairType<Q6_KDot>;
using F32Type = FloatType<F32Load>;
using F16Type = FloatType<F16Load>;
using Bf16Type = FloatType<Bf16Load>;

#else  // !SILO_MATMUL_AVX2: plain loops, the same arithmetic.

template <float (*kBlockDot)(const uint8_t*, const ActQ8&), int64_t kBlockBytes>
struct Block32Dot {
  static float Row(const uint8_t* w, const uint8_t* x_bytes, int64_t cols) {
    const ActQ8* x = reinterpret_cast<const ActQ8*>(x_bytes);
    float sum = 0;
    for (int64_t b = 0; b < cols / 32; ++b) sum += kBlockDot(w + b * kBlockBytes, x[b]);
    return sum;
  }
};

float Q8_0BlockDot(const uint8_t* w, const ActQ8& x) {
  const int8_t* q = reinterpret_cast<const int8_t*>(w + 2);
  int dot = 0;
  for (int i = 0; i < 32; ++i) dot += q[i] * x.q[i];
  return LoadHalf(w) * x.d * static_cast<float>(dot);
}

int NibbleDot(const uint8_t* qs, const int8_t* xq) {
  int dot = 0;
  for (int i = 0; i < 16; ++i) dot += (qs[i] & 0x0f) * xq[i] + (qs[i] >> 4) * xq[i + 16];
  return dot;
}

float Q4_0BlockDot(const uint8_t* w, const ActQ8& x) {
  const float d = LoadHalf(w);
  return d * x.d * static_cast<float>(NibbleDot(w + 2, x.q)) - 8.0f * d * x.sum;
}

float Q4_1BlockDot(const uint8_t* w, const ActQ8& x) {
  return LoadHalf(w) * x.d * static_cast<float>(NibbleDot(w + 4, x.q)) + LoadHalf(w + 2) * x.sum;
}

struct Q4_KDot {
  static float Row(const uint8_t* w, const uint8_t* x_bytes, int64_t cols) {
    const ActQ8K* x = reinterpret_cast<const ActQ8K*>(x_bytes);
    float sum = 0;
    for (int64_t b = 0; b < cols / 256; ++b, w += kQ4_KBytes, ++x) {
      const uint8_t* q = w + 16;
      int dot = 0, mins_dot = 0;
      for (int j = 0; j < 8; ++j) {
        int scale, min;
        ScaleMinK4(j, w + 4, &scale, &min);
        const int shift = (j % 2) * 4;
        int sub = 0;
        for (int l = 0; l < 32; ++l)
          sub += ((q[32 * (j / 2) + l] >> shift) & 0x0f) * x->q[32 * j + l];
        dot += scale * sub;
        mins_dot += min * (x->bsums[2 * static_cast<int64_t>(j)] +
                           x->bsums[2 * static_cast<int64_t>(j) + 1]);
      }
      sum += LoadHalf(w) * x->d * static_cast<float>(dot) -
             LoadHalf(w + 2) * x->d * static_cast<float>(mins_dot);
    }
    return sum;
  }
};

struct Q6_KDot {
  static float Row(const uint8_t* w, const uint8_t* x_bytes, int64_t cols) {
    const ActQ8K* x = reinterpret_cast<const ActQ8K*>(x_bytes);
    float sum = 0;
    for (int64_t b = 0; b < cols / 256; ++b, w += kQ6_KBytes, ++x) {
      const int8_t* sc = reinterpret_cast<const int8_t*>(w + 192);
      int dot = 0;
      for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = w + 64 * static_cast<int64_t>(half);
        const uint8_t* qh = w + 128 + 32 * static_cast<int64_t>(half);
        const int8_t* xq = x->q + 128 * static_cast<int64_t>(half);
        for (int l = 0; l < 32; ++l) {
          const int s = 8 * half + l / 16;
          dot += sc[s] * (((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32) * xq[l];
          dot += sc[s + 2] * (((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32) * xq[l + 32];
          dot += sc[s + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * xq[l + 64];
          dot += sc[s + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * xq[l + 96];
        }
      }
      sum += LoadHalf(w + 208) * x->d * static_cast<float>(dot);
    }
    return sum;
  }
};

template <float (*kLoad)(const uint8_t*, int64_t)>
struct FloatDot {
  static float Row(const uint8_t* w, const uint8_t* x_bytes, int64_t cols) {
    const float* x = reinterpret_cast<const float*>(x_bytes);
    float sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += kLoad(w, c) * x[c];
    return sum;
  }
};
float LoadF32(const uint8_t* row, int64_t c) { return reinterpret_cast<const float*>(row)[c]; }
float LoadF16(const uint8_t* row, int64_t c) { return LoadHalf(row + 2 * c); }
float LoadBf16(const uint8_t* row, int64_t c) { return Bf16ToFloat(Load16(row + 2 * c)); }

template <class D>
struct PairType {
  static constexpr int kRows = 4, kTokens = 4;
  template <int RM, int RN>
  static void Tile(const TileArgs& a) {
    PairTile<D, RM, RN>(a);
  }
};

using Q8_0Type = PairType<Block32Dot<Q8_0BlockDot, kQ8_0Bytes>>;
using Q4_0Type = PairType<Block32Dot<Q4_0BlockDot, kQ4_0Bytes>>;
using Q4_1Type = PairType<Block32Dot<Q4_1BlockDot, kQ4_1Bytes>>;
using Q4_KType = PairType<Q4_KDot>;
using Q6_KType = PairType<Q6_KDot>;
using F32Type = PairType<FloatDot<LoadF32>>;
using F16Type = PairType<FloatDot<LoadF16>>;
using Bf16Type = PairType<FloatDot<LoadBf16>>;

#endif  // SILO_MATMUL_AVX2

// ---------------------------------------------------------------------------------------------
// Exact products of quantized weights: a tile's rows are expanded to f32 (thread-local scratch,
// a few KiB) and multiplied with the f32 activations by the F32 tile, so the result is the f32
// product of the dequantized matrix, as an f32 reference computes it.

// Expands one row of `cols` elements of `type` to f32.
using ExpandRowFn = void (*)(const uint8_t* row, int64_t cols, float* out);

#if SILO_MATMUL_AVX2

// Eight bytes from `bytes` as f32, unsigned or signed.
inline __m256 U8ToFloat(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }
inline __m256 I8ToFloat(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)); }

// The 32 nibbles of a Q4_0/Q4_1 block as f32 q·d + offset (elements 0..15 are the low nibbles).
inline void ExpandNibbles(const uint8_t* qs, __m256 d, __m256 offset, __m256 out[4]) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i low = _mm_and_si128(bytes, mask);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  out[0] = _mm256_fmadd_ps(U8ToFloat(low), d, offset);
  out[1] = _mm256_fmadd_ps(U8ToFloat(_mm_srli_si128(low, 8)), d, offset);
  out[2] = _mm256_fmadd_ps(U8ToFloat(high), d, offset);
  out[3] = _mm256_fmadd_ps(U8ToFloat(_mm_srli_si128(high, 8)), d, offset);
}

// Expanders of one block of 32 into four vectors of 8 f32.
struct Q4_0Expand {
  static constexpr int64_t kBlockBytes = kQ4_0Bytes;
  static void Expand(const uint8_t* block, __m256 out[4]) {
    const float d = LoadHalf(block);
    ExpandNibbles(block + 2, _mm256_set1_ps(d), _mm256_set1_ps(-8.0f * d), out);
  }
};
struct Q4_1Expand {
  static constexpr int64_t kBlockBytes = kQ4_1Bytes;
  static void Expand(const uint8_t* block, __m256 out[4]) {
    ExpandNibbles(block + 4, _mm256_set1_ps(LoadHalf(block)), _mm256_set1_ps(LoadHalf(block + 2)),
                  out);
  }
};
struct Q8_0Expand {
  static constexpr int64_t kBlockBytes = kQ8_0Bytes;
  static void Expand(const uint8_t* block, __m256 out[4]) {
    const __m256 d = _mm256_set1_ps(LoadHalf(block));
    for (int64_t i = 0; i < 4; ++i) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * i));
      out[i] = _mm256_mul_ps(I8ToFloat(q), d);
    }
  }
};

template <class E>
void ExpandRow(const uint8_t* row, int64_t cols, float* out) {
  for (int64_t b = 0; b < cols / 32; ++b, row += E::kBlockBytes, out += 32) {
    __m256 w[4];
    E::Expand(row, w);
    for (int64_t i = 0; i < 4; ++i) _mm256_storeu_ps(out + 8 * i, w[i]);
  }
}

// Decode (a token or two): each block is expanded in registers and used at once, since there
// are too few tokens to pay for a round trip through scratch.
template <class E, int RM, int RN>
void ExpandedBlock32Tile(const TileArgs& a) {
  // Two accumulators per (row, token): twice the independent FMA chains.
  __m256 even[RM][RN], odd[RM][RN];
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < RN; ++t) even[r][t] = odd[r][t] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < a.cols / 32; ++b) {
    for (int r = 0; r < RM; ++r) {
      const uint8_t* block = a.w + r * a.row_bytes + b * E::kBlockBytes;
      _mm_prefetch(reinterpret_cast<const char*>(block + kPrefetchBytes), _MM_HINT_T0);
      __m256 w[4];
      E::Expand(block, w);
      for (int t = 0; t < RN; ++t) {
        const float* x = reinterpret_cast<const float*>(a.x + t * a.x_stride) + 32 * b;
        even[r][t] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), even[r][t]);
        odd[r][t] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), odd[r][t]);
        even[r][t] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), even[r][t]);
        odd[r][t] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), odd[r][t]);
      }
    }
  }
  for (int t = 0; t < RN; ++t) {
    for (int r = 0; r < RM; ++r) {
      a.y[t * a.y_stride + r] = HorizontalSum(_mm256_add_ps(even[r][t], odd[r][t]));
    }
  }
}

template <class E>
struct ExpandedBlock32Type {
  static constexpr int kRows = 4, kTokens = 1;
  template <int RM, int RN>
  static void Tile(const TileArgs& a) {
    ExpandedBlock32Tile<E, RM, RN>(a);
  }
};

#endif  // SILO_MATMUL_AVX2

// The reference conversion (dequantize.h), for the types without a vectorized expander.
template <GgmlType kType>
void ExpandRowWithReference(const uint8_t* row, int64_t cols, float* out) {
  const GgmlTypeLayout layout = *LayoutOf(static_cast<uint32_t>(kType));
  const int64_t bytes = cols / layout.block_elements * layout.block_bytes;
  SILO_CHECK_OK(
      DequantizeRow(kType, {row, static_cast<size_t>(bytes)}, {out, static_cast<size_t>(cols)}));
}

// Where a tile finds its weight rows: in the model file, or expanded into scratch.
struct StoredRows {
  static const uint8_t* Rows(const WeightMatrix& w, int64_t r, int64_t /*n_rows*/,
                             int64_t* row_bytes) {
    *row_bytes = w.row_bytes;
    return w.data + r * w.row_bytes;
  }
};

template <ExpandRowFn kExpand>
struct ExpandedRows {
  static const uint8_t* Rows(const WeightMatrix& w, int64_t r, int64_t n_rows, int64_t* row_bytes) {
    thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < n_rows * w.cols) scratch.resize(n_rows * w.cols);
    for (int64_t i = 0; i < n_rows; ++i) {
      kExpand(w.data + (r + i) * w.row_bytes, w.cols, scratch.data() + i * w.cols);
    }
    *row_bytes = w.cols * static_cast<int64_t>(sizeof(float));
    return reinterpret_cast<const uint8_t*>(scratch.data());
  }
};

// ---------------------------------------------------------------------------------------------
// Driver: threads take ranges of row tiles; each walks its rows against chunks of tokens small
// enough that their activations stay in L2, in tiles of Type::kRows × Type::kTokens.

constexpr int64_t kTokenChunk = 64;

template <class Type, class RowSource>
void RunRows(const WeightMatrix& w, const uint8_t* x, int64_t x_stride, int64_t n_tokens, float* y,
             int64_t row_begin, int64_t row_end) {
  constexpr int kRows = Type::kRows, kTokens = Type::kTokens;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenChunk) {
    const int64_t t_end = std::min(n_tokens, t0 + kTokenChunk);
    for (int64_t r = row_begin; r < row_end; r += kRows) {
      const int64_t rm = std::min<int64_t>(kRows, row_end - r);
      int64_t row_bytes = 0;
      const uint8_t* rows = RowSource::Rows(w, r, rm, &row_bytes);
      for (int64_t t = t0; t < t_end; t += kTokens) {
        const int64_t rn = std::min<int64_t>(kTokens, t_end - t);
        TileArgs a{.w = rows,
                   .row_bytes = row_bytes,
                   .x = x + t * x_stride,
                   .x_stride = x_stride,
                   .cols = w.cols,
                   .y = y + t * w.rows + r,
                   .y_stride = w.rows};
        if (rm == kRows && rn == kTokens) {
          Type::template Tile<kRows, kTokens>(a);
        } else if (rm == kRows) {
          for (int64_t i = 0; i < rn; ++i, a.x += x_stride, a.y += w.rows) {
            Type::template Tile<kRows, 1>(a);
          }
        } else {
          for (int64_t i = 0; i < rm; ++i, a.w += row_bytes, ++a.y) {
            if (rn == kTokens) {
              Type::template Tile<1, kTokens>(a);
            } else {
              TileArgs b = a;
              for (int64_t j = 0; j < rn; ++j, b.x += x_stride, b.y += w.rows) {
                Type::template Tile<1, 1>(b);
              }
            }
          }
        }
      }
    }
  }
}

template <class Type, class RowSource = StoredRows>
void RunMatMul(const WeightMatrix& w, const uint8_t* x, int64_t x_stride, int64_t n_tokens,
               float* y, ThreadPool& pool) {
  const int64_t n_tiles = (w.rows + Type::kRows - 1) / Type::kRows;
  pool.ParallelFor(n_tiles, [&](int64_t begin, int64_t end) {
    RunRows<Type, RowSource>(w, x, x_stride, n_tokens, y, begin * Type::kRows,
                             std::min(w.rows, end * Type::kRows));
  });
}

template <ExpandRowFn kExpand>
void ExactMatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y,
                 ThreadPool& pool) {
  RunMatMul<F32Type, ExpandedRows<kExpand>>(w, reinterpret_cast<const uint8_t*>(x),
                                            w.cols * static_cast<int64_t>(sizeof(float)), n_tokens,
                                            y, pool);
}

#if SILO_MATMUL_AVX2
// Up to this many tokens, blocks are expanded in registers for each token; beyond, rows are
// expanded once into scratch and shared by the tokens of a chunk.
constexpr int64_t kMaxTokensExpandedInRegisters = 2;

template <class E>
void ExactBlock32MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y,
                        ThreadPool& pool) {
  if (n_tokens <= kMaxTokensExpandedInRegisters) {
    RunMatMul<ExpandedBlock32Type<E>>(w, reinterpret_cast<const uint8_t*>(x),
                                      w.cols * static_cast<int64_t>(sizeof(float)), n_tokens, y,
                                      pool);
  } else {
    ExactMatMul<ExpandRow<E>>(w, x, n_tokens, y, pool);
  }
}
#endif

// Quantizes the rows of x into per-thread scratch, in parallel when there are many.
template <class Act, void (*kQuantize)(const float*, int64_t, Act*), int kBlock>
const uint8_t* QuantizeActivations(const float* x, int64_t n_tokens, int64_t cols,
                                   ThreadPool& pool) {
  thread_local std::vector<Act> scratch;
  const int64_t blocks_per_row = cols / kBlock;
  if (static_cast<int64_t>(scratch.size()) < n_tokens * blocks_per_row) {
    scratch.resize(n_tokens * blocks_per_row);
  }
  Act* out = scratch.data();
  const auto quantize = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) kQuantize(x + t * cols, cols, out + t * blocks_per_row);
  };
  if (n_tokens * cols >= 16384) {
    pool.ParallelFor(n_tokens, quantize);
  } else {
    quantize(0, n_tokens);
  }
  return reinterpret_cast<const uint8_t*>(out);
}

template <class Type>
void QuantizedMatMul32(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y,
                       ThreadPool& pool) {
  const uint8_t* xq = QuantizeActivations<ActQ8, QuantizeRowQ8, 32>(x, n_tokens, w.cols, pool);
  RunMatMul<Type>(w, xq, (w.cols / 32) * static_cast<int64_t>(sizeof(ActQ8)), n_tokens, y, pool);
}

template <class Type>
void QuantizedMatMul256(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y,
                        ThreadPool& pool) {
  const uint8_t* xq = QuantizeActivations<ActQ8K, QuantizeRowQ8K, 256>(x, n_tokens, w.cols, pool);
  RunMatMul<Type>(w, xq, (w.cols / 256) * static_cast<int64_t>(sizeof(ActQ8K)), n_tokens, y, pool);
}

}  // namespace

bool CanMatMul(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

absl::Status ValidateWeightMatrix(const WeightMatrix& w) {
  SILO_ASSIGN_OR_RETURN(const GgmlTypeLayout layout, LayoutOf(static_cast<uint32_t>(w.type)));
  if (!CanMatMul(w.type)) {
    return absl::InvalidArgumentError(
        StrCat("matmul: weight type ", layout.name, " is not supported"));
  }
  if (w.rows <= 0 || w.cols <= 0) {
    return absl::InvalidArgumentError(
        StrCat("matmul: shape [", w.rows, ", ", w.cols, "] is empty or negative"));
  }
  if (w.cols % layout.block_elements != 0) {
    return absl::InvalidArgumentError(StrCat("matmul: ", w.cols, " columns of ", layout.name,
                                             " are not whole blocks of ", layout.block_elements));
  }
  const int64_t expected = w.cols / layout.block_elements * layout.block_bytes;
  if (w.row_bytes != expected) {
    return absl::InvalidArgumentError(StrCat("matmul: a row of ", w.cols, " ", layout.name,
                                             " takes ", expected, " bytes, not ", w.row_bytes));
  }
  if (w.data == nullptr) return absl::InvalidArgumentError("matmul: weight data is null");
  return absl::OkStatus();
}

void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatMulPrecision precision) {
#ifndef NDEBUG
  SILO_CHECK_OK(ValidateWeightMatrix(w));
#endif
  if (n_tokens <= 0) return;
  const auto* x_bytes = reinterpret_cast<const uint8_t*>(x);
  const int64_t x_stride = w.cols * static_cast<int64_t>(sizeof(float));
  if (precision == MatMulPrecision::kExact) {
    switch (w.type) {
#if SILO_MATMUL_AVX2
      case GgmlType::kQ8_0:
        return ExactBlock32MatMul<Q8_0Expand>(w, x, n_tokens, y, pool);
      case GgmlType::kQ4_0:
        return ExactBlock32MatMul<Q4_0Expand>(w, x, n_tokens, y, pool);
      case GgmlType::kQ4_1:
        return ExactBlock32MatMul<Q4_1Expand>(w, x, n_tokens, y, pool);
#else
      case GgmlType::kQ8_0:
        return ExactMatMul<ExpandRowWithReference<GgmlType::kQ8_0>>(w, x, n_tokens, y, pool);
      case GgmlType::kQ4_0:
        return ExactMatMul<ExpandRowWithReference<GgmlType::kQ4_0>>(w, x, n_tokens, y, pool);
      case GgmlType::kQ4_1:
        return ExactMatMul<ExpandRowWithReference<GgmlType::kQ4_1>>(w, x, n_tokens, y, pool);
#endif
      case GgmlType::kQ4_K:
        return ExactMatMul<ExpandRowWithReference<GgmlType::kQ4_K>>(w, x, n_tokens, y, pool);
      case GgmlType::kQ6_K:
        return ExactMatMul<ExpandRowWithReference<GgmlType::kQ6_K>>(w, x, n_tokens, y, pool);
      default:
        break;  // F32, F16, BF16: the products below are already exact
    }
  }
  switch (w.type) {
    case GgmlType::kF32:
      return RunMatMul<F32Type>(w, x_bytes, x_stride, n_tokens, y, pool);
    case GgmlType::kF16:
      return RunMatMul<F16Type>(w, x_bytes, x_stride, n_tokens, y, pool);
    case GgmlType::kBF16:
      return RunMatMul<Bf16Type>(w, x_bytes, x_stride, n_tokens, y, pool);
    case GgmlType::kQ8_0:
      return QuantizedMatMul32<Q8_0Type>(w, x, n_tokens, y, pool);
    case GgmlType::kQ4_0:
      return QuantizedMatMul32<Q4_0Type>(w, x, n_tokens, y, pool);
    case GgmlType::kQ4_1:
      return QuantizedMatMul32<Q4_1Type>(w, x, n_tokens, y, pool);
    case GgmlType::kQ4_K:
      return QuantizedMatMul256<Q4_KType>(w, x, n_tokens, y, pool);
    case GgmlType::kQ6_K:
      return QuantizedMatMul256<Q6_KType>(w, x, n_tokens, y, pool);
    default:
      SILO_CHECK(CanMatMul(w.type))
          << "matmul: unsupported weight type " << static_cast<uint32_t>(w.type);
  }
}

}  // namespace silo::engine
