// Matrix products of the CPU engine with weights as stored in the model file: quantized blocks
// are used in place (never expanded to an f32 copy) and the work is spread over a ThreadPool.
//
// Quantized weights (Q8_0, Q4_0, Q4_1: blocks of 32; Q4_K, Q6_K: superblocks of 256) meet the
// activations in one of two ways (MatMulPrecision):
//   kExact  a few rows at a time are expanded to f32 in per-thread scratch (a few KiB) and
//           multiplied with the f32 activations: the f32 product of the dequantized matrix, what
//           an f32 reference (transformers loading the same GGUF) computes, up to rounding.
//   kInt8   an 8-bit copy of the activations (one scale per 32, or per 256 with sums per 16,
//           rounded to nearest) meets the blocks in integer dot products, as llama.cpp does:
//           fewer instructions per weight, but |y − exact| <= Σ_c |W[r,c]|·a(t,c) / 254 plus f32
//           rounding, where a(t,c) is max |x[t,·]| over the activation block (32 or 256) holding
//           column c. Enough to flip a close greedy choice (see engine/transformer.h).
// F32, F16 and BF16 weights always multiply the f32 activations directly (only f32 rounding).
// Several tokens (prefill) are tiled so that each weight block is read (and expanded) once per
// group of tokens; AVX2/FMA/F16C kernels where built with them.
//
// Thread-safety: MatMul is reentrant (its scratch memory is per calling thread); calls that share
// a ThreadPool are serialized by the pool.
#ifndef SILO_ENGINE_CPU_QUANTIZED_MATMUL_H_
#define SILO_ENGINE_CPU_QUANTIZED_MATMUL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "engine/gguf_file.h"
#include "engine/thread_pool.h"

namespace silo::engine {

// A matrix as stored in the model file; the bytes are not owned.
struct WeightMatrix {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;               // output features
  int64_t cols = 0;               // input features; a multiple of the type's block size
  const uint8_t* data = nullptr;  // [rows, row_bytes] bytes, row after row (GGUF: dims[0] == cols)
  int64_t row_bytes = 0;
};

// True for the weight types MatMul multiplies: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
bool CanMatMul(GgmlType type);

// InvalidArgument when the type is not supported (CanMatMul), rows or cols is not positive, cols
// is not a multiple of the type's block, row_bytes is not the size of cols elements of the type,
// or data is null.
absl::Status ValidateWeightMatrix(const WeightMatrix& w);

// y[t, r] = Σ_c W[r, c] · x[t, c] for t < n_tokens, r < w.rows.
//   x: [n_tokens, w.cols] f32, row-major.
//   y: [n_tokens, w.rows] f32, row-major; must not overlap x.
// Precondition: ValidateWeightMatrix(w) is OK (checked with SILO_CHECK in debug builds). Uses all
// threads of `pool`; n_tokens <= 0 does nothing. `precision` matters for quantized types only.
enum class MatMulPrecision { kExact, kInt8 };

void MatMul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatMulPrecision precision = MatMulPrecision::kExact);

}  // namespace silo::engine

#endif  // SILO_ENGINE_CPU_QUANTIZED_MATMUL_H_
