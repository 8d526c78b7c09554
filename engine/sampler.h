// Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p
// (nucleus) and a repetition penalty, from a seeded generator so that a seed reproduces a run.
//
// Thread-safety: a Sampler holds its generator's state; one thread at a time.
#ifndef SILO_ENGINE_SAMPLER_H_
#define SILO_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <span>

#include "absl/status/status.h"

namespace silo::engine {

struct SamplingParams {
  float temperature = 0;  // 0: greedy (argmax); otherwise logits are divided by it
  int32_t top_k = 0;      // keep the k most likely tokens; 0 keeps all
  float top_p = 1;        // keep the smallest set whose probability reaches top_p; 1 keeps all
  // > 1 makes tokens already in the history less likely (a positive logit is divided by it, a
  // negative one multiplied); 1 is off.
  float repetition_penalty = 1;
  uint64_t seed = 0;
};

// InvalidArgument for a negative or non-finite temperature, top_k < 0, top_p outside (0, 1] or
// a repetition penalty that is not positive.
absl::Status ValidateSamplingParams(const SamplingParams& params);

struct SampledToken {
  int32_t id;
  // log p(id) under the model's distribution (log-softmax of the raw logits, before penalty,
  // temperature and truncation).
  float logprob;
};

// log-softmax of logits[id], computed stably.
float LogProbability(std::span<const float> logits, int32_t id);

class Sampler {
 public:
  // Precondition: ValidateSamplingParams(params).ok().
  explicit Sampler(const SamplingParams& params);

  // logits [vocab_size] (not empty); history: the tokens so far, for the repetition penalty.
  SampledToken Sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  SamplingParams params_;
  std::mt19937_64 generator_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_SAMPLER_H_
