// Reader of Hugging Face safetensors files, single or sharded (model.safetensors.index.json),
// used in place through a read-only mapping.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON describing every tensor
// ({"dtype", "shape", "data_offsets": [begin, end]} relative to the end of the header) and an
// optional "__metadata__" object of strings, then the tensor bytes. Everything is checked: a
// header or tensor extending past the end is DataLoss; bad JSON, unknown dtypes, shapes whose
// size disagrees with the offsets, overflow or duplicates are InvalidArgument.
//
// Thread-safe after Open: immutable.
#ifndef SILO_ENGINE_SAFETENSORS_FILE_H_
#define SILO_ENGINE_SAFETENSORS_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/mapped_file.h"

namespace silo::engine {

enum class SafetensorsDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t ElementBytes(SafetensorsDType dtype);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDType dtype;
  std::vector<int64_t> shape;  // outermost first (row-major), possibly empty for a scalar
  int64_t n_elements;
  std::span<const uint8_t> data;  // inside the mapping
};

class SafetensorsFile {
 public:
  // Header JSON larger than this is rejected (the limit of the reference implementation).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  // NotFound / PermissionDenied when the file cannot be opened; DataLoss when truncated;
  // InvalidArgument when malformed.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  // Parses bytes owned by the caller (they must outlive the result); `name` stands for the file.
  static absl::StatusOr<SafetensorsFile> Parse(std::span<const uint8_t> bytes,
                                               std::string_view name);

  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }
  // NotFound when absent.
  absl::StatusOr<const SafetensorsTensor*> FindTensor(std::string_view name) const;

 private:
  SafetensorsFile() = default;

  std::string name_;
  std::unique_ptr<MappedFile> mapping_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string, std::less<>> metadata_;
};

// A model's weights in one or several safetensors files.
class SafetensorsModel {
 public:
  // `path` is a .safetensors file, a *.safetensors.index.json (shards named by its
  // "weight_map", relative to it), or a folder holding model.safetensors or
  // model.safetensors.index.json. A tensor present in two shards, or named by the index but
  // missing from its shard, is InvalidArgument.
  static absl::StatusOr<SafetensorsModel> Open(const std::string& path);

  const std::vector<const SafetensorsTensor*>& tensors() const { return tensors_; }
  absl::StatusOr<const SafetensorsTensor*> FindTensor(std::string_view name) const;
  size_t n_shards() const { return shards_.size(); }

 private:
  SafetensorsModel() = default;
  absl::Status Index();

  std::vector<SafetensorsFile> shards_;
  std::vector<const SafetensorsTensor*> tensors_;
  std::map<std::string, const SafetensorsTensor*, std::less<>> by_name_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_SAFETENSORS_FILE_H_
