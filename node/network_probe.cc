#include "node/network_probe.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "common/strings.h"
#include "grpcpp/client_context.h"
#include "node/grpc_status.h"

namespace silo::node {
namespace {

// One Probe call; its wall time in milliseconds.
absl::StatusOr<double> TimedProbe(v1::NodeControlService::StubInterface& stub,
                                  const v1::ProbeRequest& request, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  v1::ProbeResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = stub.Probe(&context, request, &response);
  const auto end = std::chrono::steady_clock::now();
  if (!status.ok()) return FromGrpcStatus(status);
  return std::chrono::duration<double, std::milli>(end - start).count();
}

// The q-quantile (0..1) of sorted values, nearest rank.
double Quantile(const std::vector<double>& sorted, double q) {
  const size_t index =
      std::min(sorted.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted.size())));
  return sorted[index];
}

}  // namespace

absl::Status ValidateProbeOptions(const ProbeOptions& options) {
  if (options.n_probes < 1 || options.n_probes > kMaxProbes) {
    return absl::InvalidArgumentError(
        StrCat("n_probes must be in [1, ", kMaxProbes, "], not ", options.n_probes));
  }
  if (options.probe_bytes < 0 || options.probe_bytes > kMaxProbeBytes) {
    return absl::InvalidArgumentError(
        StrCat("probe_bytes must be in [0, ", kMaxProbeBytes, "], not ", options.probe_bytes));
  }
  if (options.throughput_bytes < 0 || options.throughput_bytes > kMaxThroughputBytes) {
    return absl::InvalidArgumentError(StrCat("throughput_bytes must be in [0, ",
                                             kMaxThroughputBytes, "], not ",
                                             options.throughput_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::NetworkMeasurement> MeasurePeer(v1::NodeControlService::StubInterface& stub,
                                                   const std::string& peer_node_id,
                                                   const ProbeOptions& options) {
  if (absl::Status valid = ValidateProbeOptions(options); !valid.ok()) return valid;
  v1::ProbeRequest small;
  small.set_payload(std::string(static_cast<size_t>(options.probe_bytes), '\0'));
  if (absl::StatusOr<double> warm = TimedProbe(stub, small, options.timeout); !warm.ok()) {
    return warm.status();
  }
  std::vector<double> rtts;
  for (int32_t i = 0; i < options.n_probes; ++i) {
    absl::StatusOr<double> rtt = TimedProbe(stub, small, options.timeout);
    if (!rtt.ok()) return rtt.status();
    rtts.push_back(*rtt);
  }
  std::sort(rtts.begin(), rtts.end());
  v1::NetworkMeasurement measurement;
  measurement.set_peer_node_id(peer_node_id);
  measurement.set_rtt_ms(Quantile(rtts, 0.5));
  measurement.set_rtt_p90_ms(Quantile(rtts, 0.9));
  measurement.set_n_probes(static_cast<uint32_t>(options.n_probes));
  if (options.throughput_bytes > 0) {
    v1::ProbeRequest bulk;
    bulk.set_response_bytes(static_cast<uint32_t>(options.throughput_bytes));
    absl::StatusOr<double> ms = TimedProbe(stub, bulk, options.timeout);
    if (!ms.ok()) return ms.status();
    // The transfer time is the call's minus one small round trip; floored so a fast loopback
    // does not divide by zero.
    const double transfer_ms = std::max(*ms - measurement.rtt_ms(), 1e-3);
    measurement.set_throughput_mbps(static_cast<double>(options.throughput_bytes) * 8.0 /
                                    (transfer_ms * 1e3));
  }
  measurement.set_measured_at_unix_ns(absl::ToUnixNanos(absl::Now()));
  return measurement;
}

}  // namespace silo::node
