// silo-gguf-info: prints what the engine reads from a GGUF file (metadata and tensor directory).
//
//   silo-gguf-info MODEL.gguf [--tensors]
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <variant>

#include "engine/gguf_file.h"

namespace {

using silo::engine::GgufArray;
using silo::engine::GgufFile;
using silo::engine::GgufValue;

constexpr size_t kShownArrayElements = 4;
constexpr size_t kShownStringBytes = 80;

std::string Shorten(const std::string& text) {
  std::string shown = text.substr(0, kShownStringBytes);
  for (char& c : shown) {
    if (c == '\n') c = ' ';
  }
  if (text.size() > kShownStringBytes) shown += "...";
  return shown;
}

std::string Format(const GgufValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string quoted = "\"";  // appends: GCC 12 misreports "a" + b + "c" (-Wrestrict)
          quoted += Shorten(v);
          quoted += '"';
          return quoted;
        } else if constexpr (std::is_same_v<T, std::shared_ptr<const GgufArray>>) {
          std::string out = "[";
          out += std::to_string(v->values.size());
          out += " elements:";
          for (size_t i = 0; i < v->values.size() && i < kShownArrayElements; ++i) {
            out += ' ';
            out += Format(v->values[i]);
          }
          return out + (v->values.size() > kShownArrayElements ? " ...]" : "]");
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else {
          return std::to_string(v);
        }
      },
      value);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && std::strcmp(argv[2], "--tensors") != 0)) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [--tensors]\n", argv[0]);
    return 2;
  }
  const absl::StatusOr<GgufFile> file = GgufFile::Open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "error: %s\n", file.status().ToString().c_str());
    return 1;
  }
  std::printf("GGUF v%u, alignment %lu, data at byte %lu\n", file->version(),
              static_cast<unsigned long>(file->alignment()),
              static_cast<unsigned long>(file->data_offset()));
  std::printf("%zu metadata keys:\n", file->metadata().size());
  for (const auto& [key, value] : file->metadata()) {
    std::printf("  %s = %s\n", key.c_str(), Format(value).c_str());
  }
  std::map<std::string, std::pair<size_t, uint64_t>> by_type;  // name -> (tensors, bytes)
  uint64_t total_bytes = 0;
  for (const auto& tensor : file->tensors()) {
    const std::string type(silo::engine::LayoutOf(static_cast<uint32_t>(tensor.type))->name);
    by_type[type].first += 1;
    by_type[type].second += tensor.n_bytes;
    total_bytes += tensor.n_bytes;
    if (argc == 3) {
      std::string dims;
      for (const int64_t dim : tensor.dims) {
        if (!dims.empty()) dims += " x ";
        dims += std::to_string(dim);
      }
      std::printf("  %-32s %-5s [%s]\n", tensor.name.c_str(), type.c_str(), dims.c_str());
    }
  }
  std::printf("%zu tensors, %.1f MiB:", file->tensors().size(), total_bytes / 1048576.0);
  for (const auto& [type, count_bytes] : by_type) {
    std::printf(" %s %zu (%.1f MiB)", type.c_str(), count_bytes.first,
                count_bytes.second / 1048576.0);
  }
  std::printf("\n");
  return 0;
}
