#include "node/node_server.h"

#include <csignal>

#include "absl/strings/match.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "grpcpp/server_builder.h"
#include "node/grpc_status.h"
#include "node/knowledge_commands.h"
#include "node/network_probe.h"
#include "node/node_info.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::node {
namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(3);
constexpr absl::Duration kRegisterRetry = absl::Seconds(1);
constexpr absl::Duration kShutdownGrace = absl::Seconds(2);

std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout);
}

// The listen address's host, and whether it is a wildcard that peers cannot dial.
std::string_view HostOf(std::string_view address) { return address.substr(0, address.rfind(':')); }
bool IsWildcard(std::string_view host) { return host == "0.0.0.0" || host == "[::]"; }

}  // namespace

absl::StatusOr<std::unique_ptr<NodeServer>> NodeServer::Start(const NodeConfig& config) {
  const ServeConfig& serve = config.serve;
  if (serve.listen.empty()) {
    return absl::InvalidArgumentError("the config has no serve.listen address");
  }
  if (serve.tls.ca_file.empty() || serve.tls.cert_file.empty() || serve.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "the config needs serve.tls.ca, serve.tls.cert and serve.tls.key");
  }
  if (serve.advertise.empty() && IsWildcard(HostOf(serve.listen))) {
    return absl::InvalidArgumentError(
        "serve.advertise is required when serve.listen is a wildcard address");
  }
  std::unique_ptr<NodeServer> server(new NodeServer());
  server->config_ = config;
  SILO_ASSIGN_OR_RETURN(server->tls_, crypto::LoadTlsMaterial(serve.tls));
  const crypto::PeerIdentity& identity = server->tls_.identity;
  if (identity.node_id != config.node_id || crypto::PeerRoleName(identity.role) != config.role) {
    return absl::FailedPreconditionError(
        StrCat("the certificate ", serve.tls.cert_file, " names ", crypto::SpiffeId(identity),
               ", but the config says node_id ", config.node_id, " and role ", config.role));
  }
  server->peers_ = std::make_unique<PeerChannels>(server->tls_);
  server->control_service_ = std::make_unique<ControlService>(*server->peers_);

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(serve.listen, crypto::MakeServerCredentials(server->tls_), &port);
  crypto::ApplyFederationServerLimits(builder);
  builder.RegisterService(server->control_service_.get());

  if (!config.knowledge_base.data_dir.empty()) {
    SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key, LoadNodeKey(config, /*create_key=*/true));
    SILO_ASSIGN_OR_RETURN(server->corpus_,
                          retrieval::KnowledgeBase::Open(config.knowledge_base, key));
    SILO_ASSIGN_OR_RETURN(ChunkHandles handles, ChunkHandles::Create(key));
    server->handles_ = std::make_unique<ChunkHandles>(std::move(handles));
  }
  // The address goes into NodeInfo, so it is settled before the info; with port 0 it is known
  // only after the bind, so the info is given to the control service after the start.
  SILO_ASSIGN_OR_RETURN(const v1::NodeInfo info_without_address,
                        MakeNodeInfo(identity, "", server->corpus_.get()));
  if (server->corpus_ != nullptr) {
    server->retrieval_service_ = std::make_unique<RetrievalService>(
        server->corpus_.get(), *server->handles_, info_without_address.model(),
        info_without_address.embedder(), serve.citations, serve.plaintext_baseline);
    SILO_ASSIGN_OR_RETURN(KeyExchangeSigner owner_signer, server->Signer());
    server->owner_service_ = std::make_unique<FedRagOwnerService>(
        server->corpus_.get(), server->handles_.get(), std::move(owner_signer),
        server->peers_.get(), info_without_address.model());
    SILO_ASSIGN_OR_RETURN(KeyExchangeSigner querier_signer, server->Signer());
    SILO_ASSIGN_OR_RETURN(
        server->answer_engine_,
        AnswerEngine::Create(server->corpus_.get(), server->handles_.get(), config.node_id,
                             std::move(querier_signer), server->peers_.get(),
                             info_without_address.model(), config.knowledge_base.threads));
    server->query_service_ = std::make_unique<QueryService>(
        Querier{
            .node_id = config.node_id,
            .corpus = server->corpus_.get(),
            .handles = server->handles_.get(),
            .embedder = info_without_address.embedder(),
            .citations = serve.citations,
            .peers = server->peers_.get(),
        },
        server->answer_engine_.get());
    builder.RegisterService(server->retrieval_service_.get());
    builder.RegisterService(server->query_service_.get());
    builder.RegisterService(server->owner_service_.get());
    server->dragon_service_ = std::make_unique<DragonService>(
        server->corpus_.get(), server->answer_engine_.get(), info_without_address.model());
    builder.RegisterService(server->dragon_service_.get());
  }
  if (config.role == "compute") {
    server->attention_service_ = std::make_unique<ScrambledAttentionService>();
    builder.RegisterService(server->attention_service_.get());
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError(StrCat("cannot listen on ", serve.listen));
  }
  server->address_ =
      serve.advertise.empty() ? StrCat(HostOf(serve.listen), ":", port) : serve.advertise;
  server->info_ = info_without_address;
  server->info_.set_address(server->address_);
  server->control_service_->SetInfo(server->info_);

  if (!serve.coordinator.empty()) {
    server->coordinator_thread_ = std::thread([raw = server.get()] { raw->CoordinatorLoop(); });
    server->probe_thread_ = std::thread([raw = server.get()] { raw->ProbeLoop(); });
  }
  return server;
}

absl::StatusOr<KeyExchangeSigner> NodeServer::Signer() const {
  const std::string_view key_pem(reinterpret_cast<const char*>(tls_.key_pem.span().data()),
                                 tls_.key_pem.span().size());
  SILO_ASSIGN_OR_RETURN(crypto::SigningKey key, crypto::SigningKey::FromPem(key_pem));
  return KeyExchangeSigner{
      .key = std::move(key), .certificate_pem = tls_.cert_pem, .ca_pem = tls_.ca_pem};
}

NodeServer::~NodeServer() { Shutdown(); }

void NodeServer::Shutdown() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (coordinator_thread_.joinable()) coordinator_thread_.join();
  if (probe_thread_.joinable()) probe_thread_.join();
  if (server_ != nullptr) server_->Shutdown(DeadlineIn(kShutdownGrace));
}

bool NodeServer::Register(v1::CoordinatorService::Stub& coordinator) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(kCallTimeout));
  v1::RegisterNodeRequest request;
  *request.mutable_node() = info_;
  v1::RegisterNodeResponse response;
  const grpc::Status status = coordinator.RegisterNode(&context, request, &response);
  if (!status.ok()) {
    SILO_LOG(Debug) << "registration with " << config_.serve.coordinator
                    << " failed: " << status.error_message();
    return false;
  }
  heartbeat_interval_ =
      std::max(absl::Milliseconds(100), absl::Nanoseconds(response.heartbeat_interval_ns()));
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    probe_interval_ = absl::Nanoseconds(std::max<int64_t>(0, response.probe_interval_ns()));
  }
  SILO_LOG(Info) << "registered with the coordinator " << config_.serve.coordinator << " as "
                 << info_.node_id();
  return true;
}

void NodeServer::ProbePeers(v1::CoordinatorService::Stub& coordinator) {
  grpc::ClientContext list_context;
  list_context.set_deadline(DeadlineIn(kCallTimeout));
  v1::ListNodesResponse nodes;
  if (!coordinator.ListNodes(&list_context, v1::ListNodesRequest(), &nodes).ok()) return;
  v1::ReportProbesRequest report;
  report.set_node_id(info_.node_id());
  const ProbeOptions options{.n_probes = 5,
                             .probe_bytes = 64,
                             .throughput_bytes = int64_t{1} << 20,
                             .timeout = kCallTimeout};
  for (const v1::NodeStatus& node : nodes.nodes()) {
    if (node.node().node_id() == info_.node_id()) continue;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
    }
    const std::unique_ptr<v1::NodeControlService::Stub> stub =
        v1::NodeControlService::NewStub(peers_->Get(node.node().address()));
    absl::StatusOr<v1::NetworkMeasurement> measurement =
        MeasurePeer(*stub, node.node().node_id(), options);
    if (measurement.ok()) *report.add_measurements() = *std::move(measurement);
  }
  if (report.measurements_size() == 0) return;
  grpc::ClientContext report_context;
  report_context.set_deadline(DeadlineIn(kCallTimeout));
  v1::ReportProbesResponse response;
  const grpc::Status status = coordinator.ReportProbes(&report_context, report, &response);
  if (!status.ok()) {
    SILO_LOG(Warning) << "ReportProbes failed: " << status.error_message();
  }
}

void NodeServer::CoordinatorLoop() {
  const std::unique_ptr<v1::CoordinatorService::Stub> coordinator =
      v1::CoordinatorService::NewStub(peers_->Get(config_.serve.coordinator));
  bool registered = false;
  bool warned_unreachable = false;
  while (true) {
    absl::Duration wait = heartbeat_interval_;
    if (!registered) {
      registered = Register(*coordinator);
      if (!registered && !warned_unreachable) {
        SILO_LOG(Warning) << "the coordinator " << config_.serve.coordinator
                          << " does not answer yet; retrying every second";
        warned_unreachable = true;
      }
      if (registered) warned_unreachable = false;
      if (!registered) wait = kRegisterRetry;
    } else {
      grpc::ClientContext context;
      context.set_deadline(DeadlineIn(kCallTimeout));
      v1::HeartbeatRequest request;
      request.set_node_id(info_.node_id());
      request.set_sent_at_unix_ns(absl::ToUnixNanos(absl::Now()));
      v1::HeartbeatResponse response;
      const grpc::Status status = coordinator->Heartbeat(&context, request, &response);
      if (status.error_code() == grpc::StatusCode::NOT_FOUND || response.reregister()) {
        SILO_LOG(Info) << "the coordinator lost this node; registering again";
        registered = false;
        continue;
      }
      if (!status.ok()) {
        SILO_LOG(Warning) << "heartbeat failed: " << status.error_message();
      } else if (response.heartbeat_interval_ns() > 0) {
        heartbeat_interval_ =
            std::max(absl::Milliseconds(100), absl::Nanoseconds(response.heartbeat_interval_ns()));
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (wake_.wait_for(lock, absl::ToChronoNanoseconds(wait), [this] { return stopping_; })) {
      return;
    }
  }
}

void NodeServer::ProbeLoop() {
  const std::unique_ptr<v1::CoordinatorService::Stub> coordinator =
      v1::CoordinatorService::NewStub(peers_->Get(config_.serve.coordinator));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    // Zero until a registration names the interval, or when the coordinator wants no probes.
    const absl::Duration interval = probe_interval_;
    if (interval > absl::ZeroDuration()) {
      lock.unlock();
      ProbePeers(*coordinator);
      lock.lock();
    }
    wake_.wait_for(
        lock,
        absl::ToChronoNanoseconds(interval > absl::ZeroDuration() ? interval : kRegisterRetry),
        [this] { return stopping_; });
  }
}

void BlockTerminationSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

std::string WaitForTerminationSignal() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int signal = 0;
  while (sigwait(&signals, &signal) != 0) {
  }
  return signal == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace silo::node
