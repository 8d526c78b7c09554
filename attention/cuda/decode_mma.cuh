// Split-KV decode partial attention on the tensor cores (mma.sync m16n8k16, f16 inputs, f32
// accumulation) for f16 keys and values. Used by partial_attention.cu where it applies: head_dim
// 64 or 128 and at most 8 query rows per KV head. C++17 (nvcc).
#ifndef SILO_ATTENTION_CUDA_DECODE_MMA_CUH_
#define SILO_ATTENTION_CUDA_DECODE_MMA_CUH_

#include <cuda_runtime.h>

#include "attention/attention_args.h"

namespace silo::attention::cuda {

// Rows (query rows × heads per KV head) the kernel takes per KV head.
constexpr int kMmaDecodeMaxRows = 8;

bool MmaDecodeSupports(KvDType kv_dtype, int head_dim, int rows);

// Blocks of the kernel resident on one SM (its register bound): the caller sizes the grid to one
// wave.
int MmaDecodeBlocksPerSm();

// One block per (KV head, split of keys); writes each split's partial ([n_splits,
// n_q × n_heads, head_dim] and [n_splits, n_q × n_heads] m and l, m in natural log) to o, m, l.
cudaError_t LaunchMmaDecodeSplits(const PartialAttentionArgs& a, int group, int keys_per_split,
                                  int n_splits, float* o, float* m, float* l, cudaStream_t stream);

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_DECODE_MMA_CUH_
