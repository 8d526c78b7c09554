#include <algorithm>
#include <cmath>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/transform_rows.cuh"

namespace silo::attention::cuda {
namespace {

constexpr size_t kSharedBudget = 48 * 1024;

// y = post_scale ⊙ gather_post(mix(gather_pre(pre_scale ⊙ pad(x)))), one warp per row; each warp
// owns two rows of `dim` floats in shared memory.
__global__ void TransformRowsKernel(RowTransformArgs a, int warps_per_block) {
  extern __shared__ float shared[];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp;
  if (row >= a.n_rows) return;
  const int n = a.dim;
  float* t = shared + static_cast<size_t>(warp) * 2 * n;
  float* u = t + n;
  const float* in = a.in + row * a.in_stride;
  for (int c = lane; c < n; c += kWarpSize) t[c] = c < a.in_dim ? in[c] * a.pre_scale[c] : 0.0f;
  __syncwarp();
  for (int c = lane; c < n; c += kWarpSize) u[c] = a.pre_gather != nullptr ? t[a.pre_gather[c]] : t[c];
  __syncwarp();
  if (a.mix == RowMix::kHadamard) {
    for (int half = 1; half < n; half *= 2) {
      for (int pair = lane; pair < n / 2; pair += kWarpSize) {
        const int i = (pair / half) * 2 * half + pair % half;
        const float x = u[i];
        const float y = u[i + half];
        u[i] = x + y;
        u[i + half] = x - y;
      }
      __syncwarp();
    }
    const float norm = rsqrtf(static_cast<float>(n));
    for (int c = lane; c < n; c += kWarpSize) u[c] *= norm;
  } else {
    // Columns in tiles of kColumnsPerLane per lane: independent sums keep loads in flight.
    constexpr int kColumnsPerLane = 8;
    for (int tile = 0; tile < n; tile += kWarpSize * kColumnsPerLane) {
      float sum[kColumnsPerLane] = {};
#pragma unroll 4
      for (int k = 0; k < n; ++k) {
        const float x = u[k];
        const float* matrix_row = a.matrix + static_cast<int64_t>(k) * n + tile + lane;
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {
          if (tile + lane + e * kWarpSize < n) sum[e] += x * matrix_row[e * kWarpSize];
        }
      }
#pragma unroll
      for (int e = 0; e < kColumnsPerLane; ++e) {
        const int c = tile + lane + e * kWarpSize;
        if (c < n) t[c] = sum[e];
      }
    }
    __syncwarp();
    for (int c = lane; c < n; c += kWarpSize) u[c] = t[c];
  }
  __syncwarp();
  float* out = a.out + row * a.out_stride;
  for (int c = lane; c < a.out_dim; c += kWarpSize) {
    out[c] = (a.post_gather != nullptr ? u[a.post_gather[c]] : u[c]) * a.post_scale[c];
  }
}

}  // namespace

cudaError_t LaunchTransformRows(const RowTransformArgs& args, cudaStream_t stream) {
  if (args.n_rows == 0) return cudaSuccess;
  const size_t row_bytes = 2 * static_cast<size_t>(args.dim) * sizeof(float);
  const int warps = static_cast<int>(std::max<size_t>(1, std::min<size_t>(8, kSharedBudget / row_bytes)));
  const int64_t blocks = (args.n_rows + warps - 1) / warps;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  TransformRowsKernel<<<static_cast<unsigned>(blocks), warps * kWarpSize, warps * row_bytes,
                        stream>>>(args, warps);
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
