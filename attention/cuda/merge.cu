#include <cmath>
#include <cstdint>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/merge.cuh"

namespace silo::attention::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kColumnsPerLane = 8;
constexpr int kTile = kWarpSize * kColumnsPerLane;  // columns per pass

// Block-wide reduction of one value per thread (max or sum); every thread gets the result.
template <bool kMax>
__device__ float BlockReduce(float x, float* scratch) {
  x = kMax ? WarpMax(x) : WarpSum(x);
  const int warp = threadIdx.x / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) scratch[warp] = x;
  __syncthreads();
  float total = scratch[0];
  for (int w = 1; w < kWarps; ++w) total = kMax ? fmaxf(total, scratch[w]) : total + scratch[w];
  __syncthreads();  // scratch is reused
  return total;
}

// One block per row: the maximum and the sum of weights l_p·exp(m_p − M) over the parts, then
// each warp accumulates its share of the parts and the warps are summed in shared memory.
__global__ void __launch_bounds__(kThreads) MergeKernel(MergeArgs a) {
  __shared__ float scratch[kWarps];
  __shared__ float partial[kWarps][kTile];
  const int row = blockIdx.x;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  auto part_row = [&](int p) { return static_cast<int64_t>(p) * a.n_rows + row; };

  float m = -INFINITY;
  for (int p = threadIdx.x; p < a.n_parts; p += kThreads) {
    if (a.l[part_row(p)] > 0) m = fmaxf(m, a.m[part_row(p)]);
  }
  m = BlockReduce<true>(m, scratch);
  float l = 0;
  if (m != -INFINITY) {
    for (int p = threadIdx.x; p < a.n_parts; p += kThreads) {
      const float part_l = a.l[part_row(p)];
      if (part_l > 0) l += part_l * expf(a.m[part_row(p)] - m);
    }
  }
  l = BlockReduce<false>(l, scratch);

  float* out = a.out_o + static_cast<int64_t>(row) * a.head_dim;
  const float inverse_l = l > 0 ? 1.0f / l : 0.0f;
  for (int tile = 0; tile < a.head_dim; tile += kTile) {
    float acc[kColumnsPerLane] = {};
    if (l > 0) {
      for (int p = warp; p < a.n_parts; p += kWarps) {
        const float part_l = a.l[part_row(p)];
        if (!(part_l > 0)) continue;
        const float weight = part_l * expf(a.m[part_row(p)] - m);
        const float* o = a.o + part_row(p) * a.head_dim + tile;
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {
          const int c = lane + e * kWarpSize;
          if (tile + c < a.head_dim) acc[e] += weight * o[c];
        }
      }
    }
#pragma unroll
    for (int e = 0; e < kColumnsPerLane; ++e) partial[warp][lane + e * kWarpSize] = acc[e];
    __syncthreads();
    for (int c = threadIdx.x; c < kTile && tile + c < a.head_dim; c += kThreads) {
      float sum = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += partial[w][c];
      out[tile + c] = sum * inverse_l;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    a.out_m[row] = l > 0 ? m : -INFINITY;
    a.out_l[row] = l;
  }
}

}  // namespace

cudaError_t LaunchMerge(const MergeArgs& args, cudaStream_t stream) {
  MergeKernel<<<args.n_rows, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
