// Measuring the network to a peer (DESIGN.md §8): round-trip time as the median of small Probe
// echoes, throughput from one bulk echo.
//
// Thread-safe (no shared state; the stub must be usable from the calling thread).
#ifndef SILO_NODE_NETWORK_PROBE_H_
#define SILO_NODE_NETWORK_PROBE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "silo/v1/common.pb.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

struct ProbeOptions {
  int32_t n_probes = 5;          // small echoes, 1..100
  int32_t probe_bytes = 64;      // payload of each, ≤ 1 MiB
  int64_t throughput_bytes = 0;  // bytes of the bulk echo's reply; 0 skips it, ≤ 64 MiB
  absl::Duration timeout = absl::Seconds(5);  // deadline of each call
};
inline constexpr int32_t kMaxProbes = 100;
inline constexpr int32_t kMaxProbeBytes = 1 << 20;
inline constexpr int64_t kMaxThroughputBytes = int64_t{64} << 20;

// InvalidArgument when an option is out of range.
absl::Status ValidateProbeOptions(const ProbeOptions& options);

// Probes `peer` through `stub`. The first echo also warms the connection and is not counted.
// The status of the first failed call (UNAVAILABLE, DEADLINE_EXCEEDED, ...) on failure.
absl::StatusOr<v1::NetworkMeasurement> MeasurePeer(v1::NodeControlService::StubInterface& stub,
                                                   const std::string& peer_node_id,
                                                   const ProbeOptions& options);

}  // namespace silo::node

#endif  // SILO_NODE_NETWORK_PROBE_H_
