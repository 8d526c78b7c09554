#include "attention/backend.h"

#include <limits>
#include <utility>

#include "attention/cpu/cpu_backend.h"
#include "common/status_macros.h"
#include "common/strings.h"
#ifdef SILO_HAVE_CUDA
#include "attention/cuda/cuda_backend.h"
#endif

namespace silo::attention {
namespace {

// Largest head_dim any backend accepts (keeps per-row scratch bounded).
constexpr int32_t kMaxHeadDim = 1024;

absl::Status Invalid(std::string_view op, std::string_view what) {
  return absl::InvalidArgumentError(StrCat(op, ": ", what));
}

bool IsPowerOfTwo(int32_t n) { return n > 0 && (n & (n - 1)) == 0; }

// The widest rows a merge unscrambles on any backend (the CUDA backend takes at most 256,
// cuda/merge.cuh); the head dims of real models pad to at most 256.
constexpr int32_t kMaxUnscrambleDimAnyBackend = 512;

absl::Status ValidateRowTransformSet(std::string_view op, const RowTransformSet& t) {
  if (t.count <= 0) return Invalid(op, StrCat("transform count must be positive, is ", t.count));
  if (t.dim <= 0 || t.dim > kMaxHeadDim) {
    return Invalid(op, StrCat("dim ", t.dim, " is outside [1, ", kMaxHeadDim, "]"));
  }
  if (t.mix == RowMix::kHadamard && !IsPowerOfTwo(t.dim)) {
    return Invalid(op, StrCat("the Hadamard mix needs a power-of-two dim, not ", t.dim));
  }
  if (t.mix != RowMix::kHadamard && t.mix != RowMix::kMatrix) return Invalid(op, "unknown mix");
  if (t.mix == RowMix::kMatrix && t.matrix == nullptr) return Invalid(op, "matrix is null");
  if (t.in_dim <= 0 || t.in_dim > t.dim || t.out_dim <= 0 || t.out_dim > t.dim) {
    return Invalid(op, StrCat("in_dim ", t.in_dim, " and out_dim ", t.out_dim,
                              " must be in [1, dim = ", t.dim, "]"));
  }
  if (t.pre_scale == nullptr || t.post_scale == nullptr) {
    return Invalid(op, "a transform's scales are null");
  }
  return absl::OkStatus();
}

}  // namespace

BackendBuffer::BackendBuffer(BackendBuffer&& other) noexcept
    : backend_(std::exchange(other.backend_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

BackendBuffer& BackendBuffer::operator=(BackendBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    backend_ = std::exchange(other.backend_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

BackendBuffer::~BackendBuffer() { Release(); }

void BackendBuffer::Release() {
  if (backend_ != nullptr && data_ != nullptr) backend_->Free(data_);
  data_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<std::unique_ptr<AttentionBackend>> CreateBackend(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu:
      return std::unique_ptr<AttentionBackend>(std::make_unique<CpuBackend>());
    case BackendKind::kCuda:
#ifdef SILO_HAVE_CUDA
      return CreateCudaBackend();
#else
      return absl::UnavailableError("attention: silo was built without CUDA");
#endif
  }
  return absl::InvalidArgumentError("attention: unknown backend kind");
}

absl::Status ValidatePartialAttention(const PartialAttentionArgs& a) {
  constexpr std::string_view kOp = "partial attention";
  if (a.n_q <= 0) return Invalid(kOp, StrCat("n_q must be positive, is ", a.n_q));
  if (a.n_kv < 0) return Invalid(kOp, StrCat("n_kv must not be negative, is ", a.n_kv));
  if (a.n_heads <= 0 || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0) {
    return Invalid(kOp, StrCat("n_heads (", a.n_heads, ") must be a positive multiple of ",
                               "n_kv_heads (", a.n_kv_heads, ")"));
  }
  if (a.head_dim <= 0 || a.head_dim > kMaxHeadDim) {
    return Invalid(kOp, StrCat("head_dim ", a.head_dim, " is outside [1, ", kMaxHeadDim, "]"));
  }
  if (!(a.scale > 0) || a.scale == std::numeric_limits<float>::infinity()) {
    return Invalid(kOp, "scale must be positive and finite");
  }
  if (a.kv_dtype != KvDType::kF32 && a.kv_dtype != KvDType::kF16 && a.kv_dtype != KvDType::kBF16) {
    return Invalid(kOp, "unknown kv_dtype");
  }
  // Row counts are int32 in the kernels: bound every product of shapes that indexes a row.
  if (static_cast<int64_t>(a.n_q) * a.n_heads > std::numeric_limits<int32_t>::max() ||
      static_cast<int64_t>(a.n_kv) * a.n_kv_heads > std::numeric_limits<int32_t>::max()) {
    return Invalid(kOp, "n_q × n_heads and n_kv × n_kv_heads must each fit in int32");
  }
  if ((a.q_positions == nullptr) != (a.kv_positions == nullptr)) {
    return Invalid(kOp, "q_positions and kv_positions must be both set or both null");
  }
  if (a.q == nullptr || a.o == nullptr || a.m == nullptr || a.l == nullptr ||
      (a.n_kv > 0 && (a.k == nullptr || a.v == nullptr))) {
    return Invalid(kOp, "a tensor pointer is null");
  }
  if (a.also_transform.n_rows > 0) SILO_RETURN_IF_ERROR(ValidateTransformRows(a.also_transform));
  return absl::OkStatus();
}

absl::Status ValidateMerge(const MergeArgs& a) {
  constexpr std::string_view kOp = "merge";
  if (a.n_parts <= 0) return Invalid(kOp, StrCat("n_parts must be positive, is ", a.n_parts));
  if (a.n_rows <= 0) return Invalid(kOp, StrCat("n_rows must be positive, is ", a.n_rows));
  if (a.head_dim <= 0 || a.head_dim > kMaxHeadDim) {
    return Invalid(kOp, StrCat("head_dim ", a.head_dim, " is outside [1, ", kMaxHeadDim, "]"));
  }
  if (a.o == nullptr || a.m == nullptr || a.l == nullptr || a.out_o == nullptr ||
      a.out_m == nullptr || a.out_l == nullptr) {
    return Invalid(kOp, "a tensor pointer is null");
  }
  if (a.unscramble_index != nullptr) {
    SILO_RETURN_IF_ERROR(ValidateRowTransformSet(kOp, a.unscramble));
    if (a.unscramble.out_dim != a.head_dim || a.unscramble.in_dim < a.head_dim ||
        a.unscramble.dim > kMaxUnscrambleDimAnyBackend) {
      return Invalid(kOp,
                     StrCat("unscrambling ", a.unscramble.in_dim, " of ", a.unscramble.dim,
                            " columns to ", a.unscramble.out_dim, " needs out_dim = head_dim (",
                            a.head_dim, ") <= in_dim and dim <= ", kMaxUnscrambleDimAnyBackend));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTransformRows(const RowTransformArgs& a) {
  constexpr std::string_view kOp = "row transform";
  SILO_RETURN_IF_ERROR(ValidateRowTransformSet(kOp, a.transforms));
  if (a.n_rows < 0 || a.n_in_rows < 0 || a.in_stride < a.transforms.in_dim ||
      a.out_stride < a.transforms.out_dim) {
    return Invalid(kOp, "a row count is negative or a row stride is shorter than its row");
  }
  if (a.source == nullptr && a.n_in_rows < a.n_rows) {
    return Invalid(kOp, StrCat("without source rows, in needs n_rows (", a.n_rows,
                               ") rows, not n_in_rows ", a.n_in_rows));
  }
  if (a.n_rows > 0 && (a.in == nullptr || a.out == nullptr || a.n_in_rows == 0)) {
    return Invalid(kOp, "a tensor pointer is null or in has no rows");
  }
  return absl::OkStatus();
}

absl::Status ValidateGatherRows(const GatherRowsArgs& a) {
  constexpr std::string_view kOp = "gather rows";
  if (a.n_in < 0 || a.n_out < 0 || a.row_bytes <= 0) {
    return Invalid(kOp, "n_in and n_out must not be negative and row_bytes must be positive");
  }
  if (a.n_out > 0 && (a.in == nullptr || a.out == nullptr || a.rows == nullptr)) {
    return Invalid(kOp, "a tensor pointer is null");
  }
  return absl::OkStatus();
}

}  // namespace silo::attention
