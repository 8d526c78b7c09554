#include "engine/dequantize.h"

#include <cstring>

#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

uint16_t Load16(const uint8_t* p) {
  uint16_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

float LoadHalf(const uint8_t* p) { return HalfToFloat(Load16(p)); }

// Q4_0, 32 elements in 18 bytes: f16 d, 16 bytes of nibbles; low nibbles are elements 0..15,
// high nibbles 16..31; x = (q − 8)·d.
void Q4_0Block(const uint8_t* block, float* out) {
  const float d = LoadHalf(block);
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    out[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    out[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

// Q4_1, 32 elements in 20 bytes: f16 d, f16 m, 16 bytes of nibbles (as Q4_0); x = q·d + m.
void Q4_1Block(const uint8_t* block, float* out) {
  const float d = LoadHalf(block);
  const float m = LoadHalf(block + 2);
  const uint8_t* qs = block + 4;
  for (int j = 0; j < 16; ++j) {
    out[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    out[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q8_0, 32 elements in 34 bytes: f16 d, 32 int8; x = q·d.
void Q8_0Block(const uint8_t* block, float* out) {
  const float d = LoadHalf(block);
  const int8_t* qs = reinterpret_cast<const int8_t*>(block + 2);
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(qs[j]) * d;
}

// 6-bit scale and min of sub-block j of a Q4_K block, packed in 12 bytes.
void ScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Q4_K, 256 elements in 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8
// sub-blocks of 32, 128 bytes of nibbles (each 32 bytes: low nibbles one sub-block, high the
// next); x = d·scale·q − dmin·min.
void Q4_KBlock(const uint8_t* block, float* out) {
  const float d = LoadHalf(block);
  const float dmin = LoadHalf(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* q = block + 16;
  for (int pair = 0; pair < 4; ++pair) {
    uint8_t scale, min;
    ScaleMinK4(2 * pair, scales, &scale, &min);
    const float d1 = d * scale, m1 = dmin * min;
    ScaleMinK4(2 * pair + 1, scales, &scale, &min);
    const float d2 = d * scale, m2 = dmin * min;
    for (int l = 0; l < 32; ++l) out[l] = d1 * static_cast<float>(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) out[32 + l] = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    out += 64;
  }
}

// Q6_K, 256 elements in 210 bytes: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16
// int8 scales (one per 16 elements), f16 d; x = d·scale·(q − 32).
void Q6_KBlock(const uint8_t* block, float* out) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(block + 192);
  const float d = LoadHalf(block + 208);
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      out[l] = d * sc[is] * static_cast<float>(q1);
      out[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
      out[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
      out[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
    }
    out += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using BlockFunction = void (*)(const uint8_t*, float*);

BlockFunction BlockFunctionOf(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return Q4_0Block;
    case GgmlType::kQ4_1:
      return Q4_1Block;
    case GgmlType::kQ8_0:
      return Q8_0Block;
    case GgmlType::kQ4_K:
      return Q4_KBlock;
    case GgmlType::kQ6_K:
      return Q6_KBlock;
    default:
      return nullptr;
  }
}

}  // namespace

bool CanDequantize(GgmlType type) {
  return type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16 ||
         BlockFunctionOf(type) != nullptr;
}

absl::Status DequantizeRow(GgmlType type, std::span<const uint8_t> data, std::span<float> out) {
  SILO_ASSIGN_OR_RETURN(const GgmlTypeLayout layout, LayoutOf(static_cast<uint32_t>(type)));
  if (!CanDequantize(type)) {
    return absl::InvalidArgumentError(
        StrCat("dequantize: type ", layout.name, " is not supported"));
  }
  const size_t n = out.size();
  if (n % layout.block_elements != 0) {
    return absl::InvalidArgumentError(StrCat("dequantize: ", n, " elements of ", layout.name,
                                             " are not whole blocks of ", layout.block_elements));
  }
  const size_t n_blocks = n / layout.block_elements;
  if (data.size() != n_blocks * layout.block_bytes) {
    return absl::InvalidArgumentError(StrCat("dequantize: ", n, " elements of ", layout.name,
                                             " take ", n_blocks * layout.block_bytes,
                                             " bytes, not ", data.size()));
  }
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), data.data(), n * sizeof(float));
      return absl::OkStatus();
    case GgmlType::kF16:
      for (size_t i = 0; i < n; ++i) out[i] = HalfToFloat(Load16(data.data() + 2 * i));
      return absl::OkStatus();
    case GgmlType::kBF16:
      for (size_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(Load16(data.data() + 2 * i));
      return absl::OkStatus();
    default:
      break;
  }
  const BlockFunction block = BlockFunctionOf(type);
  for (size_t b = 0; b < n_blocks; ++b) {
    block(data.data() + b * layout.block_bytes, out.data() + b * layout.block_elements);
  }
  return absl::OkStatus();
}

}  // namespace silo::engine
