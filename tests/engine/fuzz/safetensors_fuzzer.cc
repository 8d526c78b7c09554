// libFuzzer target: any bytes given to the safetensors reader (and so to the JSON reader) give a
// file or an error, never a crash, leak or undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file =
      silo::engine::SafetensorsFile::Parse(std::span<const uint8_t>(data, size), "fuzz");
  if (file.ok()) {
    uint64_t sum = 0;
    for (const auto& tensor : file->tensors()) {
      for (const uint8_t byte : tensor.data) sum += byte;  // every byte must be readable
    }
    (void)sum;
  }
  return 0;
}
