// Checks real facts of the models that scripts/fetch-models downloaded, so that a wrong,
// truncated or substituted download fails the suite.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/dequantize.h"
#include "engine/gguf_file.h"
#include "engine/safetensors_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/dequantize_fixture.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

TEST(DefaultModel, IsSmolLM2_135M_Instruct) {
  ASSERT_OK_AND_ASSIGN(const std::string path, silo::testing::DefaultModelPath());
  ASSERT_OK_AND_ASSIGN(const GgufFile file, GgufFile::Open(path));

  EXPECT_EQ(file.version(), 3u);
  ASSERT_OK_AND_ASSIGN(const std::string_view arch, file.GetString("general.architecture"));
  EXPECT_EQ(arch, "llama");
  ASSERT_OK_AND_ASSIGN(const uint64_t n_layers, file.GetUint64("llama.block_count"));
  EXPECT_EQ(n_layers, 30u);
  ASSERT_OK_AND_ASSIGN(const uint64_t vocab_size, file.GetUint64("llama.vocab_size"));
  EXPECT_EQ(vocab_size, 49152u);
  ASSERT_OK_AND_ASSIGN(const uint64_t dim, file.GetUint64("llama.embedding_length"));
  EXPECT_EQ(dim, 576u);
  ASSERT_OK_AND_ASSIGN(const uint64_t n_heads, file.GetUint64("llama.attention.head_count"));
  EXPECT_EQ(n_heads, 9u);
  ASSERT_OK_AND_ASSIGN(const uint64_t n_kv_heads, file.GetUint64("llama.attention.head_count_kv"));
  EXPECT_EQ(n_kv_heads, 3u);
  ASSERT_OK_AND_ASSIGN(const GgufArray* tokens, file.GetArray("tokenizer.ggml.tokens"));
  ASSERT_EQ(tokens->values.size(), 49152u);
  EXPECT_EQ(std::get<std::string>(tokens->values[1]), "<|im_start|>");

  // 30 blocks × 9 tensors + token embedding + output norm; the data of every one lies in the file.
  EXPECT_EQ(file.tensors().size(), 272u);
  ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* embedding, file.FindTensor("token_embd.weight"));
  EXPECT_THAT(embedding->dims, ::testing::ElementsAre(576, 49152));
  ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* last, file.FindTensor("blk.29.ffn_down.weight"));
  EXPECT_EQ(last->type, GgmlType::kQ4_1);
  EXPECT_THAT(last->dims, ::testing::ElementsAre(1536, 576));
}

// Rows of the real weights (Q8_0 embeddings, Q4_1 projections, F32 norm) dequantize to what gguf-py
// computes from the same file.
TEST(DefaultModel, DequantizesLikeGgufPy) {
  ASSERT_OK_AND_ASSIGN(const std::string path, silo::testing::DefaultModelPath());
  ASSERT_OK_AND_ASSIGN(const GgufFile file, GgufFile::Open(path));
  int checked = 0;
  for (const auto& c : testing::ReadDequantizeFixture()) {
    if (c.kind != "model") continue;
    SCOPED_TRACE(::testing::Message() << c.tensor << " row " << c.row);
    ASSERT_OK_AND_ASSIGN(const GgufTensorInfo* tensor, file.FindTensor(c.tensor));
    ASSERT_EQ(tensor->dims[0], c.n_elements);
    ASSERT_OK_AND_ASSIGN(const GgmlTypeLayout layout,
                         LayoutOf(static_cast<uint32_t>(tensor->type)));
    const size_t row_bytes = c.n_elements / layout.block_elements * layout.block_bytes;
    const auto bytes = file.TensorBytes(*tensor).subspan(c.row * row_bytes, row_bytes);
    std::vector<float> out(c.n_elements);
    ASSERT_OK(DequantizeRow(tensor->type, bytes, out));
    for (int64_t i = 0; i < c.n_elements; ++i) {
      ASSERT_NEAR(out[i], c.expected[i], 1e-6f * std::max(1.0f, std::abs(c.expected[i])))
          << "element " << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

// The embedder's weights: a real safetensors file of all-MiniLM-L6-v2.
TEST(Embedder, IsAllMiniLmL6V2) {
  ASSERT_OK_AND_ASSIGN(const std::string dir, silo::testing::EmbedderDir());
  ASSERT_OK_AND_ASSIGN(const SafetensorsModel model, SafetensorsModel::Open(dir));
  EXPECT_EQ(model.tensors().size(), 104u);
  ASSERT_OK_AND_ASSIGN(const SafetensorsTensor* embeddings,
                       model.FindTensor("embeddings.word_embeddings.weight"));
  EXPECT_EQ(embeddings->dtype, SafetensorsDType::kF32);
  EXPECT_THAT(embeddings->shape, ::testing::ElementsAre(30522, 384));
  ASSERT_OK_AND_ASSIGN(const SafetensorsTensor* last,
                       model.FindTensor("encoder.layer.5.output.LayerNorm.weight"));
  EXPECT_THAT(last->shape, ::testing::ElementsAre(384));
}

}  // namespace
}  // namespace silo::engine
