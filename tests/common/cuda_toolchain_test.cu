// Checks the CUDA build itself on a GPU machine: kernels compiled by our CMake flags load and run
// on the device, carry code for the configured architecture, and agree with the CPU.
// Skips without a device (ctest label cuda; the GPU machine runs `ctest -L cuda`).
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "gtest/gtest.h"

namespace silo {
namespace {

__global__ void Saxpy(int n, float a, const float* x, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

bool HaveDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(CudaToolchain, KernelCarriesTheConfiguredArchitecture) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  cudaFuncAttributes attributes{};
  ASSERT_EQ(cudaFuncGetAttributes(&attributes, Saxpy), cudaSuccess);
  int device = 0, major = 0, minor = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), cudaSuccess);
  std::printf("device compute capability %d.%d, kernel binary version %d\n", major, minor,
              attributes.binaryVersion);
  EXPECT_EQ(attributes.binaryVersion, major * 10 + minor);
}

TEST(CudaToolchain, KernelMatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  constexpr int kN = 1 << 20;
  std::vector<float> x(kN), y(kN);
  for (int i = 0; i < kN; ++i) {
    x[i] = static_cast<float>(i % 1000) * 0.5f;
    y[i] = static_cast<float>(i % 7);
  }
  float* device_x = nullptr;
  float* device_y = nullptr;
  ASSERT_EQ(cudaMalloc(&device_x, kN * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&device_y, kN * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device_x, x.data(), kN * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device_y, y.data(), kN * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  Saxpy<<<(kN + 255) / 256, 256>>>(kN, 3.0f, device_x, device_y);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> result(kN);
  ASSERT_EQ(cudaMemcpy(result.data(), device_y, kN * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(device_x);
  cudaFree(device_y);
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(result[i], 3.0f * x[i] + y[i]) << "at " << i;
  }
}

}  // namespace
}  // namespace silo
