// One direction of a network link between two DRAGON sides in one process: messages reach the
// receiving side's DragonInbox after a one-way delay with uniform jitter, in the order they were
// sent (as over one TCP stream). Finish ends the stream after the messages in flight; CutAfter
// makes the link fail (the receiver hears Unavailable, the sender's later sends fail);
// SilenceAfter makes it drop everything from then on without a word to either side.
//
// Thread-safety: Send, Finish, CutAfter and SilenceAfter from any thread; delivery runs on the
// link's thread.
#ifndef SILO_EVAL_EMULATED_LINK_H_
#define SILO_EVAL_EMULATED_LINK_H_

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "node/dragon_peer.h"

namespace silo::eval {

class EmulatedLink {
 public:
  // `to` must outlive the link. Delays below zero count as zero.
  EmulatedLink(node::DragonInbox* to, absl::Duration one_way_delay,
               absl::Duration jitter = absl::ZeroDuration(), uint64_t seed = 1);
  ~EmulatedLink();  // drops what is still in flight

  EmulatedLink(const EmulatedLink&) = delete;
  EmulatedLink& operator=(const EmulatedLink&) = delete;

  // Unavailable once the link is cut.
  absl::Status Send(const node::DragonMessage& message);
  // The sender is done: the receiver's inbox closes after the messages in flight.
  void Finish();
  // The link fails at the n-th message from now.
  void CutAfter(int n);
  // From the n-th message from now on, sends succeed and nothing arrives, Finish's end included
  // (a peer that stopped answering, a route that drops packets).
  void SilenceAfter(int n);

 private:
  void Deliver();
  // SilenceAfter's count is reached: nothing more is sent. Requires mutex_.
  bool Silent() const { return silent_after_.has_value() && sent_ >= *silent_after_; }

  node::DragonInbox* to_;
  absl::Duration one_way_delay_;
  absl::Duration jitter_;
  std::mt19937_64 generator_;
  std::mutex mutex_;
  std::condition_variable changed_;
  // Due time, message (nullopt: the end of the stream).
  std::deque<std::pair<absl::Time, std::optional<node::DragonMessage>>> queue_;
  absl::Time last_due_ = absl::InfinitePast();
  std::optional<int> cut_after_;
  std::optional<int> silent_after_;
  int sent_ = 0;
  bool cut_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace silo::eval

#endif  // SILO_EVAL_EMULATED_LINK_H_
