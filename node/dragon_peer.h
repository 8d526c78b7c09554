// One side (device or cloud) of a DRAGON session (DESIGN.md §7), independent of the transport.
//
// The side decodes its document streams, forms p^s and h^s at every step, drafts a token from p^s
// (top-p truncated when the session truncates) and keeps decoding on its own drafts up to
// `max_lookahead` unconfirmed tokens. The drafting side sends each Draft to the aggregator side;
// the aggregator mixes it with its own p^s, commits the final token with the speculative-sampling
// rule (node/dragon_aggregation.h) and sends a Verdict back. A side whose draft lost rolls its
// streams back to the confirmed prefix (a forward pass in flight is cancelled at the next layer)
// and resumes from the final token; drafts that continue a rejected one are recognized by their
// version and dropped. After each final token the aggregator may hand aggregation over
// (AggregatorHandoff{from_step}): it decided every step before from_step and the other side
// decides from there, so no token is lost or decided twice.
//
// If the other side disappears (the inbox closes, a send fails, or nothing arrives for
// peer_timeout, or peer_silence once it has spoken, while waiting), the side goes on alone from
// its own mixture and says so; with a
// reconnect function it tries to bring the other side back, which resumes from the tokens final
// so far with this side aggregating.
//
// Thread-safety: RunDragonPeer runs on one thread; DragonInbox is fed from any thread.
#ifndef SILO_NODE_DRAGON_PEER_H_
#define SILO_NODE_DRAGON_PEER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/document_streams.h"
#include "node/dragon_scheduler.h"
#include "silo/v1/node.pb.h"

namespace silo::node {

using DragonMessage = std::variant<v1::Draft, v1::Verdict, v1::AggregatorHandoff>;

// More queued messages than this close the inbox with ResourceExhausted: an honest side has at
// most about max_lookahead drafts in flight.
inline constexpr size_t kMaxInboxMessages = 1024;

// Messages from the other side, in the order it sent them.
class DragonInbox {
 public:
  void Push(DragonMessage message);
  // The other side is gone; Pop returns `status` once the queued messages are drained.
  void Close(absl::Status status);
  // A new link to the other side: forgets the close, queued messages and the rejection flag.
  // Precondition: nothing pushes from the old link any more.
  void Reopen();

  // The next message, nullopt when `deadline` passes first, or the Close status.
  absl::StatusOr<std::optional<DragonMessage>> Pop(absl::Time deadline);

  // Set when a Verdict that rejects this side's draft arrives: the forward pass in flight is
  // computing on a token that will be rolled back.
  const std::atomic<bool>* draft_rejected() const { return &draft_rejected_; }
  void ClearDraftRejected() { draft_rejected_.store(false); }

 private:
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<DragonMessage> messages_;
  std::optional<absl::Status> closed_;
  std::atomic<bool> draft_rejected_{false};
};

enum class AggregatorPolicy {
  kFixed,      // the aggregator never moves
  kScheduled,  // the ΔZ rule decides after every final token (AggregatorScheduler)
  kAlternate,  // moves every `alternate_every` final tokens (tests, demonstrations)
};

struct DragonPeerOptions {
  v1::DragonSide side = v1::DRAGON_SIDE_DEVICE;        // this side
  v1::DragonSide aggregator = v1::DRAGON_SIDE_DEVICE;  // initial aggregator side
  float temperature = 0;                               // 0: greedy
  uint64_t seed = 0;                                   // sampling; both sides use the same
  int32_t max_tokens = 256;
  std::vector<int32_t> stop_tokens;  // the answer ends after one of these
  float distribution_top_p = 1;      // < 1: drafts and distributions are top-p truncated
  int32_t max_lookahead =
      16;  // unconfirmed tokens decoded ahead (≥ RTT / token time hides the RTT); 0 = synchronous
  AggregatorPolicy policy = AggregatorPolicy::kScheduled;
  int32_t alternate_every = 4;
  AggregatorSchedulerOptions scheduler;
  // How long this side waits for the other before going on without it: peer_timeout until the
  // other side's first message on the link (it may still be prefilling its streams), then
  // peer_silence (it sends about one message a token; a cloud that stopped answering without
  // closing the connection, a route that drops packets, is found in this time).
  absl::Duration peer_timeout = absl::Seconds(30);
  absl::Duration peer_silence = absl::Seconds(10);
  // Evaluation (teacher forcing): when not empty, step t commits forced_tokens[t] instead of the
  // verdict's token, the answer has exactly these tokens (max_tokens is ignored), and the
  // deciding side adds log p(forced token) under the mixture to forced_logprob.
  std::vector<int32_t> forced_tokens;
  // Answer tokens already final when this side (re)joins the session; the streams hold them.
  std::vector<int32_t> confirmed_prefix;
  // While the side decodes alone, called at most every reconnect_interval with the final tokens
  // so far: true when it opened a new link (the inbox reopened, the send function re-pointed,
  // the other side started with those tokens as its confirmed_prefix). This side then aggregates.
  std::function<bool(std::span<const int32_t> confirmed)> reconnect;
  absl::Duration reconnect_interval = absl::Seconds(1);
  // Whether the side decodes on alone when it loses the other side (the device: its user waits
  // for the answer), or ends with the loss's status (the cloud: nobody reads its tokens then).
  bool continue_alone = true;
  // Optional: once set, the answer ends after the current step (the user went away).
  const std::atomic<bool>* stop = nullptr;
};

// InvalidArgument for a side or aggregator that is not DEVICE or CLOUD, max_tokens < 1,
// max_lookahead < 0, a bad temperature or top_p, alternate_every < 1, a wait that is not
// positive.
absl::Status ValidateDragonPeerOptions(const DragonPeerOptions& options);

struct DragonPeerStats {
  int32_t own_drafts_decided = 0;  // own drafts the aggregator (either side) ruled on
  int32_t own_drafts_accepted = 0;
  int32_t rollbacks = 0;           // times the streams went back to the confirmed prefix
  int32_t cancelled_forwards = 0;  // forward passes stopped at a layer boundary
  int32_t handoffs_sent = 0;
  int32_t handoffs_received = 0;
  int32_t reconnects = 0;        // links the side reopened after losing the other side
  int32_t steps_aggregated = 0;  // final tokens this side decided (alone ones included)
  int64_t bytes_sent = 0;        // serialized Draft/Verdict/Handoff bytes
};

struct DragonPeerResult {
  std::vector<int32_t> tokens;  // the final tokens, the same on both sides
  bool stopped_by_stop_token = false;
  bool stopped_by_caller = false;  // options.stop was set
  // The other side was lost at `lost_at_step` (the last time); from there this side decoded
  // alone, up to `resumed_at_step` when a reconnect brought the other side back.
  std::optional<int32_t> lost_at_step;
  std::optional<int32_t> resumed_at_step;
  absl::Status lost_status;
  DragonPeerStats stats;
  double forced_logprob = 0;  // over the steps this side decided (teacher forcing)
};

// Sends one message to the other side; an error means the other side is gone.
using DragonSend = std::function<absl::Status(const DragonMessage&)>;

// Decodes the session to its end. `streams` were started on this side's documents and `scores`
// [n_streams] are their retrieval scores; `on_token` sees each final token in order. Errors:
// ValidateDragonPeerOptions, the engine's, InvalidArgument / FailedPrecondition when the other
// side breaks the protocol (a malformed distribution, a verdict or handoff out of turn).
absl::StatusOr<DragonPeerResult> RunDragonPeer(engine::DocumentStreams& streams,
                                               std::span<const float> scores,
                                               const DragonPeerOptions& options, DragonInbox& inbox,
                                               const DragonSend& send,
                                               const std::function<void(int32_t)>& on_token);

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_PEER_H_
