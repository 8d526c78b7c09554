// An in-process TCP proxy that shapes the network between two local processes, for evaluation:
// it listens on 127.0.0.1 and forwards every accepted connection to one target "host:port",
// adding to each direction independently a one-way delay, jitter and a bandwidth cap.
//
//   TcpShaperOptions options{.target = server_address, .one_way_delay = absl::Milliseconds(20)};
//   SILO_ASSIGN_OR_RETURN(std::unique_ptr<TcpShaper> shaper, TcpShaper::Start(options));
//   auto channel = grpc::CreateChannel(shaper->address(), credentials);  // RTT + 40 ms
//
// Byte-transparent (TLS and gRPC pass through unchanged) and order-preserving: a chunk read from
// one side is written to the other at its release time, never before the chunk read before it.
// A half-close (FIN) travels with the same delay; a reset or a failed write closes both sides. The
// TCP handshake itself is not delayed, and a connection whose target refuses or cannot be reached
// within 10 s is closed. Per connection it runs four threads (a reader and a writer per
// direction; two plain copy threads when it shapes nothing). Each direction buffers at most
// 16 MiB, and at most 100 ms of what a capped link has still to send, like a router's queue:
// beyond that its reader waits, so TCP flow control still reaches the sender.
//
// Thread-safe: every method may be called from any thread.
#ifndef SILO_EVAL_TCP_SHAPER_H_
#define SILO_EVAL_TCP_SHAPER_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace silo::eval {

struct TcpShaperOptions {
  // "host:port" that every connection is forwarded to.
  std::string target = "";
  // Added to each direction: the round trip grows by twice this.
  absl::Duration one_way_delay = absl::ZeroDuration();
  // Extra delay of each chunk, uniform in [0, jitter], drawn per direction from `seed` (and the
  // connection's place in accept order).
  absl::Duration jitter = absl::ZeroDuration();
  uint64_t seed = 1;
  // Cap of each direction; 0: none. A chunk of n bytes takes n * 8 / cap seconds to send, after
  // the chunks before it.
  int64_t bandwidth_bits_per_second = 0;
};

class TcpShaper {
 public:
  // Resolves the target and listens on 127.0.0.1 on a free port. InvalidArgument when the target
  // is not "host:port" or cannot be resolved, or when a delay or the bandwidth is negative (delays
  // above 1 h are refused too); Unavailable when no socket can be bound or no thread started.
  static absl::StatusOr<std::unique_ptr<TcpShaper>> Start(const TcpShaperOptions& options);

  TcpShaper(const TcpShaper&) = delete;
  TcpShaper& operator=(const TcpShaper&) = delete;
  ~TcpShaper();  // Shutdown()

  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:<port>"

  // Bytes written to either side so far, both directions together.
  int64_t bytes_forwarded() const { return bytes_forwarded_.load(std::memory_order_relaxed); }

  // Stops listening, closes every connection (queued bytes are dropped) and joins the threads.
  // Returns promptly, whatever the peers do. Idempotent.
  void Shutdown();

 private:
  struct Direction;
  struct Connection;

  TcpShaper(const TcpShaperOptions& options, const sockaddr_storage& target, socklen_t target_size,
            int listen_fd, int port, int stop_read_fd, int stop_write_fd);

  void AcceptLoop();
  // Connects `connection` to the target, then forwards until both directions end.
  void RunConnection(Connection* connection);
  // Returns the connected socket, or -1 when the target refused, timed out or we are stopping.
  int ConnectToTarget();
  // Without delay, jitter or cap: one thread per direction writes what it reads.
  void CopyLoop(Connection* connection, Direction* direction);
  // Otherwise a reader queues chunks stamped with their release time, a writer writes them then.
  void ReadLoop(Direction* direction);
  void WriteLoop(Connection* connection, Direction* direction);

  const TcpShaperOptions options_;
  const sockaddr_storage target_;
  const socklen_t target_size_;
  const int listen_fd_;
  const int port_;
  // A pipe whose read end becomes readable on Shutdown: wakes the accept loop and connects.
  const int stop_read_fd_;
  const int stop_write_fd_;
  const bool shapes_nothing_;  // no delay, jitter or cap: forward as read
  std::atomic<int64_t> bytes_forwarded_{0};

  std::mutex shutdown_mu_;  // serializes Shutdown()
  bool shut_down_ = false;  // guarded by shutdown_mu_
  std::thread accept_thread_;
  uint64_t n_accepted_ = 0;  // only the accept loop touches it

  std::mutex mu_;
  bool stopping_ = false;                               // guarded by mu_
  std::list<std::unique_ptr<Connection>> connections_;  // guarded by mu_
};

}  // namespace silo::eval

#endif  // SILO_EVAL_TCP_SHAPER_H_
