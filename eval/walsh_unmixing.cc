#include "eval/walsh_unmixing.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <random>
#include <tuple>
#include <utility>

namespace silo::eval {
namespace {

// Columns of `rows` [n, d] centred and scaled to unit variance, f64; empty for a constant one.
std::vector<double> Standardized(const float* rows, size_t n, size_t d) {
  std::vector<double> x(n * d);
  for (size_t c = 0; c < d; ++c) {
    double mean = 0;
    for (size_t r = 0; r < n; ++r) mean += rows[r * d + c];
    mean /= static_cast<double>(n);
    double variance = 0;
    for (size_t r = 0; r < n; ++r) {
      const double centred = rows[r * d + c] - mean;
      x[r * d + c] = centred;
      variance += centred * centred;
    }
    variance /= static_cast<double>(n);
    if (!(variance > 1e-30)) return {};
    const double inverse_std = 1.0 / std::sqrt(variance);
    for (size_t r = 0; r < n; ++r) x[r * d + c] *= inverse_std;
  }
  return x;
}

// XᵀX/n [d, d]: the correlation matrix of standardized columns, the covariance of centred ones.
std::vector<double> Correlation(const std::vector<double>& x, size_t n, size_t d) {
  std::vector<double> r(d * d, 0.0);
  for (size_t row = 0; row < n; ++row) {
    const double* values = x.data() + row * d;
    for (size_t a = 0; a < d; ++a) {
      for (size_t b = 0; b <= a; ++b) r[a * d + b] += values[a] * values[b];
    }
  }
  for (size_t a = 0; a < d; ++a) {
    for (size_t b = 0; b <= a; ++b) {
      r[a * d + b] /= static_cast<double>(n);
      r[b * d + a] = r[a * d + b];
    }
  }
  return r;
}

// Mean |r| over the distinct pairs of a correlation matrix [d, d].
double MeanOffDiagonalCorrelation(const std::vector<double>& correlation, size_t d) {
  double sum = 0;
  for (size_t a = 0; a < d; ++a) {
    for (size_t b = 0; b < d; ++b) {
      if (a != b) sum += std::abs(correlation[a * d + b]);
    }
  }
  return sum / static_cast<double>(d * (d - 1));
}

// Mean over the columns of |E[x⁴]/E[x²]² − 3| (0 for a Gaussian).
double MeanAbsoluteExcessKurtosis(const std::vector<double>& x, size_t n, size_t d) {
  double sum = 0;
  for (size_t c = 0; c < d; ++c) {
    double second = 0, fourth = 0;
    for (size_t r = 0; r < n; ++r) {
      const double squared = x[r * d + c] * x[r * d + c];
      second += squared;
      fourth += squared * squared;
    }
    if (second > 0) sum += std::abs(fourth * static_cast<double>(n) / (second * second) - 3);
  }
  return sum / static_cast<double>(d);
}

// Eigenvectors of the symmetric `a` [d, d] (cyclic Jacobi), as the columns of the result.
std::vector<double> SymmetricEigenvectors(std::vector<double> a, size_t d) {
  std::vector<double> v(d * d, 0.0);
  for (size_t i = 0; i < d; ++i) v[i * d + i] = 1;
  double total = 0;
  for (const double value : a) total += value * value;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0;
    for (size_t p = 0; p < d; ++p) {
      for (size_t q = p + 1; q < d; ++q) off += a[p * d + q] * a[p * d + q];
    }
    if (off <= 1e-24 * total) break;
    for (size_t p = 0; p < d; ++p) {
      for (size_t q = p + 1; q < d; ++q) {
        const double apq = a[p * d + q];
        if (std::abs(apq) < 1e-300) continue;
        const double theta = (a[q * d + q] - a[p * d + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::hypot(theta, 1.0));
        const double c = 1 / std::sqrt(t * t + 1);
        const double s = t * c;
        for (size_t k = 0; k < d; ++k) {  // columns p, q
          const double kp = a[k * d + p];
          const double kq = a[k * d + q];
          a[k * d + p] = c * kp - s * kq;
          a[k * d + q] = s * kp + c * kq;
        }
        for (size_t k = 0; k < d; ++k) {  // rows p, q
          const double pk = a[p * d + k];
          const double qk = a[q * d + k];
          a[p * d + k] = c * pk - s * qk;
          a[q * d + k] = s * pk + c * qk;
        }
        for (size_t k = 0; k < d; ++k) {
          const double kp = v[k * d + p];
          const double kq = v[k * d + q];
          v[k * d + p] = c * kp - s * kq;
          v[k * d + q] = s * kp + c * kq;
        }
      }
    }
  }
  return v;
}

// Climbs the sign vector `e` to a local maximum of eᵀ·R·e by single flips.
void Climb(const std::vector<double>& r, size_t d, std::vector<double>& e) {
  std::vector<double> re(d, 0.0);
  for (size_t a = 0; a < d; ++a) {
    for (size_t b = 0; b < d; ++b) re[a] += r[a * d + b] * e[b];
  }
  while (true) {
    size_t best = d;
    double best_gain = 1e-12;
    for (size_t j = 0; j < d; ++j) {
      const double gain = -4 * e[j] * (re[j] - r[j * d + j] * e[j]);
      if (gain > best_gain) {
        best_gain = gain;
        best = j;
      }
    }
    if (best == d) return;
    e[best] = -e[best];
    for (size_t a = 0; a < d; ++a) re[a] += 2 * r[a * d + best] * e[best];
  }
}

double Quadratic(const std::vector<double>& r, size_t d, const std::vector<double>& e) {
  double sum = 0;
  for (size_t a = 0; a < d; ++a) {
    for (size_t b = 0; b < d; ++b) sum += e[a] * r[a * d + b] * e[b];
  }
  return sum;
}

// A labelling of the columns by GF(2)^log₂d and their signs σ: E[j][i] = σ_j·χ_i(label_j).
struct Labelling {
  std::vector<uint32_t> label;
  std::vector<double> sigma;
  std::vector<double> e;  // [d, d]
  double objective = -1;  // Σ_i (E_iᵀ·R·E_i)²
};

// Step 2 from one e0: the labels the candidates give, the bits still tied in index order.
Labelling InitialLabelling(const std::vector<std::vector<double>>& candidates, size_t first,
                           size_t d) {
  const std::vector<double>& e0 = candidates[first];
  const int bits = std::countr_zero(d);
  Labelling labelling{.label = std::vector<uint32_t>(d, 0), .sigma = e0, .e = {}};
  std::vector<uint32_t>& label = labelling.label;
  int known = 0;
  for (const std::vector<double>& candidate : candidates) {
    if (known == bits) break;
    std::vector<uint32_t> extended = label;
    for (size_t j = 0; j < d; ++j) {
      if (candidate[j] * e0[j] < 0) extended[j] |= 1u << known;
    }
    std::vector<size_t> counts(size_t{1} << (known + 1), 0);
    for (const uint32_t l : extended) ++counts[l];
    const size_t half = d >> (known + 1);
    if (std::all_of(counts.begin(), counts.end(), [&](size_t c) { return c == half; })) {
      label = std::move(extended);
      ++known;
    }
  }
  std::vector<uint32_t> next(size_t{1} << known, 0);
  for (size_t j = 0; j < d; ++j) label[j] |= next[label[j] & ((1u << known) - 1)]++ << known;
  return labelling;
}

// Step 3: swaps of two columns' labels and sign flips while the objective grows.
void LocalSearch(const std::vector<double>& r, size_t d, const std::vector<double>& characters,
                 int32_t max_sweeps, Labelling& labelling) {
  std::vector<uint32_t>& label = labelling.label;
  std::vector<double>& sigma = labelling.sigma;
  std::vector<double>& e = labelling.e;
  e.assign(d * d, 0.0);
  for (size_t j = 0; j < d; ++j) {
    for (size_t i = 0; i < d; ++i) e[j * d + i] = sigma[j] * characters[label[j] * d + i];
  }
  std::vector<double> g(d * d, 0.0);  // R·E
  for (size_t a = 0; a < d; ++a) {
    for (size_t b = 0; b < d; ++b) {
      const double rab = r[a * d + b];
      for (size_t i = 0; i < d; ++i) g[a * d + i] += rab * e[b * d + i];
    }
  }
  std::vector<double> diagonal(d, 0.0);  // (EᵀRE)_ii
  for (size_t a = 0; a < d; ++a) {
    for (size_t i = 0; i < d; ++i) diagonal[i] += e[a * d + i] * g[a * d + i];
  }
  double& objective = labelling.objective;
  objective = 0;
  for (const double value : diagonal) objective += value * value;

  std::vector<double> delta_j(d), delta_k(d), updated(d);
  // Tries rows j and k of E changed by delta_j, delta_k (k == d: only row j); keeps a gain.
  const auto try_change = [&](size_t j, size_t k) {
    double candidate_objective = 0;
    for (size_t i = 0; i < d; ++i) {
      double value =
          diagonal[i] + 2 * delta_j[i] * g[j * d + i] + delta_j[i] * delta_j[i] * r[j * d + j];
      if (k < d) {
        value += 2 * delta_k[i] * g[k * d + i] + delta_k[i] * delta_k[i] * r[k * d + k] +
                 2 * delta_j[i] * delta_k[i] * r[j * d + k];
      }
      updated[i] = value;
      candidate_objective += value * value;
    }
    if (candidate_objective <= objective * (1 + 1e-12)) return false;
    for (size_t a = 0; a < d; ++a) {
      for (size_t i = 0; i < d; ++i) {
        g[a * d + i] += r[a * d + j] * delta_j[i] + (k < d ? r[a * d + k] * delta_k[i] : 0.0);
      }
    }
    for (size_t i = 0; i < d; ++i) {
      e[j * d + i] += delta_j[i];
      if (k < d) e[k * d + i] += delta_k[i];
    }
    diagonal = updated;
    objective = candidate_objective;
    return true;
  };
  for (int32_t sweep = 0; sweep < max_sweeps; ++sweep) {
    bool improved = false;
    for (size_t j = 0; j < d; ++j) {
      for (size_t k = j + 1; k < d; ++k) {
        for (size_t i = 0; i < d; ++i) {
          delta_j[i] = sigma[j] * characters[label[k] * d + i] - e[j * d + i];
          delta_k[i] = sigma[k] * characters[label[j] * d + i] - e[k * d + i];
        }
        if (try_change(j, k)) {
          std::swap(label[j], label[k]);
          improved = true;
        }
      }
      for (size_t i = 0; i < d; ++i) delta_j[i] = -2 * e[j * d + i];
      if (try_change(j, d)) {
        sigma[j] = -sigma[j];
        improved = true;
      }
    }
    if (!improved) break;
  }
}

// Iterated local search: kicks the best labelling by a few random swaps and sign flips and
// searches again, keeping what is better; escapes the optima single moves cannot leave.
Labelling SearchLabelling(const std::vector<double>& r, size_t d,
                          const std::vector<double>& characters,
                          const WalshUnmixingOptions& options, Labelling start,
                          std::mt19937_64& rng) {
  LocalSearch(r, d, characters, options.max_sweeps, start);
  Labelling best = std::move(start);
  for (int32_t kick = 0; kick < options.kicks; ++kick) {
    Labelling kicked = best;
    const int moves = 2 + static_cast<int>(rng() % 4);
    for (int m = 0; m < moves; ++m) {
      const size_t j = rng() % d;
      const size_t k = rng() % d;
      std::swap(kicked.label[j], kicked.label[k]);
      if ((rng() & 1) != 0) kicked.sigma[j] = -kicked.sigma[j];
    }
    LocalSearch(r, d, characters, options.max_sweeps, kicked);
    if (kicked.objective > best.objective * (1 + 1e-12)) best = std::move(kicked);
  }
  return best;
}

}  // namespace

WalshUnmixing UndoWalshMixing(const float* rows, int32_t n, int32_t d,
                              const WalshUnmixingOptions& options) {
  WalshUnmixing result;
  if (d < 2 || n <= d || !std::has_single_bit(static_cast<uint32_t>(d))) return result;
  const auto rows_n = static_cast<size_t>(n);
  const auto width = static_cast<size_t>(d);
  const std::vector<double> x = Standardized(rows, rows_n, width);
  if (x.empty()) return result;
  const std::vector<double> r = Correlation(x, rows_n, width);

  // Step 1: candidate sign vectors, climbed, distinct up to sign, best quadratic form first.
  std::vector<std::vector<double>> starts;
  const std::vector<double> eigenvectors = SymmetricEigenvectors(r, width);
  for (size_t i = 0; i < width; ++i) {
    std::vector<double>& start = starts.emplace_back(width);
    for (size_t j = 0; j < width; ++j) start[j] = eigenvectors[j * width + i] < 0 ? -1.0 : 1.0;
  }
  std::mt19937_64 rng(options.seed);
  for (int32_t s = 0; s < options.random_starts; ++s) {
    std::vector<double>& start = starts.emplace_back(width);
    for (double& sign : start) sign = (rng() & 1) != 0 ? 1.0 : -1.0;
  }
  std::vector<std::pair<double, std::vector<double>>> ranked;
  for (std::vector<double>& e : starts) {
    Climb(r, width, e);
    const bool seen = std::any_of(ranked.begin(), ranked.end(), [&](const auto& known) {
      double dot = 0;
      for (size_t j = 0; j < width; ++j) dot += known.second[j] * e[j];
      return std::abs(dot) == static_cast<double>(width);
    });
    if (!seen) ranked.emplace_back(Quadratic(r, width, e), std::move(e));
  }
  std::sort(ranked.begin(), ranked.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::vector<double>> candidates;
  candidates.reserve(ranked.size());
  for (auto& [quadratic, e] : ranked) candidates.push_back(std::move(e));

  // Steps 2 and 3 from each of the first `tries` candidates; step 4 keeps the best.
  std::vector<double> characters(width * width);  // χ_i(l) = (−1)^popcount(l & i)
  for (size_t l = 0; l < width; ++l) {
    for (size_t i = 0; i < width; ++i) {
      characters[l * width + i] = (std::popcount(l & i) & 1) != 0 ? -1.0 : 1.0;
    }
  }
  Labelling best;
  const size_t tries = std::min(candidates.size(), static_cast<size_t>(std::max(1, options.tries)));
  for (size_t first = 0; first < tries; ++first) {
    Labelling labelling = SearchLabelling(r, width, characters, options,
                                          InitialLabelling(candidates, first, width), rng);
    if (labelling.objective > best.objective) best = std::move(labelling);
  }

  // Y = X·E/√d against the rows as given. The search always removes some correlation, so Y
  // wins only when it leaves clearly less (Walsh structure was there to undo) and is less
  // Gaussian than the rows (mixing sums columns, which makes them more Gaussian).
  result.rows.resize(rows_n * width);
  const double norm = 1 / std::sqrt(static_cast<double>(width));
  std::vector<double> y(rows_n * width);
  for (size_t row = 0; row < rows_n; ++row) {
    for (size_t i = 0; i < width; ++i) {
      double sum = 0;
      for (size_t j = 0; j < width; ++j) sum += x[row * width + j] * best.e[j * width + i];
      y[row * width + i] = sum * norm;
    }
  }
  const double unmixed = MeanAbsoluteExcessKurtosis(y, rows_n, width);
  const double as_given = MeanAbsoluteExcessKurtosis(x, rows_n, width);
  std::vector<double> y_correlation = Correlation(y, rows_n, width);  // Y is centred
  for (size_t a = 0; a < width; ++a) {
    for (size_t b = 0; b < width; ++b) {
      if (a == b) continue;
      const double scale = std::sqrt(y_correlation[a * width + a] * y_correlation[b * width + b]);
      y_correlation[a * width + b] = scale > 0 ? y_correlation[a * width + b] / scale : 0.0;
    }
  }
  const bool less_correlated = MeanOffDiagonalCorrelation(y_correlation, width) <
                               options.correlation_ratio * MeanOffDiagonalCorrelation(r, width);
  result.unmixed_as_given = !less_correlated || as_given >= unmixed;
  result.non_gaussianity = result.unmixed_as_given ? as_given : unmixed;
  const std::vector<double>& chosen = result.unmixed_as_given ? x : y;
  for (size_t i = 0; i < chosen.size(); ++i) result.rows[i] = static_cast<float>(chosen[i]);
  return result;
}

int32_t MatchedColumns(const float* estimate, const float* truth, int32_t n, int32_t d,
                       double threshold) {
  if (n < 2 || d < 1) return 0;
  const auto rows_n = static_cast<size_t>(n);
  const auto width = static_cast<size_t>(d);
  const std::vector<double> a = Standardized(estimate, rows_n, width);
  const std::vector<double> b = Standardized(truth, rows_n, width);
  if (a.empty() || b.empty()) return 0;
  std::vector<std::tuple<double, size_t, size_t>> pairs;
  for (size_t i = 0; i < width; ++i) {
    for (size_t j = 0; j < width; ++j) {
      double dot = 0;
      for (size_t row = 0; row < rows_n; ++row) dot += a[row * width + i] * b[row * width + j];
      const double correlation = std::abs(dot) / static_cast<double>(rows_n);
      if (correlation >= threshold) pairs.emplace_back(correlation, i, j);
    }
  }
  std::sort(pairs.begin(), pairs.end(),
            [](const auto& p, const auto& q) { return std::get<0>(p) > std::get<0>(q); });
  std::vector<bool> used_estimate(width, false), used_truth(width, false);
  int32_t matched = 0;
  for (const auto& [correlation, i, j] : pairs) {
    if (used_estimate[i] || used_truth[j]) continue;
    used_estimate[i] = used_truth[j] = true;
    ++matched;
  }
  return matched;
}

}  // namespace silo::eval
