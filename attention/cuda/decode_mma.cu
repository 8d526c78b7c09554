#include <cmath>

#include "attention/cuda/cuda_common.cuh"
#include "attention/cuda/decode_mma.cuh"

namespace silo::attention::cuda {
namespace {

// A block takes one split of keys of one KV head; its warps take the split's 16-key tiles in
// turn and are merged at the end. Keys and values go straight from global memory to registers
// (no shared-memory staging, small register count), so that 16 warps fit on an SM: the many
// resident warps, not a deep per-warp pipeline, keep enough bytes in flight. (Merging the splits
// in the last block of each KV head instead of the merge kernel measured 9–20% slower.)
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kTileKeys = 16;  // keys of one warp step: the m (scores) and k (values) of a tile
// Resident blocks per SM: 16 warps of at most 128 registers. On the H200 at n_kv 32768 this beat
// 4-warp blocks by 2% and five 4-warp blocks of 96 registers by 11%.
constexpr int kBlocksPerSm = 2;

// The products are transposed so that every accumulator is useful: Sᵀ[keys × cols] = K · Qᵀ and
// Oᵀ[dims × cols] = Vᵀ · Pᵀ, with m16n8k16 tiles (lane = 4·g + t, PTX's fragment layouts). The
// 8·COL_TILES columns hold each query row twice, as the f16 high and low parts of the query (and
// later of the weights): x ≈ hi + lo keeps about 22 bits, f32 quality with f16 inputs, and both
// parts cost one product. Columns c < kHalf are the high parts of row c, the others the low parts
// of row c − kHalf. With COL_TILES 1 (≤ 4 rows) lane t's columns 2t, 2t + 1 are rows
// 2(t & 1) + {0, 1}, the high parts where t < 2; with COL_TILES 2 (≤ 8 rows) rows 2t + {0, 1} in
// both tiles.
//
// Dot products do not depend on the order of the dimensions, so each lane reads whole 16-byte
// chunks: key rows g and g + 8, chunks t + 4i (the score product's k-steps 2i and 2i + 1), and
// value rows 2t, 2t + 1, 2t + 8, 2t + 9, chunks g + 8j (the value product's m rows). The query
// is laid out like the keys; output dimensions are put back in place when written (OutputDim).
template <int HEAD_DIM, int COL_TILES>
struct MmaLayout {
  static constexpr int kKChunks = HEAD_DIM / 32;  // 16-byte chunks of a key row per lane
  static constexpr int kVChunks = HEAD_DIM / 64;  // 16-byte chunks of a value row per lane
  static constexpr int kMTiles = HEAD_DIM / 16;   // m-tiles of the value product
  static constexpr int kRows = 4 * COL_TILES;     // query rows × heads per KV head
  static constexpr int kHalf = kRows;             // column of the low part of row 0

  // The dimension element e (0..7) of chunk i of lane t's key slice (and query slice) holds.
  static __device__ __forceinline__ int KeyDim(int t, int i, int e) { return (t + 4 * i) * 8 + e; }
  // The dimension of accumulator entry c of m-tile mt in lane g: rows g and g + 8 of the tile
  // are the even and odd elements of word mt % 4 of chunk g + 8 · (mt / 4).
  static __device__ __forceinline__ int OutputDim(int g, int mt, int c) {
    return (g + 8 * (mt / 4)) * 8 + 2 * (mt % 4) + (c >> 1);
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

// x ≈ hi + lo, both f16; the high part if `low` is false, else the low part.
__device__ __forceinline__ __half SplitF16(float x, bool low) {
  const __half hi = __float2half_rn(x);
  return low ? __float2half_rn(x - __half2float(hi)) : hi;
}

// c += A·B for one m16n8k16 tile.
__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                    uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The transpose of an 8×8 f16 matrix held as an mma fragment (lane 4·g + t: row g, columns 2t
// and 2t + 1).
__device__ __forceinline__ uint32_t Transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

__device__ __forceinline__ uint32_t Word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// 16 bytes read once: streamed past L1 and evicted from L2 first.
__device__ __forceinline__ uint4 LoadStreaming(const __half* from) {
  return __ldcs(reinterpret_cast<const uint4*>(from));
}

template <int HEAD_DIM, int COL_TILES>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm) MmaDecodeKernel(MmaParams p) {
  using L = MmaLayout<HEAD_DIM, COL_TILES>;
  __shared__ float warp_acc[kWarps][L::kRows][HEAD_DIM];
  __shared__ float warp_m[kWarps][L::kRows];
  __shared__ float warp_l[kWarps][L::kRows];

  AllowDependentLaunch();  // the split merge may start; it waits for this grid's end

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
  const float scale_log2 = a.scale * 1.4426950408889634f;  // scores in the log2 domain

  // Qᵀ as the B operand of the score product, the same for every warp: kept in shared memory
  // rather than registers (registers bound the resident blocks). Column g of each column tile,
  // scaled, the high or low part; words [i][lane] hold, for k-steps 2i + h, k-rows 2t, 2t + 1
  // (word 2h) and 2t + 8, 2t + 9 (word 2h + 1) of column tile nt: elements 4h + {0, 1} and
  // 4h + {2, 3} of key chunk i.
  __shared__ uint4 q_frag[L::kKChunks][COL_TILES][kWarpSize];
  if (warp < COL_TILES) {
    const int nt = warp;
    const int col = nt * 8 + g;
    const int row = col % L::kHalf;
    const bool low = col >= L::kHalf;
    const bool valid = row < p.rows;
    const float* q_row = a.q + (static_cast<int64_t>(row / p.group) * a.n_heads +
                                kv_head * p.group + row % p.group) *
                                   HEAD_DIM;
#pragma unroll
    for (int i = 0; i < L::kKChunks; ++i) {
      uint32_t words[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        __half part[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          part[e] = SplitF16(valid ? q_row[L::KeyDim(t, i, 2 * w + e)] * scale_log2 : 0.0f, low);
        }
        words[w] = PackHalves(part[0], part[1]);
      }
      q_frag[i][nt][lane] = make_uint4(words[0], words[1], words[2], words[3]);
    }
  }
  __syncthreads();

  // This lane's two rows (of its columns 2t, 2t + 1) and their running maxima and sums.
  const int row0 = COL_TILES == 1 ? 2 * (t & 1) : 2 * t;
  const bool low_lane = COL_TILES == 1 && t >= 2;  // lane holds the low parts (COL_TILES 1)
  bool row_valid[2];
  int q_position[2];
  float m[2], l[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    row_valid[e] = row0 + e < p.rows;
    q_position[e] =
        (a.q_positions != nullptr && row_valid[e]) ? a.q_positions[(row0 + e) / p.group] : 0;
    m[e] = -INFINITY;
    l[e] = 0;
  }
  float acc[L::kMTiles][COL_TILES][4];
#pragma unroll
  for (int mt = 0; mt < L::kMTiles; ++mt) {
#pragma unroll
    for (int nt = 0; nt < COL_TILES; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mt][nt][c] = 0;
    }
  }

  const int n_tiles = (n + kTileKeys - 1) / kTileKeys;
  const int my_tiles = n_tiles > warp ? (n_tiles - warp + kWarps - 1) / kWarps : 0;
  auto tile_key = [&](int it) { return (it * kWarps + warp) * kTileKeys; };
  // Keys g and g + 8 of tile it; zeros past the split (their scores are masked anyway).
  uint4 k_regs[2][L::kKChunks];
  auto load_keys = [&](int it) {
#pragma unroll
    for (int kr = 0; kr < 2; ++kr) {
      const int key = tile_key(it) + g + 8 * kr;
      const bool present = it < my_tiles && key < n;
#pragma unroll
      for (int i = 0; i < L::kKChunks; ++i) {
        k_regs[kr][i] = present ? LoadStreaming(k_base + key * kv_stride + L::KeyDim(t, i, 0))
                                : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // Values of keys 2t, 2t + 1, 2t + 8, 2t + 9 of tile it; zeros past the split (a zero weight
  // times stale bits could be NaN).
  uint4 v_regs[4][L::kVChunks];
  auto load_values = [&](int it) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const int key = tile_key(it) + 2 * t + (kk & 1) + 8 * (kk >> 1);
      const bool present = it < my_tiles && key < n;
#pragma unroll
      for (int j = 0; j < L::kVChunks; ++j) {
        v_regs[kk][j] = present ? LoadStreaming(v_base + key * kv_stride + (g + 8 * j) * 8)
                                : make_uint4(0, 0, 0, 0);
      }
    }
  };
  for (int it = 0; it < my_tiles; ++it) {
    const int key0 = tile_key(it);
    load_keys(it);
    load_values(it);
    // Sᵀ: entry [nt][c] is key g + 8 · (c >> 1), column nt · 8 + 2t + (c & 1).
    float sc[COL_TILES][4] = {};
#pragma unroll
    for (int i = 0; i < L::kKChunks; ++i) {
#pragma unroll
      for (int nt = 0; nt < COL_TILES; ++nt) {
        const uint4 q = q_frag[i][nt][lane];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          Mma(sc[nt], Word(k_regs[0][i], 2 * h), Word(k_regs[1][i], 2 * h),
              Word(k_regs[0][i], 2 * h + 1), Word(k_regs[1][i], 2 * h + 1), Word(q, 2 * h),
              Word(q, 2 * h + 1));
        }
      }
    }

    // Scores s[kr][e] of key g + 8kr and row row0 + e: high plus low part.
    float s[2][2];
#pragma unroll
    for (int kr = 0; kr < 2; ++kr) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float mine = sc[0][2 * kr + e];
        s[kr][e] = COL_TILES == 1 ? mine + __shfl_xor_sync(0xffffffffu, mine, 2)
                                  : mine + sc[COL_TILES - 1][2 * kr + e];
      }
    }
    float top[2] = {m[0], m[1]};
#pragma unroll
    for (int kr = 0; kr < 2; ++kr) {
      const int key = key0 + g + 8 * kr;
      const int kv_position =
          (a.kv_positions != nullptr && key < n) ? a.kv_positions[begin + key] : 0;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool visible =
            key < n && row_valid[e] && (a.q_positions == nullptr || kv_position <= q_position[e]);
        if (!visible) s[kr][e] = -INFINITY;
        top[e] = fmaxf(top[e], s[kr][e]);
      }
    }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int offset = 4; offset < kWarpSize; offset *= 2) {
        top[e] = fmaxf(top[e], __shfl_xor_sync(0xffffffffu, top[e], offset));
      }
      if (top[e] > m[e]) {  // rescale only when the maximum moves, which soon becomes rare
        const float correction = exp2f(m[e] - top[e]);  // 0 while m is -inf
        l[e] *= correction;
#pragma unroll
        for (int mt = 0; mt < L::kMTiles; ++mt) {
#pragma unroll
          for (int nt = 0; nt < COL_TILES; ++nt) {
            acc[mt][nt][e] *= correction;
            acc[mt][nt][2 + e] *= correction;
          }
        }
        m[e] = top[e];
      }
    }

    // Pᵀ as the B operand of the value product: the weights as f16 parts in the score layout
    // (key rows, columns), transposed per 8×8 block to (columns, keys).
    uint32_t p_frag[COL_TILES][2];
#pragma unroll
    for (int kr = 0; kr < 2; ++kr) {
      float w[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        w[e] = s[kr][e] == -INFINITY ? 0.0f : exp2f(s[kr][e] - m[e]);
        l[e] += w[e];
      }
#pragma unroll
      for (int nt = 0; nt < COL_TILES; ++nt) {
        const bool low = COL_TILES == 1 ? low_lane : nt == 1;
        p_frag[nt][kr] = Transpose8x8(PackHalves(SplitF16(w[0], low), SplitF16(w[1], low)));
      }
    }

    // Oᵀ += Vᵀ · Pᵀ: m-tile mt's rows g and g + 8 are the even and odd elements of word mt % 4
    // of value chunk mt / 4, for keys 2t, 2t + 1 (k-rows 2t, 2t + 1) and 2t + 8, 2t + 9.
#pragma unroll
    for (int mt = 0; mt < L::kMTiles; ++mt) {
      const int j = mt / 4;
      const int word = mt % 4;
      const uint32_t near_even =
          __byte_perm(Word(v_regs[0][j], word), Word(v_regs[1][j], word), 0x5410);
      const uint32_t near_odd =
          __byte_perm(Word(v_regs[0][j], word), Word(v_regs[1][j], word), 0x7632);
      const uint32_t far_even =
          __byte_perm(Word(v_regs[2][j], word), Word(v_regs[3][j], word), 0x5410);
      const uint32_t far_odd =
          __byte_perm(Word(v_regs[2][j], word), Word(v_regs[3][j], word), 0x7632);
#pragma unroll
      for (int nt = 0; nt < COL_TILES; ++nt) {
        Mma(acc[mt][nt], near_even, near_odd, far_even, far_odd, p_frag[nt][0], p_frag[nt][1]);
      }
    }
  }

  // Each lane's sums cover its keys g, g + 8 of every tile: add over the 8 g lanes.
#pragma unroll
  for (int e = 0; e < 2; ++e) {
#pragma unroll
    for (int offset = 4; offset < kWarpSize; offset *= 2) {
      l[e] += __shfl_xor_sync(0xffffffffu, l[e], offset);
    }
  }
  // High plus low parts of each output, then the warp's partial to shared memory.
  const bool writer = !low_lane;
#pragma unroll
  for (int mt = 0; mt < L::kMTiles; ++mt) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const float mine = acc[mt][0][c];
      const float sum = COL_TILES == 1 ? mine + __shfl_xor_sync(0xffffffffu, mine, 2)
                                       : mine + acc[mt][COL_TILES - 1][c];
      const int e = c & 1;
      if (writer && row_valid[e]) warp_acc[warp][row0 + e][L::OutputDim(g, mt, c)] = sum;
    }
  }
  if (writer && g == 0) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (row_valid[e]) {
        warp_m[warp][row0 + e] = m[e];
        warp_l[warp][row0 + e] = l[e];
      }
    }
  }
  __syncthreads();

  WriteSplitPartial<kWarps, L::kRows, HEAD_DIM>(
      warp_acc, warp_m, warp_l, p.rows, kv_head, split,
      {p.o, p.m, p.l, static_cast<int64_t>(a.n_q) * a.n_heads, a.n_heads, p.group});
}

template <int HEAD_DIM, int COL_TILES>
cudaError_t Launch(const MmaParams& params, int n_splits, cudaStream_t stream) {
  MmaDecodeKernel<HEAD_DIM, COL_TILES>
      <<<dim3(params.a.n_kv_heads, n_splits), kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template <int HEAD_DIM>
cudaError_t LaunchForRows(const MmaParams& params, int n_splits, cudaStream_t stream) {
  return params.rows <= 4 ? Launch<HEAD_DIM, 1>(params, n_splits, stream)
                          : Launch<HEAD_DIM, 2>(params, n_splits, stream);
}

}  // namespace

bool MmaDecodeSupports(KvDType kv_dtype, int head_dim, int rows) {
  return kv_dtype == KvDType::kF16 && (head_dim == 64 || head_dim == 128) && rows >= 1 &&
         rows <= kMmaDecodeMaxRows;
}

int MmaDecodeBlocksPerSm() { return kBlocksPerSm; }

cudaError_t LaunchMmaDecodeSplits(const PartialAttentionArgs& a, int group, int keys_per_split,
                                  int n_splits, float* o, float* m, float* l, cudaStream_t stream) {
  const MmaParams params{a, group, a.n_q * group, keys_per_split, o, m, l};
  if (!MmaDecodeSupports(a.kv_dtype, a.head_dim, params.rows)) return cudaErrorInvalidValue;
  return a.head_dim == 64 ? LaunchForRows<64>(params, n_splits, stream)
                          : LaunchForRows<128>(params, n_splits, stream);
}

}  // namespace silo::attention::cuda
