// Every input kept in tests/engine/fuzz/*_corpus (seeds and whatever scripts/fuzz found) still
// parses or fails cleanly; runs in the ordinary suite, with the ordinary compiler.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/gguf_file.h"
#include "engine/safetensors_file.h"
#include "gtest/gtest.h"

namespace silo::engine {
namespace {

std::vector<std::string> Corpus(const std::string& name) {
  std::vector<std::string> inputs;
  const std::filesystem::path dir =
      std::filesystem::path(SILO_SOURCE_DIR) / "tests/engine/fuzz" / name;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    inputs.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return inputs;
}

std::span<const uint8_t> Bytes(const std::string& data) {
  return {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
}

TEST(FuzzRegression, GgufCorpus) {
  const auto inputs = Corpus("gguf_corpus");
  ASSERT_FALSE(inputs.empty());
  for (const std::string& input : inputs) {
    const auto file = GgufFile::Parse(Bytes(input), "corpus");
    if (file.ok()) {
      for (const auto& tensor : file->tensors()) {
        ASSERT_LE(tensor.offset + tensor.n_bytes, input.size());
      }
    }
  }
}

TEST(FuzzRegression, SafetensorsCorpus) {
  const auto inputs = Corpus("safetensors_corpus");
  ASSERT_FALSE(inputs.empty());
  for (const std::string& input : inputs) {
    const auto file = SafetensorsFile::Parse(Bytes(input), "corpus");
    if (file.ok()) {
      for (const auto& tensor : file->tensors()) {
        ASSERT_LE(tensor.data.data() + tensor.data.size(), Bytes(input).data() + input.size());
      }
    }
  }
}

}  // namespace
}  // namespace silo::engine
