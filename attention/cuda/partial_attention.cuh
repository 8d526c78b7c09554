// Launchers of partial attention on CUDA (attention_args.h: PartialAttentionArgs), device pointers.
//
// Few query rows per KV head (decode: n_q × group <= 8) run split-KV: the keys are cut into
// splits that fill the device, each block writes the partial of its split to scratch, and a
// merge combines them. More rows (prefill) run one warp per (query row, head) over tiles of keys
// in shared memory.
#ifndef SILO_ATTENTION_CUDA_PARTIAL_ATTENTION_CUH_
#define SILO_ATTENTION_CUDA_PARTIAL_ATTENTION_CUH_

#include <cuda_runtime.h>

#include <cstddef>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

// True for the head dims the kernels are built for: 64, 80, 96, 128, 256.
bool IsSupportedHeadDim(int head_dim);

struct PartialAttentionPlan {
  bool split_kv = false;
  int n_splits = 1;
  int keys_per_split = 0;
  size_t scratch_floats = 0;  // device floats the launch needs as scratch
};

// Arguments validated, head dim supported. `n_sms`: multiprocessors of the device.
PartialAttentionPlan PlanPartialAttention(const PartialAttentionArgs& args, int n_sms);

// `scratch` holds plan.scratch_floats floats (may be null when that is 0).
cudaError_t LaunchPartialAttention(const PartialAttentionArgs& args,
                                   const PartialAttentionPlan& plan, float* scratch,
                                   cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_PARTIAL_ATTENTION_CUH_
