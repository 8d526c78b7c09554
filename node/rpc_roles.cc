#include "node/rpc_roles.h"

#include <algorithm>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/mtls.h"

namespace silo::node {
namespace {

using crypto::PeerRole;
constexpr PeerRole kInstitution = PeerRole::kInstitution;
constexpr PeerRole kDevice = PeerRole::kDevice;
constexpr PeerRole kCompute = PeerRole::kCompute;
constexpr PeerRole kCoordinator = PeerRole::kCoordinator;
constexpr PeerRole kOperator = PeerRole::kOperator;

const std::vector<RpcRule>& Rules() {
  static const auto* const rules = new std::vector<RpcRule>{
      // silo-node
      {Server::kNode, "/silo.v1.RetrievalService/Retrieve", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.RetrievalService/ExportChunkText", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.NodeControlService/MeasurePeers", {kCoordinator, kOperator}},
      {Server::kNode,
       "/silo.v1.NodeControlService/Probe",
       {kInstitution, kDevice, kCompute, kCoordinator, kOperator}},
      {Server::kNode,
       "/silo.v1.NodeControlService/Health",
       {kInstitution, kDevice, kCompute, kCoordinator, kOperator}},
      {Server::kNode, "/silo.v1.QueryService/Query", {kCoordinator}},
      {Server::kNode, "/silo.v1.FedRagOwnerService/ExchangeKeys", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.FedRagOwnerService/SelectChunks", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.FedRagOwnerService/PrepareSession", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.FedRagOwnerService/OwnerAttend", {kInstitution, kDevice}},
      // DRAGON: a device (or an institution acting as one) drives the cloud side
      {Server::kNode, "/silo.v1.DragonService/Decode", {kInstitution, kDevice}},
      // compute nodes: the querier opens, attends and closes; owners upload
      {Server::kNode, "/silo.v1.ScrambledAttentionService/OpenSession", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.ScrambledAttentionService/UploadScrambledKv", {kInstitution}},
      {Server::kNode, "/silo.v1.ScrambledAttentionService/Attend", {kInstitution, kDevice}},
      {Server::kNode, "/silo.v1.ScrambledAttentionService/CloseSession", {kInstitution, kDevice}},
      // silo-coordinator
      {Server::kCoordinator,
       "/silo.v1.CoordinatorService/RegisterNode",
       {kInstitution, kDevice, kCompute}},
      {Server::kCoordinator,
       "/silo.v1.CoordinatorService/Heartbeat",
       {kInstitution, kDevice, kCompute}},
      {Server::kCoordinator,
       "/silo.v1.CoordinatorService/ListNodes",
       {kInstitution, kDevice, kCompute, kOperator}},
      {Server::kCoordinator,
       "/silo.v1.CoordinatorService/ReportProbes",
       {kInstitution, kDevice, kCompute}},
      {Server::kCoordinator,
       "/silo.v1.CoordinatorService/GetNetworkMatrix",
       {kInstitution, kDevice, kCompute, kOperator}},
      {Server::kCoordinator, "/silo.v1.CoordinatorService/MeasureNetwork", {kOperator}},
      {Server::kCoordinator, "/silo.v1.CoordinatorService/PlaceSession", {kInstitution, kDevice}},
      {Server::kCoordinator, "/silo.v1.CoordinatorService/ListSessions", {kOperator}},
      {Server::kCoordinator, "/silo.v1.QueryService/Query", {kOperator}},
  };
  return *rules;
}

}  // namespace

std::string_view ServerName(Server server) {
  return server == Server::kNode ? "silo-node" : "silo-coordinator";
}

std::span<const RpcRule> RpcRules() { return Rules(); }

absl::StatusOr<crypto::PeerIdentity> AuthorizeCall(const grpc::ServerContextBase& context,
                                                   Server server, std::string_view method) {
  SILO_ASSIGN_OR_RETURN(crypto::PeerIdentity caller, crypto::CallerIdentity(context));
  const auto rule = std::find_if(Rules().begin(), Rules().end(), [&](const RpcRule& r) {
    return r.server == server && r.method == method;
  });
  if (rule == Rules().end()) {
    return absl::PermissionDeniedError(
        StrCat(method, " is not open to any caller on ", ServerName(server)));
  }
  if (std::find(rule->allowed.begin(), rule->allowed.end(), caller.role) == rule->allowed.end()) {
    return absl::PermissionDeniedError(StrCat("a ", crypto::PeerRoleName(caller.role),
                                              " may not call ", method, " on ",
                                              ServerName(server)));
  }
  return caller;
}

}  // namespace silo::node
