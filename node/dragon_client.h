// The device's link to the cloud side of a DRAGON session (DESIGN.md §7): one Decode stream over
// mTLS whose first message starts the session. Messages from the cloud are pushed into the
// device's DragonInbox by a reader thread; the stream's end closes the inbox.
// CloudHealthWatch tells a device that decodes alone when a lost cloud answers again.
//
// Thread-safety: DragonCloudLink: Send from one thread at a time (the decode loop); Finish once.
// CloudHealthWatch: thread-safe.
#ifndef SILO_NODE_DRAGON_CLIENT_H_
#define SILO_NODE_DRAGON_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "node/dragon_peer.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

// How long the device's decode thread waits to reopen the link to a lost cloud that has just
// answered a Health call (CloudHealthWatch); it decodes alone until then.
inline constexpr absl::Duration kDragonReconnectTimeout = absl::Seconds(1);

class DragonCloudLink {
 public:
  // Opens the stream (under `stream_deadline`) and starts the session on it: returns once the
  // cloud answered `started` (under `start_deadline`). The cloud's errors (FAILED_PRECONDITION
  // for another model, INVALID_ARGUMENT, ...), DeadlineExceeded, or Unavailable. `inbox` must
  // outlive the link.
  static absl::StatusOr<std::unique_ptr<DragonCloudLink>> Open(
      const std::shared_ptr<grpc::Channel>& channel, const v1::StartSessionRequest& request,
      absl::Time start_deadline, absl::Time stream_deadline, DragonInbox* inbox);

  ~DragonCloudLink();

  uint32_t n_cloud_chunks() const { return n_cloud_chunks_; }
  int64_t bytes_received() const { return bytes_received_.load(); }

  // Unavailable once the stream is broken.
  absl::Status Send(const DragonMessage& message);

  // Half-closes, waits for the cloud's end and returns its status.
  absl::Status Finish();
  // Ends the stream now (the cloud stops decoding) and returns its status.
  absl::Status Cancel();

 private:
  DragonCloudLink() = default;

  std::unique_ptr<v1::DragonService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::DecodeRequest, v1::DecodeResponse>> stream_;
  std::thread reader_;
  uint32_t n_cloud_chunks_ = 0;
  std::atomic<int64_t> bytes_received_{0};
  bool finished_ = false;
  absl::Status finish_status_;
};

// Learns off the decode thread whether a lost cloud answers again, so that a cloud that takes
// connections but never answers (a stopped process, a route that drops packets) costs the
// device's decoding nothing, where a reopening attempt on the decode thread would hold it for its
// whole deadline. Answers() returns at once: it starts one Health call (waiting up to `wait` for
// the channel to connect and the cloud to answer) when none runs, and is true once such a call
// succeeded since it was last true. The device then reopens the link itself, on a channel that
// has just answered.
class CloudHealthWatch {
 public:
  // `channel` gives the cloud's channel for each call (the peer's, made lazily).
  CloudHealthWatch(std::function<std::shared_ptr<grpc::Channel>()> channel, absl::Duration wait);
  // Cancels the call in flight and waits for its thread.
  ~CloudHealthWatch();

  CloudHealthWatch(const CloudHealthWatch&) = delete;
  CloudHealthWatch& operator=(const CloudHealthWatch&) = delete;

  bool Answers();

 private:
  void Check();  // one Health call, on worker_

  const std::function<std::shared_ptr<grpc::Channel>()> channel_;
  const absl::Duration wait_;
  std::mutex mutex_;
  std::thread worker_;                        // the last call's, joined before the next starts
  bool checking_ = false;                     // guarded by mutex_
  bool answered_ = false;                     // guarded by mutex_
  bool stopping_ = false;                     // guarded by mutex_
  grpc::ClientContext* in_flight_ = nullptr;  // guarded by mutex_
};

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_CLIENT_H_
