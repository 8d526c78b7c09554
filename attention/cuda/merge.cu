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
constexpr int kBatch = 8;                           // parts per warp whose loads are in flight

// One block per (row, kTile columns). The merge is latency-bound (a few dozen parts of one
// row), so each warp loads m, l and o of kBatch parts at once and merges them into its own
// running (max, sum, sums of o) without waiting for the row's maximum; the warps are merged in
// shared memory at the end. For the usual ≤ 64 parts that is one round trip to memory.
__global__ void __launch_bounds__(kThreads) MergeKernel(MergeArgs a) {
  WaitForPrecedingGrid();  // the parts are usually the kernel before's output
  __shared__ float warp_m[kWarps];
  __shared__ float warp_l[kWarps];
  __shared__ float warp_acc[kWarps][kTile];
  const int row = blockIdx.x;
  const int column0 = blockIdx.y * kTile;
  const int columns = min(kTile, a.head_dim - column0);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  auto part_row = [&](int p) { return static_cast<int64_t>(p) * a.n_rows + row; };

  float m = -INFINITY;  // this warp's, natural log
  float l = 0;
  float acc[kColumnsPerLane] = {};
  for (int p0 = warp; p0 < a.n_parts; p0 += kWarps * kBatch) {
    float part_m[kBatch];
    float part_l[kBatch];
    float values[kBatch][kColumnsPerLane];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int p = p0 + u * kWarps;
      const bool present = p < a.n_parts;
      part_m[u] = present ? a.m[part_row(p)] : -INFINITY;
      part_l[u] = present ? a.l[part_row(p)] : 0.0f;
      const float* o = a.o + part_row(present ? p : 0) * a.head_dim + column0;
#pragma unroll
      for (int e = 0; e < kColumnsPerLane; ++e) {
        const int c = lane + e * kWarpSize;
        values[u][e] = present && c < columns ? o[c] : 0.0f;
      }
    }
    float top = m;
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      if (part_l[u] > 0) top = fmaxf(top, part_m[u]);
    }
    if (top == -INFINITY) continue;  // nothing seen yet
    const float correction = m == -INFINITY ? 0.0f : expf(m - top);
    l *= correction;
#pragma unroll
    for (int e = 0; e < kColumnsPerLane; ++e) acc[e] *= correction;
    m = top;
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      // An empty part (l = 0) may hold o that was never written: skip it, do not weigh it by 0.
      if (part_l[u] > 0) {
        const float weight = part_l[u] * expf(part_m[u] - m);
        l += weight;
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) acc[e] += weight * values[u][e];
      }
    }
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < kColumnsPerLane; ++e) warp_acc[warp][lane + e * kWarpSize] = acc[e];
  __syncthreads();

  float top = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) top = fmaxf(top, warp_m[w]);
  float weights[kWarps];
  float total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weights[w] = warp_m[w] == -INFINITY ? 0.0f : expf(warp_m[w] - top);
    total += weights[w] * warp_l[w];
  }
  float* out = a.out_o + static_cast<int64_t>(row) * a.head_dim + column0;
  const float inverse_total = total > 0 ? 1.0f / total : 0.0f;
  for (int c = threadIdx.x; c < columns; c += kThreads) {
    float sum = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += weights[w] * warp_acc[w][c];
    out[c] = sum * inverse_total;
  }
  if (threadIdx.x == 0 && blockIdx.y == 0) {
    a.out_m[row] = total > 0 ? top : -INFINITY;
    a.out_l[row] = total;
  }
}

}  // namespace

cudaError_t LaunchMerge(const MergeArgs& args, cudaStream_t stream) {
  if (args.n_rows == 0) return cudaSuccess;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(args.n_rows, (args.head_dim + kTile - 1) / kTile);
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  // Programmatic dependent launch: the merge starts while the kernel before it ends.
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, MergeKernel, args);
}

}  // namespace silo::attention::cuda
