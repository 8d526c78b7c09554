#include "node/node_config.h"

#include <filesystem>

#include "common/config.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::node {
namespace {

namespace fs = std::filesystem;

// `path` as written in the file, resolved against the file's folder.
std::string Resolve(const fs::path& base, const std::string& path) {
  if (path.empty()) return path;
  const fs::path p(path);
  return (p.is_absolute() ? p : base / p).lexically_normal().string();
}

absl::Status CheckNodeId(const std::string& id, const std::string& file) {
  if (id.empty() || id.size() > 64) {
    return absl::InvalidArgumentError(StrCat(file, ": node_id must be 1 to 64 characters"));
  }
  for (const char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          StrCat(file, ": node_id \"", id, "\" may hold only letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

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

}  // namespace

absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(const ConfigNode root, ConfigNode::LoadFile(path));
  const fs::path base = fs::absolute(path).parent_path();
  NodeConfig config;
  SILO_ASSIGN_OR_RETURN(config.node_id, root.Get<std::string>("node_id"));
  SILO_RETURN_IF_ERROR(CheckNodeId(config.node_id, path));
  SILO_ASSIGN_OR_RETURN(config.role, root.GetEnum("role", {"institution", "device", "compute"}));
  SILO_ASSIGN_OR_RETURN(std::string node_key_file, root.GetOr<std::string>("node_key_file", ""));
  config.node_key_file = Resolve(base, node_key_file);

  retrieval::KnowledgeBaseOptions& kb = config.knowledge_base;
  SILO_ASSIGN_OR_RETURN(const std::string data_dir, root.Get<std::string>("data_dir"));
  kb.data_dir = Resolve(base, data_dir);
  SILO_ASSIGN_OR_RETURN(kb.threads, IntAtLeast(root, "threads", 0, 0));
  SILO_ASSIGN_OR_RETURN(const ConfigNode models, root.Child("models"));
  SILO_ASSIGN_OR_RETURN(const std::string decoder, models.Get<std::string>("decoder"));
  SILO_ASSIGN_OR_RETURN(const std::string embedder, models.Get<std::string>("embedder"));
  kb.decoder_model = Resolve(base, decoder);
  kb.embedder_model = Resolve(base, embedder);

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
