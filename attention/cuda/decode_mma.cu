#include <cuda_pipeline.h>

#include <cmath>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/decode_mma.cuh"

namespace silo::attention::cuda {
namespace {

// A block takes one split of keys of one KV head; its warps take the split's 16-key tiles in
// turn and are merged at the end. (One warp per KV head with a block over 8 heads, reading whole
// key rows, measured 4% slower on the H200.)
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kTileKeys = 16;  // keys of one warp step: two n-tiles of the score product

// Fragments follow PTX's mma.m16n8k16 layouts: lane = 4·g + t. The score product is
// S[rows × keys] = Q[rows × dims] · Kᵀ: Q is the A operand (rows g; rows 8..15 are zero), K the
// B operand (key g of each 8-key n-tile). Its accumulator (row g, keys 2t and 2t+1) is directly
// the A operand of the value product O[rows × dims] = P · V. Dot products do not depend on the
// order of the dimensions, so each lane reads whole 16-byte chunks of a key row (chunks t, t+4,
// ...) and the query is laid out the same way; the value product's output dimensions are
// relabelled the same way (lane g reads whole chunks of a value row too) and put back in
// place when written (ValueDim). Queries and probabilities are split into f16 high and low parts,
// two products each, so the result keeps about 22 bits: f32 quality with f16 inputs.
template <int HEAD_DIM>
struct MmaLayout {
  static constexpr int kKSteps = HEAD_DIM / 16;   // k-steps of the score product
  static constexpr int kKChunks = HEAD_DIM / 32;  // 16-byte chunks of a key row per lane
  static constexpr int kVChunks = HEAD_DIM / 64;  // 16-byte chunks of a value row per lane
  static constexpr int kDimTiles = HEAD_DIM / 8;  // n-tiles of the value product
  // Per lane and step: two key rows and four value rows.
  static constexpr int kEntries = 2 * kKChunks + 4 * kVChunks;
  static constexpr int kStageBytes = kEntries * kWarpSize * 16;
  static constexpr int kStages = 3;
  static constexpr size_t kStagingBytes = static_cast<size_t>(kWarps) * kStages * kStageBytes;
  // After the loop the same memory holds the warps' partial sums for the final merge.
  static constexpr size_t kReduceBytes =
      static_cast<size_t>(kWarps) * kMmaDecodeMaxRows * HEAD_DIM * 4;
  static constexpr size_t kSharedBytes =
      kStagingBytes > kReduceBytes ? kStagingBytes : kReduceBytes;

  // The dimension that element n of lane t's slice of a key row (and of the query) holds.
  static __device__ __forceinline__ int KeyDim(int t, int n) {
    return (t + 4 * (n / 8)) * 8 + n % 8;
  }
  // The dimension of column j (0..7) of the value product's n-tile d: lane g reads the 16-byte
  // chunks g, g + 8, ... of a value row, so that the 8 lanes of a t read 128 contiguous bytes.
  static __device__ __forceinline__ int ValueDim(int d, int j) {
    return ((d / 8) * 8 + j) * 8 + d % 8;
  }
};

struct MmaParams {
  PartialAttentionArgs a;
  int group;  // query heads per KV head
  int rows;   // n_q × group, ≤ kMmaDecodeMaxRows
  int keys_per_split;
  float* o;  // [n_splits, n_q × n_heads, head_dim]
  float* m;  // [n_splits, n_q × n_heads]
  float* l;
};

__device__ __forceinline__ uint32_t PackHalves(__half low, __half high) {
  const __half2 pair = __halves2half2(low, high);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

// x ≈ hi + lo, both f16.
__device__ __forceinline__ void SplitF16(float x, __half* hi, __half* lo) {
  *hi = __float2half_rn(x);
  *lo = __float2half_rn(x - __half2float(*hi));
}

// c += A·B for one m16n8k16 tile; A's rows 8..15 are zero.
__device__ __forceinline__ void MmaUpperRows(float (&c)[4], uint32_t a_low_k, uint32_t a_high_k,
                                             uint32_t b_low_k, uint32_t b_high_k) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a_low_k), "r"(0u), "r"(a_high_k), "r"(0u), "r"(b_low_k), "r"(b_high_k));
}

__device__ __forceinline__ uint32_t Word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <int HEAD_DIM>
__global__ void __launch_bounds__(kThreads, 2) MmaDecodeKernel(MmaParams p) {
  using L = MmaLayout<HEAD_DIM>;
  __shared__ float warp_m[kWarps][kMmaDecodeMaxRows];
  __shared__ float warp_l[kWarps][kMmaDecodeMaxRows];

  const PartialAttentionArgs& a = p.a;
  // KV heads vary fastest across blocks, so blocks that run together read whole key rows.
  const int kv_head = blockIdx.x;
  const int split = blockIdx.y;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = lane / 4;
  const int t = lane % 4;
  const int begin = split * p.keys_per_split;
  const int n = max(0, min(p.keys_per_split, a.n_kv - begin));
  const int64_t kv_stride = static_cast<int64_t>(a.n_kv_heads) * HEAD_DIM;
  const __half* k_base = static_cast<const __half*>(a.k) + static_cast<int64_t>(begin) * kv_stride +
                         static_cast<int64_t>(kv_head) * HEAD_DIM;
  const __half* v_base = static_cast<const __half*>(a.v) + static_cast<int64_t>(begin) * kv_stride +
                         static_cast<int64_t>(kv_head) * HEAD_DIM;

  // Query row g, scaled into the log2 domain (exp2 is one instruction), as f16 high and low.
  const bool row_valid = g < p.rows;
  const int q_index = g / p.group;
  const float* q_row =
      a.q +
      (static_cast<int64_t>(q_index) * a.n_heads + kv_head * p.group + g % p.group) * HEAD_DIM;
  const float scale_log2 = a.scale * 1.4426950408889634f;
  uint32_t q_hi[L::kKSteps][2];
  uint32_t q_lo[L::kKSteps][2];
#pragma unroll
  for (int s = 0; s < L::kKSteps; ++s) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      __half hi[2];
      __half lo[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float x = row_valid ? q_row[L::KeyDim(t, 4 * s + 2 * h + e)] * scale_log2 : 0.0f;
        SplitF16(x, &hi[e], &lo[e]);
      }
      q_hi[s][h] = PackHalves(hi[0], hi[1]);
      q_lo[s][h] = PackHalves(lo[0], lo[1]);
    }
  }
  const int q_position = (a.q_positions != nullptr && row_valid) ? a.q_positions[q_index] : 0;

  float m = -INFINITY;  // of row g, the same in the lanes of g
  float l = 0;          // of row g over this lane's keys; summed over the lanes at the end
  float acc[L::kDimTiles][4];
#pragma unroll
  for (int d = 0; d < L::kDimTiles; ++d) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[d][e] = 0;
  }

  // Stages per warp: [kStages][kEntries][32 lanes] of 16 bytes; a lane reads back only what it
  // copied (or zeroed), so waiting on its own copies is enough, and lanes never share banks.
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  uint4* stages = reinterpret_cast<uint4*>(stage_bytes) +
                  static_cast<size_t>(warp) * L::kStages * L::kEntries * kWarpSize;
  auto entry = [&](int slot, int e) {
    return stages + (slot * L::kEntries + e) * kWarpSize + lane;
  };
  const int n_tiles = (n + kTileKeys - 1) / kTileKeys;
  const int my_tiles = n_tiles > warp ? (n_tiles - warp + kWarps - 1) / kWarps : 0;
  auto issue = [&](int it) {
    if (it < my_tiles) {
      const int slot = it % L::kStages;
      const int key0 = (it * kWarps + warp) * kTileKeys;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int key = key0 + g + 8 * half;
#pragma unroll
        for (int i = 0; i < L::kKChunks; ++i) {
          uint4* to = entry(slot, half * L::kKChunks + i);
          if (key < n) {
            StreamToShared16(to, k_base + key * kv_stride + (t + 4 * i) * 8);
          } else {
            *to = make_uint4(0, 0, 0, 0);
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int key = key0 + 2 * t + (kk & 1) + 8 * (kk >> 1);
#pragma unroll
        for (int c = 0; c < L::kVChunks; ++c) {
          uint4* to = entry(slot, 2 * L::kKChunks + kk * L::kVChunks + c);
          if (key < n) {
            StreamToShared16(to, v_base + key * kv_stride + (c * 8 + g) * 8);
          } else {
            *to = make_uint4(0, 0, 0, 0);  // a zero weight times stale bits could be NaN
          }
        }
      }
    }
    __pipeline_commit();  // also when empty: one group per step keeps the counting uniform
  };
#pragma unroll
  for (int s = 0; s < L::kStages - 1; ++s) issue(s);

  for (int it = 0; it < my_tiles; ++it) {
    __pipeline_wait_prior(L::kStages - 2);
    issue(it + L::kStages - 1);
    const int slot = it % L::kStages;
    const int key0 = (it * kWarps + warp) * kTileKeys;

    // Scores of row g for keys key0 + 2t, 2t + 1 (c[0]) and key0 + 8 + 2t, 9 + 2t (c[1]).
    float c[2][4] = {};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int i = 0; i < L::kKChunks; ++i) {
        const uint4 k = *entry(slot, half * L::kKChunks + i);
        MmaUpperRows(c[half], q_hi[2 * i][0], q_hi[2 * i][1], k.x, k.y);
        MmaUpperRows(c[half], q_lo[2 * i][0], q_lo[2 * i][1], k.x, k.y);
        MmaUpperRows(c[half], q_hi[2 * i + 1][0], q_hi[2 * i + 1][1], k.z, k.w);
        MmaUpperRows(c[half], q_lo[2 * i + 1][0], q_lo[2 * i + 1][1], k.z, k.w);
      }
    }
    float s[4] = {c[0][0], c[0][1], c[1][0], c[1][1]};
    float top = m;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + 2 * t + (e & 1) + 8 * (e >> 1);
      const bool visible = key < n && row_valid &&
                           (a.q_positions == nullptr || a.kv_positions[begin + key] <= q_position);
      if (!visible) s[e] = -INFINITY;
      top = fmaxf(top, s[e]);
    }
    top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, 1));
    top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, 2));
    if (top > m) {  // rescale only when the maximum moves, which soon becomes rare
      const float correction = exp2f(m - top);  // 0 while m is -inf
      l *= correction;
#pragma unroll
      for (int d = 0; d < L::kDimTiles; ++d) {
        acc[d][0] *= correction;
        acc[d][1] *= correction;
      }
      m = top;
    }
    float w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      w[e] = s[e] == -INFINITY ? 0.0f : exp2f(s[e] - m);
      l += w[e];
    }
    __half w_hi[4];
    __half w_lo[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) SplitF16(w[e], &w_hi[e], &w_lo[e]);
    const uint32_t p_hi_low = PackHalves(w_hi[0], w_hi[1]);
    const uint32_t p_hi_high = PackHalves(w_hi[2], w_hi[3]);
    const uint32_t p_lo_low = PackHalves(w_lo[0], w_lo[1]);
    const uint32_t p_lo_high = PackHalves(w_lo[2], w_lo[3]);

    // Values of keys key0 + 2t + {0, 1, 8, 9}, dims ValueDim(d, g) for every n-tile d.
    uint4 v[4][L::kVChunks];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int cc = 0; cc < L::kVChunks; ++cc) {
        v[kk][cc] = *entry(slot, 2 * L::kKChunks + kk * L::kVChunks + cc);
      }
    }
#pragma unroll
    for (int d = 0; d < L::kDimTiles; ++d) {
      const int cc = d / 8;
      const int word = (d % 8) / 2;
      const uint32_t selector = d % 2 == 0 ? 0x5410u : 0x7632u;
      const uint32_t b_low_k = __byte_perm(Word(v[0][cc], word), Word(v[1][cc], word), selector);
      const uint32_t b_high_k = __byte_perm(Word(v[2][cc], word), Word(v[3][cc], word), selector);
      MmaUpperRows(acc[d], p_hi_low, p_hi_high, b_low_k, b_high_k);
      MmaUpperRows(acc[d], p_lo_low, p_lo_high, b_low_k, b_high_k);
    }
  }
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  // The staging memory becomes the warps' partial sums: [kWarps][kMmaDecodeMaxRows][HEAD_DIM].
  __pipeline_wait_prior(0);
  __syncthreads();
  float(*warp_acc)[kMmaDecodeMaxRows][HEAD_DIM] =
      reinterpret_cast<float(*)[kMmaDecodeMaxRows][HEAD_DIM]>(stage_bytes);
  if (row_valid) {
#pragma unroll
    for (int d = 0; d < L::kDimTiles; ++d) {
      warp_acc[warp][g][L::ValueDim(d, 2 * t)] = acc[d][0];
      warp_acc[warp][g][L::ValueDim(d, 2 * t + 1)] = acc[d][1];
    }
    if (t == 0) {
      warp_m[warp][g] = m;
      warp_l[warp][g] = l;
    }
  }
  __syncthreads();

  WriteSplitPartial<kWarps, kMmaDecodeMaxRows, HEAD_DIM>(
      warp_acc, warp_m, warp_l, p.rows, kv_head, split,
      {p.o, p.m, p.l, static_cast<int64_t>(a.n_q) * a.n_heads, a.n_heads, p.group});
}

template <int HEAD_DIM>
cudaError_t Launch(const MmaParams& params, int n_splits, cudaStream_t stream) {
  using L = MmaLayout<HEAD_DIM>;
  if (const cudaError_t error =
          AllowDynamicSharedMemory<MmaDecodeKernel<HEAD_DIM>>(L::kSharedBytes);
      error != cudaSuccess) {
    return error;
  }
  MmaDecodeKernel<HEAD_DIM>
      <<<dim3(params.a.n_kv_heads, n_splits), kThreads, L::kSharedBytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace

bool MmaDecodeSupports(KvDType kv_dtype, int head_dim, int rows) {
  return kv_dtype == KvDType::kF16 && (head_dim == 64 || head_dim == 128) && rows >= 1 &&
         rows <= kMmaDecodeMaxRows;
}

cudaError_t LaunchMmaDecodeSplits(const PartialAttentionArgs& a, int group, int keys_per_split,
                                  int n_splits, float* o, float* m, float* l, cudaStream_t stream) {
  const MmaParams params{a, group, a.n_q * group, keys_per_split, o, m, l};
  if (!MmaDecodeSupports(a.kv_dtype, a.head_dim, params.rows)) return cudaErrorInvalidValue;
  return a.head_dim == 64 ? Launch<64>(params, n_splits, stream)
                          : Launch<128>(params, n_splits, stream);
}

}  // namespace silo::attention::cuda
