#include "node/internal/attention_rows.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::node::internal {
namespace {

bool IsFinite16(uint16_t bits, v1::DType dtype) {
  const uint16_t exponent = dtype == v1::DTYPE_F16 ? 0x7c00 : 0x7f80;
  return (bits & exponent) != exponent;
}

}  // namespace

size_t KvElementBytes(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return 4;
    case v1::DTYPE_F16:
    case v1::DTYPE_BF16:
      return 2;
    case v1::DTYPE_I8:
      return 1;
    default:
      return 0;
  }
}

absl::StatusOr<std::vector<uint8_t>> DecodeRows(const v1::Tensor& tensor, v1::DType dtype,
                                                int64_t rows, int64_t max_rows, int head_dim,
                                                std::string_view what, int64_t* rows_out) {
  if (tensor.dtype() != dtype) {
    return absl::InvalidArgumentError(StrCat(what, ": dtype ", v1::DType_Name(tensor.dtype()),
                                             ", not the session's ", v1::DType_Name(dtype)));
  }
  if (tensor.shape_size() != 2 || tensor.shape(1) != head_dim ||
      (rows >= 0 ? tensor.shape(0) != rows : (tensor.shape(0) < 1 || tensor.shape(0) > max_rows))) {
    return absl::InvalidArgumentError(StrCat(what, ": shape must be [",
                                             rows >= 0 ? StrCat(rows) : StrCat("1..", max_rows),
                                             ", ", head_dim, "]"));
  }
  const int64_t n = tensor.shape(0);
  const size_t elements = static_cast<size_t>(n) * static_cast<size_t>(head_dim);
  const size_t element_bytes = KvElementBytes(dtype);
  if (tensor.data().size() != elements * element_bytes) {
    return absl::InvalidArgumentError(
        StrCat(what, ": ", tensor.data().size(), " bytes of data for ", elements, " elements"));
  }
  if ((dtype == v1::DTYPE_I8) != (tensor.row_scales_size() > 0) ||
      (dtype == v1::DTYPE_I8 && tensor.row_scales_size() != n)) {
    return absl::InvalidArgumentError(StrCat(what, ": row_scales: one per row with I8 only"));
  }
  if (rows_out != nullptr) *rows_out = n;
  const auto* data = reinterpret_cast<const uint8_t*>(tensor.data().data());
  if (dtype == v1::DTYPE_F16 || dtype == v1::DTYPE_BF16) {
    for (size_t i = 0; i < elements; ++i) {
      const uint16_t bits = static_cast<uint16_t>(data[2 * i] | (data[2 * i + 1] << 8));
      if (!IsFinite16(bits, dtype)) return absl::InvalidArgumentError(StrCat(what, ": NaN or Inf"));
    }
    return std::vector<uint8_t>(data, data + tensor.data().size());
  }
  std::vector<float> values(elements);
  if (dtype == v1::DTYPE_F32) {
    std::memcpy(values.data(), data, tensor.data().size());
  } else {  // I8: value × its row's scale
    for (size_t i = 0; i < elements; ++i) {
      values[i] = static_cast<float>(static_cast<int8_t>(data[i])) *
                  tensor.row_scales(static_cast<int>(i / static_cast<size_t>(head_dim)));
    }
  }
  for (const float value : values) {
    if (!std::isfinite(value)) return absl::InvalidArgumentError(StrCat(what, ": NaN or Inf"));
  }
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

v1::Tensor F32Tensor(std::span<const float> values, const std::vector<int64_t>& shape) {
  v1::Tensor tensor;
  tensor.set_dtype(v1::DTYPE_F32);
  for (const int64_t d : shape) tensor.add_shape(d);
  tensor.set_data(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return tensor;
}

absl::Status AttendRows(attention::AttentionBackend& backend, const float* q, int64_t n_rows,
                        const void* k, const void* v, attention::KvDType kv_dtype, int64_t n_kv,
                        int32_t head_dim, float scale, v1::AttentionPartial& partial) {
  constexpr int64_t kMaxRows = std::numeric_limits<int32_t>::max();
  if (n_rows > kMaxRows || n_kv > kMaxRows) {
    return absl::InvalidArgumentError(StrCat("attention over ", n_kv, " keys for ", n_rows,
                                             " query rows exceeds the backend's row counts"));
  }
  std::vector<float> o(static_cast<size_t>(n_rows) * static_cast<size_t>(head_dim));
  std::vector<float> m(static_cast<size_t>(n_rows));
  std::vector<float> l(static_cast<size_t>(n_rows));
  const attention::PartialAttentionArgs args{
      .q = q,
      .k = k,
      .v = v,
      .kv_dtype = kv_dtype,
      .q_positions = nullptr,
      .kv_positions = nullptr,
      .n_q = static_cast<int32_t>(n_rows),  // each row its own "token" of one head
      .n_kv = static_cast<int32_t>(n_kv),
      .n_heads = 1,
      .n_kv_heads = 1,
      .head_dim = head_dim,
      .scale = scale,
      .o = o.data(),
      .m = m.data(),
      .l = l.data()};
  SILO_RETURN_IF_ERROR(backend.PartialAttention(args));
  *partial.mutable_m() = F32Tensor(m, {n_rows});
  *partial.mutable_l() = F32Tensor(l, {n_rows});
  *partial.mutable_o() = F32Tensor(o, {n_rows, head_dim});
  return absl::OkStatus();
}

}  // namespace silo::node::internal
