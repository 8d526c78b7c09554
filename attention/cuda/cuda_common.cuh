// Device helpers shared by the attention kernels: loads of 16 bytes of keys or values as floats,
// and warp reductions. C++17 (nvcc).
#ifndef SILO_ATTENTION_CUDA_CUDA_COMMON_CUH_
#define SILO_ATTENTION_CUDA_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace silo::attention::cuda {

constexpr int kWarpSize = 32;

// Elements of T in one 16-byte load.
template <typename T>
constexpr int VecElements() {
  return 16 / static_cast<int>(sizeof(T));
}

// Loads 16 bytes at `p` (16-byte aligned) as VecElements<T>() floats, bypassing L1 for data read
// once.
template <typename T>
__device__ __forceinline__ void LoadVec(const T* p, float* out);

template <>
__device__ __forceinline__ void LoadVec<float>(const float* p, float* out) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(p));
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}

template <>
__device__ __forceinline__ void LoadVec<__half>(const __half* p, float* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <>
__device__ __forceinline__ void LoadVec<__nv_bfloat16>(const __nv_bfloat16* p, float* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ float WarpMax(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_CUDA_COMMON_CUH_
