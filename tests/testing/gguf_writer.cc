#include "tests/testing/gguf_writer.h"

#include <cstring>

namespace silo::testing {
namespace {

template <typename T>
void Put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

void PutString(std::string& out, std::string_view text) {
  Put<uint64_t>(out, text.size());
  out.append(text);
}

constexpr uint32_t kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7, kString = 8, kArray = 9;

}  // namespace

void GgufWriter::AddString(std::string_view key, std::string_view value) {
  AddKey(key, kString);
  PutString(metadata_, value);
}

void GgufWriter::AddUint32(std::string_view key, uint32_t value) {
  AddKey(key, kUint32);
  Put<uint32_t>(metadata_, value);
}

void GgufWriter::AddInt32(std::string_view key, int32_t value) {
  AddKey(key, kInt32);
  Put<int32_t>(metadata_, value);
}

void GgufWriter::AddFloat32(std::string_view key, float value) {
  AddKey(key, kFloat32);
  Put<float>(metadata_, value);
}

void GgufWriter::AddBool(std::string_view key, bool value) {
  AddKey(key, kBool);
  Put<uint8_t>(metadata_, value ? 1 : 0);
}

void GgufWriter::AddStringArray(std::string_view key, const std::vector<std::string>& values) {
  AddKey(key, kArray);
  Put<uint32_t>(metadata_, kString);
  Put<uint64_t>(metadata_, values.size());
  for (const std::string& value : values) PutString(metadata_, value);
}

void GgufWriter::AddInt32Array(std::string_view key, const std::vector<int32_t>& values) {
  AddKey(key, kArray);
  Put<uint32_t>(metadata_, kInt32);
  Put<uint64_t>(metadata_, values.size());
  for (const int32_t value : values) Put<int32_t>(metadata_, value);
}

void GgufWriter::AddKey(std::string_view key, uint32_t value_type) {
  PutString(metadata_, key);
  Put<uint32_t>(metadata_, value_type);
  ++n_metadata_;
}

void GgufWriter::AddTensor(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
                           std::string_view data) {
  tensors_.push_back(Tensor{std::string(name), dims, type, std::string(data)});
}

std::string GgufWriter::Build() const {
  std::string out;
  Put<uint32_t>(out, 0x46554747);  // "GGUF"
  Put<uint32_t>(out, version_);
  Put<uint64_t>(out, tensors_.size());
  const bool write_alignment = alignment_ != 32;
  Put<uint64_t>(out, n_metadata_ + (write_alignment ? 1 : 0));
  out += metadata_;
  if (write_alignment) {
    PutString(out, "general.alignment");
    Put<uint32_t>(out, kUint32);
    Put<uint32_t>(out, static_cast<uint32_t>(alignment_));
  }
  auto padded = [this](uint64_t size) { return (size + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const Tensor& tensor : tensors_) {
    PutString(out, tensor.name);
    Put<uint32_t>(out, static_cast<uint32_t>(tensor.dims.size()));
    for (const uint64_t dim : tensor.dims) Put<uint64_t>(out, dim);
    Put<uint32_t>(out, tensor.type);
    Put<uint64_t>(out, offset);
    offset = padded(offset + tensor.data.size());
  }
  out.resize(padded(out.size()), '\0');
  for (const Tensor& tensor : tensors_) {
    out += tensor.data;
    out.resize(padded(out.size()), '\0');
  }
  return out;
}

}  // namespace silo::testing
