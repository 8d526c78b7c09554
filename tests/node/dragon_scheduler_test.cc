// The ΔZ rule of DESIGN.md §7 in each of its four regimes, and the scheduler's hysteresis.
#include "node/dragon_scheduler.h"

#include "gtest/gtest.h"

namespace silo::node {
namespace {

TEST(DragonSchedulerTest, ExpectedSavingFollowsTheFourRegimes) {
  // The aggregator is much faster than the other side: its drafts never wait, the other's
  // rejections cost a round trip each, so the aggregator should move to the slow side.
  EXPECT_NEAR(ExpectedSavingOfMove({.aggregator_token_ms = 10,
                                    .other_token_ms = 100,
                                    .rtt_ms = 50,
                                    .aggregator_acceptance = 0.9,
                                    .other_acceptance = 0.6}),
              0.4 * 50, 1e-9);
  // c^b − rtt < c^a ≤ c^b.
  EXPECT_NEAR(ExpectedSavingOfMove({.aggregator_token_ms = 80,
                                    .other_token_ms = 100,
                                    .rtt_ms = 50,
                                    .aggregator_acceptance = 0.9,
                                    .other_acceptance = 0.6}),
              0.1 * 20 + 0.3 * 50, 1e-9);
  // c^b < c^a ≤ c^b + rtt.
  EXPECT_NEAR(ExpectedSavingOfMove({.aggregator_token_ms = 120,
                                    .other_token_ms = 100,
                                    .rtt_ms = 50,
                                    .aggregator_acceptance = 0.6,
                                    .other_acceptance = 0.9}),
              0.1 * -20 + -0.3 * 50, 1e-9);
  // The aggregator is the slow side already: moving costs the round trips of its rejections.
  EXPECT_NEAR(ExpectedSavingOfMove({.aggregator_token_ms = 200,
                                    .other_token_ms = 100,
                                    .rtt_ms = 50,
                                    .aggregator_acceptance = 0.8,
                                    .other_acceptance = 0.8}),
              -0.2 * 50, 1e-9);
}

TEST(DragonSchedulerTest, MovesToTheSlowSideOnceMeasuredAndNotTooOften) {
  AggregatorScheduler scheduler({.smoothing = 0.5, .margin_ms = 1, .min_steps_between_moves = 3});
  // Nothing measured yet: no move.
  EXPECT_FALSE(scheduler.ShouldMove(true));
  scheduler.ObserveRtt(100);
  scheduler.ObserveTokenLatency(true, 10);    // this side (the aggregator) is fast
  scheduler.ObserveTokenLatency(false, 200);  // the other is slow
  scheduler.ObserveDraft(true, true);
  scheduler.ObserveDraft(false, false);
  EXPECT_FALSE(scheduler.ShouldMove(true));  // hysteresis: 2 steps since start
  EXPECT_TRUE(scheduler.ShouldMove(true));
  // Now the other side aggregates; from its point of view nothing should move it back, and
  // right after a move nothing moves anyway.
  EXPECT_FALSE(scheduler.ShouldMove(false));
  const AggregationCosts costs = scheduler.Costs(false);
  EXPECT_DOUBLE_EQ(costs.aggregator_token_ms, 200);
  EXPECT_DOUBLE_EQ(costs.other_token_ms, 10);
  EXPECT_LT(ExpectedSavingOfMove(costs), 0);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(scheduler.ShouldMove(false));
}

TEST(DragonSchedulerTest, MovesOnlyWhenTheSavingPaysForTheMove) {
  // Equal decode speeds, 300 ms round trip: ΔZ = (α^a − α^b) · rtt, and a move must save more
  // than a round trip over the next 16 tokens.
  const auto run = [](bool (*other_accepts)(int)) {
    AggregatorScheduler scheduler({.min_steps_between_moves = 1});
    scheduler.ObserveRtt(300);
    scheduler.ObserveTokenLatency(true, 30);
    scheduler.ObserveTokenLatency(false, 30);
    for (int i = 0; i < 20; ++i) {
      scheduler.ObserveDraft(true, true);
      scheduler.ObserveDraft(false, other_accepts(i));
    }
    return scheduler.ShouldMove(true);
  };
  // One early rejection of the other side's drafts, long decayed: not worth a round trip.
  EXPECT_FALSE(run([](int i) { return i != 0; }));
  // A quarter of them rejected: moving (so that the other side aggregates) pays.
  EXPECT_TRUE(run([](int i) { return i % 4 != 0; }));
}

TEST(DragonSchedulerTest, ASingleDraftDoesNotSwingTheAcceptance) {
  AggregatorScheduler scheduler;
  scheduler.ObserveDraft(true, false);
  scheduler.ObserveDraft(false, true);
  const AggregationCosts costs = scheduler.Costs(true);
  // Prior of 4 drafts at 0.9: (0 + 3.6) / 5 and (1 + 3.6) / 5.
  EXPECT_DOUBLE_EQ(costs.aggregator_acceptance, 3.6 / 5);
  EXPECT_DOUBLE_EQ(costs.other_acceptance, 4.6 / 5);
}

}  // namespace
}  // namespace silo::node
