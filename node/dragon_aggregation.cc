#include "node/dragon_aggregation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/half.h"

namespace silo::node {
namespace {

int32_t ArgMax(std::span<const float> p) {
  return static_cast<int32_t>(std::max_element(p.begin(), p.end()) - p.begin());
}

// A sample from the (not necessarily normalized) non-negative weights.
int32_t SampleFrom(std::span<const float> weights, std::mt19937_64& generator) {
  double total = 0;
  for (const float w : weights) total += w;
  double u = std::uniform_real_distribution<double>(0, total)(generator);
  for (size_t i = 0; i < weights.size(); ++i) {
    u -= weights[i];
    if (u < 0) return static_cast<int32_t>(i);
  }
  // Rounding left u ≥ 0: the last token with any weight.
  for (size_t i = weights.size(); i-- > 0;) {
    if (weights[i] > 0) return static_cast<int32_t>(i);
  }
  return 0;
}

}  // namespace

float LogSumExp(std::span<const float> values) {
  const float top = *std::max_element(values.begin(), values.end());
  double sum = 0;
  for (const float value : values) sum += std::exp(static_cast<double>(value - top));
  return top + static_cast<float>(std::log(sum));
}

absl::StatusOr<SideMixture> MixStreams(std::span<const float> logits, std::span<const float> scores,
                                       float temperature) {
  if (scores.empty()) return absl::InvalidArgumentError("no stream to mix");
  if (logits.size() % scores.size() != 0 || logits.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(logits.size(), " logits do not split into ", scores.size(), " streams"));
  }
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("bad temperature ", temperature));
  }
  for (const float s : scores) {
    if (!std::isfinite(s)) return absl::InvalidArgumentError("a chunk score is not finite");
  }
  const size_t vocab_size = logits.size() / scores.size();
  SideMixture mixture;
  mixture.h = LogSumExp(scores);
  mixture.p.assign(vocab_size, 0);
  const double inverse_temperature = temperature > 0 ? 1.0 / temperature : 1.0;
  std::vector<double> probabilities(vocab_size);
  for (size_t k = 0; k < scores.size(); ++k) {
    const std::span<const float> row = logits.subspan(k * vocab_size, vocab_size);
    const float top = *std::max_element(row.begin(), row.end());
    if (!std::isfinite(top)) return absl::InvalidArgumentError("a logit is not finite");
    double sum = 0;
    for (size_t i = 0; i < vocab_size; ++i) {
      probabilities[i] = std::exp((row[i] - top) * inverse_temperature);
      sum += probabilities[i];
    }
    const double weight = std::exp(static_cast<double>(scores[k] - mixture.h)) / sum;
    for (size_t i = 0; i < vocab_size; ++i) {
      mixture.p[i] += static_cast<float>(weight * probabilities[i]);
    }
  }
  return mixture;
}

std::vector<float> MixSides(const SideMixture& a, const SideMixture& b) {
  const float top = std::max(a.h, b.h);
  const double wa = std::exp(static_cast<double>(a.h - top));
  const double wb = std::exp(static_cast<double>(b.h - top));
  const double eta_a = wa / (wa + wb);
  const double eta_b = wb / (wa + wb);
  std::vector<float> p(a.p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] = static_cast<float>(eta_a * a.p[i] + eta_b * b.p[i]);
  }
  return p;
}

int32_t DraftToken(std::span<const float> p, bool greedy, std::mt19937_64& generator) {
  return greedy ? ArgMax(p) : SampleFrom(p, generator);
}

DraftVerdict VerifyDraft(std::span<const float> target, std::span<const float> proposal,
                         int32_t draft, bool greedy, std::mt19937_64& generator) {
  if (greedy) {
    const int32_t token = ArgMax(target);
    return {.token = token, .accepted = token == draft};
  }
  const double q = proposal[draft];
  if (q > 0 && std::uniform_real_distribution<double>(0, 1)(generator) * q < target[draft]) {
    return {.token = draft, .accepted = true};
  }
  // Rejected. A draft the proposal gives no mass cannot have been drawn from it; the committed
  // token then comes from the target alone.
  std::vector<float> residual(target.begin(), target.end());
  double mass = 0;
  for (size_t i = 0; i < residual.size(); ++i) {
    if (q > 0) residual[i] = std::max(0.0f, target[i] - proposal[i]);
    mass += residual[i];
  }
  // No residual mass: target equals proposal up to rounding, and the draft stands.
  if (!(mass > 0)) return {.token = draft, .accepted = true};
  const int32_t token = SampleFrom(residual, generator);
  return {.token = token, .accepted = token == draft};
}

std::vector<float> TruncateTopP(std::span<const float> p, float top_p) {
  std::vector<float> truncated(p.begin(), p.end());
  if (top_p >= 1) return truncated;
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t limit = std::min<size_t>(p.size(), kMaxTruncatedTokens);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(limit), order.end(),
                    [&](int32_t x, int32_t y) { return p[x] > p[y] || (p[x] == p[y] && x < y); });
  double mass = 0;
  size_t kept = 0;
  while (kept < limit && (kept == 0 || mass < top_p)) mass += p[order[kept++]];
  std::fill(truncated.begin(), truncated.end(), 0.0f);
  for (size_t i = 0; i < kept; ++i) {
    truncated[order[i]] = static_cast<float>(p[order[i]] / mass);
  }
  return truncated;
}

v1::TokenDistribution EncodeDistribution(std::span<const float> p, bool full) {
  v1::TokenDistribution message;
  if (full) {
    v1::Tensor& tensor = *message.mutable_full();
    tensor.set_dtype(v1::DTYPE_F32);
    tensor.add_shape(static_cast<int64_t>(p.size()));
    tensor.mutable_data()->resize(p.size() * sizeof(float));
    std::memcpy(tensor.mutable_data()->data(), p.data(), p.size() * sizeof(float));
    return message;
  }
  std::vector<int32_t> order;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] > 0) order.push_back(static_cast<int32_t>(i));
  }
  std::sort(order.begin(), order.end(),
            [&](int32_t x, int32_t y) { return p[x] > p[y] || (p[x] == p[y] && x < y); });
  if (order.size() > kMaxTruncatedTokens) order.resize(kMaxTruncatedTokens);
  v1::TruncatedDistribution& truncated = *message.mutable_top_p();
  std::string values(order.size() * 2, '\0');
  for (size_t i = 0; i < order.size(); ++i) {
    truncated.add_indices(static_cast<uint32_t>(order[i]));
    const uint16_t half = FloatToHalf(p[order[i]]);
    values[2 * i] = static_cast<char>(half & 0xff);
    values[2 * i + 1] = static_cast<char>(half >> 8);
  }
  truncated.set_values(std::move(values));
  return message;
}

absl::StatusOr<std::vector<float>> DecodeDistribution(const v1::TokenDistribution& message,
                                                      int32_t vocab_size) {
  std::vector<float> p(vocab_size, 0.0f);
  if (message.has_full()) {
    const v1::Tensor& tensor = message.full();
    if (tensor.dtype() != v1::DTYPE_F32 && tensor.dtype() != v1::DTYPE_F16) {
      return absl::InvalidArgumentError("a full distribution must be F32 or F16");
    }
    const size_t element = tensor.dtype() == v1::DTYPE_F32 ? 4 : 2;
    if (tensor.shape_size() != 1 || tensor.shape(0) != vocab_size ||
        tensor.data().size() != element * static_cast<size_t>(vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a full distribution must have shape [", vocab_size, "]"));
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(tensor.data().data());
    for (int32_t i = 0; i < vocab_size; ++i) {
      if (element == 4) {
        std::memcpy(&p[i], bytes + 4 * static_cast<size_t>(i), 4);
      } else {
        const size_t at = 2 * static_cast<size_t>(i);
        p[i] = HalfToFloat(static_cast<uint16_t>(bytes[at] | (bytes[at + 1] << 8)));
      }
    }
  } else if (message.has_top_p()) {
    const v1::TruncatedDistribution& truncated = message.top_p();
    const int n = truncated.indices_size();
    if (n > kMaxTruncatedTokens || truncated.values().size() != 2 * static_cast<size_t>(n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a truncated distribution needs ≤ ", kMaxTruncatedTokens, " indices and 2 bytes each"));
    }
    absl::flat_hash_set<uint32_t> seen;
    const auto* bytes = reinterpret_cast<const uint8_t*>(truncated.values().data());
    for (int i = 0; i < n; ++i) {
      const uint32_t index = truncated.indices(i);
      const size_t at = 2 * static_cast<size_t>(i);
      if (index >= static_cast<uint32_t>(vocab_size) || !seen.insert(index).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("token index ", index, " out of range or repeated"));
      }
      p[index] = HalfToFloat(static_cast<uint16_t>(bytes[at] | (bytes[at + 1] << 8)));
    }
  } else {
    return absl::InvalidArgumentError("the distribution is missing");
  }
  double mass = 0;
  for (const float value : p) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError("a probability is negative or not finite");
    }
    mass += value;
  }
  if (!(mass > 0)) return absl::InvalidArgumentError("the distribution has no mass");
  for (float& value : p) value = static_cast<float>(value / mass);
  return p;
}

}  // namespace silo::node
