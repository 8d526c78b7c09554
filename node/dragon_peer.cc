#include "node/dragon_peer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "node/dragon_aggregation.h"

namespace silo::node {

void DragonInbox::Push(DragonMessage message) {
  std::lock_guard lock(mutex_);
  if (closed_.has_value()) return;
  if (messages_.size() >= kMaxInboxMessages) {
    closed_ = absl::ResourceExhaustedError("the other side sends faster than this side decodes");
    arrived_.notify_one();
    return;
  }
  if (const auto* verdict = std::get_if<v1::Verdict>(&message);
      verdict != nullptr && !verdict->accepted()) {
    draft_rejected_.store(true);
  }
  messages_.push_back(std::move(message));
  arrived_.notify_one();
}

void DragonInbox::Close(absl::Status status) {
  std::lock_guard lock(mutex_);
  if (!closed_.has_value()) closed_ = std::move(status);
  arrived_.notify_one();
}

void DragonInbox::Reopen() {
  std::lock_guard lock(mutex_);
  closed_.reset();
  messages_.clear();
  draft_rejected_.store(false);
}

absl::StatusOr<std::optional<DragonMessage>> DragonInbox::Pop(absl::Time deadline) {
  std::unique_lock lock(mutex_);
  while (messages_.empty() && !closed_.has_value()) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return std::nullopt;
    arrived_.wait_for(lock, absl::ToChronoNanoseconds(left));
  }
  if (!messages_.empty()) {
    DragonMessage message = std::move(messages_.front());
    messages_.pop_front();
    return message;
  }
  return *closed_;
}

absl::Status ValidateDragonPeerOptions(const DragonPeerOptions& options) {
  const auto is_side = [](v1::DragonSide side) {
    return side == v1::DRAGON_SIDE_DEVICE || side == v1::DRAGON_SIDE_CLOUD;
  };
  if (!is_side(options.side) || !is_side(options.aggregator)) {
    return absl::InvalidArgumentError("DRAGON sides are DEVICE and CLOUD");
  }
  if (options.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (options.max_lookahead < 0) return absl::InvalidArgumentError("max_lookahead is negative");
  if (options.peer_timeout <= absl::ZeroDuration() ||
      options.peer_silence <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("peer_timeout and peer_silence must be positive");
  }
  if (!(options.temperature >= 0) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError("temperature must be finite and not negative");
  }
  if (!(options.distribution_top_p > 0 && options.distribution_top_p <= 1)) {
    return absl::InvalidArgumentError("distribution_top_p must be in (0, 1]");
  }
  for (const int32_t token : options.forced_tokens) {
    if (token < 0) return absl::InvalidArgumentError("a forced token is negative");
  }
  for (const int32_t token : options.confirmed_prefix) {
    if (token < 0) return absl::InvalidArgumentError("a confirmed token is negative");
  }
  if (options.alternate_every < 1) {
    return absl::InvalidArgumentError("alternate_every must be at least 1");
  }
  return absl::OkStatus();
}

namespace {

constexpr uint32_t kVerdictDraws = 0;
constexpr uint32_t kDeviceDraftDraws = 1;
constexpr uint32_t kCloudDraftDraws = 2;

int64_t NowNanos() { return absl::ToUnixNanos(absl::Now()); }

// Draws of one (purpose, step, version): a run's randomness does not depend on which side
// decides a step or on timing.
std::mt19937_64 GeneratorFor(uint64_t seed, uint32_t purpose, int32_t step, uint32_t version) {
  std::seed_seq sequence{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), purpose,
                         static_cast<uint32_t>(step), version};
  return std::mt19937_64(sequence);
}

v1::DragonSide Other(v1::DragonSide side) {
  return side == v1::DRAGON_SIDE_DEVICE ? v1::DRAGON_SIDE_CLOUD : v1::DRAGON_SIDE_DEVICE;
}

class Peer {
 public:
  Peer(engine::DocumentStreams& streams, std::span<const float> scores,
       const DragonPeerOptions& options, DragonInbox& inbox, const DragonSend& send,
       const std::function<void(int32_t)>& on_token)
      : streams_(streams),
        scores_(scores),
        options_(options),
        inbox_(inbox),
        send_(send),
        on_token_(on_token),
        aggregator_(options.aggregator),
        scheduler_(options.scheduler) {}

  absl::StatusOr<DragonPeerResult> Run() {
    SILO_RETURN_IF_ERROR(ValidateDragonPeerOptions(options_));
    if (static_cast<size_t>(streams_.n_streams()) != scores_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(streams_.n_streams(), " streams but ", scores_.size(), " scores"));
    }
    for (const int32_t token : options_.forced_tokens) {
      if (token >= streams_.vocab_size()) {
        return absl::InvalidArgumentError("a forced token is outside the vocabulary");
      }
    }
    if (static_cast<size_t>(streams_.n_answer_tokens()) != options_.confirmed_prefix.size() ||
        streams_.logits().empty()) {
      return absl::FailedPreconditionError(
          "the streams must be freshly started on the confirmed prefix");
    }
    result_.tokens = options_.confirmed_prefix;
    if (Confirmed() >= MaxTokens()) {
      return absl::InvalidArgumentError("the confirmed prefix already holds every token");
    }
    SILO_RETURN_IF_ERROR(AddPending());
    while (!done_) {
      // Everything that arrived, then a decision, then a forward pass; wait only when none of
      // them can make progress.
      SILO_ASSIGN_OR_RETURN(bool progressed, DrainInbox(absl::Now()));
      if (alone_ && !options_.continue_alone) return result_.lost_status;
      if (options_.stop != nullptr && options_.stop->load()) {
        result_.stopped_by_caller = true;
        break;
      }
      if (done_) break;
      MaybeReconnect();
      SILO_ASSIGN_OR_RETURN(const bool decided, TryDecide());
      if (decided) continue;
      if (CanForward()) {
        SILO_RETURN_IF_ERROR(Forward());
        continue;
      }
      const absl::Duration wait = heard_ ? options_.peer_silence : options_.peer_timeout;
      SILO_ASSIGN_OR_RETURN(progressed, DrainInbox(absl::Now() + wait));
      if (!progressed && !alone_) {
        LoseOtherSide(absl::DeadlineExceededError(
            absl::StrCat("nothing from the other side for ", absl::FormatDuration(wait))));
      }
    }
    return std::move(result_);
  }

 private:
  struct Pending {
    int32_t step = 0;
    SideMixture own;              // p^s at `step`, full
    std::vector<float> proposal;  // what the draft was drawn from (top-p truncated or full)
    int32_t draft = 0;
  };
  struct RemoteDraft {
    v1::Draft draft;
    std::vector<float> p;  // decoded distribution
    int64_t received_ns = 0;
  };

  bool IsAggregator() const { return aggregator_ == options_.side; }
  int32_t MaxTokens() const {
    return options_.forced_tokens.empty() ? options_.max_tokens
                                          : static_cast<int32_t>(options_.forced_tokens.size());
  }
  // The token step `step` commits: the forced one, or `decided`.
  int32_t Final(int32_t step, int32_t decided, std::span<const float> target) {
    if (options_.forced_tokens.empty()) return decided;
    const int32_t forced = options_.forced_tokens[static_cast<size_t>(step)];
    // A forced token the mixture gives no mass scores as the smallest normal float.
    result_.forced_logprob +=
        std::log(std::max(target[static_cast<size_t>(forced)], std::numeric_limits<float>::min()));
    return forced;
  }
  int32_t Confirmed() const { return static_cast<int32_t>(result_.tokens.size()); }
  bool IsStop(int32_t token) const {
    return std::find(options_.stop_tokens.begin(), options_.stop_tokens.end(), token) !=
           options_.stop_tokens.end();
  }

  void LoseOtherSide(absl::Status why) {
    if (alone_) return;
    alone_ = true;
    result_.lost_at_step = Confirmed();
    result_.resumed_at_step.reset();
    result_.lost_status = std::move(why);
    last_reconnect_ = absl::Now();
  }

  // Alone, and time to try: a new link, the other side resuming from the final tokens.
  void MaybeReconnect() {
    if (!alone_ || !options_.reconnect ||
        absl::Now() - last_reconnect_ < options_.reconnect_interval) {
      return;
    }
    last_reconnect_ = absl::Now();
    if (!options_.reconnect(result_.tokens)) return;
    alone_ = false;
    heard_ = false;               // the other side prefills again first
    aggregator_ = options_.side;  // the side that holds the state aggregates
    remote_drafts_.clear();
    required_remote_version_ = 0;
    ++result_.stats.reconnects;
    result_.resumed_at_step = Confirmed();
  }

  void Send(DragonMessage message) {
    if (alone_) return;
    result_.stats.bytes_sent +=
        std::visit([](const auto& m) { return static_cast<int64_t>(m.ByteSizeLong()); }, message);
    if (absl::Status status = send_(message); !status.ok()) LoseOtherSide(std::move(status));
  }

  // Reads every queued message; with a deadline in the future, waits until one arrives. Returns
  // whether any message was handled.
  absl::StatusOr<bool> DrainInbox(absl::Time deadline) {
    bool handled = false;
    while (!alone_ && !done_) {
      absl::StatusOr<std::optional<DragonMessage>> message =
          inbox_.Pop(handled ? absl::InfinitePast() : deadline);
      if (!message.ok()) {
        LoseOtherSide(message.status());
        return true;
      }
      if (!message->has_value()) break;
      SILO_RETURN_IF_ERROR(Handle(std::move(**message)));
      handled = true;
      heard_ = true;
    }
    return handled;
  }

  absl::Status Handle(DragonMessage message) {
    if (auto* draft = std::get_if<v1::Draft>(&message)) return HandleDraft(std::move(*draft));
    if (auto* verdict = std::get_if<v1::Verdict>(&message)) return HandleVerdict(*verdict);
    return HandleHandoff(std::get<v1::AggregatorHandoff>(message));
  }

  absl::Status HandleDraft(v1::Draft draft) {
    // Sent to a former aggregator, continuing a rejected draft, or already decided: stale.
    if (!IsAggregator() || draft.version() < required_remote_version_ ||
        static_cast<int64_t>(draft.step()) < Confirmed()) {
      return absl::OkStatus();
    }
    if (draft.token() >= static_cast<uint32_t>(streams_.vocab_size()) ||
        !std::isfinite(draft.h()) || draft.version() == UINT32_MAX) {
      return absl::InvalidArgumentError("a draft's token, h or version is invalid");
    }
    // An honest side drafts at most max_lookahead steps past what it knows is final, which is
    // never more than what the aggregator knows.
    if (static_cast<int64_t>(draft.step()) > Confirmed() + options_.max_lookahead) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a draft for step ", draft.step(), " beyond the lookahead of step ", Confirmed()));
    }
    SILO_ASSIGN_OR_RETURN(std::vector<float> p,
                          DecodeDistribution(draft.distribution(), streams_.vocab_size()));
    if (draft.decode_ns() > 0) {
      scheduler_.ObserveTokenLatency(false, static_cast<double>(draft.decode_ns()) / 1e6);
    }
    if (draft.rtt_ns() > 0) scheduler_.ObserveRtt(static_cast<double>(draft.rtt_ns()) / 1e6);
    const uint32_t step = draft.step();
    remote_drafts_[step] = {
        .draft = std::move(draft), .p = std::move(p), .received_ns = NowNanos()};
    return absl::OkStatus();
  }

  absl::Status HandleVerdict(const v1::Verdict& verdict) {
    if (IsAggregator()) return absl::FailedPreconditionError("a verdict reached the aggregator");
    if (static_cast<int64_t>(verdict.step()) != Confirmed() || pending_.empty() ||
        pending_.front().step != Confirmed()) {
      return absl::FailedPreconditionError(absl::StrCat("a verdict for step ", verdict.step(),
                                                        " while step ", Confirmed(), " is open"));
    }
    if (verdict.final_token() >= static_cast<uint32_t>(streams_.vocab_size())) {
      return absl::InvalidArgumentError("a verdict's token is out of range");
    }
    if (verdict.accepted() !=
        (static_cast<int32_t>(verdict.final_token()) == pending_.front().draft)) {
      return absl::FailedPreconditionError("a verdict's accepted flag contradicts its token");
    }
    const int64_t rtt_ns = NowNanos() - verdict.draft_sent_at_unix_ns() - verdict.hold_ns();
    if (verdict.draft_sent_at_unix_ns() > 0 && rtt_ns > 0) last_rtt_ns_ = rtt_ns;
    SILO_RETURN_IF_ERROR(Commit(static_cast<int32_t>(verdict.final_token())));
    inbox_.ClearDraftRejected();
    return absl::OkStatus();
  }

  absl::Status HandleHandoff(const v1::AggregatorHandoff& handoff) {
    if (IsAggregator() || static_cast<int64_t>(handoff.from_step()) != Confirmed()) {
      return absl::FailedPreconditionError(
          absl::StrCat("a handoff from step ", handoff.from_step(), " at step ", Confirmed()));
    }
    ++result_.stats.handoffs_received;
    aggregator_ = options_.side;
    remote_drafts_.clear();
    required_remote_version_ = 0;
    return absl::OkStatus();
  }

  // Step Confirmed() is final with `token`: keep the drafts that led to it, or roll back.
  absl::Status Commit(int32_t token) {
    const int32_t step = Confirmed();
    const bool own_accepted = !pending_.empty() && pending_.front().draft == token;
    ++result_.stats.own_drafts_decided;
    if (own_accepted) {
      ++result_.stats.own_drafts_accepted;
      pending_.pop_front();
    } else {
      if (streams_.n_answer_tokens() > step) ++result_.stats.rollbacks;
      SILO_RETURN_IF_ERROR(streams_.Truncate(step));
      pending_.clear();
      ++version_;
      inbox_.ClearDraftRejected();
    }
    scheduler_.ObserveDraft(true, own_accepted);
    result_.tokens.push_back(token);
    on_token_(token);
    if (IsStop(token)) result_.stopped_by_stop_token = true;
    done_ = (options_.forced_tokens.empty() && IsStop(token)) || Confirmed() >= MaxTokens();
    return absl::OkStatus();
  }

  // As aggregator (or alone), decides step Confirmed() if both distributions are here.
  absl::StatusOr<bool> TryDecide() {
    if (!(IsAggregator() || alone_) || pending_.empty()) return false;
    const int32_t step = Confirmed();
    const Pending& own = pending_.front();
    if (alone_) {
      ++result_.stats.steps_aggregated;
      SILO_RETURN_IF_ERROR(Commit(Final(step, own.draft, own.own.p)));
      return true;
    }
    auto remote = remote_drafts_.find(static_cast<uint32_t>(step));
    if (remote == remote_drafts_.end()) return false;
    const v1::Draft& draft = remote->second.draft;
    const std::vector<float> target =
        MixSides(own.own, SideMixture{.h = draft.h(), .p = remote->second.p});
    std::mt19937_64 generator = GeneratorFor(options_.seed, kVerdictDraws, step, 0);
    DraftVerdict verdict =
        VerifyDraft(target, remote->second.p, static_cast<int32_t>(draft.token()),
                    options_.temperature == 0, generator);
    verdict.token = Final(step, verdict.token, target);
    verdict.accepted = verdict.token == static_cast<int32_t>(draft.token());
    v1::Verdict message;
    message.set_step(static_cast<uint32_t>(step));
    message.set_final_token(static_cast<uint32_t>(verdict.token));
    message.set_accepted(verdict.accepted);
    message.set_draft_sent_at_unix_ns(draft.sent_at_unix_ns());
    message.set_hold_ns(NowNanos() - remote->second.received_ns);
    scheduler_.ObserveDraft(false, verdict.accepted);
    if (!verdict.accepted) {
      // The other side's later drafts continue the rejected token.
      required_remote_version_ = draft.version() + 1;
      remote_drafts_.clear();
    } else {
      remote_drafts_.erase(remote);
    }
    Send(std::move(message));
    ++result_.stats.steps_aggregated;
    SILO_RETURN_IF_ERROR(Commit(verdict.token));
    if (!done_ && !alone_ && ShouldHandOff()) HandOff();
    return true;
  }

  bool ShouldHandOff() {
    switch (options_.policy) {
      case AggregatorPolicy::kFixed:
        return false;
      case AggregatorPolicy::kAlternate:
        return Confirmed() % options_.alternate_every == 0;
      case AggregatorPolicy::kScheduled:
        return scheduler_.ShouldMove(true);
    }
    return false;
  }

  void HandOff() {
    v1::AggregatorHandoff handoff;
    handoff.set_from_step(static_cast<uint32_t>(Confirmed()));
    Send(std::move(handoff));
    ++result_.stats.handoffs_sent;
    aggregator_ = Other(options_.side);
    remote_drafts_.clear();
    // Drafts sent while the other side drafted too were dropped there: send them all again.
    for (const Pending& pending : pending_) SendDraft(pending);
  }

  bool CanForward() const {
    if (done_) return false;
    const int32_t fed = streams_.n_answer_tokens();
    if (fed < Confirmed()) return true;  // the final token must go in
    if (pending_.empty()) return false;
    const Pending& last = pending_.back();
    return last.step + 1 < MaxTokens() && !IsStop(last.draft) &&
           last.step + 1 - Confirmed() <= options_.max_lookahead;
  }

  absl::Status Forward() {
    const int32_t fed = streams_.n_answer_tokens();
    const int32_t token = fed < Confirmed() ? result_.tokens[fed] : pending_.back().draft;
    const absl::Time start = absl::Now();
    // A drafting side's pass may be overtaken by a rejection; the aggregator's never is.
    const absl::Status status =
        streams_.Append(token, IsAggregator() || alone_ ? nullptr : inbox_.draft_rejected());
    if (absl::IsCancelled(status)) {
      ++result_.stats.cancelled_forwards;
      return absl::OkStatus();
    }
    SILO_RETURN_IF_ERROR(status);
    const double token_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    scheduler_.ObserveTokenLatency(true, token_ms);
    return AddPending();
  }

  // The distribution after the tokens fed so far, and a draft from it.
  absl::Status AddPending() {
    SILO_ASSIGN_OR_RETURN(SideMixture own,
                          MixStreams(streams_.logits(), scores_, options_.temperature));
    std::vector<float> proposal = TruncateTopP(own.p, options_.distribution_top_p);
    const int32_t step = streams_.n_answer_tokens();
    const uint32_t side =
        options_.side == v1::DRAGON_SIDE_CLOUD ? kCloudDraftDraws : kDeviceDraftDraws;
    std::mt19937_64 generator = GeneratorFor(options_.seed, side, step, version_);
    const int32_t draft = DraftToken(proposal, options_.temperature == 0, generator);
    pending_.push_back(
        {.step = step, .own = std::move(own), .proposal = std::move(proposal), .draft = draft});
    if (!IsAggregator() && !alone_) SendDraft(pending_.back());
    return absl::OkStatus();
  }

  void SendDraft(const Pending& pending) {
    v1::Draft draft;
    draft.set_step(static_cast<uint32_t>(pending.step));
    draft.set_token(static_cast<uint32_t>(pending.draft));
    draft.set_h(pending.own.h);
    *draft.mutable_distribution() =
        EncodeDistribution(pending.proposal, options_.distribution_top_p >= 1);
    draft.set_sent_at_unix_ns(NowNanos());
    draft.set_decode_ns(static_cast<int64_t>(scheduler_.TokenMs(/*local_side=*/true) * 1e6));
    draft.set_version(version_);
    draft.set_rtt_ns(last_rtt_ns_);
    Send(std::move(draft));
  }

  engine::DocumentStreams& streams_;
  std::span<const float> scores_;
  const DragonPeerOptions& options_;
  DragonInbox& inbox_;
  const DragonSend& send_;
  const std::function<void(int32_t)>& on_token_;

  v1::DragonSide aggregator_;
  AggregatorScheduler scheduler_;
  std::deque<Pending> pending_;  // steps Confirmed() .. , one distribution and draft each
  std::map<uint32_t, RemoteDraft> remote_drafts_;
  uint32_t version_ = 0;
  uint32_t required_remote_version_ = 0;
  int64_t last_rtt_ns_ = 0;
  absl::Time last_reconnect_ = absl::InfinitePast();
  bool heard_ = false;  // a message arrived from the other side on the current link
  bool alone_ = false;
  bool done_ = false;
  DragonPeerResult result_;
};

}  // namespace

absl::StatusOr<DragonPeerResult> RunDragonPeer(engine::DocumentStreams& streams,
                                               std::span<const float> scores,
                                               const DragonPeerOptions& options, DragonInbox& inbox,
                                               const DragonSend& send,
                                               const std::function<void(int32_t)>& on_token) {
  Peer peer(streams, scores, options, inbox, send, on_token);
  return peer.Run();
}

}  // namespace silo::node
