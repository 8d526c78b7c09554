// Launcher of the merge of partials (attention_args.h: MergeArgs), device pointers.
#ifndef SILO_ATTENTION_CUDA_MERGE_CUH_
#define SILO_ATTENTION_CUDA_MERGE_CUH_

#include <cuda_runtime.h>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

// Widest scrambled rows the merge unscrambles (the padded width of head_dim 256).
constexpr int kMaxUnscrambleDim = 256;

// Arguments were validated by the caller. One block per row, launched programmatically after the
// kernel before it. `side` (null or no rows: none) is a row transform the same launch runs in
// blocks of its own, independent of the merge (PartialAttentionArgs::also_transform). A part row
// whose unscramble index is out of range is left out of the merge.
cudaError_t LaunchMerge(const MergeArgs& args, const RowTransformArgs* side, cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_MERGE_CUH_
