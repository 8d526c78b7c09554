// The plaintext states behind a FedRAG session, and what an attacker with the open weights can
// compute without them: the ground truth and the candidate tables of the privacy harness.
//
// PlainSessionStates runs the plaintext computation of FedRAG's KV (each chunk's KV shard
// computed alone and rotated to its virtual positions, as owners do; the querier's prefill of the
// question and greedy decoding over them, as answer_engine's centralized-chunkwise mode does) and
// keeps, for the layers asked for, every chunk row's K (after RoPE) and V and every query row the
// querier would delegate. Attacks never see these; the observer views (privacy_views.h) are made
// from them by the production scramblers.
//
// TokenAloneTables: for every token of the vocabulary, its layer-L query, key (before RoPE) and
// value when it stands alone at position 0. At layer 0 that is exact for any context (a layer-0
// state depends only on the token and its position, and RoPE moves it to any position); deeper
// it is an approximation an attacker can afford without knowing the context.
//
// Thread-safety: functions run on the caller's thread and use the transformer's pool.
#ifndef SILO_EVAL_PRIVACY_STATES_H_
#define SILO_EVAL_PRIVACY_STATES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/rag_prompt.h"
#include "engine/transformer.h"

namespace silo::eval {

struct PlainSessionStates {
  int32_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  // Layout: [prefix][chunk 0]...[chunk m-1][suffix][generated], positions from 0.
  int32_t prefix_tokens = 0;
  std::vector<std::vector<int32_t>> chunk_tokens;  // in position order
  std::vector<int32_t> chunk_start;                // first position of each chunk
  std::vector<int32_t> chunk_owner;                // owner index of each chunk
  int32_t n_owners = 0;
  std::vector<int32_t> suffix;  // question and the assistant's turn header
  int32_t suffix_start = 0;
  std::vector<int32_t> generated;  // greedy; generated[t - 1] is the token of decode step t

  std::vector<int32_t> layers;  // recorded layers
  // [layer index][owner][kv_head]: the owner's chunk rows in position order, [rows, head_dim].
  std::vector<std::vector<std::vector<std::vector<float>>>> k, v;
  // [layer index][step]: the querier's query rows after RoPE, [tokens, n_heads, head_dim];
  // step 0 is the suffix's prefill, step t >= 1 the token generated[t - 1].
  std::vector<std::vector<std::vector<float>>> q;

  // Tokens and positions of an owner's rows, in the order of k and v.
  std::vector<int32_t> OwnerTokens(int32_t owner) const;
  std::vector<int32_t> OwnerPositions(int32_t owner) const;
  // Tokens and positions of a step's query tokens.
  std::vector<int32_t> StepTokens(int32_t step) const;
  std::vector<int32_t> StepPositions(int32_t step) const;
};

struct PlainSessionOptions {
  int32_t n_owners = 3;      // chunk i goes to owner i % n_owners (rank order)
  int32_t decode_steps = 4;  // recorded generated tokens
  std::vector<int32_t> layers = {0};
};

// InvalidArgument for no chunks, bad options or a layer outside the model; the engine's errors.
absl::StatusOr<PlainSessionStates> RecordPlainSession(engine::Transformer& transformer,
                                                      const engine::RagPromptBuilder& prompts,
                                                      const std::string& question,
                                                      const std::vector<std::string>& chunks,
                                                      const PlainSessionOptions& options);

struct TokenAloneTable {
  int32_t layer = 0;
  int32_t vocab = 0;
  std::vector<float> q;  // [vocab, n_heads, head_dim]
  std::vector<float> k;  // [vocab, n_kv_heads, head_dim], before RoPE, rounded to f16 as in shards
  std::vector<float> v;  // [vocab, n_kv_heads, head_dim], rounded to f16
};

// One table per layer in `layers`, for token ids [0, vocab) (0: the whole vocabulary).
absl::StatusOr<std::vector<TokenAloneTable>> ComputeTokenAloneTables(
    engine::Transformer& transformer, const std::vector<int32_t>& layers, int32_t vocab);

}  // namespace silo::eval

#endif  // SILO_EVAL_PRIVACY_STATES_H_
