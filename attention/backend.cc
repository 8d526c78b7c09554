#include "attention/backend.h"

#include <limits>
#include <utility>

#include "attention/cpu/cpu_backend.h"
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
  return absl::OkStatus();
}

absl::Status ValidateTransformRows(const RowTransformArgs& a) {
  constexpr std::string_view kOp = "row transform";
  if (a.dim <= 0 || a.dim > kMaxHeadDim) {
    return Invalid(kOp, StrCat("dim ", a.dim, " is outside [1, ", kMaxHeadDim, "]"));
  }
  if (a.mix == RowMix::kHadamard && !IsPowerOfTwo(a.dim)) {
    return Invalid(kOp, StrCat("the Hadamard mix needs a power-of-two dim, not ", a.dim));
  }
  if (a.mix != RowMix::kHadamard && a.mix != RowMix::kMatrix) return Invalid(kOp, "unknown mix");
  if (a.mix == RowMix::kMatrix && a.matrix == nullptr) return Invalid(kOp, "matrix is null");
  if (a.in_dim <= 0 || a.in_dim > a.dim || a.out_dim <= 0 || a.out_dim > a.dim) {
    return Invalid(kOp, StrCat("in_dim ", a.in_dim, " and out_dim ", a.out_dim,
                               " must be in [1, dim = ", a.dim, "]"));
  }
  if (a.n_rows < 0 || a.in_stride < a.in_dim || a.out_stride < a.out_dim) {
    return Invalid(kOp, "n_rows is negative or a row stride is shorter than its row");
  }
  if (a.pre_scale == nullptr || a.post_scale == nullptr ||
      (a.n_rows > 0 && (a.in == nullptr || a.out == nullptr))) {
    return Invalid(kOp, "a tensor pointer is null");
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
