// The CUDA attention backend: device memory, one stream, kernels in attention/cuda/*.cu.
// Thread-safety: one thread at a time (see backend.h).
#ifndef SILO_ATTENTION_CUDA_CUDA_BACKEND_H_
#define SILO_ATTENTION_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "attention/backend.h"

namespace silo::attention {

// Unavailable when no CUDA device is present or the runtime cannot start.
absl::StatusOr<std::unique_ptr<AttentionBackend>> CreateCudaBackend();

}  // namespace silo::attention

#endif  // SILO_ATTENTION_CUDA_CUDA_BACKEND_H_
