#include "node/node_info.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::node {

absl::StatusOr<v1::ModelFingerprint> FingerprintProto(std::string_view name,
                                                      std::string_view fingerprint) {
  constexpr std::string_view kPrefix = "sha256:";
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const std::string_view hex = fingerprint.substr(std::min(fingerprint.size(), kPrefix.size()));
  if (fingerprint.substr(0, kPrefix.size()) != kPrefix || hex.size() != 64 ||
      !std::all_of(hex.begin(), hex.end(), [&](char c) { return nibble(c) >= 0; })) {
    return absl::InvalidArgumentError(
        StrCat("\"", fingerprint, "\" is not sha256:<64 lowercase hex digits>"));
  }
  std::string bytes;
  for (size_t i = 0; i < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1])));
  }
  v1::ModelFingerprint proto;
  proto.set_name(std::string(name));
  proto.set_sha256(bytes);
  return proto;
}

v1::NodeRole NodeRoleProto(crypto::PeerRole role) {
  switch (role) {
    case crypto::PeerRole::kInstitution:
      return v1::NODE_ROLE_INSTITUTION;
    case crypto::PeerRole::kDevice:
      return v1::NODE_ROLE_DEVICE;
    case crypto::PeerRole::kCompute:
      return v1::NODE_ROLE_COMPUTE;
    case crypto::PeerRole::kCoordinator:
      return v1::NODE_ROLE_COORDINATOR;
    case crypto::PeerRole::kOperator:
      return v1::NODE_ROLE_OPERATOR;
  }
  return v1::NODE_ROLE_UNSPECIFIED;
}

absl::StatusOr<v1::NodeInfo> MakeNodeInfo(const crypto::PeerIdentity& identity,
                                          const std::string& address,
                                          const retrieval::KnowledgeBase* corpus) {
  v1::NodeInfo info;
  info.set_node_id(identity.node_id);
  info.set_role(NodeRoleProto(identity.role));
  info.set_address(address);
  info.set_cert_identity(crypto::SpiffeId(identity));
  info.set_version(SILO_VERSION);
  v1::NodeCapabilities& capabilities = *info.mutable_capabilities();
  capabilities.set_cpu_cores(std::thread::hardware_concurrency());
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) {
    capabilities.set_memory_bytes(static_cast<int64_t>(pages) * page_size);
  }
  if (corpus == nullptr) return info;

  capabilities.add_modes(v1::GENERATION_MODE_RETRIEVE);
  capabilities.set_n_chunks(static_cast<uint64_t>(corpus->index().size()));
  const engine::ModelConfig& config = corpus->decoder().model().config();
  SILO_ASSIGN_OR_RETURN(
      *info.mutable_model(),
      FingerprintProto(std::filesystem::path(corpus->options().decoder_model).filename().string(),
                       corpus->decoder_fingerprint()));
  info.mutable_model()->set_n_layers(static_cast<uint32_t>(config.n_layers));
  info.mutable_model()->set_n_heads(static_cast<uint32_t>(config.n_heads));
  info.mutable_model()->set_n_kv_heads(static_cast<uint32_t>(config.n_kv_heads));
  info.mutable_model()->set_head_dim(static_cast<uint32_t>(config.head_dim));
  info.mutable_model()->set_dim(static_cast<uint32_t>(config.dim));
  info.mutable_model()->set_vocab_size(static_cast<uint32_t>(config.vocab_size));
  info.mutable_model()->set_n_ctx(static_cast<uint32_t>(config.n_ctx_train));
  SILO_ASSIGN_OR_RETURN(
      *info.mutable_embedder(),
      FingerprintProto(std::filesystem::path(corpus->options().embedder_model).filename().string(),
                       corpus->embedder_fingerprint()));
  info.mutable_embedder()->set_dim(static_cast<uint32_t>(corpus->embedding_dim()));
  return info;
}

}  // namespace silo::node
