#include "engine/rope.h"

#include <cmath>

namespace silo::engine {

Rope::Rope(const ModelConfig& config)
    : head_dim_(config.head_dim),
      style_(config.rope_style),
      inverse_frequencies_(config.head_dim / 2) {
  for (int32_t i = 0; i < head_dim_ / 2; ++i) {
    double frequency = std::pow(static_cast<double>(config.rope_theta), -2.0 * i / head_dim_);
    if (!config.rope_freq_factors.empty()) frequency /= config.rope_freq_factors[i];
    inverse_frequencies_[i] = frequency;
  }
}

void Rope::Rotate(const int32_t* positions, int64_t n_rows, int32_t n_heads, float* x,
                  bool inverse) const {
  const int32_t half = head_dim_ / 2;
  std::vector<float> cos_angle(half), sin_angle(half);
  for (int64_t row = 0; row < n_rows; ++row) {
    for (int32_t i = 0; i < half; ++i) {
      const double angle = positions[row] * inverse_frequencies_[i];
      cos_angle[i] = static_cast<float>(std::cos(angle));
      sin_angle[i] = static_cast<float>(inverse ? -std::sin(angle) : std::sin(angle));
    }
    float* heads = x + row * n_heads * head_dim_;
    for (int32_t h = 0; h < n_heads; ++h) {
      float* v = heads + static_cast<int64_t>(h) * head_dim_;
      // The pair (a, b) of frequency i: adjacent elements, or i and i + half.
      const int64_t stride = style_ == RopeStyle::kAdjacentPairs ? 2 : 1;
      const int32_t partner = style_ == RopeStyle::kAdjacentPairs ? 1 : half;
      for (int32_t i = 0; i < half; ++i) {
        float& a = v[i * stride];
        float& b = v[i * stride + partner];
        const float a0 = a, b0 = b;
        a = a0 * cos_angle[i] - b0 * sin_angle[i];
        b = a0 * sin_angle[i] + b0 * cos_angle[i];
      }
    }
  }
}

}  // namespace silo::engine
