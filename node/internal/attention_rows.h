// Row tensors of the attention RPCs, shared by the compute node's Attend
// (ScrambledAttentionService) and the owner's OwnerAttend (FedRagOwnerService): checked decoding
// of [rows, head_dim] tensors, and partial attention of query rows over one block of keys on the
// wire as an AttentionPartial. Private to node/. Thread-safety: pure functions; a backend serves
// one thread at a time.
#ifndef SILO_NODE_INTERNAL_ATTENTION_ROWS_H_
#define SILO_NODE_INTERNAL_ATTENTION_ROWS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/backend.h"
#include "silo/v1/common.pb.h"
#include "silo/v1/node.pb.h"

namespace silo::node::internal {

// Most query rows of one HeadQuery (query tokens × heads per KV head).
constexpr int64_t kMaxQueryRows = 4096;

// Element size of the K′/V′ dtypes a session may use (F32, F16, BF16, I8); 0 for the others.
size_t KvElementBytes(v1::DType dtype);

// The rows of a [rows, head_dim] tensor of `dtype`, checked (shape, size, finite values,
// row_scales only with I8), as stored: F32 for F32 and I8 (dequantized), else the 2-byte
// elements as they came. `rows` < 0 accepts any count in 1..max_rows; `rows_out` (optional)
// receives the count. InvalidArgument, naming `what`, for a tensor that fails a check.
absl::StatusOr<std::vector<uint8_t>> DecodeRows(const v1::Tensor& tensor, v1::DType dtype,
                                                int64_t rows, int64_t max_rows, int head_dim,
                                                std::string_view what, int64_t* rows_out);

// `values` as an F32 tensor of `shape`.
v1::Tensor F32Tensor(std::span<const float> values, const std::vector<int64_t>& shape);

// Partial attention of every query row over one block of keys, each row its own query of a single
// head; no mask, since the keys (chunks) sit before every query row in the virtual context.
// q: [n_rows, head_dim] f32; k, v: [n_kv, head_dim] of `kv_dtype`, host memory (a CPU backend).
// Sets m [n_rows], l [n_rows] and o [n_rows, head_dim] of `partial` as F32 tensors and leaves
// its indices alone. The backend's InvalidArgument for shapes it cannot run.
absl::Status AttendRows(attention::AttentionBackend& backend, const float* q, int64_t n_rows,
                        const void* k, const void* v, attention::KvDType kv_dtype, int64_t n_kv,
                        int32_t head_dim, float scale, v1::AttentionPartial& partial);

}  // namespace silo::node::internal

#endif  // SILO_NODE_INTERNAL_ATTENTION_ROWS_H_
