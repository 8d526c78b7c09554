// silo-coordinator as a process: its state (RocksDB), its services over mTLS, and the channels
// it uses to reach nodes (query forwarding, on-demand measurement).
//
// Thread-safe: Start, then address() from any thread; Shutdown once.
#ifndef SILO_COORDINATOR_COORDINATOR_SERVER_H_
#define SILO_COORDINATOR_COORDINATOR_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/coordinator_config.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/coordinator_state.h"
#include "crypto/mtls.h"
#include "grpcpp/server.h"
#include "node/peer_channels.h"

namespace silo::coordinator {

class CoordinatorServer {
 public:
  // The errors of LoadTlsMaterial and CoordinatorState::Open; FailedPrecondition when the
  // certificate is not a coordinator's; Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(const CoordinatorConfig& config);
  ~CoordinatorServer();

  // host:port it listens on (the bound port when the config says 0).
  const std::string& address() const { return address_; }
  const crypto::PeerIdentity& identity() const { return tls_.identity; }

  void Shutdown();

 private:
  CoordinatorServer() = default;

  crypto::TlsMaterial tls_;
  std::unique_ptr<CoordinatorState> state_;
  std::unique_ptr<node::PeerChannels> peers_;
  std::unique_ptr<CoordinatorService> coordinator_service_;
  std::unique_ptr<QueryService> query_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  bool stopped_ = false;
};

}  // namespace silo::coordinator

#endif  // SILO_COORDINATOR_COORDINATOR_SERVER_H_
