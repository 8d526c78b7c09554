// Kills `silo-node ingest` with SIGKILL at 20 random moments and reopens its data folder after
// each kill: the store must be consistent every time (every chunk has its text, embedding and KV
// shard, or the chunk is absent with its whole document), the index rebuilt from it must hold
// exactly its chunks, and a final uninterrupted run must finish the corpus.
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "retrieval/knowledge_base.h"
#include "retrieval/node_key.h"
#include "tests/testing/child_process.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

constexpr int kKills = 20;
constexpr int kFiles = 24;
constexpr char kKeyHex[] = "8f2a1c00b7e94d6e5a3f1b2c9d8e7f60112233445566778899aabbccddeeff00";

// A paragraph of pseudo-prose that differs per (file, paragraph).
std::string Paragraph(std::mt19937& rng) {
  static const char* kWords[] = {"river",  "garden", "engine", "signal", "harbor", "lantern",
                                 "copper", "meadow", "winter", "orbit",  "canvas", "thunder",
                                 "marble", "violet", "pepper", "summit", "falcon", "quartz"};
  std::string text;
  for (int sentence = 0; sentence < 4; ++sentence) {
    for (int word = 0; word < 9; ++word) {
      text += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
      text += word == 8 ? ". " : " ";
    }
  }
  return text + "\n\n";
}

class IngestCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(options_.decoder_model, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(options_.embedder_model, silo::testing::EmbedderDir());
    options_.data_dir = (dir_.path() / "data").string();
    options_.chunking.max_tokens = 64;
    options_.chunking.overlap_tokens = 8;
    options_.kv_shards = KvShardMode::kOff;  // the checker must not compute missing shards
    options_.threads = 1;
    ASSERT_OK_AND_ASSIGN(key_, ParseNodeKeyHex(kKeyHex));
    dir_.WriteFile("node.key", std::string(kKeyHex) + "\n");
    std::filesystem::permissions(dir_.path() / "node.key", std::filesystem::perms::owner_read |
                                                               std::filesystem::perms::owner_write);
    config_ = dir_.WriteFile("node.yaml",
                             "node_id: crash\nrole: institution\ndata_dir: data\n"
                             "node_key_file: node.key\nthreads: 1\nmodels:\n"
                             "  decoder: " +
                                 options_.decoder_model +
                                 "\n"
                                 "  embedder: " +
                                 options_.embedder_model +
                                 "\n"
                                 "retrieval:\n  chunk_tokens: 64\n  chunk_overlap: 8\n"
                                 "  kv_shards: eager\n");
    std::filesystem::create_directories(dir_.path() / "docs");
    std::mt19937 rng(5);
    for (int f = 0; f < kFiles; ++f) {
      std::string text = "Document " + std::to_string(f) + "\n\n";
      for (int p = 0; p < 3; ++p) text += Paragraph(rng);
      files_.push_back(dir_.WriteFile("docs/doc" + std::to_string(f) + ".txt", text));
    }
  }

  // Opens the data folder as a node would after the crash and checks it. Returns the number of
  // documents present.
  int CheckConsistent() {
    auto opened = KnowledgeBase::Open(options_, key_);
    EXPECT_OK(opened.status());
    if (!opened.ok()) return -1;
    KnowledgeBase& base = **opened;
    std::map<std::string, int32_t> chunks_per_doc;
    int64_t n_chunks = 0;
    std::vector<std::pair<int64_t, std::vector<float>>> samples;
    const absl::Status visited =
        base.store()
            .ForEachChunk([&](const ChunkRecord& chunk) {
              ++n_chunks;
              ++chunks_per_doc[chunk.doc_id];
              EXPECT_FALSE(chunk.text.empty()) << chunk.chunk_id;
              EXPECT_EQ(chunk.embedding.size(), static_cast<size_t>(base.embedding_dim()));
              for (const float x : chunk.embedding) EXPECT_TRUE(std::isfinite(x));
              EXPECT_TRUE(base.index().Contains(chunk.vector_id)) << chunk.chunk_id;
              // Written with the chunk in the same batch (kv_shards eager).
              EXPECT_OK(base.KvShardOf(chunk.chunk_id).status()) << chunk.chunk_id;
              if (n_chunks % 5 == 1) samples.emplace_back(chunk.vector_id, chunk.embedding);
              return absl::OkStatus();
            })
            .status();
    EXPECT_OK(visited);
    for (const auto& [doc_id, count] : chunks_per_doc) {
      auto document = base.store().GetDocument(doc_id);
      EXPECT_OK(document.status());
      if (document.ok()) {
        EXPECT_EQ(document->n_chunks, count) << doc_id;
      }
    }
    // The index holds exactly the store's chunks and finds each by its own embedding.
    EXPECT_EQ(base.index().size(), n_chunks);
    for (const auto& [vector_id, embedding] : samples) {
      auto found = base.index().Search(embedding, 1);
      EXPECT_OK(found.status());
      if (found.ok()) {
        EXPECT_EQ(found->front().front().id, vector_id);
      }
    }
    int documents = 0;
    for (const std::string& file : files_) {
      documents += base.store().GetDocumentBySourcePath(file).ok();
    }
    return documents;
  }

  silo::testing::TempDir dir_;
  KnowledgeBaseOptions options_;
  crypto::SecretBytes key_;
  std::string config_;
  std::vector<std::string> files_;
};

TEST_F(IngestCrashTest, StoreAndIndexAreConsistentAfterEverySigkill) {
  const std::vector<std::string> args = {SILO_NODE_BINARY, "ingest", "--config", config_,
                                         (dir_.path() / "docs").string()};
  const std::string log = (dir_.path() / "ingest.log").string();
  std::mt19937 rng(20261130);
  std::uniform_int_distribution<int> delay_ms(300, 3000);
  int previous = 0;
  int finished_early = 0;
  for (int kill_no = 0; kill_no < kKills; ++kill_no) {
    silo::testing::ChildProcess ingest(args, log);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ingest.Signal(SIGKILL);  // nothing when it has finished already
    ASSERT_OK_AND_ASSIGN(const int code, ingest.Wait(absl::Seconds(60)));
    if (code != 128 + SIGKILL) {
      ++finished_early;
      EXPECT_EQ(code, 0);
    }
    const int documents = CheckConsistent();
    SCOPED_TRACE(::testing::Message() << "kill " << kill_no);
    ASSERT_GE(documents, previous);  // what was written stays written
    previous = documents;
    std::printf("kill %d: %d/%d documents\n", kill_no, documents, kFiles);
  }
  // The last run finishes what the killed ones left.
  silo::testing::ChildProcess last(args, log);
  ASSERT_OK_AND_ASSIGN(const int code, last.Wait(absl::Minutes(10)));
  ASSERT_EQ(code, 0) << "see " << log;
  EXPECT_EQ(CheckConsistent(), kFiles);
  std::printf("%d of %d runs had finished before their kill\n", finished_early, kKills);
  EXPECT_LT(finished_early, kKills);  // the kills did land inside ingests
}

}  // namespace
}  // namespace silo::retrieval
