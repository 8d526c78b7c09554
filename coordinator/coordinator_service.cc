#include "coordinator/coordinator_service.h"

#include <chrono>
#include <set>

#include "absl/random/random.h"
#include "common/logging.h"
#include "common/strings.h"
#include "crypto/certificate.h"
#include "grpcpp/client_context.h"
#include "node/federated_retrieval.h"
#include "node/grpc_status.h"
#include "node/network_probe.h"
#include "node/node_info.h"
#include "node/rpc_roles.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::coordinator {
namespace {

using node::Server;
using node::ToGrpcStatus;

constexpr absl::Duration kForwardTimeout = absl::Minutes(10);  // an answer of many tokens
constexpr absl::Duration kMeasureTimeout = absl::Seconds(60);

// The caller's identity when its role may call `method`; the gRPC status to return otherwise.
absl::StatusOr<crypto::PeerIdentity> Authorize(const grpc::ServerContext& context,
                                               std::string_view method) {
  return node::AuthorizeCall(context, Server::kCoordinator, method);
}

grpc::Status MustBeCaller(const crypto::PeerIdentity& caller, const std::string& node_id) {
  if (node_id == caller.node_id) return grpc::Status::OK;
  return {grpc::StatusCode::PERMISSION_DENIED, StrCat("the certificate of ", caller.node_id,
                                                      " cannot speak for node \"", node_id, "\"")};
}

}  // namespace

CoordinatorService::CoordinatorService(CoordinatorState& state, node::PeerChannels& peers,
                                       absl::Duration probe_interval)
    : state_(state), peers_(peers), probe_interval_(probe_interval) {}

grpc::Status CoordinatorService::RegisterNode(grpc::ServerContext* context,
                                              const v1::RegisterNodeRequest* request,
                                              v1::RegisterNodeResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/RegisterNode");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const v1::NodeInfo& node = request->node();
  if (grpc::Status own = MustBeCaller(*caller, node.node_id()); !own.ok()) return own;
  if (node.role() != node::NodeRoleProto(caller->role) ||
      node.cert_identity() != crypto::SpiffeId(*caller)) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            StrCat("the registration's role and identity must be the certificate's, ",
                   crypto::SpiffeId(*caller))};
  }
  const absl::Time now = absl::Now();
  if (absl::Status status = state_.RegisterNode(node, now); !status.ok()) {
    return ToGrpcStatus(status);
  }
  SILO_LOG(Info) << "registered " << node.node_id() << " (" << crypto::PeerRoleName(caller->role)
                 << ") at " << node.address();
  response->set_heartbeat_interval_ns(absl::ToInt64Nanoseconds(state_.heartbeat_interval()));
  response->set_registered_at_unix_ns(absl::ToUnixNanos(now));
  response->set_probe_interval_ns(absl::ToInt64Nanoseconds(probe_interval_));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* context,
                                           const v1::HeartbeatRequest* request,
                                           v1::HeartbeatResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/Heartbeat");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (grpc::Status own = MustBeCaller(*caller, request->node_id()); !own.ok()) return own;
  absl::StatusOr<HeartbeatResult> result =
      state_.Heartbeat(request->node_id(), request->active_sessions(), absl::Now());
  if (absl::IsNotFound(result.status())) {
    response->set_reregister(true);
    return grpc::Status::OK;
  }
  if (!result.ok()) return ToGrpcStatus(result.status());
  if (result->was_offline) {
    SILO_LOG(Info) << request->node_id() << " is back online";
  }
  response->set_heartbeat_interval_ns(absl::ToInt64Nanoseconds(result->heartbeat_interval));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListNodes(grpc::ServerContext* context,
                                           const v1::ListNodesRequest* request,
                                           v1::ListNodesResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/ListNodes");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!v1::NodeRole_IsValid(request->role())) {
    return {grpc::StatusCode::INVALID_ARGUMENT, StrCat("unknown role ", request->role())};
  }
  for (v1::NodeStatus& node :
       state_.ListNodes(request->role(), request->include_offline(), absl::Now())) {
    *response->add_nodes() = std::move(node);
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ReportProbes(grpc::ServerContext* context,
                                              const v1::ReportProbesRequest* request,
                                              v1::ReportProbesResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/ReportProbes");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (grpc::Status own = MustBeCaller(*caller, request->node_id()); !own.ok()) return own;
  const std::vector<v1::NetworkMeasurement> measurements(request->measurements().begin(),
                                                         request->measurements().end());
  absl::StatusOr<uint32_t> accepted =
      state_.ReportProbes(request->node_id(), measurements, absl::Now());
  if (!accepted.ok()) return ToGrpcStatus(accepted.status());
  response->set_n_accepted(*accepted);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::GetNetworkMatrix(grpc::ServerContext* context,
                                                  const v1::GetNetworkMatrixRequest* request,
                                                  v1::GetNetworkMatrixResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/GetNetworkMatrix");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (request->node_ids_size() > static_cast<int>(kMaxSessionNodes)) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "too many node ids"};
  }
  const std::vector<std::string> ids(request->node_ids().begin(), request->node_ids().end());
  for (v1::NetworkLink& link : state_.NetworkMatrix(ids)) *response->add_links() = std::move(link);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::MeasureNetwork(grpc::ServerContext* context,
                                                const v1::MeasureNetworkRequest* request,
                                                v1::MeasureNetworkResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/MeasureNetwork");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  v1::MeasurePeersRequest measure;
  measure.set_n_probes(request->n_probes() == 0 ? 5 : request->n_probes());
  measure.set_probe_bytes(64);
  measure.set_throughput_bytes(request->throughput_bytes() == 0 ? uint64_t{1} << 20
                                                                : request->throughput_bytes());
  const node::ProbeOptions check{
      .n_probes = static_cast<int32_t>(std::min(measure.n_probes(), 1000U)),
      .probe_bytes = 64,
      .throughput_bytes =
          static_cast<int64_t>(std::min<uint64_t>(measure.throughput_bytes(), uint64_t{1} << 40))};
  if (absl::Status valid = node::ValidateProbeOptions(check); !valid.ok()) {
    return ToGrpcStatus(valid);
  }
  const std::vector<v1::NodeStatus> nodes =
      state_.ListNodes(v1::NODE_ROLE_UNSPECIFIED, /*include_offline=*/false, absl::Now());
  for (const v1::NodeStatus& node : nodes) {
    v1::NodeRef& peer = *measure.add_peers();
    peer.set_node_id(node.node().node_id());
    peer.set_address(node.node().address());
  }
  for (const v1::NodeStatus& node : nodes) {
    if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "the caller went away"};
    const std::unique_ptr<v1::NodeControlService::Stub> stub =
        v1::NodeControlService::NewStub(peers_.Get(node.node().address()));
    grpc::ClientContext call;
    call.set_deadline(std::chrono::system_clock::now() +
                      absl::ToChronoNanoseconds(kMeasureTimeout));
    v1::MeasurePeersResponse measured;
    const grpc::Status status = stub->MeasurePeers(&call, measure, &measured);
    if (!status.ok()) {
      response->add_unreachable_node_ids(node.node().node_id());
      continue;
    }
    const std::vector<v1::NetworkMeasurement> measurements(measured.measurements().begin(),
                                                           measured.measurements().end());
    if (absl::StatusOr<uint32_t> accepted =
            state_.ReportProbes(node.node().node_id(), measurements, absl::Now());
        !accepted.ok()) {
      return ToGrpcStatus(accepted.status());
    }
  }
  for (v1::NetworkLink& link : state_.NetworkMatrix({})) *response->add_links() = std::move(link);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::PlaceSession(grpc::ServerContext* context,
                                              const v1::PlaceSessionRequest* request,
                                              v1::PlaceSessionResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/PlaceSession");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (grpc::Status own = MustBeCaller(*caller, request->querier_node_id()); !own.ok()) {
    return own;
  }
  absl::BitGen bitgen;
  absl::StatusOr<v1::Placement> placement = state_.PlaceSession(*request, absl::Now(), bitgen);
  if (!placement.ok()) return ToGrpcStatus(placement.status());
  *response->mutable_placement() = *std::move(placement);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListSessions(grpc::ServerContext* context,
                                              const v1::ListSessionsRequest* request,
                                              v1::ListSessionsResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      Authorize(*context, "/silo.v1.CoordinatorService/ListSessions");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::StatusOr<std::vector<v1::SessionRecord>> sessions = state_.ListSessions(*request);
  if (!sessions.ok()) return ToGrpcStatus(sessions.status());
  for (v1::SessionRecord& record : *sessions) *response->add_sessions() = std::move(record);
  return grpc::Status::OK;
}

QueryService::QueryService(CoordinatorState& state, node::PeerChannels& peers)
    : state_(state), peers_(peers) {}

absl::StatusOr<v1::Placement> QueryService::Place(const v1::QueryRequest& request) {
  v1::PlaceSessionRequest place;
  place.set_mode(request.mode());
  place.set_querier_node_id(request.querier_node_id());
  *place.mutable_participant_node_ids() = request.participant_node_ids();
  place.set_max_tokens(request.max_tokens());
  *place.mutable_privacy() = request.privacy();
  if (place.querier_node_id().empty()) {
    // DRAGON asks from a device when one is online (the cloud side is an institution).
    const bool dragon = request.mode() == v1::GENERATION_MODE_DRAGON;
    for (const v1::NodeStatus& node :
         state_.ListNodes(v1::NODE_ROLE_UNSPECIFIED, /*include_offline=*/false, absl::Now())) {
      const v1::NodeRole role = node.node().role();
      if ((role == v1::NODE_ROLE_INSTITUTION || role == v1::NODE_ROLE_DEVICE) &&
          !node.node().embedder().sha256().empty() &&
          (place.querier_node_id().empty() || (dragon && role == v1::NODE_ROLE_DEVICE))) {
        place.set_querier_node_id(node.node().node_id());
        if (!dragon || role == v1::NODE_ROLE_DEVICE) break;
      }
    }
    if (place.querier_node_id().empty()) {
      return absl::UnavailableError("no institution or device with a corpus is online");
    }
  }
  absl::BitGen bitgen;
  return state_.PlaceSession(place, absl::Now(), bitgen);
}

grpc::Status QueryService::Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                                 grpc::ServerWriter<v1::QueryResponse>* writer) {
  absl::StatusOr<crypto::PeerIdentity> caller = Authorize(*context, "/silo.v1.QueryService/Query");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (request->has_placement()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "a query's placement is the coordinator's to set"};
  }
  if (request->question().empty() || request->question().size() > node::kMaxQuestionBytes) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            StrCat("the question must be 1 to ", node::kMaxQuestionBytes, " bytes")};
  }
  absl::StatusOr<v1::Placement> placement = Place(*request);
  if (!placement.ok()) return ToGrpcStatus(placement.status());
  absl::StatusOr<v1::NodeStatus> querier =
      state_.GetNode(placement->querier_node_id(), absl::Now());
  if (!querier.ok()) return ToGrpcStatus(querier.status());

  v1::QueryRequest forward = *request;
  *forward.mutable_placement() = *placement;
  forward.set_querier_node_id(placement->querier_node_id());
  const absl::Time deadline =
      std::min(absl::FromChrono(context->deadline()), absl::Now() + kForwardTimeout);
  const std::unique_ptr<v1::QueryService::Stub> stub =
      v1::QueryService::NewStub(peers_.GetConnected(querier->node().address(), deadline));
  grpc::ClientContext call;
  call.set_deadline(absl::ToChronoTime(deadline));
  std::unique_ptr<grpc::ClientReader<v1::QueryResponse>> reader = stub->Query(&call, forward);
  v1::QueryResponse message;
  v1::QueryStats stats;
  std::set<std::string> owners;
  while (reader->Read(&message)) {
    if (message.has_done()) {
      stats = message.done().stats();
      for (const v1::Source& source : message.done().sources()) {
        owners.insert(source.owner_node_id());
      }
    }
    if (!writer->Write(message)) call.TryCancel();
  }
  grpc::Status status = reader->Finish();
  if (absl::Status logged = state_.FinishSession(
          placement->session(), static_cast<int32_t>(status.error_code()), stats,
          std::vector<std::string>(owners.begin(), owners.end()), absl::Now());
      !logged.ok()) {
    SILO_LOG(Warning) << "the session log did not take the end of a session: " << logged.message();
  }
  if (!status.ok()) {
    return {status.error_code(),
            StrCat("querier ", placement->querier_node_id(), ": ", status.error_message())};
  }
  return grpc::Status::OK;
}

}  // namespace silo::coordinator
