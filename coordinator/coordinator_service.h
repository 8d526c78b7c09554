// The gRPC face of silo-coordinator (DESIGN.md §8): silo.v1.CoordinatorService (membership,
// heartbeats, network matrix, placement, session log) and silo.v1.QueryService (the user's
// question: placed, forwarded to the querier node, its answer streamed back and logged).
// Thin: each handler checks the caller against node/rpc_roles, converts, and calls
// CoordinatorState. A node may speak only for itself: the node id in a request must be the one
// in its certificate.
//
// Thread-safe (CoordinatorState and PeerChannels are).
#ifndef SILO_COORDINATOR_COORDINATOR_SERVICE_H_
#define SILO_COORDINATOR_COORDINATOR_SERVICE_H_

#include "coordinator/coordinator_state.h"
#include "node/peer_channels.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::coordinator {

class CoordinatorService final : public v1::CoordinatorService::Service {
 public:
  // `state` and `peers` outlive the service; `probe_interval` is what nodes are told.
  CoordinatorService(CoordinatorState& state, node::PeerChannels& peers,
                     absl::Duration probe_interval);

  grpc::Status RegisterNode(grpc::ServerContext* context, const v1::RegisterNodeRequest* request,
                            v1::RegisterNodeResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ListNodes(grpc::ServerContext* context, const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;
  grpc::Status ReportProbes(grpc::ServerContext* context, const v1::ReportProbesRequest* request,
                            v1::ReportProbesResponse* response) override;
  grpc::Status GetNetworkMatrix(grpc::ServerContext* context,
                                const v1::GetNetworkMatrixRequest* request,
                                v1::GetNetworkMatrixResponse* response) override;
  // Asks every online node, one after another, to measure the other online nodes.
  grpc::Status MeasureNetwork(grpc::ServerContext* context,
                              const v1::MeasureNetworkRequest* request,
                              v1::MeasureNetworkResponse* response) override;
  grpc::Status PlaceSession(grpc::ServerContext* context, const v1::PlaceSessionRequest* request,
                            v1::PlaceSessionResponse* response) override;
  grpc::Status ListSessions(grpc::ServerContext* context, const v1::ListSessionsRequest* request,
                            v1::ListSessionsResponse* response) override;

 private:
  CoordinatorState& state_;
  node::PeerChannels& peers_;
  const absl::Duration probe_interval_;
};

class QueryService final : public v1::QueryService::Service {
 public:
  QueryService(CoordinatorState& state, node::PeerChannels& peers);

  // Places the session (querier: the request's, or the first online institution or device with
  // an embedder), forwards the question to the querier with the placement, relays its answer
  // and logs the session's end. INVALID_ARGUMENT for a bad question or a placement set by the
  // caller; NOT_FOUND for an unknown node; UNAVAILABLE when no querier is online or it does not
  // answer; the querier's own status otherwise.
  grpc::Status Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                     grpc::ServerWriter<v1::QueryResponse>* writer) override;

 private:
  absl::StatusOr<v1::Placement> Place(const v1::QueryRequest& request);

  CoordinatorState& state_;
  node::PeerChannels& peers_;
};

}  // namespace silo::coordinator

#endif  // SILO_COORDINATOR_COORDINATOR_SERVICE_H_
