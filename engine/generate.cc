#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

double GenerateStats::PrefillTokensPerSecond() const {
  return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0;
}

double GenerateStats::DecodeTokensPerSecond() const {
  // The first token comes from the prefill; each later one costs one decode step.
  return decode_seconds > 0 ? (generated_tokens - 1) / decode_seconds : 0;
}

absl::StatusOr<GenerateStats> Generate(Transformer& transformer, KvCache& cache,
                                       SequenceId sequence, std::span<const int32_t> prompt,
                                       const GenerateOptions& options,
                                       const std::function<bool(const SampledToken&)>& on_token) {
  if (prompt.empty()) return absl::InvalidArgumentError("generate: empty prompt");
  const bool forced = !options.forced_tokens.empty();
  if (options.max_tokens <= 0 && !forced) {
    return absl::InvalidArgumentError(
        StrCat("generate: max_tokens ", options.max_tokens, " is not positive"));
  }
  SILO_RETURN_IF_ERROR(ValidateSamplingParams(options.sampling));
  SILO_ASSIGN_OR_RETURN(std::optional<int32_t> last, cache.LastPosition(sequence));
  int32_t position = options.first_position.value_or(last ? *last + 1 : 0);
  std::vector<int32_t> positions(prompt.size());
  std::iota(positions.begin(), positions.end(), position);
  position += static_cast<int32_t>(prompt.size());

  // The history the repetition penalty sees: the prompt and what was generated.
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  Sampler sampler(options.sampling);
  GenerateStats stats;
  stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<float> logits;
  auto start = std::chrono::steady_clock::now();
  SequenceInput input{.sequence = sequence,
                      .tokens = prompt,
                      .positions = positions,
                      .logits = LogitsWanted::kLast,
                      .hook = options.hook,
                      .capture = nullptr};
  SILO_RETURN_IF_ERROR(transformer.Forward({&input, 1}, cache, logits));
  stats.prefill_seconds = SecondsSince(start);
  start = std::chrono::steady_clock::now();
  while (true) {
    const SampledToken token =
        forced
            ? SampledToken{.id = options.forced_tokens[static_cast<size_t>(stats.generated_tokens)],
                           .logprob = LogProbability(
                               logits,
                               options.forced_tokens[static_cast<size_t>(stats.generated_tokens)])}
            : sampler.Sample(logits, history);
    ++stats.generated_tokens;
    history.push_back(token.id);
    const bool is_stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(),
                                   token.id) != options.stop_tokens.end();
    if (!on_token(token) || is_stop) {
      stats.stopped = true;
      break;
    }
    if (stats.generated_tokens >=
        (forced ? static_cast<int64_t>(options.forced_tokens.size()) : options.max_tokens)) {
      break;
    }
    const int32_t next_position = position++;
    SequenceInput step{.sequence = sequence,
                       .tokens = {&token.id, 1},
                       .positions = {&next_position, 1},
                       .logits = LogitsWanted::kLast,
                       .hook = options.hook,
                       .capture = nullptr};
    SILO_RETURN_IF_ERROR(transformer.Forward({&step, 1}, cache, logits));
  }
  stats.decode_seconds = SecondsSince(start);
  return stats;
}

}  // namespace silo::engine
