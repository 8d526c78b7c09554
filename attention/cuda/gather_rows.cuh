// Launcher of row gathers (attention_args.h: GatherRowsArgs), e.g. the permutation Π, on CUDA.
// Device pointers. A row index outside [0, n_in) yields a zero row: indices live on the device
// and are not checked on the host; our callers build them from seeds.
#ifndef SILO_ATTENTION_CUDA_GATHER_ROWS_CUH_
#define SILO_ATTENTION_CUDA_GATHER_ROWS_CUH_

#include <cuda_runtime.h>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

cudaError_t LaunchGatherRows(const GatherRowsArgs& args, cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_GATHER_ROWS_CUH_
