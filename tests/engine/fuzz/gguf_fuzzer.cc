// libFuzzer target: any bytes given to the GGUF reader give a GgufFile or an error, never a
// crash, leak or undefined behaviour (built with ASan and UBSan by scripts/fuzz).
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/dequantize.h"
#include "engine/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<silo::engine::GgufFile> file =
      silo::engine::GgufFile::Parse(std::span<const uint8_t>(data, size), "fuzz");
  if (!file.ok()) return 0;
  // Touch what a loader touches: every tensor's bytes, dequantized when the type allows.
  for (const auto& tensor : file->tensors()) {
    const auto bytes = file->TensorBytes(tensor);
    if (!silo::engine::CanDequantize(tensor.type) || tensor.n_elements > (1 << 16)) continue;
    std::vector<float> out(static_cast<size_t>(tensor.n_elements));
    (void)silo::engine::DequantizeRow(tensor.type, bytes, out);
  }
  return 0;
}
