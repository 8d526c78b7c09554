// Where DRAGON's aggregator should sit (DESIGN.md §7). With per-token decode latencies c^a of the
// aggregator's side and c^b of the other, round trip rtt and draft acceptance rates α^a, α^b,
// ExpectedSavingOfMove is the ΔZ rule; AggregatorScheduler feeds it live estimates (EWMA of the
// measured RTT and of each side's decode latency; each side's acceptance as decayed counts on top
// of a prior, so that a few drafts do not swing it from 0 to 1) and decides after every final
// token. A move itself costs about a round trip (the new aggregator waits for the other side's
// first drafts), so it must pay for itself: ΔZ over the next horizon_tokens must exceed
// move_cost_rtts round trips plus a margin, and a move is followed by a few steps without another.
//
// Thread-safety: none; the aggregator's decode loop owns its scheduler.
#ifndef SILO_NODE_DRAGON_SCHEDULER_H_
#define SILO_NODE_DRAGON_SCHEDULER_H_

#include <cstdint>

namespace silo::node {

struct AggregationCosts {
  double aggregator_token_ms = 0;  // c^a
  double other_token_ms = 0;       // c^b
  double rtt_ms = 0;
  double aggregator_acceptance = 0;  // α^a, in [0, 1]
  double other_acceptance = 0;       // α^b, in [0, 1]
};

// ΔZ in milliseconds per token: positive when moving the aggregator to the other side saves time.
double ExpectedSavingOfMove(const AggregationCosts& costs);

struct AggregatorSchedulerOptions {
  double smoothing = 0.2;  // EWMA weight of a new RTT or latency observation
  // Acceptance: each draft's outcome counts 1, earlier ones decay by this factor per draft, and a
  // prior of prior_drafts drafts at prior_acceptance is added to both sides.
  double acceptance_decay = 0.95;
  double prior_drafts = 4;
  double prior_acceptance = 0.9;
  // Move when ΔZ · horizon_tokens > move_cost_rtts · rtt + margin_ms.
  double horizon_tokens = 16;
  double move_cost_rtts = 1;
  double margin_ms = 0.5;
  int32_t min_steps_between_moves = 4;
};

class AggregatorScheduler {
 public:
  explicit AggregatorScheduler(AggregatorSchedulerOptions options = {}) : options_(options) {}

  // Observations; a side is named by whether it is the one this scheduler runs on.
  void ObserveRtt(double rtt_ms);
  void ObserveTokenLatency(bool local_side, double token_ms);
  void ObserveDraft(bool local_side, bool accepted);

  // Called by the aggregator after each final token: whether to hand aggregation over now.
  // `local_is_aggregator` says which side aggregates. Counts the step for the hysteresis.
  bool ShouldMove(bool local_is_aggregator);

  AggregationCosts Costs(bool local_is_aggregator) const;
  // A side's current per-token decode estimate in ms; 0 before its first observation.
  double TokenMs(bool local_side) const { return token_ms_[local_side ? 1 : 0].value; }

 private:
  struct Estimate {
    double value = 0;
    bool seeded = false;
    void Add(double sample, double smoothing);
  };
  struct DecayedCount {
    double accepted = 0;
    double drafts = 0;
  };
  double Acceptance(int side) const;

  AggregatorSchedulerOptions options_;
  Estimate rtt_ms_;
  Estimate token_ms_[2];        // [other, local]
  DecayedCount acceptance_[2];  // [other, local]
  int32_t steps_since_move_ = 0;
};

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_SCHEDULER_H_
