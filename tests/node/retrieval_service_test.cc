// RetrievalService over real mTLS on a small real corpus: owners answer with handles that open
// to their best chunks (in the order of a local search), scores, token counts and the decoder's
// fingerprint; a title and source path only when the owner's config allows citations; no corpus
// or another embedder is FAILED_PRECONDITION.
#include "node/retrieval_service.h"

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "crypto/mtls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/chunk_handles.h"
#include "node/node_info.h"
#include "retrieval/knowledge_base.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

constexpr char kSession[] = "0123456789abcdef";

class RetrievalServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(silo::testing::MakeDevCertificates(dir_.path() / "certs",
                                                 {"institution/owner", "institution/querier"})
                  .status());
    retrieval::KnowledgeBaseOptions options;
    ASSERT_OK_AND_ASSIGN(options.decoder_model, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(options.embedder_model, silo::testing::EmbedderDir());
    options.data_dir = (dir_.path() / "data").string();
    options.chunking.max_tokens = 64;
    options.chunking.overlap_tokens = 8;
    options.kv_shards = retrieval::KvShardMode::kOff;
    options.threads = 1;
    crypto::SecretBytes key(32);
    for (uint8_t& byte : key.mutable_span()) byte = 0x5a;
    ASSERT_OK_AND_ASSIGN(corpus_, retrieval::KnowledgeBase::Open(options, key));
    const std::vector<std::string> files = {
        dir_.WriteFile("gardens.md",
                       "# Gardens\n\nRoses need sun and water. Tomatoes grow on vines in summer. "
                       "Compost feeds the soil of a vegetable garden.\n"),
        dir_.WriteFile("ships.md",
                       "# Ships\n\nA sailing ship crosses the ocean with the wind. The harbor "
                       "shelters boats from storms. Sailors read the stars.\n")};
    ASSERT_OK(corpus_->Ingest(files).status());
    ASSERT_OK_AND_ASSIGN(ChunkHandles handles, ChunkHandles::Create(key));
    handles_ = std::make_unique<ChunkHandles>(std::move(handles));
    ASSERT_OK_AND_ASSIGN(
        const v1::NodeInfo info,
        MakeNodeInfo({crypto::PeerRole::kInstitution, "owner"}, "127.0.0.1:1", corpus_.get()));
    info_ = info;

    with_citations_ = std::make_unique<RetrievalService>(corpus_.get(), *handles_, info.model(),
                                                         info.embedder(), /*citations=*/true);
    without_citations_ = std::make_unique<RetrievalService>(corpus_.get(), *handles_, info.model(),
                                                            info.embedder(), /*citations=*/false);
    no_corpus_ = std::make_unique<RetrievalService>(nullptr, *handles_, info.model(),
                                                    info.embedder(), /*citations=*/true);
    for (RetrievalService* service :
         {with_citations_.get(), without_citations_.get(), no_corpus_.get()}) {
      ASSERT_OK_AND_ASSIGN(
          silo::testing::DevServer server,
          silo::testing::StartDevServer(dir_.path() / "certs", "owner", {service}));
      servers_.push_back(std::move(server));
    }
  }

  // Retrieve on server `index` as the querier.
  grpc::Status Retrieve(size_t index, const v1::RetrieveRequest& request,
                        v1::RetrieveResponse* response) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        silo::testing::DevChannel(dir_.path() / "certs", "querier", servers_[index].address);
    EXPECT_OK(channel.status());
    auto stub = v1::RetrievalService::NewStub(*channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->Retrieve(&context, request, response);
  }

  v1::RetrieveRequest Request(const std::string& question, uint32_t top_k) {
    absl::StatusOr<std::vector<float>> embedding = corpus_->EmbedQuestion(question);
    EXPECT_OK(embedding.status());
    v1::RetrieveRequest request;
    request.mutable_session()->set_value(kSession);
    *request.mutable_embedding() = EncodeQueryEmbedding(*embedding);
    *request.mutable_embedder() = info_.embedder();
    request.set_top_k(top_k);
    return request;
  }

  silo::testing::TempDir dir_;
  std::unique_ptr<retrieval::KnowledgeBase> corpus_;
  std::unique_ptr<ChunkHandles> handles_;
  v1::NodeInfo info_;
  std::unique_ptr<RetrievalService> with_citations_, without_citations_, no_corpus_;
  std::vector<silo::testing::DevServer> servers_;
};

TEST_F(RetrievalServiceTest, AnswersHandlesOfTheBestChunksInOrder) {
  const std::string question = "How do sailors find their way at sea?";
  ASSERT_OK_AND_ASSIGN(const std::vector<retrieval::SearchHit> expected,
                       corpus_->Search(question, 2));
  v1::RetrieveResponse response;
  const grpc::Status status = Retrieve(0, Request(question, 2), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.n_chunks(), static_cast<uint64_t>(corpus_->index().size()));
  EXPECT_EQ(response.model().sha256(), info_.model().sha256());
  ASSERT_EQ(response.chunks_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const v1::ScoredChunk& chunk = response.chunks(i);
    ASSERT_OK_AND_ASSIGN(const int64_t vector_id, handles_->Open(kSession, chunk.handle()));
    EXPECT_EQ(vector_id, expected[static_cast<size_t>(i)].vector_id);
    EXPECT_NEAR(chunk.score(), expected[static_cast<size_t>(i)].score, 1e-6);
    EXPECT_EQ(chunk.n_tokens(), static_cast<uint32_t>(expected[static_cast<size_t>(i)].n_tokens));
    EXPECT_EQ(chunk.citation().source_path(), expected[static_cast<size_t>(i)].source_path);
    EXPECT_EQ(chunk.citation().title(), expected[static_cast<size_t>(i)].title);
  }
  EXPECT_THAT(response.chunks(0).citation().source_path(), ::testing::HasSubstr("ships.md"));
  // A handle is bound to its session.
  EXPECT_FALSE(handles_->Open("another session!", response.chunks(0).handle()).ok());
}

TEST_F(RetrievalServiceTest, CitationsOnlyWhenTheOwnerAllowsThem) {
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(1, Request("What grows in a garden?", 3), &response).ok());
  ASSERT_GT(response.chunks_size(), 0);
  for (const v1::ScoredChunk& chunk : response.chunks()) {
    EXPECT_FALSE(chunk.has_citation());
    EXPECT_EQ(chunk.SerializeAsString().find("gardens.md"), std::string::npos);
  }
}

TEST_F(RetrievalServiceTest, TopKBeyondTheCorpusAnswersWhatThereIs) {
  v1::RetrieveResponse response;
  ASSERT_TRUE(Retrieve(0, Request("ships", 256), &response).ok());
  EXPECT_EQ(response.chunks_size(), corpus_->index().size());
}

TEST_F(RetrievalServiceTest, NoCorpusOrAnotherEmbedderIsAFailedPrecondition) {
  v1::RetrieveResponse response;
  EXPECT_EQ(Retrieve(2, Request("ships", 2), &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::RetrieveRequest other = Request("ships", 2);
  other.mutable_embedder()->set_sha256(std::string(32, '\x01'));
  EXPECT_EQ(Retrieve(0, other, &response).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace silo::node
