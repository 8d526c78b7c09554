// Plain POSIX TCP helpers shared by TcpShaper and the TCP echo measurement.
//
// Thread-safe (free functions over descriptors the caller owns).
#ifndef SILO_EVAL_INTERNAL_TCP_SOCKET_H_
#define SILO_EVAL_INTERNAL_TCP_SOCKET_H_

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace silo::eval::internal {

struct Listener {
  int fd = -1;  // listening, close-on-exec; the caller closes it
  int port = 0;
};

// A socket listening on 127.0.0.1 on a free port. Unavailable when none can be bound.
absl::StatusOr<Listener> ListenOnLoopback();

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t size = 0;
};

// The first TCP address of "host:port" (host a name, an IPv4 address or "[v6]"). InvalidArgument
// when `address` is not host:port or cannot be resolved.
absl::StatusOr<SocketAddress> ResolveHostPort(const std::string& address);

// Sets TCP_NODELAY; best effort (forwarding works without it, only slower for small messages).
void SetNoDelay(int fd);

// Writes all of `bytes` (MSG_NOSIGNAL: no SIGPIPE). False when the peer is gone, the socket was
// shut down or a send timeout expired; errno says which.
bool SendAll(int fd, std::string_view bytes);

}  // namespace silo::eval::internal

#endif  // SILO_EVAL_INTERNAL_TCP_SOCKET_H_
