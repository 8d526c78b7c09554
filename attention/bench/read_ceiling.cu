// silo-read-ceiling: how fast the GPU can merely read decode-shaped K and V, the ceiling that
// silo-attention-bench's decode figures are measured against.
//
//   silo-read-ceiling
//
// K and V are [n_kv, 8 KV heads, 128] f16, as the decode benchmark lays them out, rotated over
// copies larger than the L2 cache. Two access shapes, 16-byte loads and no arithmetic:
// - by KV-head split, as the decode kernels read: a block of 128 threads per (KV head, split)
//   reads its head's 256-byte slice of each row of its keys, 8 loads of K and 8 of V in flight
//   per thread; at 32 splits that is the decode kernel's grid (256 blocks, about 2 per SM);
// - contiguous: blocks of 256 threads read whole rows, every head at once.
// Prints time per pass and bandwidth = bytes of K and V / time.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kRowChunks = kHeadDim * 2 / 16;  // 16-byte chunks of one head's row
constexpr int kSplitThreads = 128;
constexpr int kRowsPerStep = kSplitThreads / kRowChunks;
constexpr int kUnroll = 8;
constexpr size_t kL2Bytes = 64ull << 20;

void Check(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    std::fprintf(stderr, "error: %s: %s\n", what, cudaGetErrorString(error));
    std::exit(1);
  }
}

// Folds loaded bits into something the compiler must keep; never true for the data used.
__device__ __forceinline__ uint32_t Fold(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

__global__ void __launch_bounds__(kSplitThreads)
    ReadBySplit(const uint4* k, const uint4* v, int keys_per_split, uint32_t* sink) {
  const int head = blockIdx.x;
  const int split = blockIdx.y;
  const int row = threadIdx.x / kRowChunks;
  const int chunk = threadIdx.x % kRowChunks;
  uint32_t folded = 0;
  for (int key0 = 0; key0 < keys_per_split; key0 += kRowsPerStep * kUnroll) {
    uint4 kx[kUnroll];
    uint4 vx[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t key =
          static_cast<int64_t>(split) * keys_per_split + key0 + u * kRowsPerStep + row;
      const int64_t at = (key * kKvHeads + head) * kRowChunks + chunk;
      kx[u] = __ldcs(k + at);
      vx[u] = __ldcs(v + at);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) folded ^= Fold(kx[u]) ^ Fold(vx[u]);
  }
  if (folded == 0x5a5a5a5au) *sink = folded;
}

__global__ void ReadContiguous(const uint4* k, const uint4* v, int64_t chunks_per_block,
                               uint32_t* sink) {
  constexpr int kContiguousUnroll = 4;
  const int64_t begin = blockIdx.x * chunks_per_block;
  uint32_t folded = 0;
  for (int64_t i = threadIdx.x; i < chunks_per_block; i += blockDim.x * kContiguousUnroll) {
    uint4 kx[kContiguousUnroll];
    uint4 vx[kContiguousUnroll];
#pragma unroll
    for (int u = 0; u < kContiguousUnroll; ++u) {
      kx[u] = __ldcs(k + begin + i + u * blockDim.x);
      vx[u] = __ldcs(v + begin + i + u * blockDim.x);
    }
#pragma unroll
    for (int u = 0; u < kContiguousUnroll; ++u) folded ^= Fold(kx[u]) ^ Fold(vx[u]);
  }
  if (folded == 0x5a5a5a5au) *sink = folded;
}

// Mean microseconds per launch over 100 launches after 5, by CUDA events.
template <typename Launch>
double MicrosecondsPerPass(int copies, const Launch& launch) {
  for (int i = 0; i < 5; ++i) launch(i % copies);
  cudaEvent_t begin;
  cudaEvent_t end;
  Check(cudaEventCreate(&begin), "event");
  Check(cudaEventCreate(&end), "event");
  constexpr int kPasses = 100;
  Check(cudaEventRecord(begin), "record");
  for (int i = 0; i < kPasses; ++i) launch(i % copies);
  Check(cudaEventRecord(end), "record");
  Check(cudaEventSynchronize(end), "synchronize");
  Check(cudaGetLastError(), "launch");
  float milliseconds = 0;
  Check(cudaEventElapsedTime(&milliseconds, begin, end), "elapsed");
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  return milliseconds * 1000.0 / kPasses;
}

}  // namespace

int main() {
  cudaDeviceProp properties{};
  Check(cudaGetDeviceProperties(&properties, 0), "device");
  std::printf("%s, %d SMs; K and V [n_kv, %d, %d] f16, read only\n", properties.name,
              properties.multiProcessorCount, kKvHeads, kHeadDim);
  std::printf("%-44s %12s %14s\n", "read", "time (us)", "rate (GB/s)");
  uint32_t* sink = nullptr;
  Check(cudaMalloc(&sink, sizeof(uint32_t)), "malloc");
  for (const int n_kv : {4096, 32768}) {
    const size_t bytes = static_cast<size_t>(n_kv) * kKvHeads * kHeadDim * 2;
    const int copies = static_cast<int>(std::max<size_t>(2, kL2Bytes / (2 * bytes) + 1));
    std::vector<uint4*> k(copies);
    std::vector<uint4*> v(copies);
    for (int c = 0; c < copies; ++c) {
      Check(cudaMalloc(&k[c], bytes), "malloc");
      Check(cudaMalloc(&v[c], bytes), "malloc");
      Check(cudaMemset(k[c], 0x3c, bytes), "memset");
      Check(cudaMemset(v[c], 0x3b, bytes), "memset");
    }
    auto report = [&](const std::string& name, double microseconds) {
      std::printf("%-44s %12.2f %14.1f\n", (name + ", n_kv " + std::to_string(n_kv)).c_str(),
                  microseconds, 2.0 * bytes / microseconds / 1e3);
    };
    for (const int splits : {32, 64, 128}) {
      const int keys_per_split = n_kv / splits;
      if (keys_per_split % (kRowsPerStep * kUnroll) != 0) continue;
      report("by KV-head split, " + std::to_string(splits) + " splits",
             MicrosecondsPerPass(copies, [&](int c) {
               ReadBySplit<<<dim3(kKvHeads, splits), kSplitThreads>>>(k[c], v[c], keys_per_split,
                                                                      sink);
             }));
    }
    constexpr int kBlocks = 512;
    const int64_t chunks_per_block = static_cast<int64_t>(bytes / 16) / kBlocks;
    report("contiguous, " + std::to_string(kBlocks) + " blocks",
           MicrosecondsPerPass(copies, [&](int c) {
             ReadContiguous<<<kBlocks, 256>>>(k[c], v[c], chunks_per_block, sink);
           }));
    for (int c = 0; c < copies; ++c) {
      cudaFree(k[c]);
      cudaFree(v[c]);
    }
  }
  cudaFree(sink);
  return 0;
}
