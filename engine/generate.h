// The decode loop: prefill a prompt, then sample one token at a time until a stop token or the
// token budget, reporting each token as it comes and the prefill and decode speeds.
//
// Thread-safety: as the Transformer and KvCache it drives (one thread at a time).
#ifndef SILO_ENGINE_GENERATE_H_
#define SILO_ENGINE_GENERATE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "engine/transformer.h"

namespace silo::engine {

struct GenerateOptions {
  SamplingParams sampling;
  int32_t max_tokens = 256;
  std::vector<int32_t> stop_tokens;  // generation ends after one of these (it is reported)
  // Position of the prompt's first token; absent: the one after the sequence's last row. FedRAG
  // sets it, because chunks held elsewhere occupy positions the cache has no rows for.
  std::optional<int32_t> first_position;
  // Extra attention partials at every layer of every forward (FedRAG's remote chunks); optional,
  // must outlive the call.
  AttentionHook* hook = nullptr;
  // Teacher forcing: when not empty, these tokens are fed instead of sampled ones (each
  // reported with its log-probability under the model) and generation ends after the last;
  // max_tokens is ignored. Scores a known answer (perplexity).
  std::vector<int32_t> forced_tokens;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // every step after the first token
  bool stopped = false;       // a stop token (or the callback) ended it, not max_tokens

  double PrefillTokensPerSecond() const;
  double DecodeTokensPerSecond() const;
};

// Appends `prompt` to `sequence` at options.first_position (default: following its last row, 0
// for an empty one), then generates. `on_token` sees every generated token; returning false stops.
// The sequence keeps every generated token but the last. InvalidArgument (empty prompt, bad
// options), or the errors of Transformer::Forward.
absl::StatusOr<GenerateStats> Generate(Transformer& transformer, KvCache& cache,
                                       SequenceId sequence, std::span<const int32_t> prompt,
                                       const GenerateOptions& options,
                                       const std::function<bool(const SampledToken&)>& on_token);

}  // namespace silo::engine

#endif  // SILO_ENGINE_GENERATE_H_
