#include "eval/tcp_shaper.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "eval/tcp_echo.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/status_matchers.h"

namespace silo::eval {
namespace {

using ::silo::testing::StatusIs;

constexpr size_t kMiB = size_t{1} << 20;

// A blocking socket connected to 127.0.0.1:port, TCP_NODELAY, reads time out after 5 s.
int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const timeval timeout = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// Everything `fd` receives until the peer closes, a read fails or times out.
std::string ReadUntilClosed(int fd) {
  std::string received;
  std::vector<char> buffer(64 * 1024);
  for (;;) {
    const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) return received;
    received.append(buffer.data(), static_cast<size_t>(n));
  }
}

// Sends `bytes` in pieces of random size (fixed seed), then half-closes. False on a failed send.
bool SendInPiecesAndHalfClose(int fd, const std::string& bytes) {
  std::mt19937 random(7);
  std::uniform_int_distribution<size_t> piece_size(1, 16 * 1024);
  for (size_t sent = 0; sent < bytes.size();) {
    const size_t n = std::min(piece_size(random), bytes.size() - sent);
    const ssize_t written = send(fd, bytes.data() + sent, n, MSG_NOSIGNAL);
    if (written <= 0) return false;
    sent += static_cast<size_t>(written);
  }
  return shutdown(fd, SHUT_WR) == 0;
}

// `size` bytes that differ from any shifted copy of themselves (a counter mixed with its index).
std::string PatternedBytes(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + (i >> 8)) & 0xff);
  return bytes;
}

// Echoes `bytes` through `shaper` (whose target is an echo server): what comes back.
std::string EchoThrough(const TcpShaper& shaper, const std::string& bytes) {
  const int fd = ConnectTo(shaper.port());
  EXPECT_GE(fd, 0);
  if (fd < 0) return "";
  bool sent = false;
  std::thread sender([&] { sent = SendInPiecesAndHalfClose(fd, bytes); });
  std::string echoed = ReadUntilClosed(fd);
  sender.join();
  EXPECT_TRUE(sent);
  close(fd);
  return echoed;
}

// shaper.bytes_forwarded() once it reaches `expected` or 2 s have passed: the counter grows just
// after each write, so the peer may have read the bytes a moment before.
int64_t WaitForBytesForwarded(const TcpShaper& shaper, int64_t expected) {
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (shaper.bytes_forwarded() < expected && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  return shaper.bytes_forwarded();
}

TEST(TcpShaperTest, StartRejectsBadOptions) {
  EXPECT_THAT(TcpShaper::Start({.target = "no-port"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(TcpShaper::Start({.target = "127.0.0.1:0"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(TcpShaper::Start({.target = "127.0.0.1:1", .one_way_delay = absl::Milliseconds(-1)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(TcpShaper::Start({.target = "127.0.0.1:1", .jitter = absl::InfiniteDuration()}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(TcpShaper::Start({.target = "127.0.0.1:1", .bandwidth_bits_per_second = -8}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TcpShaperTest, RoundTripGrowsByTwiceTheOneWayDelay) {
  ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
  ASSERT_OK_AND_ASSIGN(auto shaper, TcpShaper::Start({.target = server->address(),
                                                      .one_way_delay = absl::Milliseconds(5)}));
  EXPECT_EQ(shaper->address(), "127.0.0.1:" + std::to_string(shaper->port()));
  ASSERT_OK_AND_ASSIGN(TcpEchoResult result, MeasureTcpRoundTrip(shaper->address(), 20));
  EXPECT_EQ(result.n, 20);
  EXPECT_GE(result.p50_us, 10'000);
  EXPECT_LT(result.p50_us, 200'000);  // generous: a loaded 2-core machine
  EXPECT_GE(result.p90_us, result.p50_us);
  // 21 messages (one warm-up) of 1024 bytes, each way.
  EXPECT_EQ(WaitForBytesForwarded(*shaper, 2 * 21 * 1024), 2 * 21 * 1024);
}

// Prints the loopback figures: raw and through a shaper that adds nothing.
TEST(TcpShaperTest, ZeroDelayShaperPassesEchoesThrough) {
  ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
  ASSERT_OK_AND_ASSIGN(auto shaper, TcpShaper::Start({.target = server->address()}));
  ASSERT_OK_AND_ASSIGN(TcpEchoResult raw, MeasureTcpRoundTrip(server->address(), 200));
  ASSERT_OK_AND_ASSIGN(TcpEchoResult shaped, MeasureTcpRoundTrip(shaper->address(), 200));
  std::printf(
      "loopback echo of 1024 bytes: raw p50 %.1f us p90 %.1f us; "
      "through the shaper p50 %.1f us p90 %.1f us\n",
      raw.p50_us, raw.p90_us, shaped.p50_us, shaped.p90_us);
  EXPECT_LT(shaped.p50_us, 200'000);
  EXPECT_THAT(MeasureTcpRoundTrip(server->address(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MeasureTcpRoundTrip(server->address(), 1, 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TcpShaperTest, BytesArriveUnchangedAndInOrderWithJitter) {
  ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
  ASSERT_OK_AND_ASSIGN(auto shaper, TcpShaper::Start({.target = server->address(),
                                                      .one_way_delay = absl::Milliseconds(1),
                                                      .jitter = absl::Milliseconds(2),
                                                      .seed = 42}));
  const std::string bytes = PatternedBytes(kMiB);
  // The echo server closes once our half-close has reached it: the shaper passes FINs on too.
  const std::string echoed = EchoThrough(*shaper, bytes);
  ASSERT_EQ(echoed.size(), bytes.size());
  EXPECT_TRUE(echoed == bytes) << "the echo differs from what was sent";
  EXPECT_EQ(WaitForBytesForwarded(*shaper, 2 * kMiB), int64_t{2 * kMiB});
}

TEST(TcpShaperTest, BandwidthCapPacesTheTransfer) {
  ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
  ASSERT_OK_AND_ASSIGN(auto shaper, TcpShaper::Start({.target = server->address(),
                                                      .bandwidth_bits_per_second = 8'000'000}));
  const std::string bytes = PatternedBytes(kMiB);
  const absl::Time start = absl::Now();
  const std::string echoed = EchoThrough(*shaper, bytes);
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_TRUE(echoed == bytes);
  // 8 Mibit at 8 Mbit/s is 1.05 s each way; the two directions overlap.
  EXPECT_GE(elapsed, absl::Milliseconds(900));
  EXPECT_LT(elapsed, absl::Seconds(8));
}

TEST(TcpShaperTest, TargetNotListeningClosesTheClientsConnection) {
  const int unused_port = silo::testing::PickUnusedPort();
  ASSERT_GT(unused_port, 0);
  ASSERT_OK_AND_ASSIGN(auto shaper,
                       TcpShaper::Start({.target = "127.0.0.1:" + std::to_string(unused_port)}));
  for (int i = 0; i < 2; ++i) {  // and the shaper still serves the next one
    const int fd = ConnectTo(shaper->port());
    ASSERT_GE(fd, 0);
    send(fd, "hello", 5, MSG_NOSIGNAL);  // may fail if the close came first
    char byte;
    const ssize_t n = recv(fd, &byte, 1, 0);
    const int error = errno;
    EXPECT_LE(n, 0);
    if (n < 0) {
      EXPECT_NE(error, EAGAIN) << "the connection stayed open";
    }
    close(fd);
  }
}

TEST(TcpShaperTest, ServesManyConnectionsAtOnce) {
  ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
  ASSERT_OK_AND_ASSIGN(auto shaper, TcpShaper::Start({.target = server->address(),
                                                      .one_way_delay = absl::Milliseconds(1),
                                                      .jitter = absl::Milliseconds(1)}));
  constexpr int kClients = 16;
  std::vector<absl::Status> statuses(kClients);
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back(
        [&, i] { statuses[i] = MeasureTcpRoundTrip(shaper->address(), 5, 4096).status(); });
  }
  for (std::thread& client : clients) client.join();
  for (const absl::Status& status : statuses) EXPECT_OK(status);
}

TEST(TcpShaperTest, ShutdownWithOpenConnectionsReturnsPromptly) {
  ASSERT_OK_AND_ASSIGN(auto server, TcpEchoServer::Start());
  ASSERT_OK_AND_ASSIGN(auto shaper, TcpShaper::Start({.target = server->address(),
                                                      .one_way_delay = absl::Seconds(5)}));
  std::vector<int> fds;
  for (int i = 0; i < 4; ++i) {
    const int fd = ConnectTo(shaper->port());
    ASSERT_GE(fd, 0);
    if (i % 2 == 0) {  // half of them with bytes waiting out the delay, half idle
      ASSERT_EQ(send(fd, "queued", 6, MSG_NOSIGNAL), 6);
    }
    fds.push_back(fd);
  }
  absl::SleepFor(absl::Milliseconds(50));  // let the shaper accept and connect them
  const absl::Time start = absl::Now();
  shaper->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  for (const int fd : fds) {
    char byte;
    EXPECT_LE(recv(fd, &byte, 1, 0), 0);  // closed, nothing delivered
    close(fd);
  }
  shaper->Shutdown();                        // idempotent
  EXPECT_EQ(ConnectTo(shaper->port()), -1);  // no longer listening
}

}  // namespace
}  // namespace silo::eval
