#include "attention/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "attention/cuda/gather_rows.cuh"
#include "attention/cuda/merge.cuh"
#include "attention/cuda/partial_attention.cuh"
#include "attention/cuda/transform_rows.cuh"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::attention {
namespace {

// The one place CUDA errors become Status.
absl::Status CudaStatus(cudaError_t error, std::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message = StrCat("cuda: ", what, ": ", cudaGetErrorString(error));
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorInvalidValue:
      return absl::InvalidArgumentError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

class CudaBackend final : public AttentionBackend {
 public:
  CudaBackend(cudaStream_t stream, int n_sms) : stream_(stream), n_sms_(n_sms) {}
  ~CudaBackend() override {
    scratch_ = BackendBuffer();
    cudaStreamDestroy(stream_);
  }

  std::string_view name() const override { return "cuda"; }

  absl::StatusOr<BackendBuffer> Allocate(size_t bytes) override {
    void* data = nullptr;
    SILO_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&data, std::max<size_t>(bytes, 1)),
                                    StrCat("allocating ", bytes, " bytes")));
    return BackendBuffer(this, data, bytes);
  }

  absl::Status CopyIn(void* backend_dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    return CudaStatus(
        cudaMemcpyAsync(backend_dst, host_src, bytes, cudaMemcpyHostToDevice, stream_),
        "copy to device");
  }

  absl::Status CopyOut(void* host_dst, const void* backend_src, size_t bytes) override {
    if (bytes > 0) {
      SILO_RETURN_IF_ERROR(
          CudaStatus(cudaMemcpyAsync(host_dst, backend_src, bytes, cudaMemcpyDeviceToHost, stream_),
                     "copy to host"));
    }
    return Synchronize();
  }

  absl::Status Synchronize() override {
    return CudaStatus(cudaStreamSynchronize(stream_), "synchronize");
  }

  absl::Status PartialAttention(const PartialAttentionArgs& args) override {
    SILO_RETURN_IF_ERROR(ValidatePartialAttention(args));
    if (!cuda::IsSupportedHeadDim(args.head_dim)) {
      return absl::InvalidArgumentError(StrCat("cuda partial attention: head_dim ", args.head_dim,
                                               " is not one of 64, 80, 96, 128, 256"));
    }
    if (reinterpret_cast<uintptr_t>(args.k) % 16 != 0 ||
        reinterpret_cast<uintptr_t>(args.v) % 16 != 0) {
      return absl::InvalidArgumentError(
          "cuda partial attention: k and v must be 16-byte aligned (the kernels copy 16 bytes)");
    }
    const cuda::PartialAttentionPlan plan = cuda::PlanPartialAttention(args, n_sms_);
    SILO_ASSIGN_OR_RETURN(float* scratch, Scratch(plan.scratch_floats));
    return CudaStatus(cuda::LaunchPartialAttention(args, plan, scratch, stream_),
                      "partial attention");
  }

  absl::Status MergePartials(const MergeArgs& args) override {
    SILO_RETURN_IF_ERROR(ValidateMerge(args));
    if (args.unscramble_index != nullptr && args.unscramble.dim > cuda::kMaxUnscrambleDim) {
      return absl::InvalidArgumentError(StrCat("cuda merge: unscrambling rows of ",
                                               args.unscramble.dim, " columns (at most ",
                                               cuda::kMaxUnscrambleDim, ")"));
    }
    return CudaStatus(cuda::LaunchMerge(args, nullptr, stream_), "merge");
  }

  absl::Status TransformRows(const RowTransformArgs& args) override {
    SILO_RETURN_IF_ERROR(ValidateTransformRows(args));
    return CudaStatus(cuda::LaunchTransformRows(args, stream_), "transform rows");
  }

  absl::Status GatherRows(const GatherRowsArgs& args) override {
    SILO_RETURN_IF_ERROR(ValidateGatherRows(args));
    return CudaStatus(cuda::LaunchGatherRows(args, stream_), "gather rows");
  }

 protected:
  void Free(void* data) override { cudaFree(data); }

 private:
  // Scratch for split-KV partials, grown on demand; stream order makes reuse safe.
  absl::StatusOr<float*> Scratch(size_t floats) {
    if (floats == 0) return nullptr;
    if (scratch_.bytes() < floats * sizeof(float)) {
      scratch_ = BackendBuffer();
      SILO_ASSIGN_OR_RETURN(scratch_, Allocate(floats * sizeof(float)));
    }
    return scratch_.as<float>();
  }

  cudaStream_t stream_;
  int n_sms_;
  BackendBuffer scratch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionBackend>> CreateCudaBackend() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    return absl::UnavailableError(
        StrCat("cuda: no usable device (",
               error == cudaSuccess ? "none found" : cudaGetErrorString(error), ")"));
  }
  int device = 0;
  int n_sms = 0;
  SILO_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&device), "get device"));
  SILO_RETURN_IF_ERROR(CudaStatus(
      cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, device), "device attributes"));
  cudaStream_t stream = nullptr;
  SILO_RETURN_IF_ERROR(
      CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "create stream"));
  return std::unique_ptr<AttentionBackend>(std::make_unique<CudaBackend>(stream, n_sms));
}

}  // namespace silo::attention
