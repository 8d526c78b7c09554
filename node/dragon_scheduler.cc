#include "node/dragon_scheduler.h"

namespace silo::node {

double ExpectedSavingOfMove(const AggregationCosts& costs) {
  const double ca = costs.aggregator_token_ms;
  const double cb = costs.other_token_ms;
  const double rtt = costs.rtt_ms;
  const double alpha_a = costs.aggregator_acceptance;
  const double alpha_b = costs.other_acceptance;
  if (ca <= cb - rtt) return (1 - alpha_b) * rtt;
  if (ca <= cb) return (1 - alpha_a) * (cb - ca) + (alpha_a - alpha_b) * rtt;
  if (ca <= cb + rtt) return (1 - alpha_b) * (cb - ca) + (alpha_a - alpha_b) * rtt;
  return -(1 - alpha_a) * rtt;
}

void AggregatorScheduler::Estimate::Add(double sample, double smoothing) {
  value = seeded ? value + smoothing * (sample - value) : sample;
  seeded = true;
}

void AggregatorScheduler::ObserveRtt(double rtt_ms) { rtt_ms_.Add(rtt_ms, options_.smoothing); }

void AggregatorScheduler::ObserveTokenLatency(bool local_side, double token_ms) {
  token_ms_[local_side ? 1 : 0].Add(token_ms, options_.smoothing);
}

void AggregatorScheduler::ObserveDraft(bool local_side, bool accepted) {
  DecayedCount& count = acceptance_[local_side ? 1 : 0];
  count.accepted = count.accepted * options_.acceptance_decay + (accepted ? 1 : 0);
  count.drafts = count.drafts * options_.acceptance_decay + 1;
}

double AggregatorScheduler::Acceptance(int side) const {
  const DecayedCount& count = acceptance_[side];
  return (count.accepted + options_.prior_drafts * options_.prior_acceptance) /
         (count.drafts + options_.prior_drafts);
}

AggregationCosts AggregatorScheduler::Costs(bool local_is_aggregator) const {
  const int a = local_is_aggregator ? 1 : 0;
  const int b = 1 - a;
  return {.aggregator_token_ms = token_ms_[a].value,
          .other_token_ms = token_ms_[b].value,
          .rtt_ms = rtt_ms_.value,
          .aggregator_acceptance = Acceptance(a),
          .other_acceptance = Acceptance(b)};
}

bool AggregatorScheduler::ShouldMove(bool local_is_aggregator) {
  ++steps_since_move_;
  // Decide only on measured inputs: both latencies, the RTT and drafts of both sides.
  const bool measured = rtt_ms_.seeded && token_ms_[0].seeded && token_ms_[1].seeded &&
                        acceptance_[0].drafts > 0 && acceptance_[1].drafts > 0;
  if (!measured || steps_since_move_ < options_.min_steps_between_moves) return false;
  const double saving_ms =
      ExpectedSavingOfMove(Costs(local_is_aggregator)) * options_.horizon_tokens;
  if (saving_ms <= options_.move_cost_rtts * rtt_ms_.value + options_.margin_ms) return false;
  steps_since_move_ = 0;
  return true;
}

}  // namespace silo::node
