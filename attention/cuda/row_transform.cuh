// Device code of the row transforms (attention_args.h: RowTransformSet), one row per warp in two
// shared-memory buffers of `dim` floats, for the kernels that run them: transform_rows.cu, and
// merge.cu, which unscrambles partials and runs the scrambled queries of a partial-attention
// launch. C++17 (nvcc).
#ifndef SILO_ATTENTION_CUDA_ROW_TRANSFORM_CUH_
#define SILO_ATTENTION_CUDA_ROW_TRANSFORM_CUH_

#include <cstdint>
#include <type_traits>

#include "attention/attention_args.h"
#include "attention/cuda/cuda_common.cuh"

namespace silo::attention::cuda {

// The parameters of one transform of a set.
struct RowTransformView {
  int dim;
  int in_dim;
  int out_dim;
  RowMix mix;
  const float* pre_scale;
  const int32_t* pre_gather;   // or null
  const float* matrix;         // kMatrix only
  const int32_t* post_gather;  // or null
  const float* post_scale;
};

__device__ __forceinline__ RowTransformView TransformOf(const RowTransformSet& set, int index) {
  const int64_t offset = static_cast<int64_t>(index) * set.dim;
  return {set.dim,
          set.in_dim,
          set.out_dim,
          set.mix,
          set.pre_scale + offset,
          set.pre_gather != nullptr ? set.pre_gather + offset : nullptr,
          set.mix == RowMix::kMatrix ? set.matrix + offset * set.dim : nullptr,
          set.post_gather != nullptr ? set.post_gather + offset : nullptr,
          set.post_scale + offset};
}

// u = gather_pre(pre_scale ⊙ pad(in)), by one warp; t is scratch.
__device__ __forceinline__ void PrepareRowInWarp(const RowTransformView& v, const float* in,
                                                 float* t, float* u, int lane) {
  for (int c = lane; c < v.dim; c += kWarpSize) t[c] = c < v.in_dim ? in[c] * v.pre_scale[c] : 0.0f;
  __syncwarp();
  for (int c = lane; c < v.dim; c += kWarpSize)
    u[c] = v.pre_gather != nullptr ? t[v.pre_gather[c]] : t[c];
  __syncwarp();
}

// The normalized Walsh–Hadamard transform of u[0, n), in place, by one warp.
__device__ __forceinline__ void HadamardInWarp(float* u, int n, int lane) {
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

// The whole mix of one row by one warp: the mixed row, in t or u, to be read through PostValue.
__device__ __forceinline__ const float* MixRowInWarp(const RowTransformView& v, const float* in,
                                                     float* t, float* u, int lane) {
  PrepareRowInWarp(v, in, t, u, lane);
  if (v.mix == RowMix::kHadamard) {
    HadamardInWarp(u, v.dim, lane);
    return u;
  }
  for (int c = lane; c < v.dim; c += kWarpSize) {
    float sum = 0;
#pragma unroll 4
    for (int k = 0; k < v.dim; ++k) sum += u[k] * v.matrix[static_cast<int64_t>(k) * v.dim + c];
    t[c] = sum;
  }
  __syncwarp();
  return t;
}

// Column c (< out_dim) of the transformed row, from its mixed row.
__device__ __forceinline__ float PostValue(const RowTransformView& v, const float* mixed, int c) {
  return (v.post_gather != nullptr ? mixed[v.post_gather[c]] : mixed[c]) * v.post_scale[c];
}

// A row in registers: lane l holds columns l + 32·j, j < COLUMNS, of a row of at most
// 32·COLUMNS columns. The widest takes 8 columns a lane: the padded width of every head dim the
// CUDA attention kernels run (64, 80, 96, 128 and 256 pad to 64, 128, 256).
constexpr int kMaxRegisterColumns = 8;
constexpr int kMaxRegisterRowDim = kMaxRegisterColumns * kWarpSize;

// The columns a lane holds of a row of `dim` (<= kMaxRegisterRowDim) columns: loops of exactly
// that length, so that a 128-wide row takes 4 registers and 4-wide exchanges rather than 8 with
// half of them idle (the merge's unscramble of a row ~0.2 µs sooner on the H200).
__host__ __device__ constexpr int RegisterColumnsFor(int dim) {
  return dim <= 2 * kWarpSize ? 2 : dim <= 4 * kWarpSize ? 4 : kMaxRegisterColumns;
}

// f(std::integral_constant<int, RegisterColumnsFor(dim)>()): the instance of a template on the
// columns a lane holds that rows of `dim` columns take, from host or device code.
#pragma nv_exec_check_disable
template <typename F>
__host__ __device__ __forceinline__ decltype(auto) WithRegisterColumns(int dim, F&& f) {
  switch (RegisterColumnsFor(dim)) {
    case 2:
      return f(std::integral_constant<int, 2>());
    case 4:
      return f(std::integral_constant<int, 4>());
    default:
      return f(std::integral_constant<int, kMaxRegisterColumns>());
  }
}

// One transform's parameters in a warp's registers, laid out as a row in registers. Loading them
// is one round trip to memory, which a kernel can overlap with other loads or, launched
// programmatically, with the kernel before it.
template <int COLUMNS>
struct RegisterTransform {
  RowTransformView view;
  float pre_scale[COLUMNS];
  float post_scale[COLUMNS];  // 0 at and past out_dim
  int pre_gather[COLUMNS];
  int post_gather[COLUMNS];
};

template <int COLUMNS>
__device__ __forceinline__ RegisterTransform<COLUMNS> LoadRegisterTransform(
    const RowTransformView& v, int lane) {
  RegisterTransform<COLUMNS> r;
  r.view = v;
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    const int c = lane + j * kWarpSize;
    const bool on = c < v.dim;
    r.pre_scale[j] = on ? v.pre_scale[c] : 0.0f;
    // Off the row, index 0: the read stays inside the row's shared memory (and is dropped).
    r.pre_gather[j] = !on ? 0 : v.pre_gather != nullptr ? v.pre_gather[c] : c;
    r.post_gather[j] = !on ? 0 : v.post_gather != nullptr ? v.post_gather[c] : c;
    r.post_scale[j] = on && c < v.out_dim ? v.post_scale[c] : 0.0f;
  }
  return r;
}

// Lane l's columns l + 32·j of a row (in_dim of them read, the rest 0).
template <int COLUMNS>
__device__ __forceinline__ void LoadRegisterRow(const float* in, int in_dim, int lane,
                                                float (&x)[COLUMNS]) {
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    const int c = lane + j * kWarpSize;
    x[j] = c < in_dim ? in[c] : 0.0f;
  }
}

// Writes a row held as LoadRegisterRow holds it (its first dim columns) to shared memory, by one
// warp, and waits for the warp.
template <int COLUMNS>
__device__ __forceinline__ void StoreRegisterRow(const float (&x)[COLUMNS], int dim, int lane,
                                                 float* shared) {
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    const int c = lane + j * kWarpSize;
    if (c < dim) shared[c] = x[j];
  }
  __syncwarp();
}

// Transforms a row held as LoadRegisterRow holds it, by one warp, into y (same layout; 0 at and
// past out_dim). Three exchanges through `shared` (dim floats): the gathers permute across
// lanes. dim <= 32·COLUMNS.
template <int COLUMNS>
__device__ __forceinline__ void ApplyRegisterTransform(const RegisterTransform<COLUMNS>& r,
                                                       const float (&row)[COLUMNS], float* shared,
                                                       int lane, float (&y)[COLUMNS]) {
  const RowTransformView& v = r.view;
  float x[COLUMNS];
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    const int c = lane + j * kWarpSize;
    if (c < v.dim) shared[c] = row[j] * r.pre_scale[j];
  }
  __syncwarp();
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    x[j] = lane + j * kWarpSize < v.dim ? shared[r.pre_gather[j]] : 0.0f;
  }
  __syncwarp();
  if (v.mix == RowMix::kHadamard) {
    // Butterflies over column bits below 32 pair lanes, those above pair a lane's registers.
    for (int half = 1; half < v.dim && half < kWarpSize; half *= 2) {
#pragma unroll
      for (int j = 0; j < COLUMNS; ++j) {
        const float partner = __shfl_xor_sync(0xffffffffu, x[j], half);
        x[j] = (lane & half) != 0 ? partner - x[j] : x[j] + partner;
      }
    }
#pragma unroll
    for (int h = 1; h < COLUMNS; h *= 2) {
      if (h * kWarpSize >= v.dim) break;
#pragma unroll
      for (int j = 0; j < COLUMNS; ++j) {
        if ((j & h) != 0) continue;
        const float a = x[j];
        const float b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
    const float norm = rsqrtf(static_cast<float>(v.dim));
#pragma unroll
    for (int j = 0; j < COLUMNS; ++j) x[j] *= norm;
  } else {
    StoreRegisterRow(x, v.dim, lane, shared);
#pragma unroll
    for (int j = 0; j < COLUMNS; ++j) {
      const int c = lane + j * kWarpSize;
      float sum = 0;
      if (c < v.dim) {
        // Many matrix loads in flight: the matrix is dim² floats, mostly from L2 or DRAM.
#pragma unroll 32
        for (int k = 0; k < v.dim; ++k) {
          sum += shared[k] * v.matrix[static_cast<int64_t>(k) * v.dim + c];
        }
      }
      x[j] = sum;
    }
    __syncwarp();
  }
  StoreRegisterRow(x, v.dim, lane, shared);
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    y[j] = shared[r.post_gather[j]] * r.post_scale[j];
  }
  __syncwarp();  // shared is free again
}

// out = v(in) for a row in registers, by one warp (shared: v.dim floats).
template <int COLUMNS>
__device__ __forceinline__ void TransformRowInRegisters(const RowTransformView& v, const float* in,
                                                        float* out, float* shared, int lane) {
  float x[COLUMNS], y[COLUMNS];
  LoadRegisterRow(in, v.in_dim, lane, x);
  ApplyRegisterTransform(LoadRegisterTransform<COLUMNS>(v, lane), x, shared, lane, y);
#pragma unroll
  for (int j = 0; j < COLUMNS; ++j) {
    const int c = lane + j * kWarpSize;
    if (c < v.out_dim) out[c] = y[j];
  }
}

// Row `row` of a RowTransformArgs by one warp (t, u: dim floats of shared memory each). A row
// whose source or transform index is out of range is written as zeros.
__device__ __forceinline__ void TransformArgsRowInWarp(const RowTransformArgs& a, int64_t row,
                                                       float* t, float* u, int lane) {
  const int index = a.transform != nullptr ? a.transform[row] : 0;
  const int64_t source = a.source != nullptr ? a.source[row] : row;
  float* out = a.out + row * a.out_stride;
  if (index < 0 || index >= a.transforms.count || source < 0 || source >= a.n_in_rows) {
    for (int c = lane; c < a.transforms.out_dim; c += kWarpSize) out[c] = 0.0f;
    return;
  }
  const RowTransformView v = TransformOf(a.transforms, index);
  const float* in = a.in + source * a.in_stride;
  if (v.dim <= kMaxRegisterRowDim) {
    return WithRegisterColumns(v.dim, [&](auto columns) {
      TransformRowInRegisters<decltype(columns)::value>(v, in, out, t, lane);
    });
  }
  const float* mixed = MixRowInWarp(v, in, t, u, lane);
  for (int c = lane; c < v.out_dim; c += kWarpSize) out[c] = PostValue(v, mixed, c);
  __syncwarp();  // t and u are free again
}

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_ROW_TRANSFORM_CUH_
