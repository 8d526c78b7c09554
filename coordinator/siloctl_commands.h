// siloctl: the operator's command-line client of a federation. Each command dials the
// coordinator over mTLS with an operator certificate, as named in siloctl.yaml:
//
//   coordinator: 127.0.0.1:7000
//   tls: {ca: certs/ca.pem, cert: certs/alice.pem, key: certs/alice.key}
//   timeout_ms: 30000          # deadline of each call; optional
//
// Thread-compatible (one command at a time).
#ifndef SILO_COORDINATOR_SILOCTL_COMMANDS_H_
#define SILO_COORDINATOR_SILOCTL_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "crypto/mtls.h"

namespace silo::coordinator {

struct SiloctlConfig {
  std::string coordinator;  // host:port
  crypto::TlsFiles tls;
  absl::Duration timeout = absl::Seconds(30);
};

// NotFound / PermissionDenied when the file cannot be read; InvalidArgument for bad contents.
absl::StatusOr<SiloctlConfig> LoadSiloctlConfig(const std::string& path);

struct NodesCommandOptions {
  bool probe = false;           // measure the network now (MeasureNetwork) before printing
  bool include_offline = true;  // also nodes that missed their heartbeats
};
// The nodes, their roles and state, and the RTT/throughput matrix.
absl::Status RunNodes(const SiloctlConfig& config, const NodesCommandOptions& options,
                      std::ostream& out);

struct QueryCommandOptions {
  std::string question;
  std::string mode = "retrieve";  // retrieve | fedrag | dragon | local | centralized
  std::string querier;            // empty: the coordinator picks one
  int32_t top_k = 8;
  std::string merge = "score";  // score | rrf
  int32_t owner_timeout_ms = 2000;
  // Generation (fedrag, local).
  int32_t max_tokens = 128;
  std::string kv_mode = "shard";  // shard (stored KV rotated) | prefill
  std::string kv_dtype = "f32";   // f32 | f16 | bf16: K'/V' on the wire
  std::string key_scope;          // session | chunk | block; empty: the federation's default
  int32_t block_rows = 0;         // with key_scope block; 0: head_dim
  std::string mixer;              // sphps | dense; empty: default
  int32_t protect_layers = -1;    // first layers that do not delegate chunk attention; -1: default
  std::string protect_mode;       // skip | owner; empty: the federation's default (skip)
  bool continue_on_compute_failure = false;  // finish without the remote chunks
  // DRAGON (top_k: chunks each side retrieves).
  float distribution_top_p = 1;   // < 1: distributions travel top-p truncated
  int32_t lookahead = -1;         // unconfirmed tokens decoded ahead; -1: default; 0: sync
  std::string aggregator_policy;  // scheduled | fixed | alternate; empty: scheduled
  int32_t alternate_every = 4;    // with alternate
};
// Places and runs a query; prints the session, the answer as it streams (fedrag, local), the
// sources, the owners that did not answer, and time to first token and tokens/s.
absl::Status RunQuery(const SiloctlConfig& config, const QueryCommandOptions& options,
                      std::ostream& out);

// The session log, newest first.
absl::Status RunSessions(const SiloctlConfig& config, int32_t limit, std::ostream& out);

}  // namespace silo::coordinator

#endif  // SILO_COORDINATOR_SILOCTL_COMMANDS_H_
