#include "eval/privacy_attacks.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/thread_pool.h"
#include "gtest/gtest.h"

namespace silo::eval {
namespace {

constexpr int32_t kDim = 64;
constexpr int32_t kVocab = 120;

// Every token's value row: heavy-tailed, with column scales spread like real values'.
std::vector<float> TokenValues(std::mt19937_64& rng) {
  std::exponential_distribution<float> exponential(1.0f);
  std::vector<float> values(static_cast<size_t>(kVocab) * kDim);
  for (size_t i = 0; i < values.size(); ++i) {
    const float magnitude = exponential(rng) * (1.0f + static_cast<float>(i % kDim) / kDim);
    values[i] = (rng() & 1) != 0 ? magnitude : -magnitude;
  }
  return values;
}

std::vector<float> RowsOf(const std::vector<int32_t>& tokens, const std::vector<float>& values) {
  std::vector<float> rows;
  for (const int32_t token : tokens) {
    const auto* row = &values[static_cast<size_t>(token) * kDim];
    rows.insert(rows.end(), row, row + kDim);
  }
  return rows;
}

struct Fixture {
  std::mt19937_64 rng{7};
  std::vector<float> values = TokenValues(rng);
  ObservedLayer view;
  std::vector<CandidateChunk> public_chunks;
  engine::ThreadPool pool{2};
  AttackerKnowledge attacker;

  // One key of `n_rows` random tokens, its V′ rows given by `mix` (row-major [kDim, kDim],
  // empty: as they are); public text holding every token several times.
  Fixture(int32_t n_rows, const std::vector<float>& mix) {
    attacker.pool = &pool;
    attacker.anchors = {0, 1, 2, 3, 4};
    ObservedKey& key = view.keys.emplace_back();
    key.n_rows = n_rows;
    key.dim = kDim;
    for (int32_t r = 0; r < n_rows; ++r)
      key.row_token.push_back(static_cast<int32_t>(rng() % kVocab));
    const std::vector<float> plain = RowsOf(key.row_token, values);
    key.v = plain;
    if (!mix.empty()) {
      for (size_t r = 0; r < static_cast<size_t>(n_rows); ++r) {
        for (size_t c = 0; c < kDim; ++c) {
          float sum = 0;
          for (size_t j = 0; j < kDim; ++j) sum += plain[r * kDim + j] * mix[j * kDim + c];
          key.v[r * kDim + c] = sum;
        }
      }
    }
    for (int copy = 0; copy < 4; ++copy) {
      CandidateChunk& chunk = public_chunks.emplace_back();
      for (int32_t t = 0; t < kVocab; ++t) chunk.tokens.push_back((t + 37 * copy) % kVocab);
      chunk.values.push_back(RowsOf(chunk.tokens, values));
      chunk.keys.push_back(chunk.values.back());
    }
  }

  AttackResult Run() const {
    std::vector<const CandidateChunk*> reference;
    for (const CandidateChunk& chunk : public_chunks) reference.push_back(&chunk);
    return RunUnmixedValueDecoding(view, attacker, reference);
  }
};

TEST(UnmixedValueDecodingTest, NamesRowsWhoseColumnsArePermutedSignedAndScaled) {
  // A monomial mix: what an undone Φ leaves.
  std::vector<float> mix(static_cast<size_t>(kDim) * kDim, 0.0f);
  for (size_t j = 0; j < kDim; ++j) {
    mix[j * kDim + (j * 29 + 5) % kDim] = (j % 2 == 0 ? -1.0f : 1.0f) * (0.5f + 0.03f * j);
  }
  const Fixture fixture(300, mix);
  const AttackResult result = fixture.Run();
  EXPECT_EQ(result.attack, "walsh-unmixing-v+nn");
  EXPECT_EQ(result.recovered.n, 300);
  EXPECT_GE(result.recovered.top1, 290);
  EXPECT_EQ(result.chance.n, 300);
}

TEST(UnmixedValueDecodingTest, GivesNoGuessForKeysOfAtMostHeadDimRows) {
  const Fixture fixture(kDim, {});
  const AttackResult result = fixture.Run();
  EXPECT_EQ(result.recovered.n, kDim);
  EXPECT_EQ(result.recovered.top5, 0);
}

TEST(UnmixedValueDecodingTest, NeedsPublicText) {
  const Fixture fixture(300, {});
  const AttackResult result = RunUnmixedValueDecoding(fixture.view, fixture.attacker, {});
  EXPECT_EQ(result.recovered.n, 300);
  EXPECT_EQ(result.recovered.top5, 0);
}

TEST(QuerierPartialAttackTest, NamesTheTokenAPeakedQueryAttendsTo) {
  Fixture fixture(300, {});
  ObservedKey& key = fixture.view.keys.front();
  fixture.view.scale = 1;
  // Unit keys; each query row is 12× one of them, so the softmax puts almost all weight there.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  key.k.resize(static_cast<size_t>(key.n_rows) * kDim);
  for (size_t r = 0; r < static_cast<size_t>(key.n_rows); ++r) {
    float norm = 0;
    for (size_t c = 0; c < kDim; ++c)
      norm += std::pow(key.k[r * kDim + c] = normal(fixture.rng), 2.0f);
    for (size_t c = 0; c < kDim; ++c) key.k[r * kDim + c] /= std::sqrt(norm);
  }
  key.truth_v = key.v;
  std::vector<float>& rows = key.q.emplace_back();
  for (size_t r = 0; r < 40; ++r) {
    const size_t target = (r * 7) % static_cast<size_t>(key.n_rows);
    for (size_t c = 0; c < kDim; ++c) rows.push_back(12 * key.k[target * kDim + c]);
  }
  std::vector<const CandidateChunk*> reference;
  for (const CandidateChunk& chunk : fixture.public_chunks) reference.push_back(&chunk);
  const AttackResult result = RunQuerierPartialAttack(fixture.view, fixture.attacker, reference);
  EXPECT_EQ(result.attack, "querier-partials");
  EXPECT_EQ(result.recovered.n, 40);
  EXPECT_GE(result.recovered.top1, 36);
  EXPECT_EQ(result.chance.n, 40);
}

}  // namespace
}  // namespace silo::eval
