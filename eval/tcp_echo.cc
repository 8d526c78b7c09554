#include "eval/tcp_echo.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "eval/internal/tcp_socket.h"

namespace silo::eval {
namespace {

using internal::SendAll;
using internal::SetNoDelay;

constexpr int kMaxMessageBytes = 1 << 16;  // echoed whole by the kernel's buffers: no deadlock
constexpr timeval kRoundTripTimeout = {10, 0};

// A blocking TCP socket connected to "host:port", with TCP_NODELAY and 10 s send and receive
// timeouts.
absl::StatusOr<int> Connect(const std::string& address) {
  SILO_ASSIGN_OR_RETURN(const internal::SocketAddress target, internal::ResolveHostPort(address));
  const int fd = socket(target.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return absl::UnavailableError(StrCat("socket: ", std::strerror(errno)));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&target.storage), target.size) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        StrCat("cannot connect to ", address, ": ", std::strerror(error)));
  }
  SetNoDelay(fd);
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &kRoundTripTimeout, sizeof(kRoundTripTimeout));
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &kRoundTripTimeout, sizeof(kRoundTripTimeout));
  return fd;
}

// Sends `message` and reads its echo into `echo` (resized to the message's size).
absl::Status RoundTrip(int fd, const std::string& message, std::string* echo) {
  if (!SendAll(fd, message)) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return absl::DeadlineExceededError("the echo server did not take the message in 10 s");
    }
    return absl::UnavailableError(StrCat("send: ", std::strerror(errno)));
  }
  echo->resize(message.size());
  size_t received = 0;
  while (received < message.size()) {
    const ssize_t n = recv(fd, echo->data() + received, message.size() - received, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError("no echo within 10 s");
    }
    if (n <= 0) {
      return absl::UnavailableError(
          StrCat("the echo connection closed after ", received, " of ", message.size(), " bytes"));
    }
    received += static_cast<size_t>(n);
  }
  if (*echo != message) return absl::DataLossError("the echo differs from the message");
  return absl::OkStatus();
}

// The value at quantile q of `sorted` (ascending; nearest rank).
double Quantile(const std::vector<double>& sorted, double q) {
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpEchoServer>> TcpEchoServer::Start() {
  SILO_ASSIGN_OR_RETURN(const internal::Listener listener, internal::ListenOnLoopback());
  std::unique_ptr<TcpEchoServer> server(new TcpEchoServer(listener.fd, listener.port));
  // std::thread's constructor is the only call here that throws (no thread can be created).
  try {
    server->accept_thread_ = std::thread(&TcpEchoServer::AcceptLoop, server.get());
  } catch (const std::system_error& e) {
    return absl::UnavailableError(StrCat("cannot start the echo server's thread: ", e.what()));
  }
  return server;
}

TcpEchoServer::~TcpEchoServer() { Shutdown(); }

std::string TcpEchoServer::address() const { return StrCat("127.0.0.1:", port_); }

void TcpEchoServer::Shutdown() {
  std::lock_guard<std::mutex> shutdown_lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // Wakes the blocked accept (Linux) and every blocked read.
    shutdown(listen_fd_, SHUT_RDWR);
    for (const Client& client : clients_) {
      if (client.fd >= 0) shutdown(client.fd, SHUT_RDWR);
    }
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  close(listen_fd_);
  // The accept loop is gone, so clients_ no longer grows.
  for (Client& client : clients_) {
    if (client.thread.joinable()) client.thread.join();
  }
}

void TcpEchoServer::AcceptLoop() {
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    const int error = errno;
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      if (fd >= 0) close(fd);
      return;
    }
    if (fd < 0) {
      lock.unlock();
      // Out of descriptors, say: wait a little rather than spin (EINTR, ECONNABORTED: retry).
      if (error != EINTR && error != ECONNABORTED) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;
    }
    SetNoDelay(fd);
    Client& client = clients_.emplace_back(Client{fd, std::thread()});
    try {
      client.thread = std::thread(&TcpEchoServer::Echo, this, &client);
    } catch (const std::system_error&) {
      close(fd);  // out of threads: refuse this connection
      client.fd = -1;
    }
  }
}

void TcpEchoServer::Echo(Client* client) {
  const int fd = client->fd;  // written by this thread only, below
  std::vector<char> buffer(kMaxMessageBytes);
  for (;;) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!SendAll(fd, std::string_view(buffer.data(), static_cast<size_t>(n)))) break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  close(fd);
  client->fd = -1;
}

absl::StatusOr<TcpEchoResult> MeasureTcpRoundTrip(const std::string& address, int n_round_trips,
                                                  int message_bytes) {
  if (n_round_trips < 1) {
    return absl::InvalidArgumentError(StrCat("n_round_trips must be >= 1, not ", n_round_trips));
  }
  if (message_bytes < 1 || message_bytes > kMaxMessageBytes) {
    return absl::InvalidArgumentError(
        StrCat("message_bytes must be in [1, ", kMaxMessageBytes, "], not ", message_bytes));
  }
  SILO_ASSIGN_OR_RETURN(const int fd, Connect(address));
  std::string message(static_cast<size_t>(message_bytes), '\0');
  for (size_t i = 0; i < message.size(); ++i) message[i] = static_cast<char>('a' + i % 26);
  std::string echo;
  std::vector<double> round_trips_us;
  round_trips_us.reserve(static_cast<size_t>(n_round_trips));
  absl::Status status = RoundTrip(fd, message, &echo);  // warm-up
  for (int i = 0; status.ok() && i < n_round_trips; ++i) {
    message[0] = static_cast<char>('A' + i % 26);  // each echo differs from the one before
    const auto start = std::chrono::steady_clock::now();
    status = RoundTrip(fd, message, &echo);
    const std::chrono::duration<double, std::micro> elapsed =
        std::chrono::steady_clock::now() - start;
    round_trips_us.push_back(elapsed.count());
  }
  close(fd);
  SILO_RETURN_IF_ERROR(status);
  std::sort(round_trips_us.begin(), round_trips_us.end());
  return TcpEchoResult{.p50_us = Quantile(round_trips_us, 0.5),
                       .p90_us = Quantile(round_trips_us, 0.9),
                       .n = n_round_trips};
}

}  // namespace silo::eval
