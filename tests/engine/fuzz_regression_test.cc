// Every input kept in tests/engine/fuzz/*_corpus (seeds and whatever scripts/fuzz found) still
// parses or fails cleanly; runs in the ordinary suite, with the ordinary compiler.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/gguf_file.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/safetensors_file.h"
#include "engine/thread_pool.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

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

// Model and tokenizer loading from every kept GGUF input, and a forward pass of what loads, as
// model_fuzzer does.
TEST(FuzzRegression, ModelCorpus) {
  const auto inputs = Corpus("model_corpus");
  ASSERT_FALSE(inputs.empty());
  ThreadPool pool(1);
  int loaded = 0;
  for (const std::string& input : inputs) {
    auto file = GgufFile::Parse(Bytes(input), "corpus");
    if (!file.ok()) continue;
    const auto tokenizer = Tokenizer::FromGguf(*file);
    if (tokenizer.ok()) {
      const std::vector<int32_t> ids = tokenizer->Encode("Hello <|im_start|> the", true);
      EXPECT_OK(tokenizer->Decode(ids).status());
    }
    auto model = Model::FromGguf(*std::move(file));
    if (!model.ok()) continue;
    ++loaded;
    const ModelConfig& c = (*model)->config();
    Transformer transformer(**model, pool);
    KvCache cache(c, attention::KvDType::kF16, 2);
    const int32_t tokens[2] = {0, c.vocab_size - 1};
    const int32_t positions[2] = {0, 1};
    SequenceInput in{.sequence = cache.NewSequence(), .tokens = tokens, .positions = positions};
    std::vector<float> logits;
    EXPECT_OK(transformer.Forward({&in, 1}, cache, logits));
    EXPECT_EQ(logits.size(), static_cast<size_t>(c.vocab_size));
  }
  EXPECT_GE(loaded, 2);  // the seeds written by make_model_seeds.py load
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
