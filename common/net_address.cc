#include "common/net_address.h"

#include <cstdint>

#include "absl/strings/escaping.h"
#include "common/strings.h"

namespace silo {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

absl::Status CheckHostPort(std::string_view address, bool allow_port_zero) {
  const auto invalid = [address](std::string_view why) {
    const std::string_view shown = address.substr(0, kMaxAddressBytes);
    return absl::InvalidArgumentError(StrCat(
        "address '", absl::CHexEscape(absl::string_view(shown.data(), shown.size())), "' ", why));
  };
  if (address.size() > kMaxAddressBytes) {
    return invalid(StrCat("has more than ", kMaxAddressBytes, " bytes"));
  }
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return invalid("is not host:port");
  const std::string_view host = address.substr(0, colon);
  const std::string_view port = address.substr(colon + 1);
  if (host.empty()) return invalid("has no host");
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return invalid("has a malformed IPv6 host");
    for (const char c : host.substr(1, host.size() - 2)) {
      const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                      c == ':' || c == '.';
      if (!ok) return invalid("has a malformed IPv6 host");
    }
  } else {
    for (const char c : host) {
      if (!IsNameChar(c)) {
        return invalid("has a host with characters other than letters, digits, '.', '_', '-'");
      }
    }
  }
  const std::string_view range = allow_port_zero ? "0..65535" : "1..65535";
  if (port.empty() || port.size() > 5) return invalid(StrCat("needs a port in ", range));
  uint32_t value = 0;
  for (const char c : port) {
    if (c < '0' || c > '9') return invalid(StrCat("needs a port in ", range));
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if ((value == 0 && !allow_port_zero) || value > 65535) {
    return invalid(StrCat("needs a port in ", range));
  }
  return absl::OkStatus();
}

}  // namespace silo
