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

// One block per (row, kTile columns). The merge is latency-bound (a few dozen parts of one
// row), so each warp loads m, l and o of kBatch parts at once and merges them into its own
// running (max, sum, sums of o) without waiting for the row's maximum; the warps are merged in
// shared memory at the end. For the usual ≤ 64 parts that is one round trip to memory.
//
// COLUMNS > 0: the querier's merge of scrambled parts (MergeArgs::unscramble), rows of at most
// 32·COLUMNS columns in registers (row_transform.cuh), instances apart from the plain merge
// (COLUMNS 0) so that it keeps its registers. A warp takes its parts one at a time, each in
// one round trip (m, l and the row; the row's transform and its index are loaded a part ahead),
// a scrambled row through its transform in registers (a row of unscramble.dim floats of dynamic
// shared memory per warp).
//
// Blocks past the rows (blockIdx.x >= n_rows, blockIdx.y 0) run `side`, the row transform of
// the partial-attention launch this merge ends (PartialAttentionArgs::also_transform), one row
// per warp, side_rows_per_block rows a block: they do not wait for the kernel before, and they
// take SMs the merge leaves idle, so the transform costs no launch of its own.
template <int COLUMNS, bool REHEARSE = false>
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
  if constexpr (COLUMNS > 0) {
    auto index_of = [&](int p) { return p < a.n_parts ? a.unscramble_index[part_row(p)] : -1; };
    // An index out of range leaves the part row out, as if empty.
    auto scrambled = [&](int index) { return index >= 0 && index < a.unscramble.count; };
    auto transform_of = [&](int index) {  // zeros for a plain row
      RegisterTransform<COLUMNS> transform = {};
      if (scrambled(index)) {
        transform = LoadRegisterTransform<COLUMNS>(TransformOf(a.unscramble, index), lane);
      }
      return transform;
    };
    // Inputs the kernel before does not write: the index and the transform of this warp's first
    // part, loaded before waiting for it, and of each later part, loaded a part ahead, so that a
    // row's transform is in registers when the row arrives.
    int index = index_of(warp);
    RegisterTransform<COLUMNS> transform = transform_of(index);
    const int width = a.unscramble.in_dim;
    float* shared_row = row_buffers + static_cast<size_t>(warp) * a.unscramble.dim;
    // Entry e of this block's column tile (0, or 1 when head_dim > kTile) of a register row.
    auto tile_column = [&](const float(&r)[COLUMNS], int e) {
      if constexpr (COLUMNS <= kColumnsPerLane) {
        return e < COLUMNS ? r[e] : 0.0f;
      } else {
        return column0 == 0 ? r[e] : r[e + kColumnsPerLane];
      }
    };
    // REHEARSE (a merge of at most one part a warp, as in key scope session: the local part and
    // one of a compute node): the first pass (p < 0) is a rehearsal before the wait, the warp's
    // first transform applied to a row of zeros, nothing loaded, nothing merged, while the
    // kernel before still runs. On the H200 it took the session-scope step's scrambling from
    // +7.6–8.6% to +5.8–6.4% of the plain step (the K/V stream of the attention before evicts
    // the merge's code and parameters from L2); with more parts a warp (key scope block) it cost
    // more than it saved.
    constexpr int kFirst = REHEARSE ? -kWarps : 0;
#pragma unroll 1
    for (int p = warp + kFirst; p < a.n_parts; p += kWarps) {
      const bool rehearsal = p < 0;
      if (!rehearsal) WaitForPrecedingGrid();  // the parts are usually the kernel before's output
      const int next_index = rehearsal ? index : index_of(p + kWarps);
      // l is loaded either way: its round trip does not wait for the index.
      const float loaded_l = rehearsal ? 0.0f : a.l[part_row(p)];
      const float part_l = scrambled(index) || index == -1 ? loaded_l : 0.0f;
      const float part_m = rehearsal ? -INFINITY : a.m[part_row(p)];
      float x[COLUMNS];  // the whole row: scrambled, or plain in its first head_dim
      LoadRegisterRow(a.o + part_row(max(p, 0)) * width, rehearsal ? 0 : width, lane, x);
      float value[kColumnsPerLane];
      if (scrambled(index)) {
        float y[COLUMNS];
        ApplyRegisterTransform(transform, x, shared_row, lane, y);
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) value[e] = tile_column(y, e);
      } else {
#pragma unroll
        for (int e = 0; e < kColumnsPerLane; ++e) {
          value[e] = lane + e * kWarpSize < columns ? tile_column(x, e) : 0.0f;
        }
      }
      if (!rehearsal) {
        index = next_index;
        transform = transform_of(next_index);  // in flight while this part is merged
      }
      // An empty part (l = 0) may hold o that was never written: skip it, do not weigh it by 0.
      // (The rehearsal's part is empty.)
      if (!(part_l > 0)) continue;
      const float top = fmaxf(m, part_m);
      const float correction = m == -INFINITY ? 0.0f : expf(m - top);
      const float weight = part_l * expf(part_m - top);
      l = l * correction + weight;
#pragma unroll
      for (int e = 0; e < kColumnsPerLane; ++e) acc[e] = acc[e] * correction + weight * value[e];
      m = top;
    }
    // A warp without parts waits too: the block writes the merged row after it.
    WaitForPrecedingGrid();
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
  auto launch = [&](auto kernel) {
    return cudaLaunchKernelEx(&config, kernel, args, side_args, side_rows_per_block);
  };
  if (args.unscramble_index == nullptr) return launch(MergeKernel<0>);
  return WithRegisterColumns(args.unscramble.dim, [&](auto columns) {
    constexpr int kColumns = decltype(columns)::value;
    return args.n_parts <= kWarps ? launch(MergeKernel<kColumns, true>)
                                  : launch(MergeKernel<kColumns, false>);
  });
}

}  // namespace silo::attention::cuda
