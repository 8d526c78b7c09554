#include "engine/safetensors_file.h"

#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "common/json.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

struct DTypeName {
  std::string_view name;
  SafetensorsDType dtype;
};

constexpr DTypeName kDTypes[] = {
    {"F64", SafetensorsDType::kF64}, {"F32", SafetensorsDType::kF32},
    {"F16", SafetensorsDType::kF16}, {"BF16", SafetensorsDType::kBF16},
    {"I64", SafetensorsDType::kI64}, {"I32", SafetensorsDType::kI32},
    {"I16", SafetensorsDType::kI16}, {"I8", SafetensorsDType::kI8},
    {"U8", SafetensorsDType::kU8},   {"BOOL", SafetensorsDType::kBool},
};

absl::Status Invalid(std::string_view file, std::string_view what) {
  return absl::InvalidArgumentError(StrCat(file, ": ", what));
}

// One header entry → a tensor whose bytes lie in `data`.
absl::StatusOr<SafetensorsTensor> ReadEntry(std::string_view file, const std::string& name,
                                            const JsonValue& entry, std::span<const uint8_t> data) {
  const std::string where = StrCat("tensor '", name, "'");
  auto invalid = [&](const absl::Status& status) {
    return Invalid(file, StrCat(where, ": ", status.message()));
  };
  SafetensorsTensor tensor;
  tensor.name = name;
  absl::StatusOr<std::string_view> dtype = entry.GetString("dtype");
  if (!dtype.ok()) return invalid(dtype.status());
  bool known = false;
  for (const DTypeName& candidate : kDTypes) {
    if (candidate.name == *dtype) {
      tensor.dtype = candidate.dtype;
      known = true;
    }
  }
  if (!known) return Invalid(file, StrCat(where, " has unknown dtype '", *dtype, "'"));

  absl::StatusOr<const JsonValue*> shape = entry.Get("shape");
  if (!shape.ok()) return invalid(shape.status());
  absl::StatusOr<const JsonValue::Array*> dims = (*shape)->AsArray();
  if (!dims.ok()) return invalid(dims.status());
  tensor.n_elements = 1;
  for (const JsonValue& dim : **dims) {
    absl::StatusOr<int64_t> size = dim.AsInt();
    if (!size.ok() || *size < 0) return Invalid(file, StrCat(where, " has an invalid dimension"));
    if (*size > 0 && tensor.n_elements > std::numeric_limits<int64_t>::max() / *size) {
      return Invalid(file, StrCat(where, " has too many elements"));
    }
    tensor.n_elements *= *size;
    tensor.shape.push_back(*size);
  }

  absl::StatusOr<const JsonValue*> offsets = entry.Get("data_offsets");
  if (!offsets.ok()) return invalid(offsets.status());
  absl::StatusOr<const JsonValue::Array*> pair = (*offsets)->AsArray();
  if (!pair.ok() || (*pair)->size() != 2) {
    return Invalid(file, StrCat(where, ": data_offsets must be [begin, end]"));
  }
  absl::StatusOr<int64_t> begin = (**pair)[0].AsInt();
  absl::StatusOr<int64_t> end = (**pair)[1].AsInt();
  if (!begin.ok() || !end.ok() || *begin < 0 || *end < *begin) {
    return Invalid(file, StrCat(where, ": data_offsets must be integers with 0 <= begin <= end"));
  }
  const uint64_t bytes = static_cast<uint64_t>(*end - *begin);
  const uint64_t element_bytes = ElementBytes(tensor.dtype);
  if (static_cast<uint64_t>(tensor.n_elements) >
          std::numeric_limits<uint64_t>::max() / element_bytes ||
      bytes != static_cast<uint64_t>(tensor.n_elements) * element_bytes) {
    return Invalid(file, StrCat(where, " has ", bytes, " bytes, which do not hold its shape"));
  }
  if (static_cast<uint64_t>(*end) > data.size()) {
    return absl::DataLossError(StrCat(file, ": ", where, " extends past the end of the file"));
  }
  tensor.data = data.subspan(static_cast<size_t>(*begin), static_cast<size_t>(bytes));
  return tensor;
}

}  // namespace

size_t ElementBytes(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::kF64:
    case SafetensorsDType::kI64:
      return 8;
    case SafetensorsDType::kF32:
    case SafetensorsDType::kI32:
      return 4;
    case SafetensorsDType::kF16:
    case SafetensorsDType::kBF16:
    case SafetensorsDType::kI16:
      return 2;
    case SafetensorsDType::kI8:
    case SafetensorsDType::kU8:
    case SafetensorsDType::kBool:
      return 1;
  }
  return 1;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  auto mapping = std::make_unique<MappedFile>(std::move(mapped));
  SILO_ASSIGN_OR_RETURN(SafetensorsFile file, Parse(mapping->bytes(), path));
  file.mapping_ = std::move(mapping);
  return file;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::span<const uint8_t> bytes,
                                                       std::string_view name) {
  SafetensorsFile file;
  file.name_ = std::string(name);
  if (bytes.size() < 8) {
    return absl::DataLossError(StrCat(name, ": truncated before the header length"));
  }
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), sizeof(header_bytes));
  if (header_bytes > kMaxHeaderBytes) {
    return Invalid(
        name, StrCat("header of ", header_bytes, " bytes is over the limit of ", kMaxHeaderBytes));
  }
  if (header_bytes > bytes.size() - 8) {
    return absl::DataLossError(StrCat(name, ": truncated inside the header"));
  }
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + 8), header_bytes);
  absl::StatusOr<JsonValue> json = ParseJson(header);
  if (!json.ok()) return Invalid(name, StrCat("header: ", json.status().message()));
  absl::StatusOr<const JsonValue::Object*> entries = json->AsObject();
  if (!entries.ok()) return Invalid(name, "header is not a JSON object");

  const std::span<const uint8_t> data = bytes.subspan(8 + header_bytes);
  for (const auto& [key, entry] : **entries) {
    if (key == "__metadata__") {
      absl::StatusOr<const JsonValue::Object*> metadata = entry.AsObject();
      if (!metadata.ok()) return Invalid(name, "__metadata__ is not an object");
      for (const auto& [meta_key, meta_value] : **metadata) {
        absl::StatusOr<std::string_view> text = meta_value.AsString();
        if (!text.ok())
          return Invalid(name, StrCat("__metadata__ '", meta_key, "' is not a string"));
        file.metadata_.emplace(meta_key, std::string(*text));
      }
      continue;
    }
    SILO_ASSIGN_OR_RETURN(SafetensorsTensor tensor, ReadEntry(name, key, entry, data));
    file.index_.emplace(key, file.tensors_.size());  // keys are unique (the JSON reader checks)
    file.tensors_.push_back(std::move(tensor));
  }
  return file;
}

absl::StatusOr<const SafetensorsTensor*> SafetensorsFile::FindTensor(std::string_view name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(StrCat(name_, ": no tensor '", name, "'"));
  return &tensors_[it->second];
}

absl::StatusOr<SafetensorsModel> SafetensorsModel::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  std::string file = path;
  const bool is_directory = fs::is_directory(path, error);
  if (error && error != std::errc::no_such_file_or_directory) {
    return absl::PermissionDeniedError(StrCat(path, ": ", error.message()));
  }
  if (is_directory) {
    const fs::path index = fs::path(path) / "model.safetensors.index.json";
    const fs::path single = fs::path(path) / "model.safetensors";
    const bool has_index = fs::exists(index, error);
    if (error) return absl::PermissionDeniedError(StrCat(index.string(), ": ", error.message()));
    if (has_index) {
      file = index.string();
    } else {
      file = single.string();  // NotFound from the open below names the expected file
    }
  }
  SafetensorsModel model;
  if (!file.ends_with(".index.json")) {
    SILO_ASSIGN_OR_RETURN(SafetensorsFile shard, SafetensorsFile::Open(file));
    model.shards_.push_back(std::move(shard));
    SILO_RETURN_IF_ERROR(model.Index());
    return model;
  }

  SILO_ASSIGN_OR_RETURN(const MappedFile index_file, MappedFile::Open(file));
  const std::string_view text(reinterpret_cast<const char*>(index_file.bytes().data()),
                              index_file.bytes().size());
  absl::StatusOr<JsonValue> index = ParseJson(text);
  if (!index.ok()) return Invalid(file, std::string{index.status().message()});
  absl::StatusOr<const JsonValue*> weight_map = index->Get("weight_map");
  if (!weight_map.ok()) return Invalid(file, std::string{weight_map.status().message()});
  absl::StatusOr<const JsonValue::Object*> entries = (*weight_map)->AsObject();
  if (!entries.ok()) return Invalid(file, "weight_map is not an object");
  // Shard file names, each opened once; they must stay inside the index's folder.
  std::map<std::string, size_t, std::less<>> shard_of_file;
  std::vector<std::pair<std::string, std::string>> expected;  // tensor → shard file
  for (const auto& [tensor, shard] : **entries) {
    absl::StatusOr<std::string_view> shard_name = shard.AsString();
    if (!shard_name.ok()) return Invalid(file, StrCat("weight_map '", tensor, "' is not a string"));
    const fs::path relative(*shard_name);
    if (shard_name->empty() || relative.is_absolute() || relative.has_parent_path()) {
      return Invalid(file, StrCat("shard '", *shard_name, "' is not a file name in the folder"));
    }
    if (!shard_of_file.contains(*shard_name)) {
      const fs::path shard_path = fs::path(file).parent_path() / relative;
      SILO_ASSIGN_OR_RETURN(SafetensorsFile opened, SafetensorsFile::Open(shard_path.string()));
      shard_of_file.emplace(std::string(*shard_name), model.shards_.size());
      model.shards_.push_back(std::move(opened));
    }
    expected.emplace_back(tensor, std::string(*shard_name));
  }
  SILO_RETURN_IF_ERROR(model.Index());
  for (const auto& [tensor, shard] : expected) {
    const SafetensorsFile& holder = model.shards_[shard_of_file.find(shard)->second];
    if (!holder.FindTensor(tensor).ok()) {
      return Invalid(file, StrCat("tensor '", tensor, "' is not in its shard '", shard, "'"));
    }
  }
  return model;
}

absl::Status SafetensorsModel::Index() {
  for (const SafetensorsFile& shard : shards_) {
    for (const SafetensorsTensor& tensor : shard.tensors()) {
      if (!by_name_.emplace(tensor.name, &tensor).second) {
        return absl::InvalidArgumentError(
            StrCat("safetensors: tensor '", tensor.name, "' is in two shards"));
      }
      tensors_.push_back(&tensor);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const SafetensorsTensor*> SafetensorsModel::FindTensor(std::string_view name) const {
  const auto it = by_name_.find(name);
  if (it == by_name_.end())
    return absl::NotFoundError(StrCat("safetensors: no tensor '", name, "'"));
  return it->second;
}

}  // namespace silo::engine
