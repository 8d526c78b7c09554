#include "node/node_config.h"

#include "common/config.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/certificate.h"

namespace silo::node {
namespace {

absl::StatusOr<int32_t> IntAtLeast(const ConfigNode& node, std::string_view key, int32_t fallback,
                                   int32_t min) {
  SILO_ASSIGN_OR_RETURN(const int32_t value, node.GetOr<int32_t>(key, fallback));
  if (value < min) {
    return absl::InvalidArgumentError(StrCat("key '",
                                             node.path().empty() ? "" : StrCat(node.path(), "."),
                                             key, "' must be at least ", min, ", not ", value));
  }
  return value;
}

// An address under `serve`, checked; InvalidArgument naming the file and key.
absl::Status CheckAddress(const std::string& file, std::string_view key, std::string_view address,
                          bool allow_port_zero = false) {
  if (absl::Status valid = CheckHostPort(address, allow_port_zero); !valid.ok()) {
    return absl::InvalidArgumentError(StrCat(file, ": serve.", key, ": ", valid.message()));
  }
  return absl::OkStatus();
}

absl::Status LoadServeConfig(const std::string& file, const ConfigNode& root, ServeConfig& serve) {
  SILO_ASSIGN_OR_RETURN(const ConfigNode node, root.ChildOrEmpty("serve"));
  SILO_ASSIGN_OR_RETURN(serve.listen, node.GetOr<std::string>("listen", ""));
  SILO_ASSIGN_OR_RETURN(serve.advertise, node.GetOr<std::string>("advertise", ""));
  SILO_ASSIGN_OR_RETURN(serve.coordinator, node.GetOr<std::string>("coordinator", ""));
  SILO_ASSIGN_OR_RETURN(serve.citations, node.GetOr<bool>("citations", false));
  SILO_ASSIGN_OR_RETURN(serve.plaintext_baseline, node.GetOr<bool>("plaintext_baseline", false));
  if (!serve.listen.empty()) {
    SILO_RETURN_IF_ERROR(CheckAddress(file, "listen", serve.listen, /*allow_port_zero=*/true));
  }
  if (!serve.advertise.empty()) {
    SILO_RETURN_IF_ERROR(CheckAddress(file, "advertise", serve.advertise));
  }
  if (!serve.coordinator.empty()) {
    SILO_RETURN_IF_ERROR(CheckAddress(file, "coordinator", serve.coordinator));
  }
  SILO_ASSIGN_OR_RETURN(const ConfigNode tls, node.ChildOrEmpty("tls"));
  SILO_ASSIGN_OR_RETURN(const std::string ca, tls.GetOr<std::string>("ca", ""));
  SILO_ASSIGN_OR_RETURN(const std::string cert, tls.GetOr<std::string>("cert", ""));
  SILO_ASSIGN_OR_RETURN(const std::string key, tls.GetOr<std::string>("key", ""));
  serve.tls = {.ca_file = ResolveConfigPath(file, ca),
               .cert_file = ResolveConfigPath(file, cert),
               .key_file = ResolveConfigPath(file, key)};
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(const ConfigNode root, ConfigNode::LoadFile(path));
  NodeConfig config;
  SILO_ASSIGN_OR_RETURN(config.node_id, root.Get<std::string>("node_id"));
  if (absl::Status valid = crypto::CheckNodeId(config.node_id); !valid.ok()) {
    return absl::InvalidArgumentError(StrCat(path, ": node_id: ", valid.message()));
  }
  SILO_ASSIGN_OR_RETURN(config.role, root.GetEnum("role", {"institution", "device", "compute"}));
  SILO_ASSIGN_OR_RETURN(std::string node_key_file, root.GetOr<std::string>("node_key_file", ""));
  config.node_key_file = ResolveConfigPath(path, node_key_file);

  SILO_RETURN_IF_ERROR(LoadServeConfig(path, root, config.serve));

  retrieval::KnowledgeBaseOptions& kb = config.knowledge_base;
  SILO_ASSIGN_OR_RETURN(kb.threads, IntAtLeast(root, "threads", 0, 0));
  const bool needs_corpus = config.role != "compute";
  SILO_ASSIGN_OR_RETURN(const std::string data_dir, needs_corpus
                                                        ? root.Get<std::string>("data_dir")
                                                        : root.GetOr<std::string>("data_dir", ""));
  kb.data_dir = ResolveConfigPath(path, data_dir);
  if (!needs_corpus && kb.data_dir.empty()) {
    SILO_RETURN_IF_ERROR(root.CheckAllKeysUsed());
    return config;
  }
  SILO_ASSIGN_OR_RETURN(const ConfigNode models, root.Child("models"));
  SILO_ASSIGN_OR_RETURN(const std::string decoder, models.Get<std::string>("decoder"));
  SILO_ASSIGN_OR_RETURN(const std::string embedder, models.Get<std::string>("embedder"));
  kb.decoder_model = ResolveConfigPath(path, decoder);
  kb.embedder_model = ResolveConfigPath(path, embedder);

  SILO_ASSIGN_OR_RETURN(const ConfigNode retrieval, root.ChildOrEmpty("retrieval"));
  SILO_ASSIGN_OR_RETURN(kb.chunking.max_tokens,
                        IntAtLeast(retrieval, "chunk_tokens", kb.chunking.max_tokens, 1));
  SILO_ASSIGN_OR_RETURN(kb.chunking.overlap_tokens,
                        IntAtLeast(retrieval, "chunk_overlap", kb.chunking.overlap_tokens, 0));
  SILO_RETURN_IF_ERROR(retrieval::ValidateChunkerOptions(kb.chunking));
  SILO_ASSIGN_OR_RETURN(const std::string kv_shards,
                        retrieval.GetOr<std::string>("kv_shards", "lazy"));
  SILO_ASSIGN_OR_RETURN(kb.kv_shards, retrieval::ParseKvShardMode(kv_shards));

  SILO_ASSIGN_OR_RETURN(const ConfigNode index, retrieval.ChildOrEmpty("index"));
  SILO_ASSIGN_OR_RETURN(const std::string kind, index.GetOr<std::string>("kind", "flat"));
  SILO_ASSIGN_OR_RETURN(kb.index.kind, retrieval::ParseIndexKind(kind));
  SILO_ASSIGN_OR_RETURN(kb.index.nlist, index.GetOr<int32_t>("nlist", kb.index.nlist));
  SILO_ASSIGN_OR_RETURN(kb.index.nprobe, index.GetOr<int32_t>("nprobe", kb.index.nprobe));
  SILO_ASSIGN_OR_RETURN(kb.index.hnsw_m, index.GetOr<int32_t>("hnsw_m", kb.index.hnsw_m));
  SILO_ASSIGN_OR_RETURN(kb.index.ef_construction,
                        index.GetOr<int32_t>("ef_construction", kb.index.ef_construction));
  SILO_ASSIGN_OR_RETURN(kb.index.ef_search, index.GetOr<int32_t>("ef_search", kb.index.ef_search));
  if (absl::Status valid = kb.index.Validate(); !valid.ok()) {
    return absl::InvalidArgumentError(StrCat(path, ": retrieval.index: ", valid.message()));
  }
  SILO_RETURN_IF_ERROR(root.CheckAllKeysUsed());
  return config;
}

}  // namespace silo::node
