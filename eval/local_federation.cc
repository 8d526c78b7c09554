#include "eval/local_federation.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/mtls.h"
#include "eval/internal/tcp_socket.h"
#include "grpcpp/create_channel.h"
#include "retrieval/knowledge_base.h"
#include "retrieval/node_key.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kOwners = {"owner-a", "owner-b", "owner-c"};
constexpr char kCompute[] = "compute-1";

crypto::TlsFiles TlsFilesOf(const LocalFederationOptions& options, const std::string& id) {
  const fs::path certs = fs::path(options.work_dir) / "certs";
  return {.ca_file = (certs / "ca.pem").string(),
          .cert_file = (certs / (id + ".pem")).string(),
          .key_file = (certs / (id + ".key")).string()};
}

node::NodeConfig NodeConfigOf(const LocalFederationOptions& options, const std::string& id,
                              const std::string& role, const std::string& listen,
                              const std::string& advertise, const std::string& coordinator) {
  const fs::path dir(options.work_dir);
  node::NodeConfig config;
  config.node_id = id;
  config.role = role;
  if (role == "institution") {
    config.node_key_file = (dir / "keys" / (id + ".key")).string();
    retrieval::KnowledgeBaseOptions& kb = config.knowledge_base;
    kb.data_dir = (dir / ("data-" + id)).string();
    kb.decoder_model = options.decoder_model;
    kb.embedder_model = options.embedder_model;
    kb.kv_shards = retrieval::KvShardMode::kLazy;
    kb.threads = options.threads;
  }
  config.serve.listen = listen;
  config.serve.advertise = advertise;
  config.serve.coordinator = coordinator;
  config.serve.tls = TlsFilesOf(options, id);
  config.serve.plaintext_baseline = true;  // CENTRALIZED, for comparison
  return config;
}

// A free port on 127.0.0.1 (bound, then released).
absl::StatusOr<int> FreePort() {
  SILO_ASSIGN_OR_RETURN(const internal::Listener listener, internal::ListenOnLoopback());
  ::close(listener.fd);
  return listener.port;
}

}  // namespace

v1::QueryRequest LocalQueryRequest(const std::string& question, v1::GenerationMode mode, int top_k,
                                   int max_tokens) {
  v1::QueryRequest request;
  request.set_question(question);
  request.set_mode(mode);
  request.set_querier_node_id(kLocalQuerier);
  request.set_top_k(static_cast<uint32_t>(top_k));
  request.set_max_tokens(static_cast<uint32_t>(max_tokens));
  request.set_owner_timeout_ms(10000);
  return request;
}

absl::Status LocalFederation::Prepare(const LocalFederationOptions& options, std::ostream& log) {
  const fs::path dir(options.work_dir);
  fs::create_directories(dir / "keys");
  std::string command = StrCat(options.make_dev_ca, " ", (dir / "certs").string(),
                               " coordinator/coordinator operator/operator compute/", kCompute,
                               " institution/", kLocalQuerier);
  for (const std::string& owner : kOwners) command += StrCat(" institution/", owner);
  command += " > /dev/null";
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(StrCat("`", command, "` failed"));
  }
  std::vector<std::string> files;
  for (const char* folder : {"faq", "tutorial"}) {
    const fs::path path = fs::path(options.docs_dir) / folder;
    if (!fs::is_directory(path)) return absl::NotFoundError(StrCat(path.string(), " is missing"));
    for (const auto& entry : fs::directory_iterator(path)) {
      if (entry.path().extension() == ".txt") files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  std::map<std::string, std::vector<std::string>> shares;
  for (size_t i = 0; i < files.size(); ++i) shares[kOwners[i % kOwners.size()]].push_back(files[i]);
  // The querier holds one small page of its own, unrelated to the questions' answers.
  shares[kLocalQuerier] = {(fs::path(options.docs_dir) / "faq" / "index.rst.txt").string()};
  for (const auto& [id, share] : shares) {
    const fs::path key_file = dir / "keys" / (id + ".key");
    if (!fs::exists(key_file)) {
      SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key, crypto::SecretBytes::Random(32));
      std::string hex;
      for (const uint8_t byte : key.span()) hex += absl::StrFormat("%02x", byte);
      std::ofstream(key_file) << hex << "\n";
      ::chmod(key_file.c_str(), 0600);
    }
    const node::NodeConfig config = NodeConfigOf(options, id, "institution", "", "", "");
    SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key,
                          retrieval::ReadNodeKeyFile(key_file.string()));
    SILO_ASSIGN_OR_RETURN(std::unique_ptr<retrieval::KnowledgeBase> corpus,
                          retrieval::KnowledgeBase::Open(config.knowledge_base, key));
    SILO_ASSIGN_OR_RETURN(const retrieval::IngestReport report, corpus->Ingest(share));
    log << "  " << id << ": " << share.size() << " files, " << report.progress.chunks_written
        << " chunks written now\n";
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LocalFederation>> LocalFederation::Start(
    const LocalFederationOptions& options, double rtt_ms, int run) {
  const fs::path dir(options.work_dir);
  std::unique_ptr<LocalFederation> federation(new LocalFederation());
  coordinator::CoordinatorConfig coordinator_config;
  coordinator_config.listen = "127.0.0.1:0";
  coordinator_config.tls = TlsFilesOf(options, "coordinator");
  coordinator_config.probe_interval = absl::ZeroDuration();
  coordinator_config.state.data_dir = (dir / StrCat("coordinator-", run)).string();
  coordinator_config.state.heartbeat_interval = absl::Seconds(1);
  SILO_ASSIGN_OR_RETURN(federation->coordinator_,
                        coordinator::CoordinatorServer::Start(coordinator_config));
  const std::string& coordinator_address = federation->coordinator_->address();

  for (const std::string& owner : kOwners) {
    SILO_ASSIGN_OR_RETURN(const int port, FreePort());
    const std::string listen = StrCat("127.0.0.1:", port);
    std::string advertise = listen;
    if (rtt_ms > 0) {
      SILO_ASSIGN_OR_RETURN(std::unique_ptr<TcpShaper> shaper,
                            TcpShaper::Start({.target = listen,
                                              .one_way_delay = absl::Microseconds(rtt_ms * 500),
                                              .jitter = absl::Microseconds(rtt_ms * 50),
                                              .seed = static_cast<uint64_t>(port),
                                              .bandwidth_bits_per_second = 0}));
      advertise = shaper->address();
      federation->shapers_.push_back(std::move(shaper));
    }
    SILO_ASSIGN_OR_RETURN(
        std::unique_ptr<node::NodeServer> node,
        node::NodeServer::Start(
            NodeConfigOf(options, owner, "institution", listen, advertise, coordinator_address)));
    federation->nodes_.push_back(std::move(node));
  }
  for (const auto& [id, role] : std::vector<std::pair<std::string, std::string>>{
           {kLocalQuerier, "institution"}, {kCompute, "compute"}}) {
    SILO_ASSIGN_OR_RETURN(std::unique_ptr<node::NodeServer> node,
                          node::NodeServer::Start(NodeConfigOf(options, id, role, "127.0.0.1:0", "",
                                                               coordinator_address)));
    federation->nodes_.push_back(std::move(node));
  }

  SILO_ASSIGN_OR_RETURN(const crypto::TlsMaterial tls,
                        crypto::LoadTlsMaterial(TlsFilesOf(options, "operator")));
  federation->operator_channel_ =
      grpc::CreateCustomChannel(coordinator_address, crypto::MakeChannelCredentials(tls),
                                crypto::FederationChannelArguments());
  const auto stub = v1::CoordinatorService::NewStub(federation->operator_channel_);
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListNodesResponse nodes;
    if (stub->ListNodes(&context, v1::ListNodesRequest(), &nodes).ok() &&
        std::count_if(nodes.nodes().begin(), nodes.nodes().end(), [](const v1::NodeStatus& node) {
          return node.online();
        }) == static_cast<int>(kOwners.size()) + 2) {
      for (const v1::NodeStatus& node : nodes.nodes()) {
        federation->n_layers_ =
            std::max(federation->n_layers_, static_cast<int>(node.node().model().n_layers()));
      }
      return federation;
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("nodes did not come online");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

LocalFederation::~LocalFederation() {
  for (auto& node : nodes_) node->Shutdown();
  for (auto& shaper : shapers_) shaper->Shutdown();
  if (coordinator_ != nullptr) coordinator_->Shutdown();
}

absl::StatusOr<v1::QueryDone> LocalFederation::Query(const v1::QueryRequest& request) {
  const auto stub = v1::QueryService::NewStub(operator_channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  auto reader = stub->Query(&context, request);
  v1::QueryResponse message;
  v1::QueryDone done;
  while (reader->Read(&message)) {
    if (message.has_done()) done = message.done();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(status.error_code()),
        StrCat(v1::GenerationMode_Name(request.mode()), ": ", status.error_message()));
  }
  return done;
}

}  // namespace silo::eval
