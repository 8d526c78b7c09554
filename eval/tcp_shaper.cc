#include "eval/tcp_shaper.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <random>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "eval/internal/tcp_socket.h"

namespace silo::eval {
namespace {

using internal::SendAll;
using internal::SetNoDelay;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadBytes = size_t{64} << 10;
constexpr int64_t kMaxQueuedBytes = int64_t{16} << 20;            // per direction
constexpr auto kMaxLinkBacklog = std::chrono::milliseconds(100);  // of a capped link
constexpr int kConnectTimeoutMs = 10'000;
constexpr absl::Duration kMaxDelay = absl::Hours(1);

}  // namespace

// One direction of a connection: what its reader has read and its writer not yet written.
struct TcpShaper::Direction {
  enum class Kind { kData, kEnd, kAbort };  // kEnd: the reader saw a FIN; kAbort: an error
  struct Chunk {
    Kind kind = Kind::kData;
    std::string bytes;
    Clock::time_point release;  // when the writer may write it
  };

  Direction(int from, int to, uint64_t seed, uint64_t connection_index, uint64_t direction_index)
      : from_fd(from), to_fd(to) {
    // seed_seq keeps 32 bits of each value.
    std::seed_seq seeds{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                        static_cast<uint32_t>(connection_index),
                        static_cast<uint32_t>(connection_index >> 32),
                        static_cast<uint32_t>(direction_index)};
    random.seed(seeds);
  }

  const int from_fd;
  const int to_fd;
  std::mutex mu;
  std::condition_variable changed;  // a chunk was queued or taken, or stopped became true
  std::deque<Chunk> queue;          // guarded by mu
  int64_t queued_bytes = 0;         // guarded by mu
  bool stopped = false;             // guarded by mu: the writer is done, nothing more is taken
  // Only the reader writes these.
  Clock::time_point link_free_at;  // when the bandwidth-capped link has sent what it has
  Clock::time_point last_release;  // of the chunk queued last: releases never go backwards
  std::mt19937_64 random;          // of the jitter

  void Stop() {
    std::lock_guard<std::mutex> lock(mu);
    stopped = true;
    changed.notify_all();
  }
};

struct TcpShaper::Connection {
  Connection(int client, uint64_t n) : client_fd(client), index(n) {}

  int client_fd;         // guarded by TcpShaper::mu_ once listed; -1 once closed
  int upstream_fd = -1;  // guarded by TcpShaper::mu_; -1 until connected and once closed
  const uint64_t index;  // in accept order, for the jitter's seed
  // Set under TcpShaper::mu_ once connected, before the threads that use them start.
  std::unique_ptr<Direction> up;    // client -> target
  std::unique_ptr<Direction> down;  // target -> client
  std::thread thread;               // RunConnection
  std::atomic<bool> finished{false};

  // Wakes every thread of the connection: blocked reads and writes fail, waits end.
  // Callers hold TcpShaper::mu_ or are threads of this connection (which the fds outlive).
  void Abort() {
    if (client_fd >= 0) shutdown(client_fd, SHUT_RDWR);
    if (upstream_fd >= 0) shutdown(upstream_fd, SHUT_RDWR);
    if (up != nullptr) up->Stop();
    if (down != nullptr) down->Stop();
  }
};

absl::StatusOr<std::unique_ptr<TcpShaper>> TcpShaper::Start(const TcpShaperOptions& options) {
  for (const auto& [name, value] :
       {std::pair<std::string_view, absl::Duration>("one_way_delay", options.one_way_delay),
        {"jitter", options.jitter}}) {
    if (value < absl::ZeroDuration() || value > kMaxDelay) {
      return absl::InvalidArgumentError(
          StrCat(name, " must be in [0, 1h], not ", absl::FormatDuration(value)));
    }
  }
  if (options.bandwidth_bits_per_second < 0) {
    return absl::InvalidArgumentError(
        StrCat("bandwidth_bits_per_second must be >= 0, not ", options.bandwidth_bits_per_second));
  }
  SILO_ASSIGN_OR_RETURN(const internal::SocketAddress target,
                        internal::ResolveHostPort(options.target));
  SILO_ASSIGN_OR_RETURN(const internal::Listener listener, internal::ListenOnLoopback());
  int stop_pipe[2];
  if (pipe2(stop_pipe, O_CLOEXEC) != 0) {
    const int error = errno;
    close(listener.fd);
    return absl::UnavailableError(StrCat("pipe: ", std::strerror(error)));
  }
  std::unique_ptr<TcpShaper> shaper(new TcpShaper(options, target.storage, target.size, listener.fd,
                                                  listener.port, stop_pipe[0], stop_pipe[1]));
  // The only throwing call we make: std::thread's constructor when no thread can be created.
  try {
    shaper->accept_thread_ = std::thread(&TcpShaper::AcceptLoop, shaper.get());
  } catch (const std::system_error& e) {
    return absl::UnavailableError(StrCat("cannot start the shaper's thread: ", e.what()));
  }
  return shaper;
}

TcpShaper::TcpShaper(const TcpShaperOptions& options, const sockaddr_storage& target,
                     socklen_t target_size, int listen_fd, int port, int stop_read_fd,
                     int stop_write_fd)
    : options_(options),
      target_(target),
      target_size_(target_size),
      listen_fd_(listen_fd),
      port_(port),
      stop_read_fd_(stop_read_fd),
      stop_write_fd_(stop_write_fd),
      shapes_nothing_(options.one_way_delay == absl::ZeroDuration() &&
                      options.jitter == absl::ZeroDuration() &&
                      options.bandwidth_bits_per_second == 0) {}

TcpShaper::~TcpShaper() {
  Shutdown();
  close(stop_read_fd_);
  close(stop_write_fd_);
}

std::string TcpShaper::address() const { return StrCat("127.0.0.1:", port_); }

void TcpShaper::Shutdown() {
  std::lock_guard<std::mutex> shutdown_lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (const auto& connection : connections_) connection->Abort();
  }
  // The pipe stays readable from now on: the accept loop and every connect wake up.
  const char byte = 0;
  while (write(stop_write_fd_, &byte, 1) < 0 && errno == EINTR) {
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  close(listen_fd_);
  // No connection is added any more (the accept loop is gone): join them all.
  std::list<std::unique_ptr<Connection>> connections;
  {
    std::lock_guard<std::mutex> lock(mu_);
    connections.swap(connections_);
  }
  for (const auto& connection : connections) {
    if (connection->thread.joinable()) connection->thread.join();
  }
}

void TcpShaper::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_read_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) continue;  // EINTR
    if (fds[1].revents != 0) return;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      // Out of descriptors or a connection aborted before it was accepted: wait a little (or
      // for Shutdown) rather than spin.
      if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN) {
        pollfd stop = {stop_read_fd_, POLLIN, 0};
        poll(&stop, 1, 10);
      }
      continue;
    }
    SetNoDelay(client);
    auto connection = std::make_unique<Connection>(client, n_accepted_++);
    std::list<std::unique_ptr<Connection>> finished;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        close(client);
        return;
      }
      Connection* raw = connection.get();
      try {
        connection->thread = std::thread(&TcpShaper::RunConnection, this, raw);
      } catch (const std::system_error&) {
        close(client);  // out of threads: refuse this connection, keep serving
        continue;
      }
      connections_.push_back(std::move(connection));
      // Collect the connections that have ended, so that a long run does not accumulate them.
      for (auto it = connections_.begin(); it != connections_.end();) {
        if ((*it)->finished.load()) {
          finished.push_back(std::move(*it));
          it = connections_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const auto& done : finished) done->thread.join();
  }
}

int TcpShaper::ConnectToTarget() {
  const int fd = socket(target_.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&target_), target_size_) != 0) {
    if (errno != EINPROGRESS) {
      close(fd);
      return -1;
    }
    pollfd fds[2] = {{fd, POLLOUT, 0}, {stop_read_fd_, POLLIN, 0}};
    int ready;
    while ((ready = poll(fds, 2, kConnectTimeoutMs)) < 0 && errno == EINTR) {
    }
    int error = 0;
    socklen_t error_size = sizeof(error);
    if (ready <= 0 || fds[1].revents != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_size) != 0 || error != 0) {
      close(fd);
      return -1;
    }
  }
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    close(fd);
    return -1;
  }
  SetNoDelay(fd);
  return fd;
}

void TcpShaper::RunConnection(Connection* connection) {
  const int upstream = ConnectToTarget();
  bool connected = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (upstream >= 0 && !stopping_) {
      const int client = connection->client_fd;
      connection->upstream_fd = upstream;
      connection->up = std::make_unique<Direction>(client, upstream, options_.seed,
                                                   connection->index, /*direction_index=*/0);
      connection->down = std::make_unique<Direction>(upstream, client, options_.seed,
                                                     connection->index, /*direction_index=*/1);
      connected = true;
    }
  }
  if (connected) {
    std::vector<std::thread> threads;
    try {
      if (shapes_nothing_) {
        threads.emplace_back(&TcpShaper::CopyLoop, this, connection, connection->up.get());
        CopyLoop(connection, connection->down.get());
      } else {
        threads.emplace_back(&TcpShaper::ReadLoop, this, connection->up.get());
        threads.emplace_back(&TcpShaper::WriteLoop, this, connection, connection->up.get());
        threads.emplace_back(&TcpShaper::WriteLoop, this, connection, connection->down.get());
        ReadLoop(connection->down.get());
      }
    } catch (const std::system_error&) {
      connection->Abort();  // out of threads: drop this connection
    }
    for (std::thread& thread : threads) thread.join();
  } else if (upstream >= 0) {
    close(upstream);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    close(connection->client_fd);
    connection->client_fd = -1;
    if (connection->upstream_fd >= 0) close(connection->upstream_fd);
    connection->upstream_fd = -1;
  }
  connection->finished.store(true);
}

void TcpShaper::CopyLoop(Connection* connection, Direction* direction) {
  std::vector<char> buffer(kReadBytes);
  for (;;) {
    const ssize_t n = recv(direction->from_fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      shutdown(direction->to_fd, SHUT_WR);  // pass the half-close on
      return;
    }
    if (n < 0 ||
        !SendAll(direction->to_fd, std::string_view(buffer.data(), static_cast<size_t>(n)))) {
      connection->Abort();  // either side is gone: close both
      return;
    }
    bytes_forwarded_.fetch_add(n, std::memory_order_relaxed);
  }
}

void TcpShaper::ReadLoop(Direction* direction) {
  const auto delay = absl::ToChronoNanoseconds(options_.one_way_delay);
  const int64_t jitter_ns = absl::ToInt64Nanoseconds(options_.jitter);
  const int64_t bandwidth = options_.bandwidth_bits_per_second;
  std::vector<char> buffer(kReadBytes);
  for (;;) {
    {
      // Wait for room, and for the capped link to have less than kMaxLinkBacklog to send, so
      // that a slow link pushes back on the sender through TCP as a router's queue would.
      std::unique_lock<std::mutex> lock(direction->mu);
      direction->changed.wait(lock, [direction] {
        return direction->stopped || direction->queued_bytes < kMaxQueuedBytes;
      });
      direction->changed.wait_until(lock, direction->link_free_at - kMaxLinkBacklog,
                                    [direction] { return direction->stopped; });
      if (direction->stopped) return;
    }
    const ssize_t n = recv(direction->from_fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    const Clock::time_point now = Clock::now();
    Direction::Chunk chunk;
    if (n > 0) {
      chunk.bytes.assign(buffer.data(), static_cast<size_t>(n));
    } else {
      chunk.kind = n == 0 ? Direction::Kind::kEnd : Direction::Kind::kAbort;
    }
    // The link sends chunks one after the other at the capped rate, then each travels for the
    // delay plus its jitter; a chunk is never released before the one before it.
    const Clock::time_point start = std::max(now, direction->link_free_at);
    Clock::time_point sent = start;
    if (bandwidth > 0) {
      const int64_t bits = static_cast<int64_t>(chunk.bytes.size()) * 8;
      sent += std::chrono::nanoseconds(bits * 1'000'000'000 / bandwidth);
    }
    direction->link_free_at = sent;
    std::chrono::nanoseconds jitter{0};
    if (jitter_ns > 0) {
      jitter = std::chrono::nanoseconds(
          std::uniform_int_distribution<int64_t>(0, jitter_ns)(direction->random));
    }
    chunk.release = std::max(sent + delay + jitter, direction->last_release);
    direction->last_release = chunk.release;
    const bool last = chunk.kind != Direction::Kind::kData;
    {
      std::lock_guard<std::mutex> lock(direction->mu);
      if (direction->stopped) return;
      direction->queued_bytes += static_cast<int64_t>(chunk.bytes.size());
      direction->queue.push_back(std::move(chunk));
      direction->changed.notify_all();
    }
    if (last) return;
  }
}

void TcpShaper::WriteLoop(Connection* connection, Direction* direction) {
  // Wake at the release time, not up to the default 50 us after it (Linux timer slack).
  (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  std::unique_lock<std::mutex> lock(direction->mu);
  for (;;) {
    direction->changed.wait(
        lock, [direction] { return direction->stopped || !direction->queue.empty(); });
    if (direction->stopped) break;
    // Only this thread takes chunks, so the front stays the same while it waits.
    const Clock::time_point release = direction->queue.front().release;
    if (direction->changed.wait_until(lock, release, [direction] { return direction->stopped; })) {
      break;
    }
    Direction::Chunk chunk = std::move(direction->queue.front());
    direction->queue.pop_front();
    direction->queued_bytes -= static_cast<int64_t>(chunk.bytes.size());
    direction->changed.notify_all();
    lock.unlock();
    if (chunk.kind == Direction::Kind::kEnd) {
      shutdown(direction->to_fd, SHUT_WR);  // pass the half-close on
      lock.lock();
      break;
    }
    if (chunk.kind == Direction::Kind::kAbort || !SendAll(direction->to_fd, chunk.bytes)) {
      connection->Abort();  // either side is gone: close both
      lock.lock();
      break;
    }
    bytes_forwarded_.fetch_add(static_cast<int64_t>(chunk.bytes.size()), std::memory_order_relaxed);
    lock.lock();
  }
  direction->stopped = true;
  direction->queue.clear();
  direction->queued_bytes = 0;
  direction->changed.notify_all();
}

}  // namespace silo::eval
