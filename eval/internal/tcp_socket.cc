#include "eval/internal/tcp_socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::eval::internal {

absl::StatusOr<Listener> ListenOnLoopback() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(StrCat("socket: ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t address_size = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, SOMAXCONN) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_size) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(StrCat("cannot listen on 127.0.0.1: ", std::strerror(error)));
  }
  return Listener{.fd = fd, .port = ntohs(address.sin_port)};
}

absl::StatusOr<SocketAddress> ResolveHostPort(const std::string& address) {
  SILO_RETURN_IF_ERROR(CheckHostPort(address));
  const size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &results);
  if (error != 0 || results == nullptr) {
    return absl::InvalidArgumentError(
        StrCat("address '", address, "' cannot be resolved: ", gai_strerror(error)));
  }
  SocketAddress resolved;
  std::memcpy(&resolved.storage, results->ai_addr, results->ai_addrlen);
  resolved.size = results->ai_addrlen;
  freeaddrinfo(results);
  return resolved;
}

void SetNoDelay(int fd) {
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace silo::eval::internal
