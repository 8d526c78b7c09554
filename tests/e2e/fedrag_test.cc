// FedRAG over real processes and mTLS (DESIGN.md §6): silo-coordinator, three silo-node
// institutions holding disjoint thirds of the Python FAQ, and a compute node. Questions go in
// through the coordinator's QueryService, as siloctl sends them.
//   1. Exactness: for 20 FAQ questions, FedRAG's greedy answer (64 tokens at most) is the
//      same token for token as CENTRALIZED over the same chunks with each chunk's KV computed
//      alone (the plaintext computation of the KV FedRAG attends over), and FedRAG's sources
//      come back with their positions in the virtual context.
//   2. An owner that dies after its upload does not stop the answer; one that is gone before
//      the question is reported unanswered and the answer is made from the others.
//   3. The compute node dying mid-answer ends the answer with a clear status, not a hang, or
//      with FAILURE_POLICY_CONTINUE a complete answer without the remote chunks; the querier
//      keeps serving.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "eval/faq_questions.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "silo/v1/coordinator.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/federation_processes.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using ::testing::HasSubstr;

constexpr char kFaqDir[] = "/usr/share/doc/python3.11/html/_sources/faq";
constexpr char kKeyHex[] = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
constexpr absl::Duration kStartTimeout = absl::Seconds(120);
constexpr int kQuestions = 20;
constexpr uint32_t kMaxTokens = 64;
const std::vector<std::string> kInstitutions = {"inst-a", "inst-b", "inst-c"};

using Answer = silo::testing::StreamedAnswer;

class FedRagEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::is_directory(kFaqDir)) << kFaqDir << " is missing (python3.11-doc)";
    ASSERT_OK_AND_ASSIGN(const std::string decoder, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(const std::string embedder, silo::testing::EmbedderDir());
    std::vector<std::string> role_ids = {"coordinator/coord", "operator/op", "compute/comp-1"};
    for (const std::string& id : kInstitutions) role_ids.push_back("institution/" + id);
    ASSERT_OK(silo::testing::MakeDevCertificates(certs(), role_ids).status());
    std::ofstream(dir_.path() / "node.key") << kKeyHex << "\n";
    fs::permissions(dir_.path() / "node.key", fs::perms::owner_read | fs::perms::owner_write);

    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(kFaqDir)) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (size_t i = 0; i < files.size(); ++i) {
      shards_[kInstitutions[i % kInstitutions.size()]].push_back(files[i].string());
    }
    coordinator_port_ = silo::testing::PickUnusedPort();
    ASSERT_GT(coordinator_port_, 0);
    std::ofstream(dir_.path() / "coordinator.yaml")
        << "listen: 127.0.0.1:" << coordinator_port_ << "\n"
        << "data_dir: coordinator-data\n"
        << "tls: {ca: certs/ca.pem, cert: certs/coord.pem, key: certs/coord.key}\n"
        << "heartbeat_interval_ms: 1000\nmissed_heartbeats: 3\nprobe_interval_ms: 5000\n";
    for (const std::string& id : kInstitutions) {
      std::ofstream(dir_.path() / (id + ".yaml"))
          << "node_id: " << id << "\nrole: institution\ndata_dir: data-" << id << "\n"
          << "node_key_file: node.key\nthreads: 1\n"
          << "models: {decoder: " << decoder << ", embedder: " << embedder << "}\n"
          << "retrieval: {kv_shards: lazy}\n"
          << "serve:\n  listen: 127.0.0.1:0\n  coordinator: 127.0.0.1:" << coordinator_port_
          << "\n  plaintext_baseline: true\n"
          << "  tls: {ca: certs/ca.pem, cert: certs/" << id << ".pem, key: certs/" << id
          << ".key}\n";
    }
    std::ofstream(dir_.path() / "comp-1.yaml")
        << "node_id: comp-1\nrole: compute\nserve:\n  listen: 127.0.0.1:0\n"
        << "  coordinator: 127.0.0.1:" << coordinator_port_ << "\n"
        << "  tls: {ca: certs/ca.pem, cert: certs/comp-1.pem, key: certs/comp-1.key}\n";
  }

  fs::path certs() const { return dir_.path() / "certs"; }

  std::unique_ptr<ChildProcess> Start(const std::vector<std::string>& argv,
                                      const std::string& log) {
    return std::make_unique<ChildProcess>(argv, dir_.path() / log);
  }

  std::unique_ptr<ChildProcess> StartNode(const std::string& id) {
    absl::StatusOr<silo::testing::ServingNode> node = silo::testing::StartServingNode(
        SILO_NODE_BINARY, dir_.path(), id, StrCat(id, "-", ++starts_, ".log"), kStartTimeout);
    EXPECT_OK(node.status());
    return node.ok() ? std::move(node->process) : nullptr;
  }

  std::shared_ptr<grpc::Channel> Operator() {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        silo::testing::DevChannel(certs(), "op", StrCat("127.0.0.1:", coordinator_port_));
    EXPECT_OK(channel.status());
    return channel.ok() ? *channel : nullptr;
  }

  static v1::QueryRequest Request(const std::string& question, v1::GenerationMode mode,
                                  uint32_t max_tokens = kMaxTokens) {
    v1::QueryRequest request;
    request.set_question(question);
    request.set_mode(mode);
    request.set_querier_node_id("inst-a");
    request.set_top_k(3);
    request.set_max_tokens(max_tokens);
    request.set_kv_mode(v1::KV_MODE_POSITION_INDEPENDENT);
    request.set_kv_dtype(v1::DTYPE_F32);
    request.set_owner_timeout_ms(5000);
    // Every layer delegated: FedRAG is then exactly the centralized chunkwise computation.
    request.mutable_privacy()->set_protect_layers(0);
    return request;
  }

  // Runs a query through the coordinator.
  Answer Ask(const v1::QueryRequest& request,
             const std::function<void()>& on_first_delta = nullptr) {
    return silo::testing::StreamQuery(Operator(), request, absl::Seconds(120), on_first_delta);
  }

  silo::testing::TempDir dir_;
  std::map<std::string, std::vector<std::string>> shards_;
  int coordinator_port_ = 0;
  int starts_ = 0;
};

TEST_F(FedRagEndToEndTest, AnswersEqualThePlaintextComputationAndSurviveFailures) {
  auto coordinator =
      Start({SILO_COORDINATOR_BINARY, "--config", (dir_.path() / "coordinator.yaml").string()},
            "coordinator.log");
  ASSERT_OK(coordinator->WaitForLine("serving coordinator on", kStartTimeout).status());
  {
    std::vector<std::unique_ptr<ChildProcess>> ingests;
    for (const std::string& id : kInstitutions) {
      std::vector<std::string> argv = {SILO_NODE_BINARY, "ingest", "--config",
                                       (dir_.path() / (id + ".yaml")).string()};
      argv.insert(argv.end(), shards_[id].begin(), shards_[id].end());
      ingests.push_back(Start(argv, id + "-ingest.log"));
    }
    for (const std::unique_ptr<ChildProcess>& ingest : ingests) {
      ASSERT_OK_AND_ASSIGN(const int code, ingest->Wait(absl::Minutes(10)));
      ASSERT_EQ(code, 0) << ingest->Log();
    }
  }
  std::map<std::string, std::unique_ptr<ChildProcess>> nodes;
  for (const std::string& id : kInstitutions) nodes[id] = StartNode(id);
  nodes["comp-1"] = StartNode("comp-1");
  ASSERT_OK(silo::testing::WaitForOnlineNodes(Operator(), 4, kStartTimeout));

  // 1. Exactness over 20 FAQ questions (every fifth, across the files).
  ASSERT_OK_AND_ASSIGN(const std::vector<eval::FaqQuestion> faq, eval::LoadFaqQuestions(kFaqDir));
  ASSERT_GE(faq.size(), static_cast<size_t>(kQuestions) * 5);
  int identical = 0;
  int eos = 0;
  int with_remote = 0;
  absl::Duration fedrag_time, centralized_time;
  for (int q = 0; q < kQuestions; ++q) {
    const std::string& question = faq[static_cast<size_t>(q) * 5].question;
    SCOPED_TRACE(question);
    const Answer fedrag = Ask(Request(question, v1::GENERATION_MODE_FEDRAG));
    ASSERT_TRUE(fedrag.status.ok()) << fedrag.status.error_message();
    const Answer plain = Ask(Request(question, v1::GENERATION_MODE_CENTRALIZED));
    ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
    fedrag_time += fedrag.elapsed;
    centralized_time += plain.elapsed;
    // The same chunks in the same places (handles differ: each session has its own).
    ASSERT_EQ(fedrag.done.sources_size(), 3);
    ASSERT_EQ(plain.done.sources_size(), 3);
    int64_t position = -1;
    for (int i = 0; i < 3; ++i) {
      const v1::Source& a = fedrag.done.sources(i);
      const v1::Source& b = plain.done.sources(i);
      EXPECT_EQ(a.owner_node_id(), b.owner_node_id());
      EXPECT_FLOAT_EQ(a.score(), b.score());
      EXPECT_EQ(a.virtual_start(), b.virtual_start());
      EXPECT_GT(a.virtual_start(), position);
      position = a.virtual_start();
    }
    EXPECT_GT(fedrag.done.stats().ttft_ns(), 0);
    const bool remote =
        std::any_of(fedrag.done.sources().begin(), fedrag.done.sources().end(),
                    [](const v1::Source& source) { return source.owner_node_id() != "inst-a"; });
    // Only chunks of other owners make a FedRAG session; the querier's own are local.
    EXPECT_EQ(fedrag.done.stats().bytes_sent() > 0, remote);
    with_remote += remote ? 1 : 0;
    ASSERT_FALSE(fedrag.tokens.empty());
    EXPECT_EQ(fedrag.tokens, plain.tokens)
        << "FedRAG:      " << fedrag.text << "\ncentralized: " << plain.text;
    identical += fedrag.tokens == plain.tokens ? 1 : 0;
    eos += fedrag.done.stopped_by_eos() ? 1 : 0;
  }
  EXPECT_GE(with_remote, kQuestions / 2);
  std::cout << identical << " of " << kQuestions << " greedy answers identical (" << eos
            << " ended before " << kMaxTokens << " tokens, " << with_remote
            << " with other owners' chunks); FedRAG "
            << absl::FormatDuration(fedrag_time / kQuestions) << " per question, centralized "
            << absl::FormatDuration(centralized_time / kQuestions) << "\n";

  // 2. An owner that dies after uploading does not matter to the answer in flight; one that is
  //    gone is reported unanswered and the others answer.
  const std::string question = faq[7].question;
  {
    std::thread killer;
    const Answer answer = Ask(Request(question, v1::GENERATION_MODE_FEDRAG, 48), [&] {
      killer = std::thread([&] {
        nodes["inst-b"]->Signal(SIGKILL);
        EXPECT_OK(nodes["inst-b"]->Wait(absl::Seconds(10)).status());
      });
    });
    killer.join();
    EXPECT_TRUE(answer.status.ok()) << answer.status.error_message();
    EXPECT_FALSE(answer.tokens.empty());
  }
  {
    const Answer answer = Ask(Request(question, v1::GENERATION_MODE_FEDRAG, 16));
    ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
    ASSERT_EQ(answer.done.unanswered_size(), 1);
    EXPECT_EQ(answer.done.unanswered(0).node_id(), "inst-b");
    for (const v1::Source& source : answer.done.sources()) {
      EXPECT_NE(source.owner_node_id(), "inst-b");
    }
  }

  // 3. The compute node dies mid-answer: a clear status, well before the query's deadline. The
  //    question must draw on inst-c, the other owner still up.
  std::string remote_question;
  for (size_t q = 0; q < faq.size() && remote_question.empty(); ++q) {
    const Answer sources = Ask(Request(faq[q].question, v1::GENERATION_MODE_RETRIEVE));
    for (const v1::Source& source : sources.done.sources()) {
      if (source.owner_node_id() == "inst-c") remote_question = faq[q].question;
    }
  }
  ASSERT_FALSE(remote_question.empty());
  {
    const Answer answer = Ask(Request(remote_question, v1::GENERATION_MODE_FEDRAG, 256),
                              [&] { nodes["comp-1"]->Signal(SIGKILL); });
    EXPECT_OK(nodes["comp-1"]->Wait(absl::Seconds(10)).status());
    EXPECT_FALSE(answer.status.ok())
        << answer.tokens.size() << " tokens, sources " << answer.done.ShortDebugString();
    EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << answer.status.error_message();
    EXPECT_THAT(answer.status.error_message(), HasSubstr("comp-1"));
    EXPECT_LT(answer.elapsed, absl::Seconds(60));
  }
  // The querier still answers; without a compute node FedRAG is refused at once.
  {
    const Answer local = Ask(Request(question, v1::GENERATION_MODE_LOCAL, 8));
    EXPECT_TRUE(local.status.ok()) << local.status.error_message();
    EXPECT_FALSE(local.tokens.empty());
    std::this_thread::sleep_for(std::chrono::seconds(4));  // 3 missed heartbeats: marked down
    const Answer refused = Ask(Request(question, v1::GENERATION_MODE_FEDRAG, 8));
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << refused.status.error_message();
  }
  // With the CONTINUE policy the same failure ends in a complete answer without the remote
  // chunks, naming the compute node.
  nodes["comp-1"] = StartNode("comp-1");
  ASSERT_OK(silo::testing::WaitForOnlineNodes(
      Operator(), 3,
      kStartTimeout));  // inst-a, inst-c and the new comp-1 (the old one was marked down)
  {
    v1::QueryRequest request = Request(remote_question, v1::GENERATION_MODE_FEDRAG, 48);
    request.set_compute_failure(v1::FAILURE_POLICY_CONTINUE);
    const Answer answer = Ask(request, [&] { nodes["comp-1"]->Signal(SIGKILL); });
    EXPECT_OK(nodes["comp-1"]->Wait(absl::Seconds(10)).status());
    EXPECT_TRUE(answer.status.ok()) << answer.status.error_message();
    EXPECT_TRUE(answer.done.stopped_by_eos() || answer.tokens.size() == 48u);
    EXPECT_TRUE(
        std::any_of(answer.done.unanswered().begin(), answer.done.unanswered().end(),
                    [](const v1::NodeFailure& failure) { return failure.node_id() == "comp-1"; }))
        << answer.done.ShortDebugString();
  }
}

}  // namespace
}  // namespace silo
