#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "common/strings.h"

namespace silo::engine {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return absl::InvalidArgumentError(StrCat("temperature ", p.temperature, " is not >= 0"));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(StrCat("top_k ", p.top_k, " is negative"));
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(StrCat("top_p ", p.top_p, " is outside (0, 1]"));
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0) {
    return absl::InvalidArgumentError(
        StrCat("repetition penalty ", p.repetition_penalty, " is not positive"));
  }
  return absl::OkStatus();
}

float LogProbability(std::span<const float> logits, int32_t id) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float logit : logits) sum += std::exp(static_cast<double>(logit) - max);
  return static_cast<float>(logits[id] - max - std::log(sum));
}

Sampler::Sampler(const SamplingParams& params) : params_(params), generator_(params.seed) {
  SILO_CHECK_OK(ValidateSamplingParams(params));
}

SampledToken Sampler::Sample(std::span<const float> logits, std::span<const int32_t> history) {
  SILO_CHECK(!logits.empty());
  const int32_t vocab_size = static_cast<int32_t>(logits.size());
  std::vector<float> adjusted(logits.begin(), logits.end());
  if (params_.repetition_penalty != 1) {
    std::vector<bool> penalized(vocab_size);
    for (int32_t token : history) {
      if (token < 0 || token >= vocab_size || penalized[token]) continue;
      penalized[token] = true;
      float& logit = adjusted[token];
      logit = logit > 0 ? logit / params_.repetition_penalty : logit * params_.repetition_penalty;
    }
  }
  int32_t chosen = 0;
  if (params_.temperature == 0) {
    chosen =
        static_cast<int32_t>(std::max_element(adjusted.begin(), adjusted.end()) - adjusted.begin());
  } else {
    // Candidates by decreasing logit; ties keep the lower id first (deterministic).
    std::vector<int32_t> order(vocab_size);
    std::iota(order.begin(), order.end(), 0);
    const int32_t keep = params_.top_k > 0 ? std::min(params_.top_k, vocab_size) : vocab_size;
    auto more_likely = [&](int32_t a, int32_t b) {
      return adjusted[a] > adjusted[b] || (adjusted[a] == adjusted[b] && a < b);
    };
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), more_likely);
    order.resize(keep);
    std::vector<double> probability(keep);
    const double max = adjusted[order[0]] / params_.temperature;
    double total = 0;
    for (int32_t i = 0; i < keep; ++i) {
      probability[i] = std::exp(adjusted[order[i]] / params_.temperature - max);
      total += probability[i];
    }
    // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
    int32_t nucleus = keep;
    if (params_.top_p < 1) {
      double mass = 0;
      for (int32_t i = 0; i < keep; ++i) {
        mass += probability[i] / total;
        if (mass >= params_.top_p) {
          nucleus = i + 1;
          break;
        }
      }
    }
    double nucleus_total = 0;
    for (int32_t i = 0; i < nucleus; ++i) nucleus_total += probability[i];
    // A uniform draw in [0, nucleus_total) from 53 random bits.
    const double u = static_cast<double>(generator_() >> 11) * 0x1.0p-53 * nucleus_total;
    double cumulative = 0;
    chosen = order[nucleus - 1];
    for (int32_t i = 0; i < nucleus; ++i) {
      cumulative += probability[i];
      if (u < cumulative) {
        chosen = order[i];
        break;
      }
    }
  }
  return SampledToken{.id = chosen, .logprob = LogProbability(logits, chosen)};
}

}  // namespace silo::engine
