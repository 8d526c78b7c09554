#include <algorithm>
#include <cmath>

#include <cuda_pipeline.h>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/decode_mma.cuh"
#include "attention/cuda/merge.cuh"
#include "attention/cuda/partial_attention.cuh"
#include "attention/cuda/transform_rows.cuh"

namespace silo::attention::cuda {
namespace {

constexpr int kWarps = 4;  // per block, both kernels
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kMaxDecodeRows = 8;  // query rows × heads per KV head handled by the split kernel

constexpr int NextPowerOfTwo(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

template <typename T>
__device__ __forceinline__ float ToFloat(T x);
template <>
__device__ __forceinline__ float ToFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

// Layout of one key (or value) row for the split kernel: a row of HEAD_DIM elements is read by
// kLanes lanes (a subgroup) as 16-byte vectors; a warp reads kKeysPerWarp rows at once, and
// each subgroup keeps kUnroll keys and values in flight.
template <typename T, int HEAD_DIM, int ROWS>
struct RowLayout {
  static constexpr int kVec = VecElements<T>();
  static constexpr int kChunks = HEAD_DIM / kVec;
  static constexpr int kLanes = kChunks >= kWarpSize ? kWarpSize : NextPowerOfTwo(kChunks);
  static constexpr int kChunksPerLane = (kChunks + kLanes - 1) / kLanes;
  static constexpr int kKeysPerWarp = kWarpSize / kLanes;
  static constexpr int kUnroll = ROWS <= 4 ? 4 : 2;  // bounded by registers
  static constexpr int kKeysPerStep = kWarps * kKeysPerWarp * kUnroll;
  // A warp's keys and values of one step, staged in shared memory by cp.async; kStages steps
  // are in flight per warp, so a warp computes one step while the next ones load.
  static constexpr int kStageElements = kUnroll * kKeysPerWarp * 2 * HEAD_DIM;
  static constexpr int kStageBytes = kStageElements * static_cast<int>(sizeof(T));
  static constexpr int kStages = kStageBytes <= 8192 ? 3 : 2;
  static constexpr size_t kStagingBytes = static_cast<size_t>(kWarps) * kStages * kStageBytes;
  // After the loop the same memory holds the warps' partial sums for the final merge.
  static constexpr size_t kReduceBytes = static_cast<size_t>(kWarps) * ROWS * HEAD_DIM * 4;
  static constexpr size_t kSharedBytes =
      kStagingBytes > kReduceBytes ? kStagingBytes : kReduceBytes;
};

struct SplitParams {
  PartialAttentionArgs a;
  int group;  // query heads per KV head
  int rows;   // n_q × group: rows of one KV head
  int keys_per_split;
  float* o;  // [n_splits, n_q × n_heads, head_dim]
  float* m;  // [n_splits, n_q × n_heads]
  float* l;
};

// Weights that merge partial (m_b, l_b, acc_b) into (m, l, acc); maxima in the log2 domain.
__device__ __forceinline__ void MergeWeights(float m, float m_b, float* w, float* w_b,
                                             float* m_out) {
  const float top = fmaxf(m, m_b);
  *m_out = top;
  *w = m == -INFINITY ? 0.0f : exp2f(m - top);
  *w_b = m_b == -INFINITY ? 0.0f : exp2f(m_b - top);
}

// One block = one split of keys of one KV head, for every query row and head of that KV head.
// One pass over the keys with an online softmax per subgroup; subgroups, then warps, are merged
// with the log-sum-exp rule at the end.
template <typename T, int HEAD_DIM, int ROWS>
__global__ void __launch_bounds__(kThreads, 4) SplitKvKernel(SplitParams p) {
  using L = RowLayout<T, HEAD_DIM, ROWS>;
  __shared__ float warp_m[kWarps][ROWS];
  __shared__ float warp_l[kWarps][ROWS];

  AllowDependentLaunch();  // the split merge may start; it waits for this grid's end

  const PartialAttentionArgs& a = p.a;
  // KV heads vary fastest across blocks, so blocks that run together read whole key rows
  // ([n_kv_heads, head_dim] contiguous) rather than one head's slice of many rows.
  const int kv_head = blockIdx.x;
  const int split = blockIdx.y;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int sub = lane / L::kLanes;       // which row of the warp's kKeysPerWarp
  const int sub_lane = lane % L::kLanes;  // which 16-byte chunks of that row
  const int begin = split * p.keys_per_split;
  const int n = max(0, min(p.keys_per_split, a.n_kv - begin));
  const int64_t kv_stride = static_cast<int64_t>(a.n_kv_heads) * HEAD_DIM;
  const T* k_base = static_cast<const T*>(a.k) + static_cast<int64_t>(begin) * kv_stride +
                    static_cast<int64_t>(kv_head) * HEAD_DIM;
  const T* v_base = static_cast<const T*>(a.v) + static_cast<int64_t>(begin) * kv_stride +
                    static_cast<int64_t>(kv_head) * HEAD_DIM;

  // This lane's slices of the query rows, scaled so that scores come out in the log2 domain:
  // 2^(s·log2 e) = e^s, and exp2 is one instruction. m is converted back when written.
  const float scale_log2 = a.scale * 1.4426950408889634f;
  float q[ROWS][L::kChunksPerLane][L::kVec];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int i = r / p.group;
    const int head = kv_head * p.group + r % p.group;
#pragma unroll
    for (int t = 0; t < L::kChunksPerLane; ++t) {
      const int c = sub_lane + t * L::kLanes;
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) {
        q[r][t][e] =
            (r < p.rows && c < L::kChunks)
                ? a.q[(static_cast<int64_t>(i) * a.n_heads + head) * HEAD_DIM + c * L::kVec + e] *
                      scale_log2
                : 0.0f;
      }
    }
  }
  int q_position[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    q_position[r] = (a.q_positions != nullptr && r < p.rows) ? a.q_positions[r / p.group] : 0;
  }

  float m[ROWS], l[ROWS], acc[ROWS][L::kChunksPerLane][L::kVec];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    m[r] = -INFINITY;
    l[r] = 0;
#pragma unroll
    for (int t = 0; t < L::kChunksPerLane; ++t) {
#pragma unroll
      for (int e = 0; e < L::kVec; ++e) acc[r][t][e] = 0;
    }
  }

  // Stage layout per warp and slot: [kUnroll][kKeysPerWarp][K, V][HEAD_DIM]. A lane only ever
  // reads back the 16-byte chunks it copied itself, so waiting on its own copies is enough.
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  T* stages = reinterpret_cast<T*>(stage_bytes) +
              static_cast<size_t>(warp) * L::kStages * L::kStageElements;
  auto stage_row = [&](int slot, int u, int which) {
    return stages + slot * L::kStageElements + ((u * L::kKeysPerWarp + sub) * 2 + which) * HEAD_DIM;
  };
  const int n_steps = (n + L::kKeysPerStep - 1) / L::kKeysPerStep;
  auto issue = [&](int step_index) {
    if (step_index < n_steps) {
      const int slot = step_index % L::kStages;
#pragma unroll
      for (int u = 0; u < L::kUnroll; ++u) {
        const int j = step_index * L::kKeysPerStep + (u * kWarps + warp) * L::kKeysPerWarp + sub;
        if (j >= n) continue;
#pragma unroll
        for (int t = 0; t < L::kChunksPerLane; ++t) {
          const int c = sub_lane + t * L::kLanes;
          if (c >= L::kChunks) continue;
          StreamToShared16(stage_row(slot, u, 0) + c * L::kVec,
                           k_base + j * kv_stride + c * L::kVec);
          StreamToShared16(stage_row(slot, u, 1) + c * L::kVec,
                           v_base + j * kv_stride + c * L::kVec);
        }
      }
    }
    __pipeline_commit();  // also when empty: one group per step keeps the counting uniform
  };
#pragma unroll
  for (int s_index = 0; s_index < L::kStages - 1; ++s_index) issue(s_index);

  for (int step_index = 0; step_index < n_steps; ++step_index) {
    __pipeline_wait_prior(L::kStages - 2);
    issue(step_index + L::kStages - 1);
    const int slot = step_index % L::kStages;
    const int step = step_index * L::kKeysPerStep;
    float s[L::kUnroll][ROWS];
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      const int j = step + (u * kWarps + warp) * L::kKeysPerWarp + sub;
      float k_row[L::kChunksPerLane][L::kVec];
#pragma unroll
      for (int t = 0; t < L::kChunksPerLane; ++t) {
        const int c = sub_lane + t * L::kLanes;
        const bool present = j < n && c < L::kChunks;
        if (present) {
          ConvertVec<T>(*reinterpret_cast<const uint4*>(stage_row(slot, u, 0) + c * L::kVec),
                        k_row[t]);
        } else {
#pragma unroll
          for (int e = 0; e < L::kVec; ++e) k_row[t][e] = 0;
        }
      }
      // Score of key j for every row; every lane of the subgroup ends with it.
      const int kv_position = (a.kv_positions != nullptr && j < n) ? a.kv_positions[begin + j] : 0;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        float dot = 0;
#pragma unroll
        for (int t = 0; t < L::kChunksPerLane; ++t) {
#pragma unroll
          for (int e = 0; e < L::kVec; ++e) dot += q[r][t][e] * k_row[t][e];
        }
#pragma unroll
        for (int offset = L::kLanes / 2; offset > 0; offset /= 2) {
          dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        }
        const bool visible =
            j < n && r < p.rows && (a.q_positions == nullptr || kv_position <= q_position[r]);
        s[u][r] = visible ? dot : -INFINITY;
      }
    }
    // Online softmax update, once per step and row; s becomes the weights exp2(s − m).
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      float top = m[r];
#pragma unroll
      for (int u = 0; u < L::kUnroll; ++u) top = fmaxf(top, s[u][r]);
      if (top == -INFINITY) {
#pragma unroll
        for (int u = 0; u < L::kUnroll; ++u) s[u][r] = 0;
        continue;
      }
      if (top > m[r]) {  // rescale only when the maximum moves, which soon becomes rare
        const float correction = exp2f(m[r] - top);  // 0 while m is -inf
        l[r] *= correction;
#pragma unroll
        for (int t = 0; t < L::kChunksPerLane; ++t) {
#pragma unroll
          for (int e = 0; e < L::kVec; ++e) acc[r][t][e] *= correction;
        }
        m[r] = top;
      }
#pragma unroll
      for (int u = 0; u < L::kUnroll; ++u) {
        s[u][r] = exp2f(s[u][r] - top);  // 0 for -inf scores
        l[r] += s[u][r];
      }
    }
    // Values, read from the stage only now to keep registers for more resident warps.
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      const int j = step + (u * kWarps + warp) * L::kKeysPerWarp + sub;
      if (j >= n) continue;
#pragma unroll
      for (int t = 0; t < L::kChunksPerLane; ++t) {
        const int c = sub_lane + t * L::kLanes;
        if (c >= L::kChunks) continue;
        float v_row[L::kVec];
        ConvertVec<T>(*reinterpret_cast<const uint4*>(stage_row(slot, u, 1) + c * L::kVec), v_row);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
#pragma unroll
          for (int e = 0; e < L::kVec; ++e) acc[r][t][e] += s[u][r] * v_row[e];
        }
      }
    }
  }

  // The staging memory becomes the warps' partial sums: [kWarps][ROWS][HEAD_DIM].
  __syncthreads();
  float(*warp_acc)[ROWS][HEAD_DIM] = reinterpret_cast<float(*)[ROWS][HEAD_DIM]>(stage_bytes);

  // Merge the warp's subgroups (lanes kLanes apart hold the same columns).
#pragma unroll
  for (int offset = L::kLanes; offset < kWarpSize; offset *= 2) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const float m_other = __shfl_xor_sync(0xffffffffu, m[r], offset);
      const float l_other = __shfl_xor_sync(0xffffffffu, l[r], offset);
      float w, w_other, top;
      MergeWeights(m[r], m_other, &w, &w_other, &top);
      m[r] = top;
      l[r] = l[r] * w + l_other * w_other;
#pragma unroll
      for (int t = 0; t < L::kChunksPerLane; ++t) {
#pragma unroll
        for (int e = 0; e < L::kVec; ++e) {
          const float other = __shfl_xor_sync(0xffffffffu, acc[r][t][e], offset);
          acc[r][t][e] = acc[r][t][e] * w + other * w_other;
        }
      }
    }
  }
  if (sub == 0) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
      for (int t = 0; t < L::kChunksPerLane; ++t) {
        const int c = sub_lane + t * L::kLanes;
        if (c >= L::kChunks) continue;
#pragma unroll
        for (int e = 0; e < L::kVec; ++e) warp_acc[warp][r][c * L::kVec + e] = acc[r][t][e];
      }
      if (sub_lane == 0) {
        warp_m[warp][r] = m[r];
        warp_l[warp][r] = l[r];
      }
    }
  }
  __syncthreads();

  WriteSplitPartial<kWarps, ROWS, HEAD_DIM>(
      warp_acc, warp_m, warp_l, p.rows, kv_head, split,
      {p.o, p.m, p.l, static_cast<int64_t>(a.n_q) * a.n_heads, a.n_heads, p.group});
}

// One warp per (query row, head) pair; a block's pairs share a KV head and its key tiles.
template <typename T, int HEAD_DIM>
__global__ void __launch_bounds__(kThreads) TiledKernel(PartialAttentionArgs a, int group) {
  constexpr int kTile = HEAD_DIM <= 128 ? 32 : 16;
  constexpr int kStride = HEAD_DIM + 1;  // padding: lanes read different keys without conflicts
  constexpr int kDimsPerLane = (HEAD_DIM + kWarpSize - 1) / kWarpSize;
  __shared__ float q_shared[kWarps][HEAD_DIM];
  __shared__ float k_tile[kTile * kStride];
  __shared__ float v_tile[kTile * kStride];

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int kv_head = blockIdx.y;
  const int pair = blockIdx.x * kWarps + warp;
  const bool active = pair < a.n_q * group;
  const int i = active ? pair / group : 0;
  const int head = kv_head * group + pair % group;
  const int q_position = (active && a.q_positions != nullptr) ? a.q_positions[i] : 0;
  if (active) {
    for (int c = lane; c < HEAD_DIM; c += kWarpSize) {
      q_shared[warp][c] =
          a.q[(static_cast<int64_t>(i) * a.n_heads + head) * HEAD_DIM + c] * a.scale;
    }
  }
  const int64_t kv_stride = static_cast<int64_t>(a.n_kv_heads) * HEAD_DIM;
  const T* k = static_cast<const T*>(a.k) + static_cast<int64_t>(kv_head) * HEAD_DIM;
  const T* v = static_cast<const T*>(a.v) + static_cast<int64_t>(kv_head) * HEAD_DIM;

  float m = -INFINITY, l = 0;
  float acc[kDimsPerLane];
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e) acc[e] = 0;

  for (int tile = 0; tile < a.n_kv; tile += kTile) {
    __syncthreads();  // previous tile consumed (and q_shared written, first time)
    for (int idx = threadIdx.x; idx < kTile * HEAD_DIM; idx += kThreads) {
      const int key = idx / HEAD_DIM;
      const int c = idx % HEAD_DIM;
      const int j = tile + key;
      const bool valid = j < a.n_kv;
      k_tile[key * kStride + c] = valid ? ToFloat(k[j * kv_stride + c]) : 0.0f;
      v_tile[key * kStride + c] = valid ? ToFloat(v[j * kv_stride + c]) : 0.0f;
    }
    __syncthreads();
    if (!active) continue;
    const int j = tile + lane;
    float s = -INFINITY;
    if (lane < kTile && j < a.n_kv &&
        (a.q_positions == nullptr || a.kv_positions[j] <= q_position)) {
      float dot = 0;
      for (int c = 0; c < HEAD_DIM; ++c) dot += q_shared[warp][c] * k_tile[lane * kStride + c];
      s = dot;
    }
    const float m_new = fmaxf(m, WarpMax(s));
    if (m_new == -INFINITY) continue;          // nothing visible yet
    const float correction = expf(m - m_new);  // 0 when m is -inf
    const float weight = s == -INFINITY ? 0.0f : expf(s - m_new);
    l = l * correction + WarpSum(weight);
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) acc[e] *= correction;
    for (int t = 0; t < kTile; ++t) {
      const float w = __shfl_sync(0xffffffffu, weight, t);
#pragma unroll
      for (int e = 0; e < kDimsPerLane; ++e) {
        const int c = lane + e * kWarpSize;
        if (c < HEAD_DIM) acc[e] += w * v_tile[t * kStride + c];
      }
    }
    m = m_new;
  }
  if (!active) return;
  const int64_t row = static_cast<int64_t>(i) * a.n_heads + head;
#pragma unroll
  for (int e = 0; e < kDimsPerLane; ++e) {
    const int c = lane + e * kWarpSize;
    if (c < HEAD_DIM) a.o[row * HEAD_DIM + c] = l > 0 ? acc[e] / l : 0.0f;
  }
  if (lane == 0) {
    a.m[row] = l > 0 ? m : -INFINITY;
    a.l[row] = l;
  }
}

int DecodeRowsBucket(int rows) { return rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8; }

template <typename T, int HEAD_DIM, int ROWS>
cudaError_t LaunchSplit(const SplitParams& params, int n_splits, int n_kv_heads,
                        cudaStream_t stream) {
  using L = RowLayout<T, HEAD_DIM, ROWS>;
  if (const cudaError_t error =
          AllowDynamicSharedMemory<SplitKvKernel<T, HEAD_DIM, ROWS>>(L::kSharedBytes);
      error != cudaSuccess) {
    return error;
  }
  SplitKvKernel<T, HEAD_DIM, ROWS>
      <<<dim3(n_kv_heads, n_splits), kThreads, L::kSharedBytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename T, int HEAD_DIM>
cudaError_t LaunchSplitForRows(const SplitParams& params, int n_splits, int n_kv_heads,
                               cudaStream_t stream) {
  switch (DecodeRowsBucket(params.rows)) {
    case 1:
      return LaunchSplit<T, HEAD_DIM, 1>(params, n_splits, n_kv_heads, stream);
    case 2:
      return LaunchSplit<T, HEAD_DIM, 2>(params, n_splits, n_kv_heads, stream);
    case 4:
      return LaunchSplit<T, HEAD_DIM, 4>(params, n_splits, n_kv_heads, stream);
    default:
      return LaunchSplit<T, HEAD_DIM, 8>(params, n_splits, n_kv_heads, stream);
  }
}

template <typename T, int HEAD_DIM>
cudaError_t LaunchForHeadDim(const PartialAttentionArgs& a, const PartialAttentionPlan& plan,
                             float* scratch, cudaStream_t stream) {
  const int group = a.n_heads / a.n_kv_heads;
  if (!plan.split_kv) {
    const dim3 grid((a.n_q * group + kWarps - 1) / kWarps, a.n_kv_heads);
    TiledKernel<T, HEAD_DIM><<<grid, kThreads, 0, stream>>>(a, group);
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
    return LaunchTransformRows(a.also_transform, stream);  // no merge to carry it
  }
  const int64_t total_rows = static_cast<int64_t>(a.n_q) * a.n_heads;
  SplitParams params{a, group, a.n_q * group, plan.keys_per_split, a.o, a.m, a.l};
  if (plan.n_splits > 1) {
    params.o = scratch;
    params.m = scratch + plan.n_splits * total_rows * HEAD_DIM;
    params.l = params.m + plan.n_splits * total_rows;
  }
  // f16 keys and values of the usual head sizes go to the tensor cores.
  const cudaError_t error =
      MmaDecodeSupports(a.kv_dtype, HEAD_DIM, params.rows)
          ? LaunchMmaDecodeSplits(a, group, plan.keys_per_split, plan.n_splits, params.o, params.m,
                                  params.l, stream)
          : LaunchSplitForRows<T, HEAD_DIM>(params, plan.n_splits, a.n_kv_heads, stream);
  if (error != cudaSuccess) return error;
  if (plan.n_splits == 1) return LaunchTransformRows(a.also_transform, stream);
  MergeArgs merge;
  merge.o = params.o;
  merge.m = params.m;
  merge.l = params.l;
  merge.n_parts = plan.n_splits;
  merge.n_rows = static_cast<int32_t>(total_rows);
  merge.head_dim = HEAD_DIM;
  merge.out_o = a.o;
  merge.out_m = a.m;
  merge.out_l = a.l;
  return LaunchMerge(merge, &a.also_transform, stream);
}

template <typename T>
cudaError_t LaunchForType(const PartialAttentionArgs& a, const PartialAttentionPlan& plan,
                          float* scratch, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64:
      return LaunchForHeadDim<T, 64>(a, plan, scratch, stream);
    case 80:
      return LaunchForHeadDim<T, 80>(a, plan, scratch, stream);
    case 96:
      return LaunchForHeadDim<T, 96>(a, plan, scratch, stream);
    case 128:
      return LaunchForHeadDim<T, 128>(a, plan, scratch, stream);
    case 256:
      return LaunchForHeadDim<T, 256>(a, plan, scratch, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

bool IsSupportedHeadDim(int head_dim) {
  return head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128 || head_dim == 256;
}

PartialAttentionPlan PlanPartialAttention(const PartialAttentionArgs& a, int n_sms) {
  PartialAttentionPlan plan;
  const int rows = a.n_q * (a.n_heads / a.n_kv_heads);
  plan.split_kv = rows <= kMaxDecodeRows;
  if (!plan.split_kv) return plan;
  // One wave of blocks (a second one pays each block's start, the query and the pipeline fill,
  // and its end, the warp merge and the partial's write, again), at least kMinKeysPerSplit keys
  // a split (fewer make the per-split partials and their merge cost more than the keys).
  constexpr int kMinKeysPerSplit = 128;
  const int blocks_per_sm =
      MmaDecodeSupports(a.kv_dtype, a.head_dim, rows) ? MmaDecodeBlocksPerSm() : 4;
  const int target_blocks = blocks_per_sm * std::max(n_sms, 1);
  int n_splits = std::max(1, target_blocks / a.n_kv_heads);
  n_splits = std::min(n_splits, std::max(1, (a.n_kv + kMinKeysPerSplit - 1) / kMinKeysPerSplit));
  const int keys = std::max(1, (a.n_kv + n_splits - 1) / n_splits);
  plan.keys_per_split = (keys + 31) / 32 * 32;
  plan.n_splits = std::max(1, (a.n_kv + plan.keys_per_split - 1) / plan.keys_per_split);
  if (plan.n_splits > 1) {
    const size_t total_rows = static_cast<size_t>(a.n_q) * a.n_heads;
    plan.scratch_floats = plan.n_splits * total_rows * (a.head_dim + 2);
  }
  return plan;
}

cudaError_t LaunchPartialAttention(const PartialAttentionArgs& args,
                                   const PartialAttentionPlan& plan, float* scratch,
                                   cudaStream_t stream) {
  switch (args.kv_dtype) {
    case KvDType::kF32:
      return LaunchForType<float>(args, plan, scratch, stream);
    case KvDType::kF16:
      return LaunchForType<__half>(args, plan, scratch, stream);
    case KvDType::kBF16:
      return LaunchForType<__nv_bfloat16>(args, plan, scratch, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace silo::attention::cuda
