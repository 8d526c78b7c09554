// The node's configuration file (node.yaml). Paths are relative to the file's folder.
//
//   node_id: hospital-a            # letters, digits, '.', '_' and '-'
//   role: institution              # institution | device | compute
//   data_dir: data/hospital-a      # the document store and the index live here (a compute
//                                  # node may leave data_dir and models out)
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
//   serve:                         # what `silo-node serve` needs; optional for the other commands
//     listen: 0.0.0.0:7101         # host:port to bind; port 0 takes a free one
//     advertise: 10.0.0.5:7101     # host:port peers dial; default: listen's host, bound port
//     coordinator: 10.0.0.1:7000   # silo-coordinator; absent: the node serves on its own
//     tls:                         # federation CA, this node's certificate and key (PEM)
//       ca: certs/ca.pem
//       cert: certs/hospital-a.pem
//       key: certs/hospital-a.key
//     citations: false             # whether Retrieve discloses a chunk's title and source path
//     plaintext_baseline: false    # evaluation only: chunk text to CENTRALIZED sessions
//
// A misspelt or unknown key is an error, not a silent default.
#ifndef SILO_NODE_NODE_CONFIG_H_
#define SILO_NODE_NODE_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "crypto/mtls.h"
#include "retrieval/knowledge_base.h"

namespace silo::node {

struct ServeConfig {
  std::string listen;       // host:port; empty when the file has no `serve` section
  std::string advertise;    // empty: listen's host with the bound port
  std::string coordinator;  // empty: no coordinator
  crypto::TlsFiles tls;
  bool citations = false;
  // Evaluation only: hand chunk text to the querier of a CENTRALIZED session (the plaintext
  // baseline). Never in a federation that means its privacy.
  bool plaintext_baseline = false;
};

struct NodeConfig {
  std::string node_id;
  std::string role;
  std::string node_key_file;  // empty: the key comes from $SILO_NODE_KEY
  // data_dir empty: no corpus (a compute node).
  retrieval::KnowledgeBaseOptions knowledge_base;
  ServeConfig serve;
};

// NotFound / PermissionDenied when the file cannot be read; InvalidArgument, naming the file,
// key and line, for anything malformed, out of range or unknown.
absl::StatusOr<NodeConfig> LoadNodeConfig(const std::string& path);

}  // namespace silo::node

#endif  // SILO_NODE_NODE_CONFIG_H_
