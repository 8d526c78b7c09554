// A read-only memory mapping of a whole file (model weights are used in place, never copied).
//
// Thread-safe after Open: the bytes are immutable. Move-only; unmaps in the destructor.
#ifndef SILO_ENGINE_MAPPED_FILE_H_
#define SILO_ENGINE_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace silo::engine {

class MappedFile {
 public:
  // Maps `path` read-only. NotFound when it does not exist, PermissionDenied when it cannot be
  // read, InvalidArgument when it is not a regular file, ResourceExhausted when there is no
  // memory for the mapping, Internal for other system errors.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  void Unmap();

  std::string path_;
  const uint8_t* data_ = nullptr;  // nullptr for an empty file
  size_t size_ = 0;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_MAPPED_FILE_H_
