// Who may call what: the one table of allowed caller roles for every RPC that silo serves
// (DESIGN.md §9). The caller's role and id come from the SPIFFE URI of its mTLS client
// certificate (spiffe://silo/<role>/<id>); each handler calls AuthorizeCall first.
//
// Thread-safe (the table is constant).
#ifndef SILO_NODE_RPC_ROLES_H_
#define SILO_NODE_RPC_ROLES_H_

#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/certificate.h"
#include "grpcpp/server_context.h"

namespace silo::node {

// The process that serves an RPC: QueryService is served by both, with other callers.
enum class Server { kNode, kCoordinator };
std::string_view ServerName(Server server);

struct RpcRule {
  Server server;
  std::string_view method;  // full gRPC method name, "/silo.v1.RetrievalService/Retrieve"
  std::vector<crypto::PeerRole> allowed;
};

// Every rule, in one list (tests walk it).
std::span<const RpcRule> RpcRules();

// The caller's identity if its role may call `method` on `server`. Unauthenticated when the
// call carries no verified client certificate or it names no SPIFFE identity; PermissionDenied
// when the role is not allowed, or the method is not in the table (nothing is open by default).
absl::StatusOr<crypto::PeerIdentity> AuthorizeCall(const grpc::ServerContextBase& context,
                                                   Server server, std::string_view method);

}  // namespace silo::node

#endif  // SILO_NODE_RPC_ROLES_H_
