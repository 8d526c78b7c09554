// The node's configuration file (node.yaml). Paths are relative to the file's folder.
//
//   node_id: hospital-a            # letters, digits, '.', '_' and '-'
//   role: institution              # institution | device | compute
//   data_dir: data/hospital-a      # the document store and the index live here
//   node_key_file: keys/hospital-a.key   # 64 hex digits, mode 0600; or $SILO_NODE_KEY
//   threads: 0                     # 0: every core
//   models:
//     decoder: ../models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
//     embedder: ../models/all-minilm-l6-v2
//   retrieval:                     # optional; these are the defaults
//     chunk_tokens: 256
//     chunk_overlap: 32
//     kv_shards: lazy              # eager | lazy | off
//     index:
//       kind: flat                 # flat | ivf | hnsw
//       nlist: 1024                # ivf
//       nprobe: 32                 # ivf
//       hnsw_m: 32                 # hnsw
//       ef_construction: 80        # hnsw
//       ef_search: 64              # hnsw
//
// A misspelt or unknown key is an error, not a silent default.
#ifndef SILO_NODE_NODE_CONFIG_H_
#define SILO_NODE_NODE_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "retrieval/knowledge_base.h"

namespace silo::node {

struct NodeConfig {
  std::string node_id;
  std::string role;
  std::string node_key_file;  // empty: the key comes from $SILO_NODE_KEY
  retrieval::KnowledgeBaseOptions knowledge_base;
};

// NotFound / PermissionDenied when the file cannot be read; InvalidArgument, naming the file,
// key and line, for anything malformed, out of range or unknown.
absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path);

}  // namespace silo::node

#endif  // SILO_NODE_NODE_CONFIG_H_
