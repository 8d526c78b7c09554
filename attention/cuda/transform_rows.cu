#include <algorithm>
#include <cmath>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/row_transform.cuh"
#include "attention/cuda/transform_rows.cuh"

namespace silo::attention::cuda {
namespace {

constexpr size_t kSharedBudget = 48 * 1024;

constexpr int kMaxRowsPerBlock = 8;

// One row per warp in shared memory (two buffers of `dim` floats). Rows that all take transform
// 0 of a matrix mix (an owner's K′ or V′) run the matrix per block instead: each thread one
// column for every row of the block, so that each matrix element read from memory serves all of
// them.
__global__ void TransformRowsKernel(RowTransformArgs a, int rows_per_block) {
  extern __shared__ float shared[];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + warp;
  const bool active = row < a.n_rows;
  const int n = a.transforms.dim;
  auto buffer = [&](int r, int which) { return shared + (static_cast<size_t>(r) * 2 + which) * n; };
  float* t = buffer(warp, 0);
  float* u = buffer(warp, 1);
  if (a.transforms.mix != RowMix::kMatrix || a.transform != nullptr) {
    if (active) TransformArgsRowInWarp(a, row, t, u, lane);
    return;
  }
  const RowTransformView v = TransformOf(a.transforms, 0);
  const int64_t source = active && a.source != nullptr ? a.source[row] : row;
  const bool valid = active && source >= 0 && source < a.n_in_rows;
  if (valid) PrepareRowInWarp(v, a.in + source * a.in_stride, t, u, lane);
  __syncthreads();  // every row's u is ready
  const int rows =
      static_cast<int>(min(static_cast<int64_t>(rows_per_block),
                           a.n_rows - static_cast<int64_t>(blockIdx.x) * rows_per_block));
  for (int c = threadIdx.x; c < n; c += blockDim.x) {
    float sum[kMaxRowsPerBlock] = {};
#pragma unroll 4
    for (int k = 0; k < n; ++k) {
      const float element = v.matrix[static_cast<int64_t>(k) * n + c];
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
  if (!active) return;
  float* out = a.out + row * a.out_stride;
  for (int c = lane; c < v.out_dim; c += kWarpSize) out[c] = valid ? PostValue(v, t, c) : 0.0f;
}

}  // namespace

int TransformRowsPerBlock(int dim) {
  const size_t row_bytes = 2 * static_cast<size_t>(dim) * sizeof(float);
  return static_cast<int>(
      std::max<size_t>(1, std::min<size_t>(kMaxRowsPerBlock, kSharedBudget / row_bytes)));
}

cudaError_t LaunchTransformRows(const RowTransformArgs& args, cudaStream_t stream) {
  if (args.n_rows == 0) return cudaSuccess;
  const int warps = TransformRowsPerBlock(args.transforms.dim);
  const int64_t blocks = (args.n_rows + warps - 1) / warps;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const size_t shared_bytes = 2 * static_cast<size_t>(args.transforms.dim) * sizeof(float) * warps;
  TransformRowsKernel<<<static_cast<unsigned>(blocks), warps * kWarpSize, shared_bytes, stream>>>(
      args, warps);
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
