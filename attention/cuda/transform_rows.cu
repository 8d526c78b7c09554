#include <algorithm>
#include <cmath>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/transform_rows.cuh"

namespace silo::attention::cuda {
namespace {

constexpr size_t kSharedBudget = 48 * 1024;

constexpr int kMaxRowsPerBlock = 8;

// y = post_scale ⊙ gather_post(mix(gather_pre(pre_scale ⊙ pad(x)))). A block holds one row per
// warp in shared memory (two buffers of `dim` floats). The Hadamard mix runs per warp; the
// matrix mix runs per block, each thread one column for every row of the block, so each matrix
// element read from memory serves all of them.
__global__ void TransformRowsKernel(RowTransformArgs a, int rows_per_block) {
  extern __shared__ float shared[];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + warp;
  const bool active = row < a.n_rows;
  const int n = a.dim;
  auto buffer = [&](int r, int which) { return shared + (static_cast<size_t>(r) * 2 + which) * n; };
  float* t = buffer(warp, 0);
  float* u = buffer(warp, 1);
  if (active) {
    const float* in = a.in + row * a.in_stride;
    for (int c = lane; c < n; c += kWarpSize) t[c] = c < a.in_dim ? in[c] * a.pre_scale[c] : 0.0f;
    __syncwarp();
    for (int c = lane; c < n; c += kWarpSize) {
      u[c] = a.pre_gather != nullptr ? t[a.pre_gather[c]] : t[c];
    }
    __syncwarp();
  }
  const float* mixed = u;
  if (a.mix == RowMix::kHadamard) {
    if (active) {
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
      __syncwarp();
    }
  } else {
    __syncthreads();  // every row's u is ready
    const int rows =
        static_cast<int>(min(static_cast<int64_t>(rows_per_block),
                             a.n_rows - static_cast<int64_t>(blockIdx.x) * rows_per_block));
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
      float sum[kMaxRowsPerBlock] = {};
#pragma unroll 4
      for (int k = 0; k < n; ++k) {
        const float element = a.matrix[static_cast<int64_t>(k) * n + c];
#pragma unroll
        for (int r = 0; r < kMaxRowsPerBlock; ++r) {
          if (r < rows) sum[r] += buffer(r, 1)[k] * element;
        }
      }
#pragma unroll
      for (int r = 0; r < kMaxRowsPerBlock; ++r) {
        if (r < rows) buffer(r, 0)[c] = sum[r];
      }
    }
    __syncthreads();
    mixed = t;
  }
  if (!active) return;
  float* out = a.out + row * a.out_stride;
  for (int c = lane; c < a.out_dim; c += kWarpSize) {
    out[c] = (a.post_gather != nullptr ? mixed[a.post_gather[c]] : mixed[c]) * a.post_scale[c];
  }
}

}  // namespace

cudaError_t LaunchTransformRows(const RowTransformArgs& args, cudaStream_t stream) {
  if (args.n_rows == 0) return cudaSuccess;
  const size_t row_bytes = 2 * static_cast<size_t>(args.dim) * sizeof(float);
  const int warps = static_cast<int>(
      std::max<size_t>(1, std::min<size_t>(kMaxRowsPerBlock, kSharedBudget / row_bytes)));
  const int64_t blocks = (args.n_rows + warps - 1) / warps;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  TransformRowsKernel<<<static_cast<unsigned>(blocks), warps * kWarpSize, warps * row_bytes,
                        stream>>>(args, warps);
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
