// The raw TCP round trip, as a baseline for what the services add: a tiny echo server on
// 127.0.0.1 and a client that times messages sent to it and echoed back.
//
//   ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
//   ASSERT_OK_AND_ASSIGN(TcpEchoResult raw, MeasureTcpRoundTrip(server->address(), 200));
//   // or through a TcpShaper whose target is server->address():
//   ASSERT_OK_AND_ASSIGN(TcpEchoResult shaped, MeasureTcpRoundTrip(shaper->address(), 200));
//
// Thread-safety: TcpEchoServer's methods may be called from any thread; MeasureTcpRoundTrip is a
// free function (each call has its own connection).
#ifndef SILO_EVAL_TCP_ECHO_H_
#define SILO_EVAL_TCP_ECHO_H_

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace silo::eval {

// Echoes every byte it reads back to its sender, one thread per connection (blocking reads), and
// closes a connection when its client half-closes it. Meant for measurements: threads of ended
// connections are joined at Shutdown.
class TcpEchoServer {
 public:
  // Listens on 127.0.0.1 on a free port. Unavailable when no socket can be bound or no thread
  // started.
  static absl::StatusOr<std::unique_ptr<TcpEchoServer>> Start();

  TcpEchoServer(const TcpEchoServer&) = delete;
  TcpEchoServer& operator=(const TcpEchoServer&) = delete;
  ~TcpEchoServer();  // Shutdown()

  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:<port>"

  // Stops listening, closes every connection and joins the threads. Idempotent.
  void Shutdown();

 private:
  struct Client {
    int fd;  // guarded by mu_; -1 once closed
    std::thread thread;
  };

  TcpEchoServer(int listen_fd, int port) : listen_fd_(listen_fd), port_(port) {}
  void AcceptLoop();
  void Echo(Client* client);

  const int listen_fd_;
  const int port_;
  std::thread accept_thread_;

  std::mutex shutdown_mu_;  // serializes Shutdown()
  bool shut_down_ = false;  // guarded by shutdown_mu_

  std::mutex mu_;
  bool stopping_ = false;      // guarded by mu_
  std::list<Client> clients_;  // guarded by mu_
};

struct TcpEchoResult {
  double p50_us = 0;  // median round trip, microseconds
  double p90_us = 0;
  int n = 0;  // round trips timed
};

// Connects to the echo server at `address` ("host:port", directly or through a TcpShaper), with
// TCP_NODELAY, and times `n_round_trips` messages of `message_bytes` bytes, each sent once the
// previous one is fully back (one warm-up round trip first, not timed).
// InvalidArgument when n_round_trips < 1, message_bytes is not in [1, 65536] or the address is not
// "host:port"; Unavailable when the connection cannot be made or is closed; DeadlineExceeded when
// a round trip takes over 10 s; DataLoss when the echo differs from what was sent.
absl::StatusOr<TcpEchoResult> MeasureTcpRoundTrip(const std::string& address, int n_round_trips,
                                                  int message_bytes = 1024);

}  // namespace silo::eval

#endif  // SILO_EVAL_TCP_ECHO_H_
