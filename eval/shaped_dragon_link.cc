#include "eval/shaped_dragon_link.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "eval/internal/tcp_socket.h"

namespace silo::eval {
namespace {

using absl::StrCat;

constexpr uint32_t kMaxFrameBytes = 64u << 20;
enum Kind : uint8_t { kDraft = 1, kVerdict = 2, kHandoff = 3 };

std::string Frame(const node::DragonMessage& message) {
  std::string payload;
  uint8_t kind = kHandoff;
  if (const auto* draft = std::get_if<v1::Draft>(&message)) {
    kind = kDraft;
    draft->SerializeToString(&payload);
  } else if (const auto* verdict = std::get_if<v1::Verdict>(&message)) {
    kind = kVerdict;
    verdict->SerializeToString(&payload);
  } else {
    std::get<v1::AggregatorHandoff>(message).SerializeToString(&payload);
  }
  const auto length = static_cast<uint32_t>(payload.size() + 1);
  std::string frame(4, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  frame.push_back(static_cast<char>(kind));
  frame += payload;
  return frame;
}

// Reads exactly n bytes; false at the end of the stream or on an error.
bool ReadAll(int fd, char* data, size_t n) {
  size_t received = 0;
  while (received < n) {
    const ssize_t got = recv(fd, data + received, n - received, 0);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      return false;
    }
    received += static_cast<size_t>(got);
  }
  return true;
}

// Frames from `fd` into `inbox` until the stream ends; then the inbox closes.
void ReadFrames(int fd, node::DragonInbox* inbox) {
  std::string payload;
  while (true) {
    unsigned char header[4];
    if (!ReadAll(fd, reinterpret_cast<char*>(header), 4)) break;
    const uint32_t length = header[0] | (header[1] << 8) | (header[2] << 16) |
                            (static_cast<uint32_t>(header[3]) << 24);
    if (length < 1 || length > kMaxFrameBytes) break;
    payload.resize(length);
    if (!ReadAll(fd, payload.data(), length)) break;
    const auto kind = static_cast<uint8_t>(payload[0]);
    const std::string_view body(payload.data() + 1, length - 1);
    bool parsed = false;
    if (kind == kDraft) {
      v1::Draft draft;
      parsed = draft.ParseFromArray(body.data(), static_cast<int>(body.size()));
      if (parsed) inbox->Push(std::move(draft));
    } else if (kind == kVerdict) {
      v1::Verdict verdict;
      parsed = verdict.ParseFromArray(body.data(), static_cast<int>(body.size()));
      if (parsed) inbox->Push(std::move(verdict));
    } else if (kind == kHandoff) {
      v1::AggregatorHandoff handoff;
      parsed = handoff.ParseFromArray(body.data(), static_cast<int>(body.size()));
      if (parsed) inbox->Push(std::move(handoff));
    }
    if (!parsed) break;
  }
  inbox->Close(absl::UnavailableError("the shaped connection ended"));
}

absl::Status SendFrame(int fd, const node::DragonMessage& message) {
  if (!internal::SendAll(fd, Frame(message))) {
    return absl::UnavailableError(StrCat("send: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShapedDragonLink>> ShapedDragonLink::Open(
    node::DragonInbox* device_inbox, node::DragonInbox* cloud_inbox, absl::Duration one_way_delay,
    absl::Duration jitter) {
  std::unique_ptr<ShapedDragonLink> link(new ShapedDragonLink());
  SILO_ASSIGN_OR_RETURN(const internal::Listener listener, internal::ListenOnLoopback());
  absl::StatusOr<std::unique_ptr<TcpShaper>> shaper =
      TcpShaper::Start({.target = StrCat("127.0.0.1:", listener.port),
                        .one_way_delay = one_way_delay,
                        .jitter = jitter,
                        .seed = 1,
                        .bandwidth_bits_per_second = 0});
  if (!shaper.ok()) {
    close(listener.fd);
    return shaper.status();
  }
  link->shaper_ = *std::move(shaper);
  SILO_ASSIGN_OR_RETURN(const internal::SocketAddress address,
                        internal::ResolveHostPort(link->shaper_->address()));
  link->device_fd_ = socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (link->device_fd_ < 0 ||
      connect(link->device_fd_, reinterpret_cast<const sockaddr*>(&address.storage),
              address.size) != 0) {
    close(listener.fd);
    return absl::UnavailableError(StrCat("cannot connect to the shaper: ", std::strerror(errno)));
  }
  link->cloud_fd_ = accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener.fd);
  if (link->cloud_fd_ < 0) {
    return absl::UnavailableError(StrCat("accept: ", std::strerror(errno)));
  }
  internal::SetNoDelay(link->device_fd_);
  internal::SetNoDelay(link->cloud_fd_);
  link->device_reader_ = std::thread(ReadFrames, link->device_fd_, device_inbox);
  link->cloud_reader_ = std::thread(ReadFrames, link->cloud_fd_, cloud_inbox);
  return link;
}

ShapedDragonLink::~ShapedDragonLink() {
  // Both ends down: the readers see the end of their streams.
  if (device_fd_ >= 0) shutdown(device_fd_, SHUT_RDWR);
  if (cloud_fd_ >= 0) shutdown(cloud_fd_, SHUT_RDWR);
  if (shaper_ != nullptr) shaper_->Shutdown();
  if (device_reader_.joinable()) device_reader_.join();
  if (cloud_reader_.joinable()) cloud_reader_.join();
  if (device_fd_ >= 0) close(device_fd_);
  if (cloud_fd_ >= 0) close(cloud_fd_);
}

absl::Status ShapedDragonLink::SendToCloud(const node::DragonMessage& message) {
  return SendFrame(device_fd_, message);
}

absl::Status ShapedDragonLink::SendToDevice(const node::DragonMessage& message) {
  return SendFrame(cloud_fd_, message);
}

void ShapedDragonLink::FinishDevice() { shutdown(device_fd_, SHUT_WR); }

void ShapedDragonLink::FinishCloud() { shutdown(cloud_fd_, SHUT_WR); }

}  // namespace silo::eval
