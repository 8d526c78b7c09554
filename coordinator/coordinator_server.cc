#include "coordinator/coordinator_server.h"

#include <chrono>

#include "common/status_macros.h"
#include "common/strings.h"
#include "grpcpp/server_builder.h"

namespace silo::coordinator {

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorConfig& config) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  SILO_ASSIGN_OR_RETURN(server->tls_, crypto::LoadTlsMaterial(config.tls));
  if (server->tls_.identity.role != crypto::PeerRole::kCoordinator) {
    return absl::FailedPreconditionError(StrCat("the certificate ", config.tls.cert_file, " names ",
                                                crypto::SpiffeId(server->tls_.identity),
                                                ", not a coordinator"));
  }
  SILO_ASSIGN_OR_RETURN(server->state_, CoordinatorState::Open(config.state, absl::Now()));
  server->peers_ = std::make_unique<node::PeerChannels>(server->tls_);
  server->coordinator_service_ =
      std::make_unique<CoordinatorService>(*server->state_, *server->peers_, config.probe_interval);
  server->query_service_ = std::make_unique<QueryService>(*server->state_, *server->peers_);

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, crypto::MakeServerCredentials(server->tls_), &port);
  crypto::ApplyFederationServerLimits(builder);
  builder.RegisterService(server->coordinator_service_.get());
  builder.RegisterService(server->query_service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError(StrCat("cannot listen on ", config.listen));
  }
  server->address_ = StrCat(config.listen.substr(0, config.listen.rfind(':')), ":", port);
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

void CoordinatorServer::Shutdown() {
  if (stopped_) return;
  stopped_ = true;
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
}

}  // namespace silo::coordinator
