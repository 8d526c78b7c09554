#include <algorithm>
#include <cmath>
#include <cstdint>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/merge.cuh"
#include "attention/cuda/row_transform.cuh"
#include "attention/cuda/transform_rows.cuh"

namespace silo::attention::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kColumnsPerLane = 4;
constexpr int kTile = kWarpSize * kColumnsPerLane;  // columns of one block
constexpr int kBatch = 8;                           // parts per warp whose loads are in flight
// Largest transform set whose parameters a merge block prefetches into L1 (the session scope's
// is 8 KV heads × 2 KiB at head_dim 128; the block scope's are larger and come with the row).
constexpr int64_t kMaxPrefetchedTransformBytes = 32 * 1024;

// One block per (row, kTile columns). The merge is latency-bound (a few dozen parts of one
// row), so each warp loads m, l and o of kBatch parts at once and merges them into its own
// running (max, sum, sums of o) without waiting for the row's maximum; the warps are merged in
// shared memory at the end. For the usual ≤ 64 parts that is one round trip to memory.
//
// UNSCRAMBLE: the querier's merge of scrambled parts (MergeArgs::unscramble), a separate
// instance so that the plain merge keeps its registers. A warp takes its parts one at a time,
// each in one round trip (m, l, the row, and the parameters of the row's transform, whose index
// is loaded a part ahead), a scrambled row through its transform in registers (a row of
// unscramble.dim floats of dynamic shared memory per warp).
//
// Blocks past the rows (blockIdx.x >= n_rows, blockIdx.y 0) run `side`, the row transform of
// the partial-attention launch this merge ends (PartialAttentionArgs::also_transform), one row
// per warp, side_rows_per_block rows a block: they do not wait for the kernel before, and they
// take SMs the merge leaves idle, so the transform costs no launch of its own.
template <bool UNSCRAMBLE>
__global__ void __launch_bounds__(kThreads, 1)
    MergeKernel(MergeArgs a, RowTransformArgs side, int side_rows_per_block) {
  extern __shared__ float row_buffers[];
  // A merge launched after this one (the querier's final merge after its local partial's) may
  // start now: it loads what no kernel writes before it waits for this grid's end.
  AllowDependentLaunch();
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (blockIdx.x >= a.n_rows) {
    const int64_t row = static_cast<int64_t>(blockIdx.x - a.n_rows) * side_rows_per_block + warp;
    if (blockIdx.y != 0 || warp >= side_rows_per_block || row >= side.n_rows) return;
    float* t = row_buffers + static_cast<size_t>(warp) * 2 * side.transforms.dim;
    TransformArgsRowInWarp(side, row, t, t + side.transforms.dim, lane);
    return;
  }
  __shared__ float warp_m[kWarps];
  __shared__ float warp_l[kWarps];
  __shared__ float warp_acc[kWarps][kTile];
  const int row = blockIdx.x;
  const int column0 = blockIdx.y * kTile;
  const int columns = min(kTile, a.head_dim - column0);
  auto part_row = [&](int p) { return static_cast<int64_t>(p) * a.n_rows + row; };

  float m = -INFINITY;  // this warp's, natural log
  float l = 0;
  float acc[kColumnsPerLane] = {};
  if constexpr (UNSCRAMBLE) {
    auto index_of = [&](int p) { return p < a.n_parts ? a.unscramble_index[part_row(p)] : -1; };
    // Inputs the kernel before does not write, loaded before waiting for it: the index of this
    // warp's first part (each later one is loaded a part ahead) and, for a small set, every
    // transform's parameters into L1, so that the loads of a row's transform hit there in the
    // round trip that fetches the row.
    int pending_index = index_of(warp);
    PrefetchTransformSetToL1(a.unscramble, kMaxPrefetchedTransformBytes);
    WaitForPrecedingGrid();  // the parts are usually the kernel before's output
    const int width = a.unscramble.in_dim;
    float* shared_row = row_buffers + static_cast<size_t>(warp) * a.unscramble.dim;
#pragma unroll 1
    for (int p = warp; p < a.n_parts; p += kWarps) {
      const int index = pending_index;
      pending_index = index_of(p + kWarps);
      // An index out of range leaves the part row out, as if empty. (l is loaded either way:
      // its round trip does not wait for the index.)
      const bool scrambled = index >= 0 && index < a.unscramble.count;
      const float loaded_l = a.l[part_row(p)];
      const float part_l = scrambled || index == -1 ? loaded_l : 0.0f;
      const float part_m = a.m[part_row(p)];
      float x[kRegisterRowColumns];  // the whole row: scrambled, or plain in its first head_dim
      LoadRegisterRow(a.o + part_row(p) * width, width, lane, x);
      float value[kColumnsPerLane];
      if (scrambled) {
        float y[kRegisterRowColumns];
        ApplyRegisterTransform(LoadRegisterTransform(TransformOf(a.unscramble, index), lane), x,
                               shared_row, lane, y);
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {  // head_dim <= 256: column tile 0 or 1
          value[e] = column0 == 0 ? y[e] : y[e + kColumnsPerLane];
        }
      } else {
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {
          value[e] = lane + e * kWarpSize < columns ? (column0 == 0 ? x[e] : x[e + kColumnsPerLane])
                                                    : 0.0f;
        }
      }
      // An empty part (l = 0) may hold o that was never written: skip it, do not weigh it by 0.
      if (!(part_l > 0)) continue;
      const float top = fmaxf(m, part_m);
      const float correction = m == -INFINITY ? 0.0f : expf(m - top);
      const float weight = part_l * expf(part_m - top);
      l = l * correction + weight;
#pragma unroll
      for (int e = 0; e < kColumnsPerLane; ++e) acc[e] = acc[e] * correction + weight * value[e];
      m = top;
    }
  } else {
    WaitForPrecedingGrid();  // the parts are usually the kernel before's output
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

cudaError_t LaunchMerge(const MergeArgs& args, const RowTransformArgs* side, cudaStream_t stream) {
  RowTransformArgs side_args;
  int side_rows_per_block = 1;
  unsigned side_blocks = 0;
  size_t shared_bytes = 0;
  if (args.unscramble_index != nullptr) {
    static_assert(kMaxUnscrambleDim <= kMaxRegisterRowDim);
    shared_bytes = kWarps * static_cast<size_t>(args.unscramble.dim) * sizeof(float);
  }
  if (side != nullptr && side->n_rows > 0) {
    side_args = *side;
    side_rows_per_block = std::min(kWarps, TransformRowsPerBlock(side->transforms.dim));
    const int64_t blocks = (side->n_rows + side_rows_per_block - 1) / side_rows_per_block;
    if (blocks + args.n_rows > 0x7fffffff) return cudaErrorInvalidValue;
    side_blocks = static_cast<unsigned>(blocks);
    shared_bytes = std::max(shared_bytes, static_cast<size_t>(side_rows_per_block) * 2 *
                                              side->transforms.dim * sizeof(float));
  }
  if (args.n_rows == 0 && side_blocks == 0) return cudaSuccess;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(args.n_rows + side_blocks, (args.head_dim + kTile - 1) / kTile);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  // Programmatic dependent launch: the merge starts while the kernel before it ends.
  cudaLaunchAttribute attribute = {};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return args.unscramble_index != nullptr
             ? cudaLaunchKernelEx(&config, MergeKernel<true>, args, side_args, side_rows_per_block)
             : cudaLaunchKernelEx(&config, MergeKernel<false>, args, side_args,
                                  side_rows_per_block);
}

}  // namespace silo::attention::cuda
