// KnowledgeBase with the real decoder and embedder over a small corpus written by the test.
#include "retrieval/knowledge_base.h"

#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "crypto/secret_bytes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retrieval/node_key.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKeyHex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

// Three documents on distinct topics, in three formats.
void WriteCorpus(const TempDir& dir) {
  std::filesystem::create_directories(dir.path() / "docs");
  dir.WriteFile("docs/volcano.md",
                "# Volcanoes\n\nA volcano is a rupture in the crust of a planet where lava, ash "
                "and gases escape from a magma chamber below the surface.\n\nMount Etna in "
                "Sicily is one of the most active volcanoes in the world.\n");
  dir.WriteFile("docs/bread.rst",
                "Baking bread\n============\n\nKnead the dough of flour, water, salt and yeast "
                "for ten minutes, let it rise for an hour, then bake it at 230 degrees until "
                "the crust is brown.\n");
  dir.WriteFile("docs/chess.html",
                "<html><body><h1>Chess openings</h1><p>The Sicilian Defence answers 1.e4 with "
                "1...c5 and is the most popular reply of strong players.</p>"
                "<script>var x = 1;</script></body></html>");
  dir.WriteFile("docs/ignored.bin", "not a document");
}

class KnowledgeBaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(options_.decoder_model, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(options_.embedder_model, silo::testing::EmbedderDir());
    options_.data_dir = (dir_.path() / "data").string();
    options_.chunking.max_tokens = 64;
    options_.chunking.overlap_tokens = 8;
    options_.threads = 2;
    ASSERT_OK_AND_ASSIGN(key_, ParseNodeKeyHex(kKeyHex));
    WriteCorpus(dir_);
  }

  absl::StatusOr<std::unique_ptr<KnowledgeBase>> Open() {
    return KnowledgeBase::Open(options_, key_);
  }
  std::vector<std::string> Docs() const { return {(dir_.path() / "docs").string()}; }

  TempDir dir_;
  KnowledgeBaseOptions options_;
  crypto::SecretBytes key_;
};

TEST_F(KnowledgeBaseTest, IngestsAFolderAndFindsEachTopic) {
  ASSERT_OK_AND_ASSIGN(auto base, Open());
  std::vector<IngestProgress> seen;
  ASSERT_OK_AND_ASSIGN(IngestReport report,
                       base->Ingest(Docs(), [&](const IngestProgress& p) { seen.push_back(p); }));
  EXPECT_EQ(report.progress.files_total, 3);  // ignored.bin is not a document format
  EXPECT_EQ(report.progress.files_done, 3);
  EXPECT_EQ(report.progress.files_failed, 0);
  EXPECT_GE(report.progress.chunks_written, 3);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen.back().files_done, 3);
  EXPECT_EQ(base->index().size(), report.progress.chunks_written);

  struct Case {
    const char* question;
    const char* file;
  };
  for (const Case& c : {Case{"Which mountain in Sicily erupts often?", "volcano.md"},
                        Case{"How long should dough rise before baking?", "bread.rst"},
                        Case{"What is a good chess reply to e4?", "chess.html"}}) {
    ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> hits, base->Search(c.question, 2));
    ASSERT_FALSE(hits.empty());
    EXPECT_THAT(hits[0].source_path, EndsWith(c.file)) << c.question;
    EXPECT_GT(hits[0].score, 0.2f);
    EXPECT_LE(hits[0].score, 1.0001f);
  }
  ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> chess, base->Search("Sicilian Defence", 1));
  EXPECT_THAT(chess[0].text, Not(HasSubstr("var x")));  // script content is not text
  EXPECT_THAT(chess[0].text, Not(HasSubstr("<p>")));
}

TEST_F(KnowledgeBaseTest, UnchangedFilesAreSkippedAndChangedOnesReplaced) {
  ASSERT_OK_AND_ASSIGN(auto base, Open());
  ASSERT_OK_AND_ASSIGN(const IngestReport first, base->Ingest(Docs()));
  ASSERT_OK_AND_ASSIGN(const IngestReport again, base->Ingest(Docs()));
  EXPECT_EQ(again.progress.files_skipped, 3);
  EXPECT_EQ(again.progress.chunks_written, 0);

  dir_.WriteFile("docs/bread.rst",
                 "Sourdough\n=========\n\nA sourdough starter replaces the yeast: feed it flour "
                 "and water every day for a week.\n");
  ASSERT_OK_AND_ASSIGN(const IngestReport changed, base->Ingest(Docs()));
  EXPECT_EQ(changed.progress.files_skipped, 2);
  ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> hits,
                       base->Search("How long should dough rise before baking?", 10));
  for (const SearchHit& hit : hits) EXPECT_THAT(hit.text, Not(HasSubstr("230 degrees")));
  ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> starter,
                       base->Search("How do I feed a sourdough starter?", 1));
  EXPECT_THAT(starter[0].text, HasSubstr("sourdough starter"));
  int64_t chunks = 0;
  ASSERT_OK(base->store()
                .ForEachChunk([&](const ChunkRecord&) {
                  ++chunks;
                  return absl::OkStatus();
                })
                .status());
  EXPECT_EQ(base->index().size(), chunks);
}

TEST_F(KnowledgeBaseTest, AMissingOrStaleIndexIsRebuiltFromTheStore) {
  std::vector<SearchHit> before;
  {
    ASSERT_OK_AND_ASSIGN(auto base, Open());
    ASSERT_OK(base->Ingest(Docs()).status());
    ASSERT_OK_AND_ASSIGN(before, base->Search("volcano lava", 3));
  }
  const auto index = std::filesystem::path(options_.data_dir) / "index.faiss";
  ASSERT_TRUE(std::filesystem::remove(index));
  {
    ASSERT_OK_AND_ASSIGN(auto base, Open());
    ASSERT_TRUE(std::filesystem::exists(index));
    ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> after, base->Search("volcano lava", 3));
    ASSERT_EQ(after.size(), before.size());
    for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i].chunk_id, before[i].chunk_id);
  }
  // A corrupt index file is rebuilt too, never trusted.
  dir_.WriteFile("data/index.faiss", "garbage");
  ASSERT_OK_AND_ASSIGN(auto base, Open());
  ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> rebuilt, base->Search("volcano lava", 3));
  EXPECT_EQ(rebuilt[0].chunk_id, before[0].chunk_id);
}

TEST_F(KnowledgeBaseTest, LazyKvShardsAreComputedOnceAndKept) {
  ASSERT_OK_AND_ASSIGN(auto base, Open());
  ASSERT_OK(base->Ingest(Docs()).status());
  ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> hits, base->Search("Mount Etna", 1));
  const std::string& chunk_id = hits[0].chunk_id;
  EXPECT_THAT(base->store().GetKvShard(chunk_id, base->store().model_fingerprint()).status(),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(const engine::KvShard shard, base->KvShardOf(chunk_id));
  const engine::ModelConfig& config = base->decoder().model().config();
  EXPECT_EQ(shard.n_layers, config.n_layers);
  EXPECT_EQ(shard.n_kv_heads, config.n_kv_heads);
  EXPECT_EQ(shard.n_tokens, hits[0].n_tokens);
  ASSERT_OK_AND_ASSIGN(const engine::KvShard again, base->KvShardOf(chunk_id));
  EXPECT_EQ(again.k, shard.k);
  EXPECT_EQ(again.v, shard.v);
  EXPECT_THAT(base->KvShardOf("9999:0").status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(KnowledgeBaseTest, EagerShardsAreWrittenAtIngestAndOffComputesNone) {
  options_.kv_shards = KvShardMode::kEager;
  {
    ASSERT_OK_AND_ASSIGN(auto base, Open());
    ASSERT_OK_AND_ASSIGN(const IngestReport report, base->Ingest(Docs()));
    EXPECT_GT(report.kv_shard_seconds, 0);
    ASSERT_OK(base->store()
                  .ForEachChunk([&](const ChunkRecord& chunk) -> absl::Status {
                    // Present before anyone asked for it.
                    return base->KvShardOf(chunk.chunk_id).status();
                  })
                  .status());
  }
  options_.kv_shards = KvShardMode::kOff;
  std::filesystem::remove_all(options_.data_dir);
  ASSERT_OK_AND_ASSIGN(auto base, Open());
  ASSERT_OK(base->Ingest(Docs()).status());
  ASSERT_OK_AND_ASSIGN(const std::vector<SearchHit> hits, base->Search("Mount Etna", 1));
  EXPECT_THAT(base->KvShardOf(hits[0].chunk_id).status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(KnowledgeBaseTest, AStoreOfAnotherDecoderIsRefused) {
  {
    ASSERT_OK_AND_ASSIGN(auto base, Open());
    ASSERT_OK(base->Ingest(Docs()).status());
  }
  options_.decoder_model =
      std::string(SILO_SOURCE_DIR) + "/tests/engine/fuzz/model_corpus/tiny_llama_q4_1.gguf";
  EXPECT_THAT(Open().status(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(KnowledgeBaseTest, BadInputIsAClearError) {
  ASSERT_OK_AND_ASSIGN(auto base, Open());
  EXPECT_THAT(base->Search("", 3).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(base->Search("x", 0).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(base->SearchByEmbedding(std::vector<float>(3, 0.5f), 3).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<float> nan(base->embedding_dim(), std::nanf(""));
  EXPECT_THAT(base->SearchByEmbedding(nan, 3).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const std::string missing = (dir_.path() / "nope").string();
  EXPECT_THAT(base->Ingest({&missing, 1}).status(), StatusIs(absl::StatusCode::kNotFound));
  const std::string binary = (dir_.path() / "docs/ignored.bin").string();
  EXPECT_THAT(base->Ingest({&binary, 1}).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  // A wrong node key cannot open the store.
  base.reset();
  ASSERT_OK_AND_ASSIGN(key_, ParseNodeKeyHex(std::string(64, 'f')));
  EXPECT_THAT(Open().status(), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace silo::retrieval
