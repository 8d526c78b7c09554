// Launcher of row transforms (attention_args.h: RowTransformArgs): scrambling and unscrambling
// of key, value, query and output rows on CUDA. Device pointers.
#ifndef SILO_ATTENTION_CUDA_TRANSFORM_ROWS_CUH_
#define SILO_ATTENTION_CUDA_TRANSFORM_ROWS_CUH_

#include <cuda_runtime.h>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

// Rows (warps) a block of the transform takes at `dim`: two rows of dim floats each in shared
// memory, within 48 KiB.
int TransformRowsPerBlock(int dim);

// Arguments were validated by the caller. One row per warp, rows in shared memory; a row whose
// source or transform index is out of range comes out as zeros.
cudaError_t LaunchTransformRows(const RowTransformArgs& args, cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_TRANSFORM_ROWS_CUH_
