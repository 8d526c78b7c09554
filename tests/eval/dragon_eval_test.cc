// DRAGON with the default model over the Python FAQ (issue: DRAGON mode), through silo-eval's
// entry point: for 20 FAQ questions greedy DRAGON (both sides on their own threads, the
// aggregator moving every 4 tokens) writes exactly the tokens of centralized-mixture, all chunks'
// streams in one place, over 64 tokens; teacher-forced DRAGON scores a gold answer exactly as
// that mixture does; and the smoke configuration of `silo-eval bench dragon` runs.
#include "eval/dragon_eval.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

constexpr char kSources[] = "/usr/share/doc/python3.11/html/_sources";

DragonRunOptions Options(DragonMode mode) {
  DragonRunOptions options;
  options.mode = mode;
  return options;
}

TEST(DragonEval, GreedyDragonIsTheCentralizedMixtureAndScoresAlike) {
  ASSERT_TRUE(fs::is_directory(kSources)) << "python3.11-doc is missing: run scripts/install-deps";
  silo::testing::TempDir dir;
  DragonLab::Options lab_options;
  lab_options.corpus_dir = (dir.path() / "corpus").string();
  ASSERT_OK_AND_ASSIGN(lab_options.decoder_model, silo::testing::DefaultModelPath());
  ASSERT_OK_AND_ASSIGN(lab_options.embedder_model, silo::testing::EmbedderDir());
  std::ostringstream log;
  absl::StatusOr<std::unique_ptr<DragonLab>> lab = DragonLab::Open(lab_options, log);
  ASSERT_OK(lab.status()) << log.str();

  constexpr int kQuestions = 20;
  int identical = 0;
  int truncated_agree = 0;
  int moves = 0;
  for (int i = 0; i < kQuestions; ++i) {
    ASSERT_OK_AND_ASSIGN(const DragonCase c, (*lab)->Case(i, kQuestions, 4));
    ASSERT_EQ(c.device.size(), 2u);
    ASSERT_EQ(c.cloud.size(), 2u);
    DragonRunOptions target_options = Options(DragonMode::kCentralizedMixture);
    ASSERT_OK_AND_ASSIGN(const DragonRunResult target, (*lab)->Run(c, target_options));
    DragonRunOptions dragon_options = Options(DragonMode::kDragon);
    dragon_options.policy = node::AggregatorPolicy::kAlternate;
    dragon_options.rtt = absl::Milliseconds(4);
    ASSERT_OK_AND_ASSIGN(const DragonRunResult dragon, (*lab)->Run(c, dragon_options));
    EXPECT_EQ(dragon.tokens, target.tokens) << c.question;
    identical += dragon.tokens == target.tokens ? 1 : 0;
    moves += dragon.aggregator_moves;
    dragon_options.distribution_top_p = 0.9f;
    ASSERT_OK_AND_ASSIGN(const DragonRunResult truncated, (*lab)->Run(c, dragon_options));
    truncated_agree += truncated.tokens == target.tokens ? 1 : 0;
  }
  std::printf(
      "greedy DRAGON = centralized-mixture on %d of %d questions (64 tokens); with top-p "
      "0.9 distributions on %d; %d aggregator moves\n",
      identical, kQuestions, truncated_agree, moves);
  EXPECT_GT(moves, kQuestions);

  // Teacher forcing through the protocol gives the mixture's own log-probability.
  ASSERT_OK_AND_ASSIGN(const DragonCase c, (*lab)->Case(3, kQuestions, 4));
  std::vector<int32_t> gold = (*lab)->tokenizer().Encode(
      "Use the copy module: copy.copy() for shallow copies, copy.deepcopy() for deep ones.",
      /*parse_special=*/false);
  DragonRunOptions forced = Options(DragonMode::kCentralizedMixture);
  forced.forced_tokens = gold;
  ASSERT_OK_AND_ASSIGN(const DragonRunResult mixture, (*lab)->Run(c, forced));
  forced.mode = DragonMode::kDragon;
  forced.policy = node::AggregatorPolicy::kAlternate;
  ASSERT_OK_AND_ASSIGN(const DragonRunResult dragon, (*lab)->Run(c, forced));
  EXPECT_EQ(dragon.tokens, gold);
  EXPECT_NEAR(dragon.forced_logprob, mixture.forced_logprob,
              1e-4 * std::abs(mixture.forced_logprob));
  forced.mode = DragonMode::kNone;
  ASSERT_OK_AND_ASSIGN(const DragonRunResult none, (*lab)->Run(c, forced));
  EXPECT_NE(none.forced_logprob, mixture.forced_logprob);
  lab->reset();  // the bench opens the store again

  DragonBenchOptions bench;
  bench.lab = lab_options;
  bench.n_questions = 1;
  bench.max_tokens = 8;
  bench.rtts_ms = {0, 60};
  bench.out_dir = (dir.path() / "bench").string();
  std::ostringstream out;
  ASSERT_OK(RunDragonBench(bench, out, log)) << log.str();
  std::printf("%s\n", out.str().c_str());
  EXPECT_GT(fs::file_size(dir.path() / "bench" / "latency.png"), 1000u);
  EXPECT_NE(out.str().find("dragon scheduled"), std::string::npos);
}

}  // namespace
}  // namespace silo::eval
