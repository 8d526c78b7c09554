// What a node tells the federation about itself (silo.v1.NodeInfo): identity from its
// certificate, address, model fingerprints and capabilities.
//
// Thread-safe (pure functions).
#ifndef SILO_NODE_NODE_INFO_H_
#define SILO_NODE_NODE_INFO_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/certificate.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/common.pb.h"

namespace silo::node {

// v1::ModelFingerprint of a "sha256:<64 hex digits>" fingerprint (retrieval::ModelFingerprint).
// InvalidArgument for any other form.
absl::StatusOr<v1::ModelFingerprint> FingerprintProto(std::string_view name,
                                                      std::string_view fingerprint);

// The NodeInfo of this node. `corpus` is null for a node without one (compute).
absl::StatusOr<v1::NodeInfo> MakeNodeInfo(const crypto::PeerIdentity& identity,
                                          const std::string& address,
                                          const retrieval::KnowledgeBase* corpus);

// The proto role of a certificate role.
v1::NodeRole NodeRoleProto(crypto::PeerRole role);

}  // namespace silo::node

#endif  // SILO_NODE_NODE_INFO_H_
