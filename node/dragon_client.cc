#include "node/dragon_client.h"

#include <algorithm>
#include <condition_variable>
#include <optional>
#include <utility>

#include "node/dragon_events.h"
#include "node/grpc_status.h"

namespace silo::node {

absl::StatusOr<std::unique_ptr<DragonCloudLink>> DragonCloudLink::Open(
    const std::shared_ptr<grpc::Channel>& channel, const v1::StartSessionRequest& request,
    absl::Time start_deadline, absl::Time stream_deadline, DragonInbox* inbox) {
  std::unique_ptr<DragonCloudLink> link(new DragonCloudLink());
  link->stub_ = v1::DragonService::NewStub(channel);
  link->context_.set_deadline(absl::ToChronoTime(stream_deadline));
  link->stream_ = link->stub_->Decode(&link->context_);
  v1::DecodeRequest first;
  *first.mutable_start() = request;
  v1::DecodeResponse started;
  bool answered = false;
  bool timed_out = false;
  {
    // The start has its own deadline, shorter than the stream's: past it the call is cancelled.
    std::mutex mutex;
    std::condition_variable done_changed;
    bool done = false;
    std::thread watchdog([&] {
      std::unique_lock lock(mutex);
      const absl::Duration wait =
          std::clamp(start_deadline - absl::Now(), absl::ZeroDuration(), absl::Hours(24));
      if (!done_changed.wait_for(lock, absl::ToChronoNanoseconds(wait), [&] { return done; })) {
        timed_out = true;
        link->context_.TryCancel();
      }
    });
    answered = link->stream_->Write(first) && link->stream_->Read(&started);
    {
      std::lock_guard lock(mutex);
      done = true;
    }
    done_changed.notify_one();
    watchdog.join();
  }
  if (!answered) {
    link->finished_ = true;
    const absl::Status status = FromGrpcStatus(link->stream_->Finish());
    if (timed_out) {
      return absl::DeadlineExceededError("the cloud did not start the session in time");
    }
    return status.ok() ? absl::UnavailableError("the cloud closed the DRAGON stream at once")
                       : status;
  }
  if (!started.has_started()) {  // the link's end cancels the call
    return absl::FailedPreconditionError("the cloud's first message did not start the session");
  }
  link->n_cloud_chunks_ = started.started().n_chunks();
  link->reader_ = std::thread([raw = link.get(), inbox] {
    while (true) {
      v1::DecodeResponse response;
      if (!raw->stream_->Read(&response)) break;
      raw->bytes_received_ += static_cast<int64_t>(response.ByteSizeLong());
      // An empty event carries nothing.
      if (std::optional<DragonMessage> event = TakeEvent(response); event.has_value()) {
        inbox->Push(*std::move(event));
      }
    }
    inbox->Close(absl::UnavailableError("the cloud ended the DRAGON stream"));
  });
  return link;
}

DragonCloudLink::~DragonCloudLink() {
  // Whoever drops a link unfinished has what it needs from it; its status is moot.
  if (!finished_ && stream_ != nullptr) (void)Cancel();
}

absl::Status DragonCloudLink::Cancel() {
  context_.TryCancel();
  return Finish();
}

absl::Status DragonCloudLink::Send(const DragonMessage& message) {
  if (!stream_->Write(EnvelopeOf<v1::DecodeRequest>(message)))
    return absl::UnavailableError("the cloud stream is broken");
  return absl::OkStatus();
}

CloudHealthWatch::CloudHealthWatch(std::function<std::shared_ptr<grpc::Channel>()> channel,
                                   absl::Duration wait)
    : channel_(std::move(channel)), wait_(wait) {}

CloudHealthWatch::~CloudHealthWatch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    // A context cancelled before its call starts cancels the call as it starts.
    if (in_flight_ != nullptr) in_flight_->TryCancel();
  }
  if (worker_.joinable()) worker_.join();
}

bool CloudHealthWatch::Answers() {
  std::lock_guard lock(mutex_);
  if (answered_) {
    answered_ = false;
    return true;
  }
  if (!checking_ && !stopping_) {
    // The last call's thread has left the lock for good: joining it here does not wait on us.
    if (worker_.joinable()) worker_.join();
    checking_ = true;
    worker_ = std::thread(&CloudHealthWatch::Check, this);
  }
  return false;
}

void CloudHealthWatch::Check() {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + wait_));
  context.set_wait_for_ready(true);  // a channel backing off from the lost cloud may reconnect
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      checking_ = false;
      return;
    }
    in_flight_ = &context;
  }
  v1::HealthResponse response;
  const grpc::Status status =
      v1::NodeControlService::NewStub(channel_())->Health(&context, v1::HealthRequest(), &response);
  std::lock_guard lock(mutex_);
  in_flight_ = nullptr;
  checking_ = false;
  answered_ = status.ok() && response.serving();
}

absl::Status DragonCloudLink::Finish() {
  if (finished_) return finish_status_;
  finished_ = true;
  stream_->WritesDone();
  if (reader_.joinable()) reader_.join();
  finish_status_ = FromGrpcStatus(stream_->Finish());
  return finish_status_;
}

}  // namespace silo::node
