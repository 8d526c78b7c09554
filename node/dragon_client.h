// The device's link to the cloud side of a DRAGON session (DESIGN.md §7): StartSession, then one
// Decode stream over mTLS whose first message names the session. Messages from the cloud are
// pushed into the device's DragonInbox by a reader thread; the stream's end closes the inbox.
//
// Thread-safety: Send from one thread at a time (the decode loop); Finish once.
#ifndef SILO_NODE_DRAGON_CLIENT_H_
#define SILO_NODE_DRAGON_CLIENT_H_

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "node/dragon_peer.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

// How long a device waits for a lost cloud when it tries to resume (it decodes alone meanwhile).
inline constexpr absl::Duration kDragonReconnectTimeout = absl::Seconds(1);

class DragonCloudLink {
 public:
  // Starts the session at the cloud (StartSession under `start_deadline`) and opens the stream
  // (under `stream_deadline`). The cloud's errors (FAILED_PRECONDITION for another model,
  // INVALID_ARGUMENT, ...) or Unavailable. `inbox` must outlive the link.
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

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_CLIENT_H_
