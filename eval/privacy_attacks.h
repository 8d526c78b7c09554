// Attacks of the privacy harness on what a curious node observes (DESIGN.md §6), each a real
// implementation run with the open weights of the model (the threat: everybody has them).
//
//   exact-scores     (attack 4) The compute node computes s = q′·K′ᵀ = q·Kᵀ·Πᵀ, the true scores,
//                    whatever the mixer. At layer 0 a score depends only on the query token,
//                    the key token and their positions, so the attacker predicts scores from the
//                    open weights and matches them. Stage 1 finds the decode step's query token:
//                    for every vocabulary token it predicts the scores against a few anchor
//                    tokens (the most frequent of a public English text) at the key rows'
//                    positions and counts the received score columns they hit. Stage 2 takes
//                    the best query token and, for every position of a key and every vocabulary
//                    token, predicts the score column and looks it up among the received ones.
//                    A column matches when each head's score is within `tolerance`·(1 + |s|)
//                    (heads in any order: the querier shuffles rows). Deeper than layer 0 the
//                    predictions come from token-alone states (privacy_states.h), so this is
//                    the same attack with an approximate model of the context.
//   vocab-match-v    (attack 1) Each received V′ row against every vocabulary token's value,
//                    with features invariant to row and hidden-dimension permutations, sign and
//                    scale: |v| sorted, normalized. Cosine nearest neighbours.
//   vocab-match-k    (attack 1) The same on K′ rows with RoPE-invariant features: the norms of
//                    the rotary pairs, sorted, normalized.
//   linear-invariants (attack 2) K′ = Π·K·Φ reveals K up to the unknown invertible Φ, and what no
//                    such Φ changes survives: the projection onto K′'s column space, hence each
//                    row's leverage k·(KᵀK)⁻¹·kᵀ, a multiset of numbers that says which chunk it
//                    is whenever a key has more rows than head_dim. The attacker holds a pool of
//                    candidate chunks and the open weights, so it computes each candidate's KV
//                    shard exactly as an owner does (the chunk prefilled alone), at every layer,
//                    rotates its keys to the key's positions, names the candidates whose sorted
//                    leverages are nearest and pairs rows by leverage rank. Keys that cover
//                    several chunks (session scope) or at most head_dim rows (block scope) get no
//                    guesses: their rows count as not recovered.
//   block-pairs      (attack 2 across keys) Blocks of at most head_dim rows (block scope) leave no
//                    invariant inside one key, but every key of a KV head answers the same query
//                    rows in a message: S_b = Q·K_bᵀ·Π_bᵀ for all blocks b. For two full blocks
//                    of a chunk, M = S_1⁺·S_2 = Π_1·K_1⁻ᵀ·K_2ᵀ·Π_2ᵀ is free of Q and Φ (given at
//                    least head_dim query rows over the recorded steps), and the multiset of
//                    |entries| of K_1⁻ᵀ·K_2ᵀ is free of the permutations too. The attacker
//                    compares it with every pool chunk's (keys computed as above) and pairs M's
//                    rows (columns) with the candidate's by their sorted |values|.
//   walsh-unmixing-k (attack 3) Undoes the sphps mixing Φ of each key that has more rows than
//   walsh-unmixing-v head_dim from its K′ rows alone (Ψ from its V′ rows), with no pool and no
//                    weights (eval/walsh_unmixing.h). A row counts as recovered when its key's
//                    mixing is undone: every column of the estimate correlates (|r| ≥ 0.9) with
//                    a distinct column of the true K (V), so K (V) is known up to one signed
//                    scaling and permutation of its columns for the whole key. That is not a token
//                    yet, but it is the permutation baseline (which vocab-match-v breaks at layer
//                    0) and rows a learned inversion reads when plaintext (layer 1: 86%), so the
//                    harness counts such rows as lost: top-1 and top-5 count them alike, and
//                    chance is 0 (a blind guess undoes nothing).
//   walsh-unmixing-v+nn (attack 3 carried to tokens) For each key, the V′ rows unmixed as
//                    above, then named by nearest neighbours among reference value rows the
//                    attacker computes from public text with the open weights (chunks prefilled
//                    alone, as owners do; the attacked documents are not among them), each
//                    column standardized: first by the sorted |values| of a row (blind to the
//                    order and signs of the columns), then, with the columns put back in order
//                    and sign by their correlation with the matched reference rows, by the
//                    whole row (cosine); the five nearest distinct tokens are the guesses.
//   querier-partials What the querier receives per owner and key: partials (m, l, o), sums
//                    over all the key's rows, o = Σ softmax(q·kᵀ)·v. Each o, standardized like
//                    the public value rows above, against them (cosine); it counts when it names
//                    the token of the row the query attends to most (finer keys, e.g. block
//                    scope, give the querier sharper partials).
//   owner-query      What an owner sees with protect_mode OWNER: the querier's plain query rows
//                    of the protected layers. Each row, rotated back to its position, against
//                    every vocabulary token's query at that layer (nearest neighbour).
//
// Scores count, per attacked row, whether the true token is the attack's first guess (top-1)
// or among its first five (top-5). `chance` is what a blind guess gets on the same rows: always
// the most frequent token of a public English text (top-1), or its five most frequent (top-5).
//
// Thread-safety: functions use the given pool (one caller at a time).
#ifndef SILO_EVAL_PRIVACY_ATTACKS_H_
#define SILO_EVAL_PRIVACY_ATTACKS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/rope.h"
#include "engine/thread_pool.h"
#include "eval/privacy_states.h"
#include "eval/privacy_views.h"

namespace silo::eval {

struct RecoveryCount {
  int64_t n = 0;     // rows attacked
  int64_t top1 = 0;  // true token guessed first
  int64_t top5 = 0;  // true token among the first five guesses

  void Add(const RecoveryCount& other) {
    n += other.n;
    top1 += other.top1;
    top5 += other.top5;
  }
};

struct AttackResult {
  std::string attack;  // as named above
  std::string target;  // "chunk tokens" or "query tokens"
  RecoveryCount recovered;
  RecoveryCount chance;
};

struct AttackerKnowledge {
  const engine::ModelConfig* config = nullptr;
  const engine::Rope* rope = nullptr;
  const TokenAloneTable* table = nullptr;  // at the observed layer
  std::vector<int32_t> anchors;            // tokens of a public text, most frequent first
  int32_t n_anchors = 4;
  int32_t max_anchor_positions = 256;
  float tolerance = 1e-3f;
  engine::ThreadPool* pool = nullptr;
};

// Attack 4 on the first `decode_steps` decode steps (chunk tokens from the first of them).
std::vector<AttackResult> RunExactScoreAttack(const ObservedLayer& view,
                                              const AttackerKnowledge& attacker,
                                              int32_t decode_steps);

// Attack 1 on every received K′ and V′ row.
std::vector<AttackResult> RunVocabularyMatching(const ObservedLayer& view,
                                                const AttackerKnowledge& attacker);

// A candidate chunk of attack 2: its tokens and its keys and values at the attacked layer, as
// its owner's KV shard holds them (keys before RoPE), [n_kv_heads][n_tokens, head_dim] each.
struct CandidateChunk {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> keys, values;
};

// Attack 2 against `pool`.
AttackResult RunLinearInvariantAttack(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                      const std::vector<CandidateChunk>& pool);

// The block-pair attack against `pool`, over every step of the view.
AttackResult RunBlockPairAttack(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                const std::vector<CandidateChunk>& pool);

// Attack 3 on every key's K′ rows (walsh-unmixing-k) and V′ rows (walsh-unmixing-v); keys of
// at most head_dim rows get no guess.
std::vector<AttackResult> RunWalshUnmixingAttack(const ObservedLayer& view,
                                                 const AttackerKnowledge& attacker);

// Attack 3 carried to tokens on every key's V′ rows, against `reference`: chunks of public
// text the attacker prefilled itself with the open weights (none of the attacked ones).
AttackResult RunUnmixedValueDecoding(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                     const std::vector<const CandidateChunk*>& reference);

// The querier's attack on the partials it receives: for every key and every query row of the
// view's steps, o = Σ softmax(q·kᵀ)·v over the key's rows (exactly what it recovers), named by
// its nearest public value row; the truth is the token of the row with the largest weight.
AttackResult RunQuerierPartialAttack(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                     const std::vector<const CandidateChunk*>& reference);

// The owner's attack on plain query rows; `plain_view` is a kPlaintext view of a protected
// layer (its query rows are what OwnerAttend carries). Every step's rows.
AttackResult RunOwnerQueryMatching(const ObservedLayer& plain_view,
                                   const AttackerKnowledge& attacker);

// Leverage of each row of `rows` [n, d], r·(RᵀR)⁻¹·rᵀ (f64 Cholesky): invariant to any
// invertible mixing of the columns. Empty when RᵀR is singular (n ≤ d rows, for one).
std::vector<double> RowLeverages(const float* rows, int32_t n, int32_t d);

// The chance row of true tokens against `prior`, tokens most frequent first (see above).
RecoveryCount ChanceOf(const std::vector<int32_t>& truth, const std::vector<int32_t>& prior);

}  // namespace silo::eval

#endif  // SILO_EVAL_PRIVACY_ATTACKS_H_
