// Launcher of the merge of partials (attention_args.h: MergeArgs), device pointers.
#ifndef SILO_ATTENTION_CUDA_MERGE_CUH_
#define SILO_ATTENTION_CUDA_MERGE_CUH_

#include <cuda_runtime.h>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

// Arguments were validated by the caller. One block per row.
cudaError_t LaunchMerge(const MergeArgs& args, cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_MERGE_CUH_
