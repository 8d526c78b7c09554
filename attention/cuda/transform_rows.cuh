// Launcher of row transforms (attention_args.h: RowTransformArgs): scrambling and unscrambling
// of key, value, query and output rows on CUDA. Device pointers.
#ifndef SILO_ATTENTION_CUDA_TRANSFORM_ROWS_CUH_
#define SILO_ATTENTION_CUDA_TRANSFORM_ROWS_CUH_

#include <cuda_runtime.h>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

// Arguments were validated by the caller. One row per warp, rows in shared memory.
cudaError_t LaunchTransformRows(const RowTransformArgs& args, cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_TRANSFORM_ROWS_CUH_
