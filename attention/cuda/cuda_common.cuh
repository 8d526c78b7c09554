// Device helpers shared by the attention kernels: conversion of 16 bytes of keys or values to
// floats, and warp reductions. C++17 (nvcc).
#ifndef SILO_ATTENTION_CUDA_CUDA_COMMON_CUH_
#define SILO_ATTENTION_CUDA_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace silo::attention::cuda {

constexpr int kWarpSize = 32;

// Elements of T in one 16-byte load.
template <typename T>
constexpr int VecElements() {
  return 16 / static_cast<int>(sizeof(T));
}

// Converts 16 raw bytes holding VecElements<T>() values of T to floats.
template <typename T>
__device__ __forceinline__ void ConvertVec(const uint4& raw, float* out);

template <>
__device__ __forceinline__ void ConvertVec<float>(const uint4& raw, float* out) {
  const float* f = reinterpret_cast<const float*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) out[i] = f[i];
}

template <>
__device__ __forceinline__ void ConvertVec<__half>(const uint4& raw, float* out) {
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <>
__device__ __forceinline__ void ConvertVec<__nv_bfloat16>(const uint4& raw, float* out) {
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

// Lets kKernel launch with `bytes` of dynamic shared memory (above 48 KiB a kernel must opt in),
// asking the driver once per kernel and device.
template <auto kKernel>
cudaError_t AllowDynamicSharedMemory(size_t bytes) {
  constexpr int kMaxDevices = 64;
  static std::atomic<bool> configured[kMaxDevices];
  int device = 0;
  if (const cudaError_t error = cudaGetDevice(&device); error != cudaSuccess) return error;
  if (device < kMaxDevices && configured[device].load(std::memory_order_acquire)) {
    return cudaSuccess;
  }
  const cudaError_t error = cudaFuncSetAttribute(
      kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (error != cudaSuccess) return error;
  if (device < kMaxDevices) configured[device].store(true, std::memory_order_release);
  return cudaSuccess;
}

}  // namespace silo::attention::cuda

#endif  // SILO_ATTENTION_CUDA_CUDA_COMMON_CUH_
