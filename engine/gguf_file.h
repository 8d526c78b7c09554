// Reader of GGUF model files (versions 2 and 3): every metadata key and value, the tensor
// directory and the tensors' bytes, used in place through a read-only mapping.
//
// Everything read from the file is checked before use: a truncated file, or counts, lengths or
// tensor data that reach past its end, is DataLoss; a malformed or hostile one (bad magic,
// unknown value or tensor types, shapes that overflow, misaligned or duplicate entries, more than
// kMaxMetadataValues metadata values) is InvalidArgument. Never a crash.
//
// Thread-safe after Open: a GgufFile is immutable.
#ifndef SILO_ENGINE_GGUF_FILE_H_
#define SILO_ENGINE_GGUF_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/mapped_file.h"

namespace silo::engine {

// Metadata value types, numbered as in the file.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// Tensor element types (ggml's numbering). Only types whose block layout is known are accepted.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

// Elements per block and bytes per block of a tensor type.
struct GgmlTypeLayout {
  std::string_view name;
  int64_t block_elements;
  int64_t block_bytes;
};
// InvalidArgument for a type id outside GgmlType.
absl::StatusOr<GgmlTypeLayout> LayoutOf(uint32_t type_id);

struct GgufArray;
using GgufValue =
    std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                 std::shared_ptr<const GgufArray>, uint64_t, int64_t, double>;
struct GgufArray {
  GgufValueType element_type;
  std::vector<GgufValue> values;
};

struct GgufTensorInfo {
  std::string name;
  // Dimensions in GGUF order: dims[0] is the contiguous one (a row of a matrix). 1 to 4 entries.
  std::vector<int64_t> dims;
  GgmlType type;
  int64_t n_elements;
  uint64_t offset;  // from the start of the file, aligned to alignment()
  uint64_t n_bytes;
};

class GgufFile {
 public:
  // Limits that bound the work a hostile file can cause.
  static constexpr uint32_t kMaxDims = 4;
  static constexpr uint32_t kMaxArrayDepth = 4;
  // Metadata values decoded in all (array elements included): a vocabulary of 256k tokens with
  // its merges and types is about 800k. Bounds memory at ~40 bytes a value.
  static constexpr uint64_t kMaxMetadataValues = 4'000'000;

  // Maps and parses `path`. NotFound / PermissionDenied when it cannot be opened; DataLoss when
  // truncated; InvalidArgument when malformed.
  static absl::StatusOr<GgufFile> Open(const std::string& path);
  // Parses bytes already in memory (not copied: `bytes` must outlive the result); for tests and
  // fuzzing. `name` stands for the file in errors.
  static absl::StatusOr<GgufFile> Parse(std::span<const uint8_t> bytes, std::string_view name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  // Typed metadata look-ups: NotFound when the key is missing, InvalidArgument when its value
  // has another type. GetUint64/GetInt64 accept any integer type whose value fits.
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<uint64_t> GetUint64(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt64(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;  // float32 or float64
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key) const;

  // NotFound when there is no tensor of that name.
  absl::StatusOr<const GgufTensorInfo*> FindTensor(std::string_view name) const;
  // The tensor's bytes inside the mapping (valid while this GgufFile lives).
  std::span<const uint8_t> TensorBytes(const GgufTensorInfo& tensor) const;

 private:
  GgufFile() = default;
  absl::StatusOr<const GgufValue*> Find(std::string_view key) const;

  std::string name_;
  std::unique_ptr<MappedFile> mapping_;  // null when parsed from caller-owned bytes
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_GGUF_FILE_H_
