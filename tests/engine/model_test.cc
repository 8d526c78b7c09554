// Loading decoders: configuration from GGUF metadata and config.json, weights from GGUF and
// safetensors, and the errors of files that disagree with their configuration.
#include "engine/model.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
  "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 16,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "max_position_embeddings": 131072, "vocab_size": 128256, "tie_word_embeddings": true,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}})";

TEST(ModelConfigTest, ReadsALlama3ConfigWithItsRopeScaling) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ModelConfigFromHfJson(kLlama31Config));
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.n_layers, 16);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_style, RopeStyle::kHalves);
  ASSERT_EQ(c.rope_freq_factors.size(), 32u);
  // Short wavelengths keep their frequency, long ones are divided by the factor, and the
  // divisor grows monotonically in between.
  EXPECT_FLOAT_EQ(c.rope_freq_factors.front(), 1.0f);
  EXPECT_FLOAT_EQ(c.rope_freq_factors.back(), 32.0f);
  for (size_t i = 1; i < c.rope_freq_factors.size(); ++i) {
    EXPECT_GE(c.rope_freq_factors[i], c.rope_freq_factors[i - 1]);
  }
}

TEST(ModelConfigTest, ReadsQwen2WithBiases) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ModelConfigFromHfJson(R"({
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
    "vocab_size": 151936, "tie_word_embeddings": true, "rope_scaling": null})"));
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 64);
}

TEST(ModelConfigTest, RejectsInconsistentOrUnsupportedConfigs) {
  EXPECT_THAT(ModelConfigFromHfJson(R"({"model_type": "gpt2"})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gpt2")));
  EXPECT_THAT(ModelConfigFromHfJson("[1, 2"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ModelConfigFromHfJson(R"({
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 64, "vocab_size": 10})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not divide")));
  EXPECT_THAT(ModelConfigFromHfJson(R"({
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
    "num_attention_heads": 4, "num_hidden_layers": -2,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 64, "vocab_size": 10})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ModelConfigFromHfJson(R"({"model_type": "llama", "hidden_size": 64})"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ModelTest, OpensATinyGguf) {
  silo::testing::TempDir dir;
  const silo::testing::TinyModel tiny = silo::testing::MakeTinyModel({.architecture = "qwen2"});
  ASSERT_OK_AND_ASSIGN(auto model, Model::Open(dir.WriteFile("m.gguf", tiny.gguf)));
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.vocab_size, 96);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(model->layer(1).bq.size(), static_cast<size_t>(c.q_dim()));
  std::vector<float> row(c.dim);
  model->EmbedToken(5, row.data());
  EXPECT_FLOAT_EQ(row[3], tiny.token_embedding[5 * c.dim + 3]);
}

TEST(ModelTest, MissingOrMisshapenTensorsAreErrors) {
  silo::testing::TempDir dir;
  silo::testing::TinyModel tiny = silo::testing::MakeTinyModel({});
  // Renaming a tensor in the bytes makes it missing.
  std::string renamed = tiny.gguf;
  const size_t at = renamed.find("blk.1.ffn_up.weight");
  ASSERT_NE(at, std::string::npos);
  renamed[at + 4] = 'X';
  EXPECT_THAT(Model::Open(dir.WriteFile("missing.gguf", renamed)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("blk.1.ffn_up.weight")));
  // A configuration whose sizes disagree with the tensors.
  silo::testing::TinyModelOptions options;
  options.ffn_dim = 64;
  silo::testing::TinyModel other = silo::testing::MakeTinyModel(options);
  std::string mismatched = other.gguf;
  const std::string key = "llama.feed_forward_length";
  const size_t key_at = mismatched.find(key);
  ASSERT_NE(key_at, std::string::npos);
  // The value (uint32 after the type id) follows the key: make it 96.
  mismatched[key_at + key.size() + 4] = 96;
  EXPECT_THAT(Model::Open(dir.WriteFile("mismatched.gguf", mismatched)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ffn_gate")));
  EXPECT_THAT(Model::Open((dir.path() / "absent.gguf").string()),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ModelTest, OpensASafetensorsCheckpointWithConfig) {
  silo::testing::TempDir dir;
  // One layer, dim 4, 2 heads, vocab 3, ffn 4: every tensor F32, built by hand.
  dir.WriteFile("config.json", R"({
    "model_type": "llama", "hidden_size": 4, "intermediate_size": 4,
    "num_attention_heads": 2, "num_hidden_layers": 1, "num_key_value_heads": 1,
    "rms_norm_eps": 1e-05, "max_position_embeddings": 64, "vocab_size": 3,
    "tie_word_embeddings": true})");
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
  };
  const std::vector<Entry> entries = {
      {"model.embed_tokens.weight", {3, 4}},
      {"model.norm.weight", {4}},
      {"model.layers.0.input_layernorm.weight", {4}},
      {"model.layers.0.self_attn.q_proj.weight", {4, 4}},
      {"model.layers.0.self_attn.k_proj.weight", {2, 4}},
      {"model.layers.0.self_attn.v_proj.weight", {2, 4}},
      {"model.layers.0.self_attn.o_proj.weight", {4, 4}},
      {"model.layers.0.post_attention_layernorm.weight", {4}},
      {"model.layers.0.mlp.gate_proj.weight", {4, 4}},
      {"model.layers.0.mlp.up_proj.weight", {4, 4}},
      {"model.layers.0.mlp.down_proj.weight", {4, 4}},
  };
  std::string header = "{";
  int64_t offset = 0;
  for (const Entry& e : entries) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    absl::StrAppend(&header, header.size() > 1 ? "," : "", "\"", e.name,
                    "\":{\"dtype\":\"F32\",\"shape\":[", absl::StrJoin(e.shape, ","),
                    "],\"data_offsets\":[", offset, ",", offset + 4 * n, "]}");
    offset += 4 * n;
  }
  header += "}";
  std::string file(8, '\0');
  const uint64_t header_size = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header_size >> (8 * i)) & 0xff);
  file += header;
  file += std::string(offset, '\0');
  dir.WriteFile("model.safetensors", file);
  ASSERT_OK_AND_ASSIGN(auto model, Model::Open(dir.path().string()));
  EXPECT_EQ(model->config().dim, 4);
  EXPECT_EQ(model->config().rope_style, RopeStyle::kHalves);
  EXPECT_EQ(model->gguf(), nullptr);
  EXPECT_EQ(model->hf_dir(), dir.path().string());
  EXPECT_EQ(model->layer(0).wk.rows, 2);
}

}  // namespace
}  // namespace silo::engine
