#include "node/control_service.h"

#include "common/strings.h"
#include "node/grpc_status.h"
#include "node/network_probe.h"
#include "node/rpc_roles.h"

namespace silo::node {
namespace {

constexpr size_t kMaxPeers = 256;

}  // namespace

ControlService::ControlService(PeerChannels& peers) : started_at_(absl::Now()), peers_(peers) {}

void ControlService::SetInfo(v1::NodeInfo info) {
  const std::lock_guard<std::mutex> lock(mutex_);
  info_ = std::move(info);
}

grpc::Status ControlService::Probe(grpc::ServerContext* context, const v1::ProbeRequest* request,
                                   v1::ProbeResponse* response) {
  const absl::Time received = absl::Now();
  if (auto caller = AuthorizeCall(*context, Server::kNode, "/silo.v1.NodeControlService/Probe");
      !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  if (request->payload().size() > static_cast<size_t>(kMaxThroughputBytes) ||
      request->response_bytes() > kMaxThroughputBytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            StrCat("a probe carries at most ", kMaxThroughputBytes, " bytes each way")};
  }
  if (request->response_bytes() > 0) {
    response->set_payload(std::string(request->response_bytes(), '\0'));
  } else {
    response->set_payload(request->payload());
  }
  response->set_received_at_unix_ns(absl::ToUnixNanos(received));
  return grpc::Status::OK;
}

grpc::Status ControlService::Health(grpc::ServerContext* context,
                                    const v1::HealthRequest* /*request*/,
                                    v1::HealthResponse* response) {
  if (auto caller = AuthorizeCall(*context, Server::kNode, "/silo.v1.NodeControlService/Health");
      !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    *response->mutable_node() = info_;
    response->set_serving(!info_.address().empty());
  }
  response->set_started_at_unix_ns(absl::ToUnixNanos(started_at_));
  return grpc::Status::OK;
}

grpc::Status ControlService::MeasurePeers(grpc::ServerContext* context,
                                          const v1::MeasurePeersRequest* request,
                                          v1::MeasurePeersResponse* response) {
  if (auto caller =
          AuthorizeCall(*context, Server::kNode, "/silo.v1.NodeControlService/MeasurePeers");
      !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  if (request->peers_size() > static_cast<int>(kMaxPeers)) {
    return {grpc::StatusCode::INVALID_ARGUMENT, StrCat("at most ", kMaxPeers, " peers")};
  }
  ProbeOptions options;
  if (request->n_probes() != 0)
    options.n_probes = static_cast<int32_t>(std::min(request->n_probes(), 1000U));
  if (request->probe_bytes() != 0) {
    options.probe_bytes =
        static_cast<int32_t>(std::min<uint32_t>(request->probe_bytes(), 1U << 30));
  }
  options.throughput_bytes =
      static_cast<int64_t>(std::min<uint64_t>(request->throughput_bytes(), uint64_t{1} << 40));
  if (absl::Status valid = ValidateProbeOptions(options); !valid.ok()) return ToGrpcStatus(valid);
  std::string self;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    self = info_.node_id();
  }
  for (const v1::NodeRef& peer : request->peers()) {
    if (peer.node_id() == self) continue;
    if (peer.address().empty() || peer.address().size() > 256 || peer.node_id().size() > 256) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "a peer needs a node_id and a host:port address"};
    }
  }
  for (const v1::NodeRef& peer : request->peers()) {
    if (peer.node_id() == self) continue;
    if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "the caller went away"};
    const std::unique_ptr<v1::NodeControlService::Stub> stub =
        v1::NodeControlService::NewStub(peers_.Get(peer.address()));
    absl::StatusOr<v1::NetworkMeasurement> measurement =
        MeasurePeer(*stub, peer.node_id(), options);
    if (measurement.ok()) {
      *response->add_measurements() = *std::move(measurement);
    } else {
      response->add_unreachable_node_ids(peer.node_id());
    }
  }
  return grpc::Status::OK;
}

}  // namespace silo::node
