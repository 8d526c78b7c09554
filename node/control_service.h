// silo.v1.NodeControlService of silo-node: Probe (echo for network measurement), Health, and
// MeasurePeers (the coordinator or an operator asks for measurements now).
//
// Thread-safe (gRPC calls the handlers from several threads).
#ifndef SILO_NODE_CONTROL_SERVICE_H_
#define SILO_NODE_CONTROL_SERVICE_H_

#include <mutex>

#include "absl/time/time.h"
#include "node/peer_channels.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

class ControlService final : public v1::NodeControlService::Service {
 public:
  // `peers` dials the peers to measure (outlives the service).
  explicit ControlService(PeerChannels& peers);

  // What Health reports (known once the server has bound its port).
  void SetInfo(v1::NodeInfo info);

  grpc::Status Probe(grpc::ServerContext* context, const v1::ProbeRequest* request,
                     v1::ProbeResponse* response) override;
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest* request,
                      v1::HealthResponse* response) override;
  // Peers are measured one after another (probing them in parallel would measure each other's
  // traffic); unreachable ones are listed, not failed.
  grpc::Status MeasurePeers(grpc::ServerContext* context, const v1::MeasurePeersRequest* request,
                            v1::MeasurePeersResponse* response) override;

 private:
  const absl::Time started_at_;
  mutable std::mutex mutex_;
  v1::NodeInfo info_;  // guarded by mutex_
  PeerChannels& peers_;
};

}  // namespace silo::node

#endif  // SILO_NODE_CONTROL_SERVICE_H_
