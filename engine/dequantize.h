// Conversion of GGUF tensor data to f32: the reference for the engine's quantized kernels and the
// way small tensors (norms, biases) are loaded. Block layouts are ggml's.
//
// Thread-safe (pure functions).
#ifndef SILO_ENGINE_DEQUANTIZE_H_
#define SILO_ENGINE_DEQUANTIZE_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "engine/gguf_file.h"

namespace silo::engine {

// True for the types DequantizeRow converts: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
bool CanDequantize(GgmlType type);

// Converts `out.size()` elements stored as `type` in `data` to f32. InvalidArgument when the type
// is not supported, out.size() is not a multiple of the type's block, or data.size() is not
// exactly the bytes of that many elements.
absl::Status DequantizeRow(GgmlType type, std::span<const uint8_t> data, std::span<float> out);

}  // namespace silo::engine

#endif  // SILO_ENGINE_DEQUANTIZE_H_
