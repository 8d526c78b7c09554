// Checks of "host:port" addresses as they appear in config files and in registrations.
//
// Thread-safe (a pure function).
#ifndef SILO_COMMON_NET_ADDRESS_H_
#define SILO_COMMON_NET_ADDRESS_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace silo {

inline constexpr size_t kMaxAddressBytes = 256;

// OK when `address` is "host:port": host a DNS name or IPv4 address ([A-Za-z0-9._-]+) or a
// bracketed IPv6 address ("[::1]"), port a decimal number in 1..65535 (0 too with
// allow_port_zero: "any free port" for a listening address), at most kMaxAddressBytes in all.
// InvalidArgument saying what is wrong otherwise.
absl::Status CheckHostPort(std::string_view address, bool allow_port_zero = false);

}  // namespace silo

#endif  // SILO_COMMON_NET_ADDRESS_H_
