// A federation of real processes over mTLS: silo-coordinator, three silo-node institutions, each
// holding a disjoint third of the Python FAQ (python3.11-doc), and a compute node. One test walks
// through what the services issue asks for, in order:
//   1. nodes register, heartbeat and probe each other periodically (matrix filled without being
//      asked), and on demand (siloctl nodes --probe);
//   2. federated retrieval returns the same global top-10 as one index over the union, by score
//      (and reciprocal rank fusion gives the same set of owners' best hits);
//   3. bad input gets a clear status and the node stays up;
//   4. a killed institution is reported unanswered, marked down, and named unanswered while down;
//   5. a restarted coordinator recovers membership and the session log.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "crypto/mtls.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "node/retrieval_service.h"
#include "retrieval/knowledge_base.h"
#include "retrieval/node_key.h"
#include "silo/v1/coordinator.grpc.pb.h"
#include "silo/v1/node.grpc.pb.h"
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
constexpr char kKeyHex[] = "5d1e0c6a7b8f9e0d1c2b3a4958677685f4e3d2c1b0a9988776655443322110ff";
const std::vector<std::string> kInstitutions = {"inst-a", "inst-b", "inst-c"};
const std::vector<std::string> kQuestions = {
    "How do I make a Python script executable on Unix?",
    "Why are default values shared between objects?",
    "How do I copy an object in Python?",
    "Why is Python installed on my machine?",
    "How can I create a stand-alone binary from a Python script?",
};
constexpr absl::Duration kStartTimeout = absl::Seconds(120);

std::chrono::system_clock::time_point Deadline(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// A hit as both sides name it: the document and its score.
struct Hit {
  std::string source_path;
  float score;
  std::string owner;
};

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::is_directory(kFaqDir)) << kFaqDir << " is missing: scripts/install-deps "
                                           << "installs python3.11-doc";
    ASSERT_OK_AND_ASSIGN(decoder_, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(embedder_, silo::testing::EmbedderDir());
    std::vector<std::string> role_ids = {"coordinator/coord", "operator/op",
                                         "institution/querier-x", "compute/comp-1"};
    for (const std::string& id : kInstitutions) role_ids.push_back("institution/" + id);
    ASSERT_OK(silo::testing::MakeDevCertificates(certs(), role_ids).status());
    std::ofstream(dir_.path() / "node.key") << kKeyHex << "\n";
    fs::permissions(dir_.path() / "node.key", fs::perms::owner_read | fs::perms::owner_write);

    // Disjoint shards: the FAQ's files dealt round-robin, in name order.
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(kFaqDir)) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (size_t i = 0; i < files.size(); ++i) {
      const std::string& owner = kInstitutions[i % kInstitutions.size()];
      shards_[owner].push_back(files[i].string());
      owner_of_[fs::weakly_canonical(files[i]).string()] = owner;
      all_files_.push_back(files[i].string());
    }
    coordinator_port_ = silo::testing::PickUnusedPort();
    ASSERT_GT(coordinator_port_, 0);
    std::ofstream(dir_.path() / "coordinator.yaml")
        << "listen: 127.0.0.1:" << coordinator_port_ << "\n"
        << "data_dir: coordinator-data\n"
        << "tls: {ca: certs/ca.pem, cert: certs/coord.pem, key: certs/coord.key}\n"
        << "heartbeat_interval_ms: 200\nmissed_heartbeats: 5\nprobe_interval_ms: 1000\n";
    std::ofstream(dir_.path() / "siloctl.yaml")
        << "coordinator: 127.0.0.1:" << coordinator_port_ << "\n"
        << "tls: {ca: certs/ca.pem, cert: certs/op.pem, key: certs/op.key}\n";
    for (const std::string& id : kInstitutions) {
      std::ofstream(dir_.path() / (id + ".yaml"))
          << "node_id: " << id << "\nrole: institution\ndata_dir: data-" << id << "\n"
          << "node_key_file: node.key\nthreads: 1\n"
          << "models: {decoder: " << decoder_ << ", embedder: " << embedder_ << "}\n"
          << "retrieval: {kv_shards: off}\n"
          << "serve:\n  listen: 127.0.0.1:0\n  coordinator: 127.0.0.1:" << coordinator_port_
          << "\n  citations: true\n"
          << "  tls: {ca: certs/ca.pem, cert: certs/" << id << ".pem, key: certs/" << id
          << ".key}\n";
    }
    // A compute node: no corpus, no models.
    std::ofstream(dir_.path() / "comp-1.yaml")
        << "node_id: comp-1\nrole: compute\nserve:\n  listen: 127.0.0.1:0\n"
        << "  coordinator: 127.0.0.1:" << coordinator_port_ << "\n"
        << "  tls: {ca: certs/ca.pem, cert: certs/comp-1.pem, key: certs/comp-1.key}\n";
  }

  fs::path certs() const { return dir_.path() / "certs"; }

  // Each start logs to its own file, so that waiting for its "serving" line sees its own.
  std::unique_ptr<ChildProcess> StartCoordinator() {
    return std::make_unique<ChildProcess>(
        std::vector<std::string>{SILO_COORDINATOR_BINARY, "--config",
                                 (dir_.path() / "coordinator.yaml").string()},
        dir_.path() / StrCat("coordinator-", ++coordinator_starts_, ".log"));
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& address, const std::string& id) {
    absl::StatusOr<crypto::TlsMaterial> tls =
        crypto::LoadTlsMaterial(silo::testing::DevTlsFiles(certs(), id));
    EXPECT_OK(tls.status());
    grpc::ChannelArguments arguments = crypto::FederationChannelArguments();
    arguments.SetMaxSendMessageSize(-1);  // to send what the servers must refuse
    return grpc::CreateCustomChannel(address, crypto::MakeChannelCredentials(*tls), arguments);
  }
  std::string coordinator_address() const { return StrCat("127.0.0.1:", coordinator_port_); }

  // The coordinator's view of the nodes.
  std::vector<v1::NodeStatus> ListNodes() {
    auto stub = v1::CoordinatorService::NewStub(Channel(coordinator_address(), "op"));
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::ListNodesRequest request;
    request.set_include_offline(true);
    v1::ListNodesResponse response;
    const grpc::Status status = stub->ListNodes(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.nodes().begin(), response.nodes().end()};
  }

  // Waits until `n` nodes are online.
  absl::Status WaitForOnline(size_t n) {
    return silo::testing::WaitForOnlineNodes(Channel(coordinator_address(), "op"),
                                             static_cast<int>(n), kStartTimeout);
  }

  // A federated retrieval through the coordinator: the done message and the call's status.
  grpc::Status Query(const v1::QueryRequest& request, v1::QueryDone* done) {
    auto stub = v1::QueryService::NewStub(Channel(coordinator_address(), "op"));
    grpc::ClientContext context;
    context.set_deadline(Deadline(60));
    auto reader = stub->Query(&context, request);
    v1::QueryResponse message;
    while (reader->Read(&message)) {
      if (message.has_done()) *done = message.done();
    }
    return reader->Finish();
  }

  static v1::QueryRequest RetrieveRequest(const std::string& question, uint32_t top_k) {
    v1::QueryRequest request;
    request.set_question(question);
    request.set_mode(v1::GENERATION_MODE_RETRIEVE);
    request.set_querier_node_id("inst-a");
    request.set_top_k(top_k);
    request.set_owner_timeout_ms(10000);
    return request;
  }

  // Runs siloctl with `args`; its exit code and output.
  std::pair<int, std::string> Siloctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {SILOCTL_BINARY, "--config",
                                     (dir_.path() / "siloctl.yaml").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const fs::path log = dir_.path() / StrCat("siloctl-", ++siloctl_runs_, ".log");
    ChildProcess siloctl(argv, log);
    absl::StatusOr<int> code = siloctl.Wait(absl::Seconds(120));
    EXPECT_OK(code.status());
    return {code.ok() ? *code : -1, siloctl.Log()};
  }

  silo::testing::TempDir dir_;
  std::string decoder_;
  std::string embedder_;
  std::map<std::string, std::vector<std::string>> shards_;
  std::map<std::string, std::string> owner_of_;
  std::vector<std::string> all_files_;
  int coordinator_port_ = 0;
  int siloctl_runs_ = 0;
  int coordinator_starts_ = 0;
  std::unique_ptr<retrieval::KnowledgeBase> union_;  // the reference index over all shards
};

TEST_F(FederationTest, ThreeInstitutionsAnswerLikeOneIndexAndSurviveFailures) {
  std::unique_ptr<ChildProcess> coordinator = StartCoordinator();
  ASSERT_OK(coordinator->WaitForLine("serving coordinator on", kStartTimeout).status());

  // Each institution ingests its shard (in parallel, one thread each), then serves.
  std::map<std::string, std::unique_ptr<ChildProcess>> nodes;
  {
    std::vector<std::unique_ptr<ChildProcess>> ingests;
    for (const std::string& id : kInstitutions) {
      std::vector<std::string> argv = {SILO_NODE_BINARY, "ingest", "--config",
                                       (dir_.path() / (id + ".yaml")).string()};
      argv.insert(argv.end(), shards_[id].begin(), shards_[id].end());
      ingests.push_back(std::make_unique<ChildProcess>(argv, dir_.path() / (id + "-ingest.log")));
    }
    // The reference: one index over the union, in this process, while they ingest.
    retrieval::KnowledgeBaseOptions options;
    options.data_dir = (dir_.path() / "union").string();
    options.decoder_model = decoder_;
    options.embedder_model = embedder_;
    options.kv_shards = retrieval::KvShardMode::kOff;
    options.threads = 1;
    ASSERT_OK_AND_ASSIGN(const crypto::SecretBytes key, retrieval::ParseNodeKeyHex(kKeyHex));
    ASSERT_OK_AND_ASSIGN(union_, retrieval::KnowledgeBase::Open(options, key));
    ASSERT_OK(union_->Ingest(all_files_).status());
    for (size_t i = 0; i < ingests.size(); ++i) {
      ASSERT_OK_AND_ASSIGN(const int code, ingests[i]->Wait(absl::Minutes(10)));
      ASSERT_EQ(code, 0) << ingests[i]->Log();
    }
  }
  for (const std::string& id : kInstitutions) {
    nodes[id] = std::make_unique<ChildProcess>(
        std::vector<std::string>{SILO_NODE_BINARY, "serve", "--config",
                                 (dir_.path() / (id + ".yaml")).string()},
        dir_.path() / (id + ".log"));
  }
  nodes["comp-1"] = std::make_unique<ChildProcess>(
      std::vector<std::string>{SILO_NODE_BINARY, "serve", "--config",
                               (dir_.path() / "comp-1.yaml").string()},
      dir_.path() / "comp-1.log");
  for (const auto& [id, node] : nodes) {
    ASSERT_OK(node->WaitForLine("serving " + id + " on", kStartTimeout).status());
  }
  ASSERT_OK(WaitForOnline(nodes.size()));
  std::map<std::string, std::string> address_of;
  for (const v1::NodeStatus& node : ListNodes()) {
    const std::string& id = node.node().node_id();
    address_of[id] = node.node().address();
    const bool compute = id == "comp-1";
    EXPECT_EQ(node.node().role(), compute ? v1::NODE_ROLE_COMPUTE : v1::NODE_ROLE_INSTITUTION);
    EXPECT_EQ(node.node().cert_identity(),
              StrCat("spiffe://silo/", compute ? "compute/" : "institution/", id));
    EXPECT_EQ(node.node().capabilities().n_chunks() > 0, !compute) << id;
  }

  // 1. Network: the periodic probes (every second) fill the matrix without being asked.
  {
    SCOPED_TRACE("network measurement");
    auto stub = v1::CoordinatorService::NewStub(Channel(coordinator_address(), "op"));
    size_t links = 0;
    for (int attempt = 0; attempt < 100 && links < 12; ++attempt) {
      grpc::ClientContext context;
      context.set_deadline(Deadline(10));
      v1::GetNetworkMatrixResponse matrix;
      ASSERT_TRUE(stub->GetNetworkMatrix(&context, {}, &matrix).ok());
      links = static_cast<size_t>(matrix.links_size());
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_EQ(links, 12U) << "4 nodes measure each other: 12 directed links";
    const auto [code, output] = Siloctl({"nodes", "--probe"});
    EXPECT_EQ(code, 0) << output;
    for (const auto& [id, node] : nodes) EXPECT_THAT(output, HasSubstr(id));
    EXPECT_THAT(output, HasSubstr("online"));
    EXPECT_THAT(output, ::testing::Not(HasSubstr("did not answer")));
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::GetNetworkMatrixResponse matrix;
    ASSERT_TRUE(stub->GetNetworkMatrix(&context, {}, &matrix).ok());
    ASSERT_EQ(matrix.links_size(), 12);
    for (const v1::NetworkLink& link : matrix.links()) {
      EXPECT_GT(link.rtt_ms(), 0);
      EXPECT_LT(link.rtt_ms(), 1000);
      EXPECT_GT(link.throughput_mbps(), 0);
      EXPECT_GE(link.n_samples(), 2U) << "a periodic and an on-demand measurement";
    }
  }

  // 2. Federated retrieval equals one index over the union.
  for (const std::string& question : kQuestions) {
    SCOPED_TRACE(question);
    v1::QueryDone done;
    const grpc::Status status = Query(RetrieveRequest(question, 10), &done);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(done.unanswered_size(), 0);
    ASSERT_OK_AND_ASSIGN(const std::vector<retrieval::SearchHit> expected,
                         union_->Search(question, 10));
    ASSERT_EQ(done.sources_size(), static_cast<int>(expected.size()));
    std::vector<Hit> federated;
    for (const v1::Source& source : done.sources()) {
      federated.push_back(
          {source.citation().source_path(), source.score(), source.owner_node_id()});
    }
    for (size_t i = 0; i < expected.size(); ++i) {
      // Same rank, same score (up to the embedder's rounding across processes).
      EXPECT_NEAR(federated[i].score, expected[i].score, 1e-4) << "rank " << i;
      // Same document, unless two hits tie within rounding and swap places.
      const bool tie =
          (i > 0 && std::abs(expected[i - 1].score - expected[i].score) < 1e-4) ||
          (i + 1 < expected.size() && std::abs(expected[i + 1].score - expected[i].score) < 1e-4);
      if (!tie) {
        EXPECT_EQ(federated[i].source_path, expected[i].source_path) << "rank " << i;
      }
      EXPECT_EQ(federated[i].owner, owner_of_[federated[i].source_path]) << "rank " << i;
    }
    // Reciprocal rank fusion keeps each owner's best hit among the first three.
    v1::QueryRequest rrf = RetrieveRequest(question, 3);
    rrf.set_merge(v1::MERGE_RULE_RECIPROCAL_RANK);
    v1::QueryDone fused;
    ASSERT_TRUE(Query(rrf, &fused).ok());
    std::set<std::string> owners;
    for (const v1::Source& source : fused.sources()) owners.insert(source.owner_node_id());
    EXPECT_EQ(owners.size(), 3U);
  }
  {
    const auto [code, output] = Siloctl({"query", "--mode", "retrieve", "-k", "3", kQuestions[0]});
    EXPECT_EQ(code, 0) << output;
    EXPECT_THAT(output, HasSubstr("faq/"));
    EXPECT_THAT(output, HasSubstr("retrieval "));
  }

  // 3. Bad input: a clear status each time, and the node keeps serving.
  {
    const std::shared_ptr<grpc::Channel> to_node = Channel(address_of["inst-b"], "querier-x");
    auto retrieval = v1::RetrievalService::NewStub(to_node);
    auto control = v1::NodeControlService::NewStub(to_node);
    std::vector<float> unit(384, 0.0F);
    unit[0] = 1.0F;
    v1::RetrieveRequest good;
    good.mutable_session()->set_value(std::string(16, 's'));
    *good.mutable_embedding() = node::EncodeQueryEmbedding(unit);
    good.set_top_k(5);
    const v1::NodeStatus inst_b = [&] {
      for (const v1::NodeStatus& n : ListNodes()) {
        if (n.node().node_id() == "inst-b") return n;
      }
      return v1::NodeStatus();
    }();
    *good.mutable_embedder() = inst_b.node().embedder();
    const auto retrieve = [&](const v1::RetrieveRequest& request) {
      grpc::ClientContext context;
      context.set_deadline(Deadline(10));
      v1::RetrieveResponse response;
      return retrieval->Retrieve(&context, request, &response).error_code();
    };
    EXPECT_EQ(retrieve(good), grpc::StatusCode::OK);
    struct Case {
      std::string name;
      std::function<void(v1::RetrieveRequest&)> spoil;
      grpc::StatusCode code;
    };
    const std::vector<Case> cases = {
        {"embedding of 383 values",
         [](v1::RetrieveRequest& r) {
           r.mutable_embedding()->set_shape(0, 383);
           r.mutable_embedding()->mutable_data()->resize(383 * 4);
         },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"shape and data disagree",
         [](v1::RetrieveRequest& r) { r.mutable_embedding()->mutable_data()->resize(10); },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"NaN",
         [](v1::RetrieveRequest& r) {
           const float nan = std::numeric_limits<float>::quiet_NaN();
           r.mutable_embedding()->mutable_data()->replace(8, 4, reinterpret_cast<const char*>(&nan),
                                                          4);
         },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"Inf",
         [](v1::RetrieveRequest& r) {
           const float inf = std::numeric_limits<float>::infinity();
           r.mutable_embedding()->mutable_data()->replace(0, 4, reinterpret_cast<const char*>(&inf),
                                                          4);
         },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"not unit length",
         [](v1::RetrieveRequest& r) {
           const float two = 2.0F;
           r.mutable_embedding()->mutable_data()->replace(0, 4, reinterpret_cast<const char*>(&two),
                                                          4);
         },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"f16 embedding",
         [](v1::RetrieveRequest& r) { r.mutable_embedding()->set_dtype(v1::DTYPE_F16); },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"k = 0", [](v1::RetrieveRequest& r) { r.set_top_k(0); },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"huge k", [](v1::RetrieveRequest& r) { r.set_top_k(4'000'000'000U); },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"session id of 3 bytes",
         [](v1::RetrieveRequest& r) { r.mutable_session()->set_value("abc"); },
         grpc::StatusCode::INVALID_ARGUMENT},
        {"another embedder",
         [](v1::RetrieveRequest& r) { r.mutable_embedder()->set_sha256(std::string(32, 'x')); },
         grpc::StatusCode::FAILED_PRECONDITION},
        {"no embedder", [](v1::RetrieveRequest& r) { r.clear_embedder(); },
         grpc::StatusCode::INVALID_ARGUMENT},
    };
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name);
      v1::RetrieveRequest bad = good;
      c.spoil(bad);
      EXPECT_EQ(retrieve(bad), c.code);
    }
    const auto probe = [&](size_t payload_bytes) {
      grpc::ClientContext context;
      context.set_deadline(Deadline(60));
      v1::ProbeRequest request;
      request.mutable_payload()->resize(payload_bytes);
      v1::ProbeResponse response;
      return control->Probe(&context, request, &response).error_code();
    };
    EXPECT_EQ(probe(size_t{65} << 20), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "over the probe's own 64 MiB limit";
    EXPECT_EQ(probe(size_t{129} << 20), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "over the channel's 128 MiB limit";
    v1::QueryDone done;
    v1::QueryRequest unknown_querier = RetrieveRequest(kQuestions[0], 5);
    unknown_querier.set_querier_node_id("nobody");
    EXPECT_EQ(Query(unknown_querier, &done).error_code(), grpc::StatusCode::NOT_FOUND);
    v1::QueryRequest unknown_participant = RetrieveRequest(kQuestions[0], 5);
    unknown_participant.add_participant_node_ids("ghost");
    EXPECT_EQ(Query(unknown_participant, &done).error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(Query(RetrieveRequest(kQuestions[0], 1000), &done).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(Query(RetrieveRequest("", 5), &done).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    // Still serving.
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::HealthResponse health;
    ASSERT_TRUE(control->Health(&context, {}, &health).ok());
    EXPECT_TRUE(health.serving());
    EXPECT_EQ(retrieve(good), grpc::StatusCode::OK);
    for (const auto& [id, node] : nodes) EXPECT_TRUE(node->running()) << id;
  }

  // 4. An institution dies: the query reports it and answers from the others; it goes down.
  nodes["inst-c"]->Signal(SIGKILL);
  ASSERT_OK(nodes["inst-c"]->Wait(absl::Seconds(10)).status());
  {
    v1::QueryRequest request = RetrieveRequest(kQuestions[1], 10);
    request.set_owner_timeout_ms(2000);
    v1::QueryDone done;
    const grpc::Status status = Query(request, &done);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(done.unanswered_size(), 1);
    EXPECT_EQ(done.unanswered(0).node_id(), "inst-c");
    EXPECT_THAT(done.unanswered(0).code(),
                ::testing::AnyOf(static_cast<int>(grpc::StatusCode::UNAVAILABLE),
                                 static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED)));
    EXPECT_EQ(done.sources_size(), 10);
    for (const v1::Source& source : done.sources()) EXPECT_NE(source.owner_node_id(), "inst-c");
  }
  const absl::Time down_deadline = absl::Now() + absl::Seconds(10);
  bool marked_down = false;
  while (!marked_down && absl::Now() < down_deadline) {
    for (const v1::NodeStatus& node : ListNodes()) {
      if (node.node().node_id() == "inst-c") marked_down = !node.online();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(marked_down) << "inst-c missed its heartbeats but is still online";
  {
    // Down, it is not asked, but still named: the user learns whose knowledge is missing.
    v1::QueryDone done;
    const grpc::Status status = Query(RetrieveRequest(kQuestions[1], 10), &done);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(done.unanswered_size(), 1);
    EXPECT_EQ(done.unanswered(0).node_id(), "inst-c");
    EXPECT_EQ(done.unanswered(0).code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
    EXPECT_THAT(done.unanswered(0).message(), HasSubstr("offline"));
    EXPECT_EQ(done.sources_size(), 10);
  }

  // 5. The coordinator restarts on the same data: nodes and sessions are still there.
  coordinator->Signal(SIGTERM);
  ASSERT_OK_AND_ASSIGN(const int code, coordinator->Wait(absl::Seconds(20)));
  EXPECT_EQ(code, 0);
  coordinator = StartCoordinator();
  ASSERT_OK(coordinator->WaitForLine("serving coordinator on", kStartTimeout).status());
  std::set<std::string> recovered;
  for (const v1::NodeStatus& node : ListNodes()) recovered.insert(node.node().node_id());
  EXPECT_EQ(recovered, (std::set<std::string>{"comp-1", "inst-a", "inst-b", "inst-c"}));
  ASSERT_OK(WaitForOnline(3));
  {
    const auto [code, output] = Siloctl({"sessions", "--limit", "100"});
    EXPECT_EQ(code, 0) << output;
    EXPECT_THAT(output, HasSubstr("RETRIEVE"));
    EXPECT_THAT(output, HasSubstr("inst-a"));
    // 5 questions × 2 merges + siloctl + the one with inst-c down (the refused queries were never
    // placed or failed at placement).
    auto stub = v1::CoordinatorService::NewStub(Channel(coordinator_address(), "op"));
    grpc::ClientContext context;
    context.set_deadline(Deadline(10));
    v1::ListSessionsRequest request;
    request.set_limit(1000);
    v1::ListSessionsResponse sessions;
    ASSERT_TRUE(stub->ListSessions(&context, request, &sessions).ok());
    EXPECT_GE(sessions.sessions_size(), 12);
    for (const v1::SessionRecord& record : sessions.sessions()) {
      EXPECT_NE(record.finished_at_unix_ns(), 0) << "every session ended before the restart";
    }
  }
  v1::QueryDone done;
  const grpc::Status after_restart = Query(RetrieveRequest(kQuestions[2], 5), &done);
  EXPECT_TRUE(after_restart.ok()) << "answers after restart: " << after_restart.error_message();
}

}  // namespace
}  // namespace silo
