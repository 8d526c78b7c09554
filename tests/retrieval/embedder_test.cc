// The embedder on the real all-MiniLM-L6-v2 (label `models`): WordPiece ids identical to Hugging
// Face's and vectors within cosine 0.999 of sentence-transformers' on the texts of
// fixtures/embedder_fixture.json (made by make_embedder_fixture.py); results independent of the
// batch; bad model folders and inputs rejected with a status.
#include "retrieval/embedder.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::StatusIs;
using ::testing::HasSubstr;

struct FixtureCase {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<float> embedding;
};

std::vector<FixtureCase> ReadFixture() {
  std::ifstream in(SILO_SOURCE_DIR "/tests/retrieval/fixtures/embedder_fixture.json",
                   std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<JsonValue> json = ParseJson(text.str());
  EXPECT_OK(json);
  std::vector<FixtureCase> cases;
  if (!json.ok()) return cases;
  for (const JsonValue& c : *json->Get("cases").value()->AsArray().value()) {
    FixtureCase fixture_case;
    fixture_case.text = std::string(c.GetString("text").value());
    for (const JsonValue& id : *c.Get("ids").value()->AsArray().value()) {
      fixture_case.ids.push_back(static_cast<int32_t>(id.AsInt().value()));
    }
    for (const JsonValue& x : *c.Get("embedding").value()->AsArray().value()) {
      fixture_case.embedding.push_back(static_cast<float>(x.AsDouble().value()));
    }
    cases.push_back(std::move(fixture_case));
  }
  return cases;
}

double Cosine(const float* a, const float* b, int64_t n) {
  double dot = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return dot / std::sqrt(aa * bb);
}

class EmbedderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = silo::testing::EmbedderDir();
    ASSERT_OK(dir);
    model_dir_ = new std::string(*dir);
    absl::StatusOr<std::unique_ptr<Embedder>> embedder =
        Embedder::Open(*model_dir_, {.n_threads = 2});
    ASSERT_OK(embedder);
    embedder_ = embedder->release();
  }
  static void TearDownTestSuite() {
    delete embedder_;
    delete model_dir_;
  }

  static std::string* model_dir_;
  static Embedder* embedder_;
};

std::string* EmbedderTest::model_dir_ = nullptr;
Embedder* EmbedderTest::embedder_ = nullptr;

TEST_F(EmbedderTest, ReadsTheModel) {
  ASSERT_NE(embedder_, nullptr);
  EXPECT_EQ(embedder_->dim(), 384);
  EXPECT_EQ(embedder_->max_tokens(), 256);  // sentence_bert_config.json
  EXPECT_EQ(embedder_->config().n_layers, 6);
  EXPECT_EQ(embedder_->config().n_heads, 12);
  EXPECT_EQ(embedder_->tokenizer().vocab_size(), 30522);
}

TEST_F(EmbedderTest, MatchesSentenceTransformers) {
  ASSERT_NE(embedder_, nullptr);
  const std::vector<FixtureCase> cases = ReadFixture();
  ASSERT_GE(cases.size(), 200u);
  const int64_t dim = embedder_->dim();

  int id_matches = 0;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> reference_ids;
  for (const FixtureCase& c : cases) {
    const std::vector<int32_t> ids = embedder_->tokenizer().Encode(c.text, embedder_->max_tokens());
    EXPECT_EQ(ids, c.ids) << "text: " << c.text;
    id_matches += ids == c.ids;
    texts.push_back(c.text);
    reference_ids.push_back(c.ids);
  }

  ASSERT_OK_AND_ASSIGN(const std::vector<float> vectors, embedder_->Embed(texts));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> from_ids, embedder_->EmbedTokens(reference_ids));
  ASSERT_EQ(vectors.size(), cases.size() * dim);
  double min_cosine = 1, sum_cosine = 0, min_cosine_ids = 1;
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(static_cast<int64_t>(cases[i].embedding.size()), dim);
    const double cosine = Cosine(vectors.data() + i * dim, cases[i].embedding.data(), dim);
    EXPECT_GE(cosine, 0.999) << "text: " << cases[i].text;
    min_cosine = std::min(min_cosine, cosine);
    sum_cosine += cosine;
    min_cosine_ids =
        std::min(min_cosine_ids, Cosine(from_ids.data() + i * dim, cases[i].embedding.data(), dim));
    double norm_sq = 0;
    for (int64_t j = 0; j < dim; ++j) norm_sq += vectors[i * dim + j] * vectors[i * dim + j];
    EXPECT_NEAR(norm_sq, 1.0, 1e-5);
  }
  std::printf(
      "[ parity ] %zu texts: WordPiece ids identical for %d; cosine min %.9f mean %.9f "
      "(1 - min = %.2g; from the reference ids: min %.9f)\n",
      cases.size(), id_matches, min_cosine, sum_cosine / cases.size(), 1 - min_cosine,
      min_cosine_ids);
  EXPECT_EQ(id_matches, static_cast<int>(cases.size()));
  EXPECT_GE(min_cosine_ids, 0.999);
}

TEST_F(EmbedderTest, ResultsDoNotDependOnTheBatch) {
  ASSERT_NE(embedder_, nullptr);
  const std::vector<FixtureCase> cases = ReadFixture();
  std::vector<std::string> texts;
  for (size_t i = 0; i < cases.size() && texts.size() < 48; i += 5) texts.push_back(cases[i].text);
  const int64_t dim = embedder_->dim();
  ASSERT_OK_AND_ASSIGN(const std::vector<float> batch, embedder_->Embed(texts));

  std::vector<std::string> reversed(texts.rbegin(), texts.rend());
  ASSERT_OK_AND_ASSIGN(const std::vector<float> reversed_batch, embedder_->Embed(reversed));
  float max_diff = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(const std::vector<float> alone, embedder_->Embed(std::span(&texts[i], 1)));
    const float* in_reversed = reversed_batch.data() + (texts.size() - 1 - i) * dim;
    for (int64_t j = 0; j < dim; ++j) {
      max_diff = std::max(max_diff, std::abs(alone[j] - batch[i * dim + j]));
      max_diff = std::max(max_diff, std::abs(in_reversed[j] - batch[i * dim + j]));
    }
  }
  std::printf("[ batch ] largest difference between compositions: %g\n", max_diff);
  EXPECT_LE(max_diff, 1e-6f);
}

TEST_F(EmbedderTest, SimilarTextsAreCloser) {
  ASSERT_NE(embedder_, nullptr);
  const std::vector<std::string> texts = {"How do I reset my password?",
                                          "I forgot my password, how can I change it?",
                                          "The mitochondria is the powerhouse of the cell."};
  ASSERT_OK_AND_ASSIGN(const std::vector<float> v, embedder_->Embed(texts));
  const int64_t dim = embedder_->dim();
  EXPECT_GT(Cosine(v.data(), v.data() + dim, dim), Cosine(v.data(), v.data() + 2 * dim, dim) + 0.3);
}

TEST_F(EmbedderTest, EmptyBatchAndHostileTexts) {
  ASSERT_NE(embedder_, nullptr);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> none, embedder_->Embed({}));
  EXPECT_TRUE(none.empty());
  const std::vector<std::string> texts = {std::string(1 << 20, 'x'), std::string("\xFF\xFE\0", 3),
                                          std::string(100000, '!')};
  ASSERT_OK_AND_ASSIGN(const std::vector<float> v, embedder_->Embed(texts));
  EXPECT_EQ(v.size(), 3u * embedder_->dim());
  for (const float x : v) EXPECT_TRUE(std::isfinite(x));
}

TEST_F(EmbedderTest, RejectsBadTokenIds) {
  ASSERT_NE(embedder_, nullptr);
  const std::vector<std::vector<int32_t>> empty = {{101, 102}, {}};
  EXPECT_THAT(embedder_->EmbedTokens(empty),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sequence 1")));
  const std::vector<std::vector<int32_t>> out_of_range = {{101, 30522, 102}};
  EXPECT_THAT(embedder_->EmbedTokens(out_of_range), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<std::vector<int32_t>> negative = {{101, -1, 102}};
  EXPECT_THAT(embedder_->EmbedTokens(negative), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<std::vector<int32_t>> too_long = {std::vector<int32_t>(257, 1000)};
  EXPECT_THAT(embedder_->EmbedTokens(too_long), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A copy of the model folder (weights linked) with one file replaced.
class ModelFolder {
 public:
  explicit ModelFolder(const std::string& model_dir) {
    for (const auto& entry : std::filesystem::directory_iterator(model_dir)) {
      std::filesystem::create_symlink(entry.path(), dir_.path() / entry.path().filename());
    }
  }
  void Replace(const std::string& name, const std::string& contents) const {
    std::filesystem::remove(dir_.path() / name);
    dir_.WriteFile(name, contents);
  }
  void Remove(const std::string& name) const { std::filesystem::remove(dir_.path() / name); }
  std::string path() const { return dir_.path().string(); }

 private:
  silo::testing::TempDir dir_;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  const size_t pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

TEST_F(EmbedderTest, RejectsBadModelFolders) {
  ASSERT_NE(model_dir_, nullptr);
  const std::string config = ReadText(*model_dir_ + "/config.json");
  EXPECT_THAT(Embedder::Open("/nonexistent/model"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Embedder::Open(*model_dir_, {.max_tokens = 513}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens")));
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("config.json", "{\"hidden_size\": ");
    EXPECT_THAT(Embedder::Open(folder.path()), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("config.json",
                   ReplaceOnce(config, "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\""));
    EXPECT_THAT(Embedder::Open(folder.path()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("relu")));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("config.json",
                   ReplaceOnce(config, "\"hidden_size\": 384", "\"hidden_size\": 768"));
    EXPECT_THAT(Embedder::Open(folder.path()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape")));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("config.json", ReplaceOnce(config, "\"num_attention_heads\": 12",
                                              "\"num_attention_heads\": 7"));
    EXPECT_THAT(Embedder::Open(folder.path()), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("config.json",
                   ReplaceOnce(config, "\"num_hidden_layers\": 6", "\"num_hidden_layers\": 7"));
    EXPECT_THAT(Embedder::Open(folder.path()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encoder.layer.6")));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("pooling_config.json", R"({"pooling_mode_cls_token": true,
                                              "pooling_mode_mean_tokens": false})");
    EXPECT_THAT(Embedder::Open(folder.path()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mean pooling")));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("sentence_bert_config.json", R"({"max_seq_length": "long"})");
    EXPECT_THAT(Embedder::Open(folder.path()), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Remove("vocab.txt");
    EXPECT_THAT(Embedder::Open(folder.path()), StatusIs(absl::StatusCode::kNotFound));
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Replace("model.safetensors",
                   ReadText(*model_dir_ + "/model.safetensors").substr(0, 4096));
    EXPECT_FALSE(Embedder::Open(folder.path()).ok());
  }
  {
    const ModelFolder folder(*model_dir_);
    folder.Remove("model.safetensors");
    EXPECT_THAT(Embedder::Open(folder.path()), StatusIs(absl::StatusCode::kNotFound));
  }
}

}  // namespace
}  // namespace silo::retrieval
