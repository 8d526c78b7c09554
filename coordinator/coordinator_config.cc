#include "coordinator/coordinator_config.h"

#include <cstdint>
#include <string_view>

#include "common/config.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::coordinator {
namespace {

std::string KeyName(const ConfigNode& node, std::string_view key) {
  return node.path().empty() ? std::string(key) : StrCat(node.path(), ".", key);
}

absl::Status OutOfRange(const std::string& file, const ConfigNode& node, std::string_view key,
                        std::string_view expected, std::string_view value) {
  return absl::InvalidArgumentError(
      StrCat(file, ": key '", KeyName(node, key), "' must be ", expected, ", not ", value));
}

// An integer in [min, max], `fallback` when absent.
absl::StatusOr<int64_t> IntInRange(const std::string& file, const ConfigNode& node,
                                   std::string_view key, int64_t fallback, int64_t min,
                                   int64_t max) {
  SILO_ASSIGN_OR_RETURN(const int64_t value, node.GetOr<int64_t>(key, fallback));
  if (value < min || value > max) {
    return OutOfRange(file, node, key, StrCat("in ", min, "..", max), StrCat(value));
  }
  return value;
}

// A required path, not empty, resolved against the config file's folder.
absl::StatusOr<std::string> PathValue(const std::string& file, const ConfigNode& node,
                                      std::string_view key) {
  SILO_ASSIGN_OR_RETURN(const std::string value, node.Get<std::string>(key));
  if (value.empty()) return OutOfRange(file, node, key, "a path", "empty");
  return ResolveConfigPath(file, value);
}

}  // namespace

absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(const ConfigNode root, ConfigNode::LoadFile(path));
  CoordinatorConfig config;

  SILO_ASSIGN_OR_RETURN(config.listen, root.Get<std::string>("listen"));
  if (absl::Status valid = CheckHostPort(config.listen, /*allow_port_zero=*/true); !valid.ok()) {
    return absl::InvalidArgumentError(StrCat(path, ": key 'listen': ", valid.message()));
  }
  SILO_ASSIGN_OR_RETURN(config.state.data_dir, PathValue(path, root, "data_dir"));
  SILO_ASSIGN_OR_RETURN(const ConfigNode tls, root.Child("tls"));
  SILO_ASSIGN_OR_RETURN(config.tls.ca_file, PathValue(path, tls, "ca"));
  SILO_ASSIGN_OR_RETURN(config.tls.cert_file, PathValue(path, tls, "cert"));
  SILO_ASSIGN_OR_RETURN(config.tls.key_file, PathValue(path, tls, "key"));

  SILO_ASSIGN_OR_RETURN(const int64_t heartbeat_ms,
                        IntInRange(path, root, "heartbeat_interval_ms", 2000, 100, 600'000));
  config.state.heartbeat_interval = absl::Milliseconds(heartbeat_ms);
  SILO_ASSIGN_OR_RETURN(const int64_t missed,
                        IntInRange(path, root, "missed_heartbeats", 3, 1, 100));
  config.state.missed_heartbeats = static_cast<int32_t>(missed);
  SILO_ASSIGN_OR_RETURN(const int64_t probe_ms,
                        IntInRange(path, root, "probe_interval_ms", 30'000, 0, 86'400'000));
  if (probe_ms != 0 && probe_ms < 1000) {
    return OutOfRange(path, root, "probe_interval_ms", "0 (never) or in 1000..86400000",
                      StrCat(probe_ms));
  }
  config.probe_interval = absl::Milliseconds(probe_ms);
  SILO_ASSIGN_OR_RETURN(config.state.ewma_alpha, root.GetOr<double>("ewma_alpha", 0.3));
  if (!(config.state.ewma_alpha > 0 && config.state.ewma_alpha <= 1)) {
    return OutOfRange(path, root, "ewma_alpha", "in (0, 1]", StrCat(config.state.ewma_alpha));
  }
  SILO_ASSIGN_OR_RETURN(config.state.session_log_limit,
                        IntInRange(path, root, "session_log_limit", 10'000, 1, 10'000'000));
  SILO_RETURN_IF_ERROR(root.CheckAllKeysUsed());
  return config;
}

}  // namespace silo::coordinator
