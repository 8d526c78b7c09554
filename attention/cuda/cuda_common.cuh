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

// Copies 16 bytes of keys or values from global to shared memory asynchronously (cp.async,
// completed by the __pipeline_* calls), past L1 and marked first to evict from L2: a step reads
// them once. On the H200 this made the n_kv 4096 decode step 10% faster than the plain
// __pipeline_memcpy_async and changed 32768 by under 1%.
__device__ __forceinline__ void StreamToShared16(void* shared, const void* global) {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(shared))),
               "l"(global), "l"(policy));
}

// Programmatic dependent launch (sm_90): a kernel launched with the attribute
// cudaLaunchAttributeProgrammaticStreamSerialization (as LaunchMerge does) may start while the
// kernel before it in the stream still runs, so its launch and start overlap that kernel's end.
// It must call WaitForPrecedingGrid before reading what that kernel writes (or writing what it
// reads); the kernel before it lets it start early by calling AllowDependentLaunch.
__device__ __forceinline__ void WaitForPrecedingGrid() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}
__device__ __forceinline__ void AllowDependentLaunch() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// Where a split kernel's block writes its partial, and how its rows map to heads.
struct SplitOutput {
  float* o;            // [n_splits, total_rows, head_dim]
  float* m;            // [n_splits, total_rows], natural log
  float* l;            // [n_splits, total_rows]
  int64_t total_rows;  // n_q × n_heads
  int n_heads;
  int group;  // query heads per KV head: row r of a KV head is query r / group, head r % group
};

// The end of a split kernel's block: merges its warps' partials of `rows` rows of KV head
// kv_head (sums [kWarps][kRows][HEAD_DIM], maxima in the log2 domain, sums of weights) with the
// log-sum-exp rule and writes the split's partial. Every thread of the block takes part.
template <int kWarps, int kRows, int HEAD_DIM>
__device__ __forceinline__ void WriteSplitPartial(const float (*warp_acc)[kRows][HEAD_DIM],
                                                  const float (*warp_m)[kRows],
                                                  const float (*warp_l)[kRows], int rows,
                                                  int kv_head, int split, const SplitOutput& out) {
  for (int idx = threadIdx.x; idx < rows * HEAD_DIM; idx += kWarps * kWarpSize) {
    const int r = idx / HEAD_DIM;
    const int c = idx % HEAD_DIM;
    float top = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) top = fmaxf(top, warp_m[w][r]);
    float sum = 0;
    float total = 0;
    if (top != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float weight = warp_m[w][r] == -INFINITY ? 0.0f : exp2f(warp_m[w][r] - top);
        sum += weight * warp_acc[w][r][c];
        total += weight * warp_l[w][r];
      }
    }
    const int64_t row =
        static_cast<int64_t>(r / out.group) * out.n_heads + kv_head * out.group + r % out.group;
    const int64_t at = split * out.total_rows + row;
    out.o[at * HEAD_DIM + c] = total > 0 ? sum / total : 0.0f;
    if (c == 0) {
      out.m[at] = total > 0 ? top * 0.6931471805599453f : -INFINITY;
      out.l[at] = total;
    }
  }
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
