// Two DRAGON sides on one tiny model, each on its own thread, joined by in-memory links with
// delay: greedy output equals the centralized mixture over every chunk whatever the aggregator
// does (fixed on either side, moving every few steps, synchronous, deep lookahead); sampling
// follows the mixture; a lost side is survived; protocol violations are refused.
#include "node/dragon_peer.h"

#include <atomic>
#include <memory>
#include <random>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "engine/document_streams.h"
#include "engine/model.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "eval/emulated_link.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/dragon_aggregation.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace silo::node {
namespace {

using ::silo::testing::StatusIs;

constexpr int32_t kVocab = 128;

DragonPeerOptions Options(v1::DragonSide aggregator, int32_t max_tokens, AggregatorPolicy policy) {
  DragonPeerOptions options;
  options.aggregator = aggregator;
  options.max_tokens = max_tokens;
  options.policy = policy;
  return options;
}

// `options` with one change.
template <typename Change>
DragonPeerOptions With(DragonPeerOptions options, Change change) {
  change(options);
  return options;
}

struct Side {
  std::vector<std::vector<int32_t>> documents;
  std::vector<float> scores;
};

class DragonPeerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = dir_.WriteFile(
        "tiny.gguf", silo::testing::MakeTinyModel({.vocab_size = kVocab, .seed = 7}).gguf);
    ASSERT_OK_AND_ASSIGN(model_, engine::Model::Open(path));
    device_transformer_ = std::make_unique<engine::Transformer>(*model_, device_pool_);
    cloud_transformer_ = std::make_unique<engine::Transformer>(*model_, cloud_pool_);
    spare_transformer_ = std::make_unique<engine::Transformer>(*model_, spare_pool_);
    std::mt19937 generator(3);
    std::uniform_int_distribution<int32_t> token(4, kVocab - 1);
    for (Side* side : {&device_, &cloud_}) {
      for (int k = 0; k < 2; ++k) {
        std::vector<int32_t> document(6 + 3 * k);
        for (int32_t& t : document) t = token(generator);
        side->documents.push_back(document);
        side->scores.push_back(0.3f * static_cast<float>(k + (side == &cloud_ ? 1 : 0)));
      }
    }
  }

  engine::DocumentStreamsPrompt Prompt(const Side& side) const {
    return {.prefix = {1, 2, 3}, .documents = side.documents, .suffix = {5, 6}};
  }

  // Greedy decoding of the mixture over every chunk in one place, after `prefix`.
  std::vector<int32_t> Centralized(int32_t n_tokens, const std::vector<int32_t>& prefix = {}) {
    Side all = device_;
    all.documents.insert(all.documents.end(), cloud_.documents.begin(), cloud_.documents.end());
    all.scores.insert(all.scores.end(), cloud_.scores.begin(), cloud_.scores.end());
    auto streams =
        engine::DocumentStreams::Start(*device_transformer_, Prompt(all), n_tokens, prefix);
    EXPECT_OK(streams.status());
    std::vector<int32_t> tokens = prefix;
    for (auto step = static_cast<int32_t>(prefix.size()); step < n_tokens; ++step) {
      auto mixture = MixStreams((*streams)->logits(), all.scores, 0);
      EXPECT_OK(mixture.status());
      std::mt19937_64 unused;
      tokens.push_back(DraftToken(mixture->p, true, unused));
      if (step + 1 < n_tokens) {
        EXPECT_OK((*streams)->Append(tokens.back()));
      }
    }
    return tokens;
  }

  struct Pair {
    absl::StatusOr<DragonPeerResult> device;
    absl::StatusOr<DragonPeerResult> cloud;
  };

  // How the cloud's link to the device ends early, after `after` messages: it fails (the cloud
  // disappears) or goes silent (the cloud stops answering, the connection stays).
  struct CloudFault {
    enum { kCut, kSilence } kind;
    int after;
  };
  // Runs both sides to the end.
  Pair Run(DragonPeerOptions options, absl::Duration one_way = absl::Milliseconds(1),
           std::optional<CloudFault> fault = std::nullopt) {
    DragonInbox device_inbox;
    DragonInbox cloud_inbox;
    auto to_cloud = std::make_unique<eval::EmulatedLink>(&cloud_inbox, one_way);
    auto to_device = std::make_unique<eval::EmulatedLink>(&device_inbox, one_way);
    if (fault.has_value() && fault->kind == CloudFault::kCut) to_device->CutAfter(fault->after);
    if (fault.has_value() && fault->kind == CloudFault::kSilence) {
      to_device->SilenceAfter(fault->after);
    }
    Pair pair;
    DragonPeerOptions cloud_options = options;
    cloud_options.side = v1::DRAGON_SIDE_CLOUD;
    options.side = v1::DRAGON_SIDE_DEVICE;
    std::thread cloud_thread([&] {
      pair.cloud = RunSide(*cloud_transformer_, cloud_, cloud_options, cloud_inbox,
                           [&](const DragonMessage& m) { return to_device->Send(m); });
      to_device->Finish();
    });
    pair.device = RunSide(*device_transformer_, device_, options, device_inbox,
                          [&](const DragonMessage& m) { return to_cloud->Send(m); });
    to_cloud->Finish();
    cloud_thread.join();
    return pair;
  }

  static absl::StatusOr<DragonPeerResult> RunSide(engine::Transformer& transformer,
                                                  const Side& side,
                                                  const DragonPeerOptions& options,
                                                  DragonInbox& inbox, const DragonSend& send) {
    SILO_ASSIGN_OR_RETURN(
        std::unique_ptr<engine::DocumentStreams> streams,
        engine::DocumentStreams::Start(
            transformer, {.prefix = {1, 2, 3}, .documents = side.documents, .suffix = {5, 6}},
            options.max_tokens, options.confirmed_prefix));
    return RunDragonPeer(*streams, side.scores, options, inbox, send, [](int32_t) {});
  }

  silo::testing::TempDir dir_;
  engine::ThreadPool device_pool_{1};
  engine::ThreadPool cloud_pool_{1};
  engine::ThreadPool spare_pool_{1};
  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<engine::Transformer> device_transformer_;
  std::unique_ptr<engine::Transformer> cloud_transformer_;
  std::unique_ptr<engine::Transformer> spare_transformer_;  // a second cloud
  Side device_;
  Side cloud_;
};

TEST_F(DragonPeerTest, GreedyOutputIsTheCentralizedMixtureWhereverTheAggregatorIs) {
  constexpr int32_t kTokens = 24;
  const std::vector<int32_t> expected = Centralized(kTokens);
  struct Case {
    const char* name;
    DragonPeerOptions options;
    absl::Duration one_way;
  };
  const Case cases[] = {
      {"device aggregates", Options(v1::DRAGON_SIDE_DEVICE, kTokens, AggregatorPolicy::kFixed),
       absl::Milliseconds(1)},
      {"cloud aggregates", Options(v1::DRAGON_SIDE_CLOUD, kTokens, AggregatorPolicy::kFixed),
       absl::Milliseconds(1)},
      {"moves every 3 tokens",
       With(Options(v1::DRAGON_SIDE_DEVICE, kTokens, AggregatorPolicy::kAlternate),
            [](DragonPeerOptions& o) { o.alternate_every = 3; }),
       absl::Milliseconds(2)},
      {"synchronous",
       With(Options(v1::DRAGON_SIDE_DEVICE, kTokens, AggregatorPolicy::kFixed),
            [](DragonPeerOptions& o) { o.max_lookahead = 0; }),
       absl::Milliseconds(1)},
      {"deep lookahead, slow link",
       With(Options(v1::DRAGON_SIDE_CLOUD, kTokens, AggregatorPolicy::kScheduled),
            [](DragonPeerOptions& o) { o.max_lookahead = 8; }),
       absl::Milliseconds(5)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Pair pair = Run(c.options, c.one_way);
    ASSERT_OK(pair.device.status());
    ASSERT_OK(pair.cloud.status());
    EXPECT_EQ(pair.device->tokens, expected);
    EXPECT_EQ(pair.cloud->tokens, expected);
    EXPECT_FALSE(pair.device->lost_at_step.has_value()) << pair.device->lost_status;
    EXPECT_FALSE(pair.cloud->lost_at_step.has_value()) << pair.cloud->lost_status;
    // Every step was decided exactly once, by one side or the other.
    EXPECT_EQ(pair.device->stats.steps_aggregated + pair.cloud->stats.steps_aggregated, kTokens);
    if (c.options.policy == AggregatorPolicy::kAlternate) {
      EXPECT_EQ(pair.device->stats.handoffs_sent + pair.cloud->stats.handoffs_sent,
                (kTokens - 1) / 3);
      EXPECT_EQ(pair.device->stats.handoffs_sent, pair.cloud->stats.handoffs_received);
    }
  }
}

TEST_F(DragonPeerTest, DisagreeingDraftsAreRolledBack) {
  // Sampled drafts from each side's own mixture lose at some steps; the losing side must roll
  // back and both must still end on the same tokens, with the aggregator moving too.
  Pair pair = Run(With(Options(v1::DRAGON_SIDE_DEVICE, 24, AggregatorPolicy::kAlternate),
                       [](DragonPeerOptions& o) {
                         o.temperature = 4;
                         o.seed = 11;
                         o.alternate_every = 5;
                       }),
                  absl::Milliseconds(2));
  ASSERT_OK(pair.device.status());
  ASSERT_OK(pair.cloud.status());
  EXPECT_EQ(pair.device->tokens, pair.cloud->tokens);
  const int32_t rejected =
      pair.cloud->stats.own_drafts_decided - pair.cloud->stats.own_drafts_accepted +
      pair.device->stats.own_drafts_decided - pair.device->stats.own_drafts_accepted;
  EXPECT_GT(rejected, 0) << "the fixture should make the sides disagree somewhere";
  EXPECT_GT(pair.device->stats.rollbacks + pair.cloud->stats.rollbacks, 0);
}

TEST_F(DragonPeerTest, TruncatedDistributionsStayConsistentAcrossSides) {
  constexpr int32_t kTokens = 24;
  const std::vector<int32_t> expected = Centralized(kTokens);
  Pair pair = Run(With(Options(v1::DRAGON_SIDE_DEVICE, kTokens, AggregatorPolicy::kAlternate),
                       [](DragonPeerOptions& o) {
                         o.distribution_top_p = 0.9f;
                         o.alternate_every = 5;
                       }));
  ASSERT_OK(pair.device.status());
  ASSERT_OK(pair.cloud.status());
  EXPECT_EQ(pair.device->tokens, pair.cloud->tokens);
  int agree = 0;
  for (int32_t i = 0; i < kTokens; ++i) agree += pair.device->tokens[i] == expected[i] ? 1 : 0;
  // Truncation is an approximation: report it, do not pretend it is exact.
  std::cout << "top-p 0.9 agreement with the full mixture: " << agree << "/" << kTokens << "\n";
}

// In sampling mode one step's committed token follows the full mixture: chi-square over seeds.
TEST_F(DragonPeerTest, SampledFirstTokenFollowsTheMixture) {
  constexpr float kTemperature = 4.0f;
  Side all = device_;
  all.documents.insert(all.documents.end(), cloud_.documents.begin(), cloud_.documents.end());
  all.scores.insert(all.scores.end(), cloud_.scores.begin(), cloud_.scores.end());
  ASSERT_OK_AND_ASSIGN(auto streams,
                       engine::DocumentStreams::Start(*device_transformer_, Prompt(all), 1));
  ASSERT_OK_AND_ASSIGN(const SideMixture target,
                       MixStreams(streams->logits(), all.scores, kTemperature));
  constexpr int kRuns = 1500;
  std::vector<int> counts(kVocab, 0);
  for (int seed = 0; seed < kRuns; ++seed) {
    Pair pair = Run(With(Options(v1::DRAGON_SIDE_DEVICE, 1, AggregatorPolicy::kFixed),
                         [&](DragonPeerOptions& o) {
                           o.temperature = kTemperature;
                           o.seed = static_cast<uint64_t>(seed);
                         }),
                    absl::ZeroDuration());
    ASSERT_OK(pair.device.status());
    ASSERT_OK(pair.cloud.status());
    ASSERT_EQ(pair.device->tokens, pair.cloud->tokens);
    ++counts[pair.device->tokens[0]];
  }
  // Tokens with small expected counts are pooled into one bin.
  double chi_square = 0;
  int bins = 0;
  double pooled_expected = 0;
  double pooled_observed = 0;
  for (int32_t i = 0; i < kVocab; ++i) {
    const double expected = target.p[i] * kRuns;
    if (expected < 5) {
      pooled_expected += expected;
      pooled_observed += counts[i];
      continue;
    }
    chi_square += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++bins;
  }
  if (pooled_expected > 0) {
    chi_square +=
        (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++bins;
  }
  ASSERT_GE(bins, 5);
  // Wilson–Hilferty bound for P(χ² > x) = 0.001 with bins − 1 degrees of freedom.
  const double df = bins - 1;
  const double z = 3.09;
  const double critical = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);
  EXPECT_LT(chi_square, critical) << bins << " bins";
}

TEST_F(DragonPeerTest, TheDeviceFinishesAloneWhenTheCloudDisappears) {
  Pair pair = Run(Options(v1::DRAGON_SIDE_CLOUD, 20, AggregatorPolicy::kFixed),
                  absl::Milliseconds(1), CloudFault{CloudFault::kCut, 6});
  ASSERT_OK(pair.device.status());
  EXPECT_EQ(pair.device->tokens.size(), 20u);
  ASSERT_TRUE(pair.device->lost_at_step.has_value());
  EXPECT_LE(*pair.device->lost_at_step, 6);
  EXPECT_THAT(pair.device->lost_status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_GT(pair.device->stats.steps_aggregated, 0);
}

// The cloud stops answering and the connection stays (nothing closes): once the cloud has
// spoken, the device waits peer_silence for it, not peer_timeout, then finishes alone. (With a
// ten-minute peer_timeout in its place the test would hang.)
TEST_F(DragonPeerTest, TheDeviceLeavesACloudThatFallsSilent) {
  const DragonPeerOptions options =
      With(Options(v1::DRAGON_SIDE_DEVICE, 20, AggregatorPolicy::kFixed), [](DragonPeerOptions& o) {
        o.peer_timeout = absl::Minutes(10);
        o.peer_silence = absl::Milliseconds(300);
      });
  Pair pair = Run(options, absl::Milliseconds(1), CloudFault{CloudFault::kSilence, 4});
  ASSERT_OK(pair.device.status());
  EXPECT_EQ(pair.device->tokens.size(), 20u);
  ASSERT_TRUE(pair.device->lost_at_step.has_value());
  EXPECT_LE(*pair.device->lost_at_step, 5);
  EXPECT_THAT(pair.device->lost_status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(pair.device->lost_status.message(), ::testing::HasSubstr("for 300ms"));
}

// The cloud disappears; the device goes on alone, then reconnects to a new cloud that starts
// from the tokens final so far, and aggregation resumes: from there the answer is again the
// mixture over every chunk.
TEST_F(DragonPeerTest, ADeviceThatLostTheCloudResumesWithANewOne) {
  constexpr int32_t kTokens = 24;
  DragonInbox device_inbox;
  DragonInbox first_inbox;
  DragonInbox second_inbox;
  auto to_cloud = std::make_unique<eval::EmulatedLink>(&first_inbox, absl::Milliseconds(1));
  auto to_device = std::make_unique<eval::EmulatedLink>(&device_inbox, absl::Milliseconds(1));
  std::unique_ptr<eval::EmulatedLink> second_to_device;
  to_device->CutAfter(5);
  DragonPeerOptions cloud_options =
      Options(v1::DRAGON_SIDE_CLOUD, kTokens, AggregatorPolicy::kFixed);
  cloud_options.side = v1::DRAGON_SIDE_CLOUD;
  absl::StatusOr<DragonPeerResult> first;
  std::thread first_cloud([&] {
    first = RunSide(*cloud_transformer_, cloud_, cloud_options, first_inbox,
                    [&](const DragonMessage& m) { return to_device->Send(m); });
  });
  absl::StatusOr<DragonPeerResult> second;
  std::thread second_cloud;
  DragonPeerOptions device_options =
      Options(v1::DRAGON_SIDE_CLOUD, kTokens, AggregatorPolicy::kFixed);
  device_options.reconnect_interval = absl::ZeroDuration();
  device_options.reconnect = [&](std::span<const int32_t> confirmed) {
    device_inbox.Reopen();
    to_cloud = std::make_unique<eval::EmulatedLink>(&second_inbox, absl::Milliseconds(1));
    second_to_device = std::make_unique<eval::EmulatedLink>(&device_inbox, absl::Milliseconds(1));
    DragonPeerOptions resumed = cloud_options;
    resumed.aggregator = v1::DRAGON_SIDE_DEVICE;
    resumed.confirmed_prefix.assign(confirmed.begin(), confirmed.end());
    second_cloud = std::thread([&, resumed] {
      second = RunSide(*spare_transformer_, cloud_, resumed, second_inbox,
                       [&](const DragonMessage& m) { return second_to_device->Send(m); });
      second_to_device->Finish();
    });
    return true;
  };
  absl::StatusOr<DragonPeerResult> device =
      RunSide(*device_transformer_, device_, device_options, device_inbox,
              [&](const DragonMessage& m) { return to_cloud->Send(m); });
  to_cloud->Finish();
  first_cloud.join();
  ASSERT_TRUE(second_cloud.joinable());
  second_cloud.join();
  ASSERT_OK(device.status());
  ASSERT_OK(second.status());
  ASSERT_TRUE(device->lost_at_step.has_value());
  ASSERT_TRUE(device->resumed_at_step.has_value());
  EXPECT_EQ(device->stats.reconnects, 1);
  EXPECT_EQ(device->tokens.size(), static_cast<size_t>(kTokens));
  EXPECT_EQ(second->tokens, device->tokens);
  EXPECT_FALSE(second->lost_at_step.has_value());
  EXPECT_GT(second->stats.own_drafts_decided, 0) << "the new cloud drafted";
  const int32_t resumed = *device->resumed_at_step;
  ASSERT_LT(resumed, kTokens);
  const std::vector<int32_t> prefix(device->tokens.begin(), device->tokens.begin() + resumed);
  EXPECT_EQ(device->tokens, Centralized(kTokens, prefix));
}

TEST_F(DragonPeerTest, ProtocolViolationsAreRefused) {
  const auto run_device_against = [&](std::vector<DragonMessage> script, v1::DragonSide aggregator,
                                      bool continue_alone = true,
                                      const std::atomic<bool>* stop = nullptr) {
    DragonInbox inbox;
    for (DragonMessage& m : script) inbox.Push(std::move(m));
    inbox.Close(absl::UnavailableError("script over"));
    DragonPeerOptions options = Options(aggregator, 4, AggregatorPolicy::kFixed);
    options.continue_alone = continue_alone;
    options.stop = stop;
    return RunSide(*device_transformer_, device_, options, inbox,
                   [](const DragonMessage&) { return absl::OkStatus(); });
  };
  v1::Verdict verdict;
  verdict.set_step(0);
  EXPECT_THAT(run_device_against({verdict}, v1::DRAGON_SIDE_DEVICE),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  verdict.set_step(3);
  EXPECT_THAT(run_device_against({verdict}, v1::DRAGON_SIDE_CLOUD),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  v1::AggregatorHandoff handoff;
  handoff.set_from_step(2);
  EXPECT_THAT(run_device_against({handoff}, v1::DRAGON_SIDE_CLOUD),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  v1::Draft draft;
  draft.set_step(0);
  draft.set_token(1);
  *draft.mutable_distribution() = EncodeDistribution(std::vector<float>(kVocab + 1, 1.0f), true);
  EXPECT_THAT(run_device_against({draft}, v1::DRAGON_SIDE_DEVICE),
              StatusIs(absl::StatusCode::kInvalidArgument));
  draft.set_token(kVocab);
  EXPECT_THAT(run_device_against({draft}, v1::DRAGON_SIDE_DEVICE),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A draft far beyond the lookahead (a peer filling the aggregator's memory).
  draft.set_token(1);
  draft.set_step(1000);
  *draft.mutable_distribution() = EncodeDistribution(std::vector<float>(kVocab, 1.0f), true);
  EXPECT_THAT(run_device_against({draft}, v1::DRAGON_SIDE_DEVICE),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("lookahead")));
  // A verdict whose accepted flag contradicts its token: whatever the device drafted, one of
  // these two verdicts lies.
  v1::Verdict says_accepted;
  says_accepted.set_step(0);
  says_accepted.set_final_token(5);
  says_accepted.set_accepted(true);
  v1::Verdict says_rejected = says_accepted;
  says_rejected.set_accepted(false);
  const absl::Status a = run_device_against({says_accepted}, v1::DRAGON_SIDE_CLOUD).status();
  const absl::Status b = run_device_against({says_rejected}, v1::DRAGON_SIDE_CLOUD).status();
  EXPECT_NE(a.ok(), b.ok());
  EXPECT_THAT(a.ok() ? b : a,
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("contradicts")));
  // A script that just ends: the device finishes alone and says so; a side that must not go on
  // alone (the cloud) ends with the loss.
  ASSERT_OK_AND_ASSIGN(const DragonPeerResult alone, run_device_against({}, v1::DRAGON_SIDE_CLOUD));
  EXPECT_EQ(alone.tokens.size(), 4u);
  EXPECT_EQ(alone.lost_at_step, 0);
  EXPECT_THAT(run_device_against({}, v1::DRAGON_SIDE_CLOUD, /*continue_alone=*/false),
              StatusIs(absl::StatusCode::kUnavailable));
  // The caller stops the answer.
  const std::atomic<bool> stop{true};
  ASSERT_OK_AND_ASSIGN(const DragonPeerResult stopped,
                       run_device_against({}, v1::DRAGON_SIDE_CLOUD, true, &stop));
  EXPECT_TRUE(stopped.stopped_by_caller);
  EXPECT_TRUE(stopped.tokens.empty());
}

}  // namespace
}  // namespace silo::node
