#include <cmath>
#include <cstdint>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/merge.cuh"

namespace silo::attention::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kColumnsPerLane = 4;
constexpr int kTile = kWarpSize * kColumnsPerLane;  // columns of one block
constexpr int kMaxCachedParts = 1024;               // weights kept in shared memory
constexpr int kUnroll = 4;                          // parts whose loads are in flight at once

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

// One block per (row, kTile columns): the maximum M of the parts' m, their weights
// l_p·exp(m_p − M) (kept in shared memory) and their sum, then each warp accumulates a share of
// the parts with kUnroll parts' loads in flight, and the warps are summed in shared memory. The
// merge is latency-bound (a few dozen parts of one row), so loads are batched, not chained.
__global__ void __launch_bounds__(kThreads) MergeKernel(MergeArgs a) {
  __shared__ float scratch[kWarps];
  __shared__ float weights[kMaxCachedParts];
  __shared__ float partial[kWarps][kTile];
  const int row = blockIdx.x;
  const int column0 = blockIdx.y * kTile;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  auto part_row = [&](int p) { return static_cast<int64_t>(p) * a.n_rows + row; };

  float m = -INFINITY;
  for (int p = threadIdx.x; p < a.n_parts; p += kThreads) {
    if (a.l[part_row(p)] > 0) m = fmaxf(m, a.m[part_row(p)]);
  }
  m = BlockReduce<true>(m, scratch);
  auto weight_of = [&](int p) {
    const float part_l = a.l[part_row(p)];
    return (m != -INFINITY && part_l > 0) ? part_l * expf(a.m[part_row(p)] - m) : 0.0f;
  };
  float l = 0;
  for (int p = threadIdx.x; p < a.n_parts; p += kThreads) {
    const float weight = weight_of(p);
    if (p < kMaxCachedParts) weights[p] = weight;
    l += weight;
  }
  l = BlockReduce<false>(l, scratch);  // its barrier also publishes `weights`

  float acc[kColumnsPerLane] = {};
  if (l > 0) {
    const int columns = min(kTile, a.head_dim - column0);
    for (int p0 = warp * kUnroll; p0 < a.n_parts; p0 += kWarps * kUnroll) {
      float values[kUnroll][kColumnsPerLane];
      float part_weights[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int p = p0 + u;
        part_weights[u] = p >= a.n_parts ? 0.0f : p < kMaxCachedParts ? weights[p] : weight_of(p);
        const float* o = a.o + part_row(min(p, a.n_parts - 1)) * a.head_dim + column0;
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {
          const int c = lane + e * kWarpSize;
          values[u][e] = c < columns ? o[c] : 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {
          // A zero weight may meet a part that was never written (an empty split): skip it.
          if (part_weights[u] > 0) acc[e] += part_weights[u] * values[u][e];
        }
      }
    }
  }
#pragma unroll
  for (int e = 0; e < kColumnsPerLane; ++e) partial[warp][lane + e * kWarpSize] = acc[e];
  __syncthreads();
  float* out = a.out_o + static_cast<int64_t>(row) * a.head_dim + column0;
  const float inverse_l = l > 0 ? 1.0f / l : 0.0f;
  for (int c = threadIdx.x; c < kTile && column0 + c < a.head_dim; c += kThreads) {
    float sum = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += partial[w][c];
    out[c] = sum * inverse_l;
  }
  if (threadIdx.x == 0 && blockIdx.y == 0) {
    a.out_m[row] = l > 0 ? m : -INFINITY;
    a.out_l[row] = l;
  }
}

}  // namespace

cudaError_t LaunchMerge(const MergeArgs& args, cudaStream_t stream) {
  if (args.n_rows == 0) return cudaSuccess;
  const dim3 grid(args.n_rows, (args.head_dim + kTile - 1) / kTile);
  MergeKernel<<<grid, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
