// `silo-node ingest` and `silo-node search`: the node's documents in and the best chunks out,
// on this machine (DESIGN.md §4).
#ifndef SILO_NODE_KNOWLEDGE_COMMANDS_H_
#define SILO_NODE_KNOWLEDGE_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "node/node_config.h"

namespace silo::node {

// The node key (node_key_file or $SILO_NODE_KEY). With create_key, a missing key file is
// created when the node has no store yet (a key made later could not open an existing store).
absl::StatusOr<crypto::SecretBytes> LoadNodeKey(const NodeConfig& config, bool create_key);

struct IngestCommandOptions {
  std::string config_path;
  std::vector<std::string> paths;  // files and folders
  // true: a progress bar redrawn in place on `progress` (a terminal); false: a plain line every
  // few seconds (logs).
  bool progress_bar = false;
};

// Ingests the paths into the node's knowledge base, reporting progress on `progress` and a
// summary on `out`. On the first ingest, a node_key_file that does not exist yet is created
// (a fresh random key, mode 0600). The errors of the configuration, the key and the ingest;
// files that could not be read are listed in the summary and make it DataLoss at the end.
absl::Status RunIngest(const IngestCommandOptions& options, std::ostream& out,
                       std::ostream& progress);

struct SearchCommandOptions {
  std::string config_path;
  std::string question;
  int k = 5;
};

// Prints the k best chunks for the question: rank, score, source, title and the text's start.
absl::Status RunSearch(const SearchCommandOptions& options, std::ostream& out);

}  // namespace silo::node

#endif  // SILO_NODE_KNOWLEDGE_COMMANDS_H_
