#include "eval/emulated_link.h"

#include <algorithm>

namespace silo::eval {

EmulatedLink::EmulatedLink(node::DragonInbox* to, absl::Duration one_way_delay,
                           absl::Duration jitter, uint64_t seed)
    : to_(to),
      one_way_delay_(std::max(one_way_delay, absl::ZeroDuration())),
      jitter_(std::max(jitter, absl::ZeroDuration())),
      generator_(seed) {
  thread_ = std::thread([this] { Deliver(); });
}

EmulatedLink::~EmulatedLink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_one();
  thread_.join();
}

absl::Status EmulatedLink::Send(const node::DragonMessage& message) {
  std::lock_guard lock(mutex_);
  if (cut_) return absl::UnavailableError("the link is cut");
  if (cut_after_.has_value() && sent_ >= *cut_after_) {
    cut_ = true;
    to_->Close(absl::UnavailableError("the link to the other side is cut"));
    return absl::UnavailableError("the link is cut");
  }
  if (Silent()) return absl::OkStatus();
  ++sent_;
  const double spread = std::uniform_real_distribution<double>(-1, 1)(generator_);
  // In order, as one TCP stream: a message never overtakes the one before it.
  const absl::Time due = std::max(
      last_due_, absl::Now() + std::max(absl::ZeroDuration(), one_way_delay_ + jitter_ * spread));
  last_due_ = due;
  queue_.emplace_back(due, message);
  changed_.notify_one();
  return absl::OkStatus();
}

void EmulatedLink::Finish() {
  std::lock_guard lock(mutex_);
  if (Silent()) return;
  const absl::Time due = std::max(last_due_, absl::Now() + one_way_delay_);
  last_due_ = due;
  queue_.emplace_back(due, std::nullopt);
  changed_.notify_one();
}

void EmulatedLink::CutAfter(int n) {
  std::lock_guard lock(mutex_);
  cut_after_ = sent_ + n;
}

void EmulatedLink::SilenceAfter(int n) {
  std::lock_guard lock(mutex_);
  silent_after_ = sent_ + n;
}

void EmulatedLink::Deliver() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (queue_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const absl::Time due = queue_.front().first;
    if (absl::Now() < due) {
      changed_.wait_for(lock, absl::ToChronoNanoseconds(due - absl::Now()));
      continue;
    }
    std::optional<node::DragonMessage> message = std::move(queue_.front().second);
    queue_.pop_front();
    if (cut_) continue;
    if (message.has_value()) {
      to_->Push(*std::move(message));
    } else {
      to_->Close(absl::UnavailableError("the other side finished"));
    }
  }
}

}  // namespace silo::eval
