// The coordinator's configuration file (coordinator.yaml). Paths are relative to the file's
// folder.
//
//   listen: 127.0.0.1:7000          # host:port of the gRPC endpoint (port 0: any free port)
//   data_dir: coordinator-data      # RocksDB of membership, network matrix and session log
//   tls: {ca: certs/ca.pem, cert: certs/coordinator.pem, key: certs/coordinator.key}
//   heartbeat_interval_ms: 2000     # 100..600000
//   missed_heartbeats: 3            # a node is down after this many intervals without one, 1..100
//   probe_interval_ms: 30000        # how often nodes are asked to probe peers; 0 = never, else
//                                   # 1000..86400000 (one day)
//   ewma_alpha: 0.3                 # weight of a new measurement, (0, 1]
//   session_log_limit: 10000        # oldest session records pruned beyond this, 1..10^7
//
// listen, data_dir and tls (with its three keys) are required; the other keys default to the
// values shown. A misspelt or unknown key is an error, not a silent default.
#ifndef SILO_COORDINATOR_COORDINATOR_CONFIG_H_
#define SILO_COORDINATOR_COORDINATOR_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/coordinator_state.h"
#include "crypto/mtls.h"

namespace silo::coordinator {

struct CoordinatorConfig {
  std::string listen;                                 // "host:port", as checked by CheckHostPort
  crypto::TlsFiles tls;                               // resolved against the config file's folder
  absl::Duration probe_interval = absl::Seconds(30);  // ZeroDuration(): never
  // data_dir (resolved), heartbeat_interval, missed_heartbeats, ewma_alpha, session_log_limit.
  CoordinatorStateOptions state;
};

// NotFound / PermissionDenied when the file cannot be read; InvalidArgument, naming the file and
// the key, for anything malformed, missing, out of range or unknown.
absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path);

}  // namespace silo::coordinator

#endif  // SILO_COORDINATOR_COORDINATOR_CONFIG_H_
