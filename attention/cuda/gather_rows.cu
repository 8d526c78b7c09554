#include <algorithm>
#include <cstdint>

#include "attention/cuda/gather_rows.cuh"

namespace silo::attention::cuda {
namespace {

constexpr int kThreads = 256;

// Copies in units of Unit (uint4 when rows are 16-byte multiples and aligned, else bytes).
template <typename Unit>
__global__ void GatherRowsKernel(GatherRowsArgs a) {
  const int64_t units_per_row = a.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int64_t total = a.n_out * units_per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t out_row = idx / units_per_row;
    const int64_t unit = idx % units_per_row;
    const int32_t in_row = a.rows[out_row];
    Unit value{};
    if (in_row >= 0 && in_row < a.n_in) {
      value = static_cast<const Unit*>(a.in)[in_row * units_per_row + unit];
    }
    static_cast<Unit*>(a.out)[idx] = value;
  }
}

}  // namespace

cudaError_t LaunchGatherRows(const GatherRowsArgs& args, cudaStream_t stream) {
  if (args.n_out == 0) return cudaSuccess;
  const bool vector = args.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(args.in) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(args.out) % 16 == 0;
  const int64_t units = args.n_out * (vector ? args.row_bytes / 16 : args.row_bytes);
  const int blocks = static_cast<int>(std::min<int64_t>((units + kThreads - 1) / kThreads, 65535));
  if (vector) {
    GatherRowsKernel<uint4><<<blocks, kThreads, 0, stream>>>(args);
  } else {
    GatherRowsKernel<uint8_t><<<blocks, kThreads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace silo::attention::cuda
