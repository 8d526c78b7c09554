// Builds GGUF files in memory, for tests: valid ones (tiny models) and, by editing the bytes it
// returns, broken ones. Type ids are the file's numbers (engine/gguf_file.h names them).
#ifndef SILO_TESTS_TESTING_GGUF_WRITER_H_
#define SILO_TESTS_TESTING_GGUF_WRITER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace silo::testing {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3, uint64_t alignment = 32)
      : version_(version), alignment_(alignment) {}

  void AddString(std::string_view key, std::string_view value);
  void AddUint32(std::string_view key, uint32_t value);
  void AddInt32(std::string_view key, int32_t value);
  void AddFloat32(std::string_view key, float value);
  void AddBool(std::string_view key, bool value);
  void AddStringArray(std::string_view key, const std::vector<std::string>& values);
  void AddInt32Array(std::string_view key, const std::vector<int32_t>& values);
  // `dims` in GGUF order (dims[0] contiguous); `data` must have the type's size for those dims.
  void AddTensor(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
                 std::string_view data);

  // The whole file. "general.alignment" is written when the alignment is not the default 32.
  std::string Build() const;

 private:
  // Starts a metadata entry: the key and the value's type id.
  void AddKey(std::string_view key, uint32_t value_type);

  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::string data;
  };

  uint32_t version_;
  uint64_t alignment_;
  uint64_t n_metadata_ = 0;
  std::string metadata_;  // encoded key-value pairs
  std::vector<Tensor> tensors_;
};

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_GGUF_WRITER_H_
