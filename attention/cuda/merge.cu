#include <cmath>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/merge.cuh"

namespace silo::attention::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void MergeKernel(MergeArgs a) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= a.n_rows) return;
  // The maximum over non-empty parts, then their weights l_p · exp(m_p − M).
  float m = -INFINITY;
  for (int p = lane; p < a.n_parts; p += kWarpSize) {
    const int64_t part_row = static_cast<int64_t>(p) * a.n_rows + row;
    if (a.l[part_row] > 0) m = fmaxf(m, a.m[part_row]);
  }
  m = WarpMax(m);
  float* out = a.out_o + static_cast<int64_t>(row) * a.head_dim;
  if (m == -INFINITY) {
    for (int c = lane; c < a.head_dim; c += kWarpSize) out[c] = 0;
    if (lane == 0) {
      a.out_m[row] = -INFINITY;
      a.out_l[row] = 0;
    }
    return;
  }
  float l = 0;
  for (int p = lane; p < a.n_parts; p += kWarpSize) {
    const int64_t part_row = static_cast<int64_t>(p) * a.n_rows + row;
    if (a.l[part_row] > 0) l += a.l[part_row] * expf(a.m[part_row] - m);
  }
  l = WarpSum(l);
  const float inverse_l = 1.0f / l;
  for (int c = lane; c < a.head_dim; c += kWarpSize) {
    float sum = 0;
    for (int p = 0; p < a.n_parts; ++p) {
      const int64_t part_row = static_cast<int64_t>(p) * a.n_rows + row;
      const float part_l = a.l[part_row];
      if (part_l > 0) sum += part_l * expf(a.m[part_row] - m) * a.o[part_row * a.head_dim + c];
    }
    out[c] = sum * inverse_l;
  }
  if (lane == 0) {
    a.out_m[row] = m;
    a.out_l[row] = l;
  }
}

}  // namespace

cudaError_t LaunchMerge(const MergeArgs& args, cudaStream_t stream) {
  const int blocks = (args.n_rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  MergeKernel<<<blocks, kWarpsPerBlock * kWarpSize, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
