// The decoder's forward pass on the CPU (Llama family and Qwen2): embeddings, per layer RMSNorm,
// Q/K/V projections (+ biases), RoPE at each token's explicit position, attention over the KV
// cache, output projection, SwiGLU feed-forward; final norm and logits.
//
// Attention is computed as mergeable partials (attention/attention_args.h): one per run of cache
// rows the sequence sees (its shared prefix, its own rows) and any number supplied by an
// AttentionHook, merged exactly by log-sum-exp. That hook is where FedRAG's remote partials over
// other institutions' scrambled chunks come in (DESIGN.md §6).
//
// Thread-safety: a Transformer is used by one thread at a time (it owns scratch buffers); its
// matmuls and attention use every thread of the pool.
#ifndef SILO_ENGINE_TRANSFORMER_H_
#define SILO_ENGINE_TRANSFORMER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/rope.h"
#include "engine/thread_pool.h"

namespace silo::engine {

// Extra attention partials for one sequence's new tokens at one layer, each over keys outside
// the local cache. Partial p occupies o[p·n_tokens·n_heads·head_dim ...] and
// m, l[p·n_tokens·n_heads ...], laid out as PartialAttentionArgs' outputs:
// o [n_parts][n_tokens, n_heads, head_dim], m and l [n_parts][n_tokens, n_heads].
struct AttentionPartials {
  int32_t n_parts = 0;
  std::vector<float> o;
  std::vector<float> m;
  std::vector<float> l;
};

class AttentionHook {
 public:
  virtual ~AttentionHook() = default;
  // Called once per layer with the new tokens' queries after RoPE, q [n_tokens, n_heads,
  // head_dim], and their positions [n_tokens]. Appends partials to `partials` (which arrives
  // empty). An error aborts the forward pass and is returned by Forward.
  virtual absl::Status AddPartials(int32_t layer, std::span<const float> q,
                                   std::span<const int32_t> positions,
                                   AttentionPartials& partials) = 0;
};

enum class LogitsWanted { kNone, kLast, kAll };

// One sequence's part of a forward batch.
struct SequenceInput {
  SequenceId sequence = 0;
  std::span<const int32_t> tokens;
  std::span<const int32_t> positions;  // [tokens.size()]; any int32 (a key at position p is
                                       // visible to queries at positions >= p)
  LogitsWanted logits = LogitsWanted::kLast;
  AttentionHook* hook = nullptr;  // optional
  // Optional: receives these tokens' K before RoPE and V (a chunk's KV shard); the shard is
  // resized to tokens.size() rows.
  KvShard* capture = nullptr;
};

class Transformer {
 public:
  // `model` and `pool` must outlive the Transformer. `precision`: how quantized weights meet the
  // activations (engine/cpu/quantized_matmul.h). kExact agrees with an f32 reference; kInt8 is
  // llama.cpp's arithmetic, faster, and on the default model it moves logits by ~0.2 on average,
  // enough to turn "What is the capital of France?" from Paris to "L'Étoile" (a 0.08 margin).
  Transformer(const Model& model, ThreadPool& pool,
              MatMulPrecision precision = MatMulPrecision::kExact);

  const Model& model() const { return model_; }
  const Rope& rope() const { return rope_; }

  // Runs every input's tokens through the model in one batch (matmuls over all tokens at once),
  // appends their K and V to `cache`, and writes logits: for each input in order, its wanted
  // rows, [rows, vocab_size] each, concatenated. InvalidArgument (empty batch, bad token ids,
  // size mismatch, a sequence twice), NotFound (unknown sequence), ResourceExhausted (cache
  // full), or the hook's error; on error the cache is as before the call.
  absl::Status Forward(std::span<const SequenceInput> batch, KvCache& cache,
                       std::vector<float>& logits);

 private:
  absl::Status Attention(const SequenceInput& input, int32_t layer, const KvCache& cache,
                         const float* q, float* out);

  // y = W·x over n_tokens rows, at this transformer's precision.
  void Multiply(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y);

  const Model& model_;
  ThreadPool& pool_;
  MatMulPrecision precision_;
  Rope rope_;
  // Scratch, [n_tokens, ...] of the current batch.
  std::vector<float> x_, norm_, q_, k_, v_, attn_, gate_, up_;
  std::vector<float> parts_o_, parts_m_, parts_l_;
};

// A chunk's KV shard: `tokens` prefilled alone at positions 0..n-1 over an f16 cache, as an
// owner computes it at ingest (DESIGN.md §4). InvalidArgument for no tokens; Forward's errors.
absl::StatusOr<KvShard> PrefillKvShard(Transformer& transformer, std::span<const int32_t> tokens);

}  // namespace silo::engine

#endif  // SILO_ENGINE_TRANSFORMER_H_
