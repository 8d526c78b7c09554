#include "engine/gguf_file.h"

#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;

// Bounds-checked little-endian cursor over the file's bytes. Reading past the end is DataLoss.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, std::string_view name) : bytes_(bytes), name_(name) {}

  uint64_t offset() const { return offset_; }
  uint64_t remaining() const { return bytes_.size() - offset_; }

  // Counts decoded metadata values against GgufFile::kMaxMetadataValues.
  absl::Status CountValues(uint64_t n) {
    values_ += n;
    if (values_ > GgufFile::kMaxMetadataValues) {
      return Invalid(StrCat("more than ", GgufFile::kMaxMetadataValues, " metadata values"));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (remaining() < sizeof(T)) return Truncated(what);
    T value;
    std::memcpy(&value, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString(std::string_view what) {
    SILO_ASSIGN_OR_RETURN(const uint64_t length, Read<uint64_t>(what));
    if (length > remaining()) return Truncated(what);
    std::string text(reinterpret_cast<const char*>(bytes_.data() + offset_), length);
    offset_ += length;
    return text;
  }

  absl::Status Truncated(std::string_view what) const {
    return absl::DataLossError(StrCat(name_, ": truncated at byte ", offset_, " while reading ",
                                      what, " (file has ", bytes_.size(), " bytes)"));
  }
  absl::Status Invalid(std::string_view message) const {
    return absl::InvalidArgumentError(StrCat(name_, ": ", message));
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string_view name_;
  uint64_t offset_ = 0;
  uint64_t values_ = 0;
};

bool IsKnownValueType(uint32_t type) { return type <= 12; }

// Smallest encoding of one value of `type`; bounds array counts before anything is allocated.
uint64_t MinEncodedBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kString:  // the length
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kArray:  // element type + count
      return 12;
  }
  return 1;
}

absl::StatusOr<GgufValue> ReadValue(Reader& reader, GgufValueType type, uint32_t depth);

absl::StatusOr<GgufValue> ReadArray(Reader& reader, uint32_t depth) {
  if (depth >= GgufFile::kMaxArrayDepth) {
    return reader.Invalid(StrCat("arrays nested deeper than ", GgufFile::kMaxArrayDepth));
  }
  SILO_ASSIGN_OR_RETURN(const uint32_t element_type, reader.Read<uint32_t>("array type"));
  if (!IsKnownValueType(element_type)) {
    return reader.Invalid(StrCat("unknown array element type ", element_type));
  }
  SILO_ASSIGN_OR_RETURN(const uint64_t count, reader.Read<uint64_t>("array length"));
  const auto type = static_cast<GgufValueType>(element_type);
  if (count > reader.remaining() / MinEncodedBytes(type)) {
    return reader.Truncated(StrCat("an array of ", count, " elements"));
  }
  SILO_RETURN_IF_ERROR(reader.CountValues(count));
  auto array = std::make_shared<GgufArray>();
  array->element_type = type;
  array->values.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    SILO_ASSIGN_OR_RETURN(GgufValue value, ReadValue(reader, type, depth + 1));
    array->values.push_back(std::move(value));
  }
  return GgufValue(std::shared_ptr<const GgufArray>(std::move(array)));
}

absl::StatusOr<GgufValue> ReadValue(Reader& reader, GgufValueType type, uint32_t depth) {
  switch (type) {
    case GgufValueType::kUint8:
      return reader.Read<uint8_t>("a uint8");
    case GgufValueType::kInt8:
      return reader.Read<int8_t>("an int8");
    case GgufValueType::kUint16:
      return reader.Read<uint16_t>("a uint16");
    case GgufValueType::kInt16:
      return reader.Read<int16_t>("an int16");
    case GgufValueType::kUint32:
      return reader.Read<uint32_t>("a uint32");
    case GgufValueType::kInt32:
      return reader.Read<int32_t>("an int32");
    case GgufValueType::kFloat32:
      return reader.Read<float>("a float32");
    case GgufValueType::kBool: {
      SILO_ASSIGN_OR_RETURN(const uint8_t byte, reader.Read<uint8_t>("a bool"));
      if (byte > 1) return reader.Invalid(StrCat("bool value ", byte, " is not 0 or 1"));
      return GgufValue(byte == 1);
    }
    case GgufValueType::kString:
      return reader.ReadString("a string");
    case GgufValueType::kArray:
      return ReadArray(reader, depth);
    case GgufValueType::kUint64:
      return reader.Read<uint64_t>("a uint64");
    case GgufValueType::kInt64:
      return reader.Read<int64_t>("an int64");
    case GgufValueType::kFloat64:
      return reader.Read<double>("a float64");
  }
  return reader.Invalid(StrCat("unknown value type ", static_cast<uint32_t>(type)));
}

// Product of the dimensions, or InvalidArgument when a dimension is not positive or the product
// overflows int64.
absl::StatusOr<int64_t> ElementCount(const Reader& reader, const GgufTensorInfo& tensor) {
  int64_t count = 1;
  for (const int64_t dim : tensor.dims) {
    if (dim <= 0) {
      return reader.Invalid(StrCat("tensor '", tensor.name, "' has dimension ", dim));
    }
    if (count > std::numeric_limits<int64_t>::max() / dim) {
      return reader.Invalid(StrCat("tensor '", tensor.name, "' has too many elements"));
    }
    count *= dim;
  }
  return count;
}

absl::StatusOr<GgufTensorInfo> ReadTensorInfo(Reader& reader) {
  GgufTensorInfo tensor;
  SILO_ASSIGN_OR_RETURN(tensor.name, reader.ReadString("a tensor name"));
  SILO_ASSIGN_OR_RETURN(const uint32_t n_dims, reader.Read<uint32_t>("a tensor rank"));
  if (n_dims == 0 || n_dims > GgufFile::kMaxDims) {
    return reader.Invalid(StrCat("tensor '", tensor.name, "' has ", n_dims, " dimensions (1 to ",
                                 GgufFile::kMaxDims, " allowed)"));
  }
  for (uint32_t i = 0; i < n_dims; ++i) {
    SILO_ASSIGN_OR_RETURN(const uint64_t dim, reader.Read<uint64_t>("a tensor dimension"));
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return reader.Invalid(StrCat("tensor '", tensor.name, "' has dimension ", dim));
    }
    tensor.dims.push_back(static_cast<int64_t>(dim));
  }
  SILO_ASSIGN_OR_RETURN(const uint32_t type_id, reader.Read<uint32_t>("a tensor type"));
  SILO_ASSIGN_OR_RETURN(const GgmlTypeLayout layout, LayoutOf(type_id));
  tensor.type = static_cast<GgmlType>(type_id);
  SILO_ASSIGN_OR_RETURN(tensor.offset, reader.Read<uint64_t>("a tensor offset"));
  SILO_ASSIGN_OR_RETURN(tensor.n_elements, ElementCount(reader, tensor));
  if (tensor.dims[0] % layout.block_elements != 0) {
    return reader.Invalid(StrCat("tensor '", tensor.name, "' of type ", layout.name,
                                 " has rows of ", tensor.dims[0], " elements, not a multiple of ",
                                 layout.block_elements));
  }
  const uint64_t n_blocks = static_cast<uint64_t>(tensor.n_elements / layout.block_elements);
  if (n_blocks > std::numeric_limits<uint64_t>::max() / layout.block_bytes) {
    return reader.Invalid(StrCat("tensor '", tensor.name, "' is too large"));
  }
  tensor.n_bytes = n_blocks * static_cast<uint64_t>(layout.block_bytes);
  return tensor;
}

}  // namespace

absl::StatusOr<GgmlTypeLayout> LayoutOf(uint32_t type_id) {
  switch (static_cast<GgmlType>(type_id)) {
    case GgmlType::kF32:
      return GgmlTypeLayout{"F32", 1, 4};
    case GgmlType::kF16:
      return GgmlTypeLayout{"F16", 1, 2};
    case GgmlType::kBF16:
      return GgmlTypeLayout{"BF16", 1, 2};
    case GgmlType::kQ4_0:
      return GgmlTypeLayout{"Q4_0", 32, 18};
    case GgmlType::kQ4_1:
      return GgmlTypeLayout{"Q4_1", 32, 20};
    case GgmlType::kQ5_0:
      return GgmlTypeLayout{"Q5_0", 32, 22};
    case GgmlType::kQ5_1:
      return GgmlTypeLayout{"Q5_1", 32, 24};
    case GgmlType::kQ8_0:
      return GgmlTypeLayout{"Q8_0", 32, 34};
    case GgmlType::kQ8_1:
      return GgmlTypeLayout{"Q8_1", 32, 36};
    case GgmlType::kQ2_K:
      return GgmlTypeLayout{"Q2_K", 256, 84};
    case GgmlType::kQ3_K:
      return GgmlTypeLayout{"Q3_K", 256, 110};
    case GgmlType::kQ4_K:
      return GgmlTypeLayout{"Q4_K", 256, 144};
    case GgmlType::kQ5_K:
      return GgmlTypeLayout{"Q5_K", 256, 176};
    case GgmlType::kQ6_K:
      return GgmlTypeLayout{"Q6_K", 256, 210};
    case GgmlType::kQ8_K:
      return GgmlTypeLayout{"Q8_K", 256, 292};
  }
  return absl::InvalidArgumentError(StrCat("unknown tensor type ", type_id));
}

absl::StatusOr<GgufFile> GgufFile::Open(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  auto mapping = std::make_unique<MappedFile>(std::move(mapped));
  SILO_ASSIGN_OR_RETURN(GgufFile file, Parse(mapping->bytes(), path));
  file.mapping_ = std::move(mapping);
  return file;
}

absl::StatusOr<GgufFile> GgufFile::Parse(std::span<const uint8_t> bytes, std::string_view name) {
  GgufFile file;
  file.name_ = std::string(name);
  file.bytes_ = bytes;
  Reader reader(bytes, file.name_);

  SILO_ASSIGN_OR_RETURN(const uint32_t magic, reader.Read<uint32_t>("the magic number"));
  if (magic != kGgufMagic) return reader.Invalid("not a GGUF file (bad magic number)");
  SILO_ASSIGN_OR_RETURN(file.version_, reader.Read<uint32_t>("the version"));
  if (file.version_ != 2 && file.version_ != 3) {
    return reader.Invalid(
        StrCat("GGUF version ", file.version_, " is not supported (2 and 3 are)"));
  }
  SILO_ASSIGN_OR_RETURN(const uint64_t n_tensors, reader.Read<uint64_t>("the tensor count"));
  SILO_ASSIGN_OR_RETURN(const uint64_t n_metadata, reader.Read<uint64_t>("the metadata count"));

  // Each key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
  if (n_metadata > reader.remaining() / 13) {
    return reader.Truncated(StrCat(n_metadata, " metadata entries"));
  }
  for (uint64_t i = 0; i < n_metadata; ++i) {
    SILO_ASSIGN_OR_RETURN(std::string key, reader.ReadString("a metadata key"));
    SILO_ASSIGN_OR_RETURN(const uint32_t type, reader.Read<uint32_t>("a metadata type"));
    if (!IsKnownValueType(type)) {
      return reader.Invalid(StrCat("metadata key '", key, "' has unknown type ", type));
    }
    SILO_ASSIGN_OR_RETURN(GgufValue value,
                          ReadValue(reader, static_cast<GgufValueType>(type), /*depth=*/0));
    if (!file.metadata_.emplace(key, std::move(value)).second) {
      return reader.Invalid(StrCat("metadata key '", key, "' appears twice"));
    }
  }

  if (file.metadata_.contains("general.alignment")) {
    SILO_ASSIGN_OR_RETURN(file.alignment_, file.GetUint64("general.alignment"));
    if (file.alignment_ == 0 || (file.alignment_ & (file.alignment_ - 1)) != 0 ||
        file.alignment_ > (1u << 20)) {
      return reader.Invalid(
          StrCat("general.alignment ", file.alignment_, " is not a power of two up to 1 MiB"));
    }
  } else {
    file.alignment_ = kDefaultAlignment;
  }

  // Each tensor entry takes at least 8 (name length) + 4 + 8 + 4 + 8 bytes.
  if (n_tensors > reader.remaining() / 32) {
    return reader.Truncated(StrCat(n_tensors, " tensor entries"));
  }
  file.tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    SILO_ASSIGN_OR_RETURN(GgufTensorInfo tensor, ReadTensorInfo(reader));
    if (!file.tensor_index_.emplace(tensor.name, file.tensors_.size()).second) {
      return reader.Invalid(StrCat("tensor '", tensor.name, "' appears twice"));
    }
    file.tensors_.push_back(std::move(tensor));
  }

  const uint64_t header_end = reader.offset();
  file.data_offset_ = (header_end + file.alignment_ - 1) / file.alignment_ * file.alignment_;
  const uint64_t file_size = bytes.size();
  for (GgufTensorInfo& tensor : file.tensors_) {
    if (tensor.offset % file.alignment_ != 0) {
      return reader.Invalid(StrCat("tensor '", tensor.name, "' has offset ", tensor.offset,
                                   ", not a multiple of the alignment ", file.alignment_));
    }
    // Compare without overflow: data_offset + offset + n_bytes <= file_size.
    if (file.data_offset_ > file_size || tensor.offset > file_size - file.data_offset_ ||
        tensor.n_bytes > file_size - file.data_offset_ - tensor.offset) {
      return absl::DataLossError(StrCat(file.name_, ": tensor '", tensor.name,
                                        "' extends past the end of the file (", file_size,
                                        " bytes)"));
    }
    tensor.offset += file.data_offset_;
  }
  return file;
}

absl::StatusOr<const GgufValue*> GgufFile::Find(std::string_view key) const {
  const auto it = metadata_.find(key);
  if (it == metadata_.end()) {
    return absl::NotFoundError(StrCat(name_, ": no metadata key '", key, "'"));
  }
  return &it->second;
}

namespace {

absl::Status WrongType(std::string_view name, std::string_view key, std::string_view expected) {
  return absl::InvalidArgumentError(StrCat(name, ": metadata key '", key, "' is not ", expected));
}

}  // namespace

absl::StatusOr<std::string_view> GgufFile::GetString(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const GgufValue* value, Find(key));
  if (const auto* text = std::get_if<std::string>(value)) return std::string_view{*text};
  return WrongType(name_, key, "a string");
}

absl::StatusOr<uint64_t> GgufFile::GetUint64(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const GgufValue* value, Find(key));
  std::optional<uint64_t> result;
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if (v >= 0) result = static_cast<uint64_t>(v);
        }
      },
      *value);
  if (!result.has_value()) return WrongType(name_, key, "a non-negative integer");
  return *result;
}

absl::StatusOr<int64_t> GgufFile::GetInt64(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const GgufValue* value, Find(key));
  std::optional<int64_t> result;
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if (std::is_signed_v<T> ||
              static_cast<uint64_t>(v) <=
                  static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            result = static_cast<int64_t>(v);
          }
        }
      },
      *value);
  if (!result.has_value()) return WrongType(name_, key, "an integer that fits int64");
  return *result;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const GgufValue* value, Find(key));
  if (const auto* f = std::get_if<float>(value)) return *f;
  if (const auto* d = std::get_if<double>(value)) return *d;
  return WrongType(name_, key, "a float");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const GgufValue* value, Find(key));
  if (const auto* b = std::get_if<bool>(value)) return *b;
  return WrongType(name_, key, "a bool");
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(std::string_view key) const {
  SILO_ASSIGN_OR_RETURN(const GgufValue* value, Find(key));
  if (const auto* array = std::get_if<std::shared_ptr<const GgufArray>>(value)) {
    return array->get();
  }
  return WrongType(name_, key, "an array");
}

absl::StatusOr<const GgufTensorInfo*> GgufFile::FindTensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  if (it == tensor_index_.end()) {
    return absl::NotFoundError(StrCat(name_, ": no tensor '", name, "'"));
  }
  return &tensors_[it->second];
}

std::span<const uint8_t> GgufFile::TensorBytes(const GgufTensorInfo& tensor) const {
  return bytes_.subspan(tensor.offset, tensor.n_bytes);
}

}  // namespace silo::engine
