#include "eval/privacy_attacks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>
#include <numeric>
#include <tuple>

#include "engine/cpu/quantized_matmul.h"
#include "eval/walsh_unmixing.h"

namespace silo::eval {
namespace {

// The five best guesses of one row, distinct tokens, lowest cost first.
class Guesses {
 public:
  void Offer(int32_t token, float cost) {
    size_t at = size_;  // where the token is, or size_
    for (size_t i = 0; i < size_; ++i) {
      if (best_[i].second == token) at = i;
    }
    if (at < size_) {
      if (cost >= best_[at].first) return;
    } else if (size_ < best_.size()) {
      at = size_++;
    } else if (cost < best_[size_ - 1].first) {
      at = size_ - 1;
    } else {
      return;
    }
    best_[at] = {cost, token};
    for (; at > 0 && best_[at].first < best_[at - 1].first; --at)
      std::swap(best_[at], best_[at - 1]);
  }

  void Score(int32_t truth, RecoveryCount& count) const {
    ++count.n;
    for (size_t i = 0; i < size_; ++i) {
      if (best_[i].second != truth) continue;
      if (i == 0) ++count.top1;
      ++count.top5;
    }
  }

 private:
  std::array<std::pair<float, int32_t>, 5> best_{};
  size_t size_ = 0;
};

// y [n, rows] = x [n, cols] · tableᵀ for a row-major f32 table [rows, cols].
void Products(const std::vector<float>& table, int64_t rows, int64_t cols, const float* x,
              int64_t n, float* y, engine::ThreadPool& pool) {
  const engine::WeightMatrix w{.type = engine::GgmlType::kF32,
                               .rows = rows,
                               .cols = cols,
                               .data = reinterpret_cast<const uint8_t*>(table.data()),
                               .row_bytes = cols * 4};
  engine::MatMul(w, x, n, y, pool);
}

// Rows [vocab, n_rows_per_token, d] of `table` ([vocab, stride, d]) starting at row `first`.
std::vector<float> TableSlice(const std::vector<float>& table, int32_t vocab, int32_t stride,
                              int32_t first, int32_t n_rows, int32_t d) {
  std::vector<float> out(static_cast<size_t>(vocab) * n_rows * d);
  for (int32_t t = 0; t < vocab; ++t) {
    std::copy_n(&table[(static_cast<size_t>(t) * stride + first) * d],
                static_cast<size_t>(n_rows) * d, &out[static_cast<size_t>(t) * n_rows * d]);
  }
  return out;
}

// x rotated by RoPE from position 0 to `position` (any sign).
std::vector<float> Rotated(const engine::Rope& rope, const float* x, int32_t d, int32_t position) {
  std::vector<float> out(x, x + d);
  rope.Rotate(&position, 1, 1, out.data());
  return out;
}

// The received score columns of keys: column i of a key holds s[r] = scale·q′[r]·K′[i] for its
// query rows r, looked up by their first value.
class ScoreColumns {
 public:
  explicit ScoreColumns(int32_t rows) : rows_(rows) {}

  // Adds the columns of `key` at `step`; returns the id of its first column.
  int32_t Add(const ObservedKey& key, size_t step, float scale) {
    const int32_t first = static_cast<int32_t>(values_.size()) / rows_;
    const std::vector<float>& q = key.q[step];
    const size_t d = static_cast<size_t>(key.dim);
    for (int32_t i = 0; i < key.n_rows; ++i) {
      for (int32_t r = 0; r < rows_; ++r) {
        double sum = 0;
        for (size_t c = 0; c < d; ++c) sum += double{q[r * d + c]} * key.k[i * d + c];
        values_.push_back(static_cast<float>(sum * scale));
      }
    }
    return first;
  }

  void Finish() {
    order_.resize(values_.size() / static_cast<size_t>(rows_));
    std::iota(order_.begin(), order_.end(), 0);
    std::sort(order_.begin(), order_.end(),
              [&](int32_t a, int32_t b) { return First(a) < First(b); });
    firsts_.resize(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) firsts_[i] = First(order_[i]);
  }

  // Calls hit(column, cost) for every column whose values equal `predicted` (rows_ values, in
  // any order) within tolerance·(1 + |value|); cost is the largest such relative error.
  template <typename Hit>
  void Match(const float* predicted, float tolerance, Hit&& hit) const {
    std::array<float, 16> rest_predicted{}, rest_seen{};
    for (int32_t lead = 0; lead < rows_; ++lead) {
      const float target = predicted[lead];
      const float window = tolerance * (1 + std::abs(target));
      auto it = std::lower_bound(firsts_.begin(), firsts_.end(), target - window);
      for (; it != firsts_.end() && *it <= target + window; ++it) {
        const int32_t column = order_[static_cast<size_t>(it - firsts_.begin())];
        const float* seen = &values_[static_cast<size_t>(column) * rows_];
        float cost = std::abs(seen[0] - target) / (1 + std::abs(target));
        int32_t n = 0;
        for (int32_t r = 0; r < rows_; ++r) {
          if (r != lead) rest_predicted[static_cast<size_t>(n++)] = predicted[r];
        }
        std::copy(seen + 1, seen + rows_, rest_seen.begin());
        std::sort(rest_predicted.begin(), rest_predicted.begin() + n);
        std::sort(rest_seen.begin(), rest_seen.begin() + n);
        bool same = true;
        for (int32_t r = 0; r < n && same; ++r) {
          const float error =
              std::abs(rest_seen[static_cast<size_t>(r)] - rest_predicted[static_cast<size_t>(r)]) /
              (1 + std::abs(rest_predicted[static_cast<size_t>(r)]));
          same = error <= tolerance;
          cost = std::max(cost, error);
        }
        if (same) hit(column, cost);
      }
    }
  }

 private:
  float First(int32_t column) const { return values_[static_cast<size_t>(column) * rows_]; }

  int32_t rows_;
  std::vector<float> values_;  // [column, rows_]
  std::vector<int32_t> order_;
  std::vector<float> firsts_;  // first values in order_
};

// Sorted |x| (descending), `keep` values, unit length: invariant to permutations of rows and
// dimensions, sign and scale.
void SortedMagnitudes(const float* x, int32_t dim, int32_t keep, float* out) {
  std::vector<float> magnitudes(static_cast<size_t>(dim));
  for (int32_t i = 0; i < dim; ++i) magnitudes[static_cast<size_t>(i)] = std::abs(x[i]);
  std::sort(magnitudes.begin(), magnitudes.end(), std::greater<>());
  magnitudes.resize(static_cast<size_t>(keep), 0.0f);
  double norm = 0;
  for (const float m : magnitudes) norm += double{m} * m;
  const float inv = norm > 0 ? static_cast<float>(1 / std::sqrt(norm)) : 0.0f;
  for (int32_t i = 0; i < keep; ++i) out[i] = magnitudes[static_cast<size_t>(i)] * inv;
}

// Norms of the rotary pairs of x (dim values), in the model's pairing, as SortedMagnitudes does.
void PairNorms(const float* x, int32_t dim, engine::RopeStyle style, int32_t keep, float* out) {
  std::vector<float> norms(static_cast<size_t>(dim / 2));
  for (int32_t i = 0; i < dim / 2; ++i) {
    const size_t first = style == engine::RopeStyle::kAdjacentPairs ? 2 * static_cast<size_t>(i)
                                                                    : static_cast<size_t>(i);
    const size_t second = style == engine::RopeStyle::kAdjacentPairs
                              ? first + 1
                              : static_cast<size_t>(i) + static_cast<size_t>(dim / 2);
    const float a = x[first];
    const float b = x[second];
    norms[static_cast<size_t>(i)] = std::sqrt(a * a + b * b);
  }
  SortedMagnitudes(norms.data(), dim / 2, keep, out);
}

// For rows of features x [n, f] and a table [vocab, f], the tokens of the five largest products
// per row: table row t is token `row_tokens[t]`, or token t when row_tokens is null.
std::vector<Guesses> NearestByProduct(const std::vector<float>& table, int32_t vocab, int32_t f,
                                      const std::vector<float>& x, engine::ThreadPool& pool,
                                      const std::vector<int32_t>* row_tokens = nullptr) {
  const int64_t n = static_cast<int64_t>(x.size()) / f;
  std::vector<Guesses> guesses(static_cast<size_t>(n));
  constexpr int64_t kBatch = 64;
  std::vector<float> y(static_cast<size_t>(kBatch) * vocab);
  for (int64_t first = 0; first < n; first += kBatch) {
    const int64_t rows = std::min(kBatch, n - first);
    Products(table, vocab, f, &x[static_cast<size_t>(first * f)], rows, y.data(), pool);
    pool.ParallelFor(rows, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        Guesses& g = guesses[static_cast<size_t>(first + r)];
        const float* row = &y[static_cast<size_t>(r) * vocab];
        for (int32_t t = 0; t < vocab; ++t) {
          g.Offer(row_tokens != nullptr ? (*row_tokens)[static_cast<size_t>(t)] : t, -row[t]);
        }
      }
    });
  }
  return guesses;
}

}  // namespace

std::vector<double> RowLeverages(const float* rows, int32_t n, int32_t d) {
  const size_t m = static_cast<size_t>(d);
  std::vector<double> gram(m * m, 0.0);
  for (int32_t i = 0; i < n; ++i) {
    const float* r = rows + static_cast<size_t>(i) * m;
    for (size_t a = 0; a < m; ++a) {
      for (size_t b = 0; b <= a; ++b) gram[a * m + b] += double{r[a]} * r[b];
    }
  }
  for (size_t j = 0; j < m; ++j) {  // lower Cholesky factor in place
    double diagonal = gram[j * m + j];
    for (size_t k = 0; k < j; ++k) diagonal -= gram[j * m + k] * gram[j * m + k];
    if (diagonal <= 1e-12) return {};
    gram[j * m + j] = std::sqrt(diagonal);
    for (size_t i = j + 1; i < m; ++i) {
      double sum = gram[i * m + j];
      for (size_t k = 0; k < j; ++k) sum -= gram[i * m + k] * gram[j * m + k];
      gram[i * m + j] = sum / gram[j * m + j];
    }
  }
  std::vector<double> leverages(static_cast<size_t>(n));
  std::vector<double> y(m);
  for (int32_t i = 0; i < n; ++i) {
    const float* r = rows + static_cast<size_t>(i) * m;
    double sum = 0;
    for (size_t a = 0; a < m; ++a) {  // y = L⁻¹·r
      double value = r[a];
      for (size_t k = 0; k < a; ++k) value -= gram[a * m + k] * y[k];
      y[a] = value / gram[a * m + a];
      sum += y[a] * y[a];
    }
    leverages[static_cast<size_t>(i)] = sum;
  }
  return leverages;
}

namespace {

// X = A⁻¹·B for A [n, n] and B [n, m], row-major f64, by Gaussian elimination with partial
// pivoting; empty when A is (numerically) singular.
std::vector<double> Solve(std::vector<double> a, std::vector<double> b, size_t n, size_t m) {
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r) {
      if (std::abs(a[r * n + col]) > std::abs(a[pivot * n + col])) pivot = r;
    }
    if (std::abs(a[pivot * n + col]) < 1e-12) return {};
    if (pivot != col) {
      for (size_t c = 0; c < n; ++c) std::swap(a[col * n + c], a[pivot * n + c]);
      for (size_t c = 0; c < m; ++c) std::swap(b[col * m + c], b[pivot * m + c]);
    }
    for (size_t r = col + 1; r < n; ++r) {
      const double factor = a[r * n + col] / a[col * n + col];
      if (factor == 0) continue;
      for (size_t c = col; c < n; ++c) a[r * n + c] -= factor * a[col * n + c];
      for (size_t c = 0; c < m; ++c) b[r * m + c] -= factor * b[col * m + c];
    }
  }
  for (size_t r = n; r-- > 0;) {
    for (size_t c = 0; c < m; ++c) {
      double value = b[r * m + c];
      for (size_t k = r + 1; k < n; ++k) value -= a[r * n + k] * b[k * m + c];
      b[r * m + c] = value / a[r * n + r];
    }
  }
  return b;
}

// Aᵀ·B for A [rows, n] and B [rows, m].
std::vector<double> TransposeTimes(const std::vector<double>& a, const std::vector<double>& b,
                                   size_t rows, size_t n, size_t m) {
  std::vector<double> out(n * m, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < n; ++i) {
      const double x = a[r * n + i];
      for (size_t j = 0; j < m; ++j) out[i * m + j] += x * b[r * m + j];
    }
  }
  return out;
}

// Sorted |values| of a whole matrix, of each row, or of each column, divided by their mean:
// invariant to row and column permutations (the whole), to column permutations (a row's) or
// to row permutations (a column's), and to scale.
std::vector<double> SortedMagnitudesByMean(const double* values, size_t n, size_t stride) {
  std::vector<double> sorted(n);
  double mean = 0;
  for (size_t i = 0; i < n; ++i) {
    sorted[i] = std::abs(values[i * stride]);
    mean += sorted[i] / static_cast<double>(n);
  }
  std::sort(sorted.begin(), sorted.end());
  for (double& value : sorted) value /= mean > 0 ? mean : 1;
  return sorted;
}

double Distance(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
  return sum;
}

// Indices of `values` by decreasing value.
std::vector<int32_t> RanksOf(const std::vector<double>& values) {
  std::vector<int32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)];
  });
  return order;
}

}  // namespace

RecoveryCount ChanceOf(const std::vector<int32_t>& truth, const std::vector<int32_t>& prior) {
  RecoveryCount chance{.n = static_cast<int64_t>(truth.size()), .top1 = 0, .top5 = 0};
  for (const int32_t token : truth) {
    for (size_t i = 0; i < prior.size() && i < 5; ++i) {
      if (prior[i] != token) continue;
      if (i == 0) ++chance.top1;
      ++chance.top5;
    }
  }
  return chance;
}

std::vector<AttackResult> RunExactScoreAttack(const ObservedLayer& view,
                                              const AttackerKnowledge& attacker,
                                              int32_t decode_steps) {
  const engine::ModelConfig& config = *attacker.config;
  const TokenAloneTable& table = *attacker.table;
  engine::ThreadPool& pool = *attacker.pool;
  const int32_t d = config.head_dim;
  const int32_t group = view.group;
  const int32_t vocab = table.vocab;
  AttackResult query{
      .attack = "exact-scores", .target = "query tokens", .recovered = {}, .chance = {}};
  AttackResult chunk{
      .attack = "exact-scores", .target = "chunk tokens", .recovered = {}, .chance = {}};
  std::vector<int32_t> query_truth, chunk_truth;
  // The vocabulary's queries of KV head 0's group (stage 1) and keys of every KV head (stage 2),
  // each contiguous for Products.
  const std::vector<float> queries0 = TableSlice(table.q, vocab, config.n_heads, 0, group, d);
  std::vector<std::vector<float>> keys_by_head;
  keys_by_head.reserve(static_cast<size_t>(config.n_kv_heads));
  for (int32_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
    keys_by_head.push_back(TableSlice(table.k, vocab, config.n_kv_heads, kv_head, 1, d));
  }
  const int32_t last_step =
      std::min<int32_t>(decode_steps, static_cast<int32_t>(view.step_positions.size()) - 1);
  for (int32_t step = 1; step <= last_step; ++step) {
    const auto s = static_cast<size_t>(step);
    const int32_t query_position = view.step_positions[s][0];

    // Stage 1: the query token, from the columns of KV head 0.
    ScoreColumns columns(group);
    std::vector<int32_t> positions;
    for (const ObservedKey& key : view.keys) {
      if (key.kv_head != 0) continue;
      columns.Add(key, s, view.scale);
      positions.insert(positions.end(), key.layout_positions.begin(), key.layout_positions.end());
    }
    columns.Finish();
    std::sort(positions.begin(), positions.end());
    const size_t stride =
        std::max<size_t>(1, positions.size() / static_cast<size_t>(attacker.max_anchor_positions));
    std::vector<float> pairs;  // anchor keys rotated to (position − query position)
    for (int32_t a = 0; a < attacker.n_anchors && a < static_cast<int32_t>(attacker.anchors.size());
         ++a) {
      const float* k = &table.k[static_cast<size_t>(attacker.anchors[static_cast<size_t>(a)]) *
                                config.n_kv_heads * d];
      for (size_t i = 0; i < positions.size(); i += stride) {
        const std::vector<float> rotated =
            Rotated(*attacker.rope, k, d, positions[i] - query_position);
        pairs.insert(pairs.end(), rotated.begin(), rotated.end());
      }
    }
    const int64_t n_pairs = static_cast<int64_t>(pairs.size()) / d;
    std::vector<int64_t> hits(static_cast<size_t>(vocab), 0);
    constexpr int64_t kPairBatch = 64;
    std::vector<float> y(static_cast<size_t>(kPairBatch) * vocab * group);
    for (int64_t first = 0; first < n_pairs; first += kPairBatch) {
      const int64_t n = std::min(kPairBatch, n_pairs - first);
      Products(queries0, int64_t{vocab} * group, d, &pairs[static_cast<size_t>(first * d)], n,
               y.data(), pool);
      pool.ParallelFor(vocab, [&](int64_t begin, int64_t end) {
        std::array<float, 16> predicted{};
        for (int64_t t = begin; t < end; ++t) {
          for (int64_t p = 0; p < n; ++p) {
            for (int32_t h = 0; h < group; ++h) {
              predicted[static_cast<size_t>(h)] =
                  y[static_cast<size_t>((p * vocab + t) * group + h)] * view.scale;
            }
            columns.Match(predicted.data(), attacker.tolerance,
                          [&](int32_t, float) { ++hits[static_cast<size_t>(t)]; });
          }
        }
      });
    }
    Guesses query_guesses;
    for (int32_t t = 0; t < vocab; ++t) {
      if (hits[static_cast<size_t>(t)] > 0) {
        query_guesses.Offer(t, -static_cast<float>(hits[static_cast<size_t>(t)]));
      }
    }
    const int32_t true_query = view.step_tokens[s][0];
    query_guesses.Score(true_query, query.recovered);
    query_truth.push_back(true_query);
    int32_t best_query = -1;
    int64_t best_hits = 0;
    for (int32_t t = 0; t < vocab; ++t) {
      if (hits[static_cast<size_t>(t)] > best_hits) {
        best_hits = hits[static_cast<size_t>(t)];
        best_query = t;
      }
    }
    if (step != 1) continue;

    // Stage 2, first decode step: every key row, with the best query token.
    for (const ObservedKey& key : view.keys) {
      std::vector<Guesses> guesses(static_cast<size_t>(key.n_rows));
      if (best_query >= 0) {
        ScoreColumns key_columns(group);
        key_columns.Add(key, s, view.scale);
        key_columns.Finish();
        const std::vector<float>& keys_g = keys_by_head[static_cast<size_t>(key.kv_head)];
        const float* q = &table.q[(static_cast<size_t>(best_query) * config.n_heads +
                                   static_cast<size_t>(key.kv_head) * group) *
                                  d];
        std::mutex mutex;
        constexpr size_t kPositionBatch = 32;
        std::vector<float> y2(kPositionBatch * group * vocab);
        for (size_t first = 0; first < key.layout_positions.size(); first += kPositionBatch) {
          const size_t n = std::min(kPositionBatch, key.layout_positions.size() - first);
          std::vector<float> x;  // query heads rotated to (query position − key position)
          for (size_t p = 0; p < n; ++p) {
            for (int32_t h = 0; h < group; ++h) {
              const std::vector<float> rotated =
                  Rotated(*attacker.rope, q + static_cast<size_t>(h) * d, d,
                          query_position - key.layout_positions[first + p]);
              x.insert(x.end(), rotated.begin(), rotated.end());
            }
          }
          Products(keys_g, vocab, d, x.data(), static_cast<int64_t>(n) * group, y2.data(), pool);
          pool.ParallelFor(vocab, [&](int64_t begin, int64_t end) {
            std::array<float, 16> predicted{};
            for (int64_t t = begin; t < end; ++t) {
              for (size_t p = 0; p < n; ++p) {
                for (int32_t h = 0; h < group; ++h) {
                  predicted[static_cast<size_t>(h)] =
                      y2[(p * group + static_cast<size_t>(h)) * vocab + static_cast<size_t>(t)] *
                      view.scale;
                }
                key_columns.Match(
                    predicted.data(), attacker.tolerance, [&](int32_t column, float cost) {
                      const std::lock_guard<std::mutex> lock(mutex);
                      guesses[static_cast<size_t>(column)].Offer(static_cast<int32_t>(t), cost);
                    });
              }
            }
          });
        }
      }
      for (int32_t i = 0; i < key.n_rows; ++i) {
        guesses[static_cast<size_t>(i)].Score(key.row_token[static_cast<size_t>(i)],
                                              chunk.recovered);
        chunk_truth.push_back(key.row_token[static_cast<size_t>(i)]);
      }
    }
  }
  query.chance = ChanceOf(query_truth, attacker.anchors);
  chunk.chance = ChanceOf(chunk_truth, attacker.anchors);
  return {chunk, query};
}

std::vector<AttackResult> RunVocabularyMatching(const ObservedLayer& view,
                                                const AttackerKnowledge& attacker) {
  const engine::ModelConfig& config = *attacker.config;
  const TokenAloneTable& table = *attacker.table;
  const int32_t d = config.head_dim;
  const int32_t half = d / 2;
  const int32_t vocab = table.vocab;
  AttackResult by_value{
      .attack = "vocab-match-v", .target = "chunk tokens", .recovered = {}, .chance = {}};
  AttackResult by_key{
      .attack = "vocab-match-k", .target = "chunk tokens", .recovered = {}, .chance = {}};
  std::vector<int32_t> truth;
  for (int32_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
    std::vector<float> value_table(static_cast<size_t>(vocab) * d);
    std::vector<float> key_table(static_cast<size_t>(vocab) * half);
    for (int32_t t = 0; t < vocab; ++t) {
      const size_t at = (static_cast<size_t>(t) * config.n_kv_heads + kv_head) * d;
      SortedMagnitudes(&table.v[at], d, d, &value_table[static_cast<size_t>(t) * d]);
      PairNorms(&table.k[at], d, config.rope_style, half,
                &key_table[static_cast<size_t>(t) * half]);
    }
    std::vector<float> values, keys;
    std::vector<int32_t> head_truth;
    for (const ObservedKey& key : view.keys) {
      if (key.kv_head != kv_head) continue;
      for (int32_t i = 0; i < key.n_rows; ++i) {
        const size_t at = static_cast<size_t>(i) * key.dim;
        values.resize(values.size() + d);
        SortedMagnitudes(&key.v[at], key.dim, d, &values[values.size() - d]);
        keys.resize(keys.size() + half);
        PairNorms(&key.k[at], key.dim, config.rope_style, half, &keys[keys.size() - half]);
        head_truth.push_back(key.row_token[static_cast<size_t>(i)]);
      }
    }
    const std::vector<Guesses> value_guesses =
        NearestByProduct(value_table, vocab, d, values, *attacker.pool);
    const std::vector<Guesses> key_guesses =
        NearestByProduct(key_table, vocab, half, keys, *attacker.pool);
    for (size_t i = 0; i < head_truth.size(); ++i) {
      value_guesses[i].Score(head_truth[i], by_value.recovered);
      key_guesses[i].Score(head_truth[i], by_key.recovered);
    }
    truth.insert(truth.end(), head_truth.begin(), head_truth.end());
  }
  by_value.chance = ChanceOf(truth, attacker.anchors);
  by_key.chance = by_value.chance;
  return {by_value, by_key};
}

AttackResult RunLinearInvariantAttack(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                      const std::vector<CandidateChunk>& pool) {
  const int32_t d = attacker.config->head_dim;
  AttackResult result{
      .attack = "linear-invariants", .target = "chunk tokens", .recovered = {}, .chance = {}};
  std::vector<int32_t> truth;
  for (const ObservedKey& key : view.keys) {
    std::vector<Guesses> guesses(static_cast<size_t>(key.n_rows));
    const std::vector<int32_t>& positions = key.layout_positions;
    const bool one_run = !positions.empty() && positions.back() - positions.front() + 1 ==
                                                   static_cast<int32_t>(positions.size());
    const std::vector<double> seen = key.n_rows > key.dim && one_run
                                         ? RowLeverages(key.k.data(), key.n_rows, key.dim)
                                         : std::vector<double>();
    if (!seen.empty()) {
      const std::vector<int32_t> seen_ranks = RanksOf(seen);
      // Candidates of the key's length, by distance of their sorted leverages.
      std::vector<std::pair<double, size_t>> ranked;
      std::vector<std::vector<int32_t>> candidate_ranks(pool.size());
      std::vector<float> keys(static_cast<size_t>(key.n_rows) * d);
      for (size_t c = 0; c < pool.size(); ++c) {
        if (pool[c].tokens.size() != static_cast<size_t>(key.n_rows)) continue;
        keys = pool[c].keys[static_cast<size_t>(key.kv_head)];
        attacker.rope->Rotate(positions.data(), key.n_rows, 1, keys.data());
        const std::vector<double> candidate = RowLeverages(keys.data(), key.n_rows, d);
        if (candidate.empty()) continue;
        candidate_ranks[c] = RanksOf(candidate);
        double distance = 0;
        for (size_t r = 0; r < seen_ranks.size(); ++r) {
          const double delta = seen[static_cast<size_t>(seen_ranks[r])] -
                               candidate[static_cast<size_t>(candidate_ranks[c][r])];
          distance += delta * delta;
        }
        ranked.emplace_back(distance, c);
      }
      std::sort(ranked.begin(), ranked.end());
      for (size_t j = 0; j < ranked.size() && j < 5; ++j) {
        const size_t c = ranked[j].second;
        for (size_t r = 0; r < seen_ranks.size(); ++r) {
          guesses[static_cast<size_t>(seen_ranks[r])].Offer(
              pool[c].tokens[static_cast<size_t>(candidate_ranks[c][r])],
              static_cast<float>(ranked[j].first));
        }
      }
    }
    for (int32_t i = 0; i < key.n_rows; ++i) {
      guesses[static_cast<size_t>(i)].Score(key.row_token[static_cast<size_t>(i)],
                                            result.recovered);
      truth.push_back(key.row_token[static_cast<size_t>(i)]);
    }
  }
  result.chance = ChanceOf(truth, attacker.anchors);
  return result;
}

std::vector<AttackResult> RunWalshUnmixingAttack(const ObservedLayer& view,
                                                 const AttackerKnowledge& attacker) {
  std::vector<AttackResult> results(2);
  results[0].attack = "walsh-unmixing-k";
  results[1].attack = "walsh-unmixing-v";
  std::vector<const ObservedKey*> keys;
  for (AttackResult& result : results) {
    result.target = "chunk tokens";
    for (const ObservedKey& key : view.keys) {
      result.recovered.n += key.n_rows;
      result.chance.n += key.n_rows;
    }
  }
  for (const ObservedKey& key : view.keys) {
    if (key.n_rows > key.dim) keys.push_back(&key);
  }
  // [key][0: K′, 1: V′] rows recovered.
  std::vector<std::array<int64_t, 2>> recovered(keys.size(), {0, 0});
  const auto attack = [&](size_t i) {
    const ObservedKey& key = *keys[i];
    const size_t size = static_cast<size_t>(key.n_rows) * static_cast<size_t>(key.dim);
    for (size_t t = 0; t < 2; ++t) {
      const std::vector<float>& seen = t == 0 ? key.k : key.v;
      const std::vector<float>& truth = t == 0 ? key.truth_k : key.truth_v;
      WalshUnmixingOptions options;
      options.seed = 2 * i + t + 1;
      const WalshUnmixing unmixing = UndoWalshMixing(seen.data(), key.n_rows, key.dim, options);
      // Scoring only: against the truth (unpadded widths only: padding adds zero columns).
      if (unmixing.rows.empty() || truth.size() != size) continue;
      if (MatchedColumns(unmixing.rows.data(), truth.data(), key.n_rows, key.dim, 0.9) == key.dim) {
        recovered[i][t] = key.n_rows;
      }
    }
  };
  const auto attack_range = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) attack(static_cast<size_t>(i));
  };
  const auto n_keys = static_cast<int64_t>(keys.size());
  if (attacker.pool != nullptr) {
    attacker.pool->ParallelFor(n_keys, attack_range);
  } else {
    attack_range(0, n_keys);
  }
  for (const std::array<int64_t, 2>& rows : recovered) {
    for (size_t t = 0; t < 2; ++t) {
      results[t].recovered.top1 += rows[t];
      results[t].recovered.top5 += rows[t];
    }
  }
  return results;
}

namespace {

// Rows [n, d] with each column centred and scaled by `mean` and `inverse_std`.
void StandardizeColumns(std::vector<float>& rows, size_t d, const std::vector<double>& mean,
                        const std::vector<double>& inverse_std) {
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i] = static_cast<float>((rows[i] - mean[i % d]) * inverse_std[i % d]);
  }
}

// Each row of `rows` [n, d] scaled to unit length; with `sorted_magnitudes`, first replaced by
// its |values| in ascending order.
std::vector<float> RowFeatures(const std::vector<float>& rows, size_t d, bool sorted_magnitudes) {
  std::vector<float> features = rows;
  for (size_t at = 0; at < features.size(); at += d) {
    float* row = &features[at];
    if (sorted_magnitudes) {
      for (size_t c = 0; c < d; ++c) row[c] = std::abs(row[c]);
      std::sort(row, row + d);
    }
    double norm = 0;
    for (size_t c = 0; c < d; ++c) norm += double{row[c]} * row[c];
    const auto scale = static_cast<float>(norm > 0 ? 1 / std::sqrt(norm) : 0.0);
    for (size_t c = 0; c < d; ++c) row[c] *= scale;
  }
  return features;
}

// Value rows of public text for one KV head, each column standardized (mean and inverse_std
// kept to standardize other rows alike), with both kinds of RowFeatures and their tokens.
struct PublicValues {
  std::vector<float> rows, sorted, whole;
  std::vector<int32_t> tokens;
  std::vector<double> mean, inverse_std;
};

// [kv_head] from `reference` chunks with rows of width d.
std::vector<PublicValues> PublicValuesByHead(const std::vector<const CandidateChunk*>& reference,
                                             size_t d) {
  const size_t n_kv_heads = reference.empty() ? 0 : reference.front()->values.size();
  std::vector<PublicValues> references(n_kv_heads);
  for (size_t h = 0; h < n_kv_heads; ++h) {
    PublicValues& ref = references[h];
    for (const CandidateChunk* chunk : reference) {
      if (chunk->values.size() != n_kv_heads ||
          chunk->values[h].size() != chunk->tokens.size() * d) {
        continue;
      }
      ref.rows.insert(ref.rows.end(), chunk->values[h].begin(), chunk->values[h].end());
      ref.tokens.insert(ref.tokens.end(), chunk->tokens.begin(), chunk->tokens.end());
    }
    ref.mean.assign(d, 0.0);
    ref.inverse_std.assign(d, 0.0);
    const double n_rows = static_cast<double>(ref.tokens.size());
    for (size_t i = 0; i < ref.rows.size(); ++i) ref.mean[i % d] += ref.rows[i] / n_rows;
    for (size_t i = 0; i < ref.rows.size(); ++i) {
      const double centred = ref.rows[i] - ref.mean[i % d];
      ref.inverse_std[i % d] += centred * centred / n_rows;
    }
    for (double& value : ref.inverse_std) value = value > 0 ? 1 / std::sqrt(value) : 0.0;
    StandardizeColumns(ref.rows, d, ref.mean, ref.inverse_std);
    ref.sorted = RowFeatures(ref.rows, d, true);
    ref.whole = RowFeatures(ref.rows, d, false);
  }
  return references;
}

}  // namespace

AttackResult RunUnmixedValueDecoding(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                     const std::vector<const CandidateChunk*>& reference) {
  AttackResult result{
      .attack = "walsh-unmixing-v+nn", .target = "chunk tokens", .recovered = {}, .chance = {}};
  std::vector<int32_t> truth;
  for (const ObservedKey& key : view.keys) {
    truth.insert(truth.end(), key.row_token.begin(), key.row_token.end());
  }
  result.chance = ChanceOf(truth, attacker.anchors);
  if (view.keys.empty() || reference.empty()) {
    result.recovered.n = static_cast<int64_t>(truth.size());
    return result;
  }
  const auto d = static_cast<size_t>(view.keys.front().dim);
  const std::vector<PublicValues> references = PublicValuesByHead(reference, d);
  const size_t n_kv_heads = references.size();
  engine::ThreadPool& pool = *attacker.pool;
  for (const ObservedKey& key : view.keys) {
    const auto n = static_cast<size_t>(key.n_rows);
    const PublicValues& ref = references[static_cast<size_t>(key.kv_head) % n_kv_heads];
    const auto n_ref = static_cast<int64_t>(ref.tokens.size());
    const WalshUnmixing unmixing =
        key.dim == static_cast<int32_t>(d) && n_ref > 0
            ? UndoWalshMixing(key.v.data(), key.n_rows, key.dim, WalshUnmixingOptions{})
            : WalshUnmixing{};
    if (unmixing.rows.empty()) {  // no guess
      result.recovered.n += key.n_rows;
      continue;
    }
    std::vector<float> similarity(n * static_cast<size_t>(n_ref));
    // Stage 1: rows matched blind to the columns' order and signs.
    const std::vector<float> sorted = RowFeatures(unmixing.rows, d, true);
    Products(ref.sorted, n_ref, static_cast<int64_t>(d), sorted.data(), key.n_rows,
             similarity.data(), pool);
    std::vector<size_t> match(n);
    for (size_t r = 0; r < n; ++r) {
      const float* row = &similarity[r * static_cast<size_t>(n_ref)];
      match[r] = static_cast<size_t>(std::max_element(row, row + n_ref) - row);
    }
    // Stage 2: column a of the estimate is reference column c, with the sign of their
    // correlation over the matched pairs; greedy by |correlation|.
    std::vector<std::tuple<double, size_t, size_t>> pairs;
    std::vector<double> correlation(d * d, 0.0);
    for (size_t r = 0; r < n; ++r) {
      const float* mine = &unmixing.rows[r * d];
      const float* theirs = &ref.rows[match[r] * d];
      for (size_t a = 0; a < d; ++a) {
        for (size_t c = 0; c < d; ++c) correlation[a * d + c] += double{mine[a]} * theirs[c];
      }
    }
    for (size_t a = 0; a < d; ++a) {
      for (size_t c = 0; c < d; ++c) pairs.emplace_back(-std::abs(correlation[a * d + c]), a, c);
    }
    std::sort(pairs.begin(), pairs.end());
    std::vector<size_t> column_of(d, d);
    std::vector<bool> taken(d, false);
    std::vector<float> sign(d, 1.0f);
    for (const auto& [negative, a, c] : pairs) {
      if (column_of[a] != d || taken[c]) continue;
      column_of[a] = c;
      taken[c] = true;
      sign[a] = correlation[a * d + c] < 0 ? -1.0f : 1.0f;
    }
    std::vector<float> ordered(n * d);
    for (size_t r = 0; r < n; ++r) {
      for (size_t a = 0; a < d; ++a)
        ordered[r * d + column_of[a]] = sign[a] * unmixing.rows[r * d + a];
    }
    // Stage 3: whole rows, the five nearest distinct tokens.
    const std::vector<Guesses> guesses =
        NearestByProduct(ref.whole, static_cast<int32_t>(n_ref), static_cast<int32_t>(d),
                         RowFeatures(ordered, d, false), pool, &ref.tokens);
    for (size_t r = 0; r < n; ++r) guesses[r].Score(key.row_token[r], result.recovered);
  }
  return result;
}

AttackResult RunQuerierPartialAttack(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                     const std::vector<const CandidateChunk*>& reference) {
  AttackResult result{.attack = "querier-partials",
                      .target = "most-attended chunk tokens",
                      .recovered = {},
                      .chance = {}};
  if (view.keys.empty()) return result;
  const ObservedKey& first = view.keys.front();
  const size_t d = first.n_rows > 0 ? first.truth_v.size() / static_cast<size_t>(first.n_rows) : 0;
  const std::vector<PublicValues> references = PublicValuesByHead(reference, d);
  std::vector<int32_t> truth_all;
  for (const ObservedKey& key : view.keys) {
    const auto n = static_cast<size_t>(key.n_rows);
    const auto dim = static_cast<size_t>(key.dim);
    if (n == 0 || key.truth_v.size() != n * d) continue;
    // What the querier recovers per query row: o = softmax(q′·K′ᵀ·scale)·V (exact), and the
    // truth: the token of the row with the largest weight.
    std::vector<float> partials;
    std::vector<int32_t> truth;
    std::vector<double> weights(n);
    for (const std::vector<float>& rows : key.q) {
      for (size_t at = 0; at + dim <= rows.size(); at += dim) {
        double most = -1e300;
        size_t argmax = 0;
        for (size_t j = 0; j < n; ++j) {
          double score = 0;
          for (size_t c = 0; c < dim; ++c) score += double{rows[at + c]} * key.k[j * dim + c];
          weights[j] = score * view.scale;
          if (weights[j] > most) {
            most = weights[j];
            argmax = j;
          }
        }
        double sum = 0;
        for (double& w : weights) sum += (w = std::exp(w - most));
        std::vector<float> o(d, 0.0f);
        for (size_t j = 0; j < n; ++j) {
          const auto w = static_cast<float>(weights[j] / sum);
          for (size_t c = 0; c < d; ++c) o[c] += w * key.truth_v[j * d + c];
        }
        partials.insert(partials.end(), o.begin(), o.end());
        truth.push_back(key.row_token[argmax]);
      }
    }
    truth_all.insert(truth_all.end(), truth.begin(), truth.end());
    const auto h = static_cast<size_t>(key.kv_head);
    if (h >= references.size() || references[h].tokens.empty()) {
      result.recovered.n += static_cast<int64_t>(truth.size());  // no guess
      continue;
    }
    // The attacker: each partial, standardized like the public rows, named by its nearest.
    const PublicValues& ref = references[h];
    StandardizeColumns(partials, d, ref.mean, ref.inverse_std);
    const std::vector<Guesses> guesses = NearestByProduct(
        ref.whole, static_cast<int32_t>(ref.tokens.size()), static_cast<int32_t>(d),
        RowFeatures(partials, d, false), *attacker.pool, &ref.tokens);
    for (size_t r = 0; r < truth.size(); ++r) guesses[r].Score(truth[r], result.recovered);
  }
  result.chance = ChanceOf(truth_all, attacker.anchors);
  return result;
}

AttackResult RunBlockPairAttack(const ObservedLayer& view, const AttackerKnowledge& attacker,
                                const std::vector<CandidateChunk>& pool) {
  const size_t d = static_cast<size_t>(attacker.config->head_dim);
  AttackResult result{
      .attack = "block-pairs", .target = "chunk tokens", .recovered = {}, .chance = {}};
  std::vector<int32_t> truth;
  std::map<const ObservedKey*, std::vector<Guesses>> guesses;
  for (const ObservedKey& key : view.keys) guesses[&key].resize(static_cast<size_t>(key.n_rows));
  // S_b over every step: [query rows, n_rows] in f64.
  const auto scores = [&](const ObservedKey& key) {
    std::vector<double> s;
    for (const std::vector<float>& q : key.q) {
      const size_t rows = q.size() / static_cast<size_t>(key.dim);
      for (size_t r = 0; r < rows; ++r) {
        for (int32_t i = 0; i < key.n_rows; ++i) {
          double sum = 0;
          for (int32_t c = 0; c < key.dim; ++c) {
            sum += double{q[r * key.dim + c]} * key.k[static_cast<size_t>(i) * key.dim + c];
          }
          s.push_back(sum);
        }
      }
    }
    return s;
  };
  for (size_t a = 0; a < view.keys.size(); ++a) {
    const ObservedKey& first = view.keys[a];
    if (a + 1 >= view.keys.size()) break;
    const ObservedKey& second = view.keys[a + 1];
    // Two full blocks, adjacent in one chunk of one owner and KV head.
    if (first.owner != second.owner || first.kv_head != second.kv_head ||
        first.n_rows != static_cast<int32_t>(d) || second.n_rows != static_cast<int32_t>(d) ||
        first.layout_positions.back() + 1 != second.layout_positions.front()) {
      continue;
    }
    const std::vector<double> s1 = scores(first), s2 = scores(second);
    const size_t rows = s1.size() / d;
    if (rows < d) continue;  // Q must have full column rank
    const std::vector<double> m =
        Solve(TransposeTimes(s1, s1, rows, d, d), TransposeTimes(s1, s2, rows, d, d), d, d);
    if (m.empty()) continue;
    const std::vector<double> signature = SortedMagnitudesByMean(m.data(), d * d, 1);
    // The chunk holding both blocks starts where the run of contiguous keys does.
    int32_t chunk_start = first.layout_positions.front();
    for (size_t b = a; b-- > 0;) {
      const ObservedKey& before = view.keys[b];
      if (before.owner != first.owner || before.kv_head != first.kv_head ||
          before.layout_positions.back() + 1 != chunk_start) {
        break;
      }
      chunk_start = before.layout_positions.front();
    }
    const size_t offset = static_cast<size_t>(first.layout_positions.front() - chunk_start);
    std::vector<std::pair<double, size_t>> ranked;
    std::vector<std::vector<double>> candidates(pool.size());
    for (size_t c = 0; c < pool.size(); ++c) {
      if (pool[c].tokens.size() < offset + 2 * d) continue;
      const std::vector<float>& keys = pool[c].keys[static_cast<size_t>(first.kv_head)];
      std::vector<float> k1(keys.begin() + static_cast<std::ptrdiff_t>(offset * d),
                            keys.begin() + static_cast<std::ptrdiff_t>((offset + d) * d));
      std::vector<float> k2(keys.begin() + static_cast<std::ptrdiff_t>((offset + d) * d),
                            keys.begin() + static_cast<std::ptrdiff_t>((offset + 2 * d) * d));
      attacker.rope->Rotate(first.layout_positions.data(), static_cast<int64_t>(d), 1, k1.data());
      attacker.rope->Rotate(second.layout_positions.data(), static_cast<int64_t>(d), 1, k2.data());
      // X = K1⁻ᵀ·K2ᵀ: solve K1ᵀ·X = K2ᵀ.
      std::vector<double> k1t(d * d), k2t(d * d);
      for (size_t i = 0; i < d; ++i) {
        for (size_t j = 0; j < d; ++j) {
          k1t[j * d + i] = k1[i * d + j];
          k2t[j * d + i] = k2[i * d + j];
        }
      }
      candidates[c] = Solve(std::move(k1t), std::move(k2t), d, d);
      if (candidates[c].empty()) continue;
      ranked.emplace_back(
          Distance(signature, SortedMagnitudesByMean(candidates[c].data(), d * d, 1)), c);
    }
    std::sort(ranked.begin(), ranked.end());
    // Rows of M ↔ rows of X (first block), columns ↔ columns (second block).
    for (size_t j = 0; j < ranked.size() && j < 5; ++j) {
      const size_t c = ranked[j].second;
      const std::vector<double>& x = candidates[c];
      for (const bool by_row : {true, false}) {
        const ObservedKey& key = by_row ? first : second;
        const size_t shift = offset + (by_row ? 0 : d);
        // Row (column) i of a d×d matrix: its sorted |values|.
        const auto line = [&](const std::vector<double>& matrix, size_t i) {
          return by_row ? SortedMagnitudesByMean(&matrix[i * d], d, 1)
                        : SortedMagnitudesByMean(&matrix[i], d, d);
        };
        std::vector<std::vector<double>> candidate_lines(d);
        for (size_t t = 0; t < d; ++t) candidate_lines[t] = line(x, t);
        for (size_t i = 0; i < d; ++i) {
          const std::vector<double> seen = line(m, i);
          size_t best = 0;
          for (size_t t = 1; t < d; ++t) {
            if (Distance(seen, candidate_lines[t]) < Distance(seen, candidate_lines[best]))
              best = t;
          }
          guesses[&key][i].Offer(pool[c].tokens[shift + best], static_cast<float>(ranked[j].first));
        }
      }
    }
  }
  for (const ObservedKey& key : view.keys) {
    for (int32_t i = 0; i < key.n_rows; ++i) {
      guesses[&key][static_cast<size_t>(i)].Score(key.row_token[static_cast<size_t>(i)],
                                                  result.recovered);
      truth.push_back(key.row_token[static_cast<size_t>(i)]);
    }
  }
  result.chance = ChanceOf(truth, attacker.anchors);
  return result;
}

AttackResult RunOwnerQueryMatching(const ObservedLayer& plain_view,
                                   const AttackerKnowledge& attacker) {
  const engine::ModelConfig& config = *attacker.config;
  const TokenAloneTable& table = *attacker.table;
  const int32_t d = config.head_dim;
  const int32_t group = plain_view.group;
  const int32_t vocab = table.vocab;
  AttackResult result{
      .attack = "owner-query", .target = "query tokens", .recovered = {}, .chance = {}};
  std::vector<int32_t> truth;
  for (int32_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
    const ObservedKey* key = nullptr;
    for (const ObservedKey& candidate : plain_view.keys) {
      if (candidate.kv_head == kv_head) {
        key = &candidate;
        break;
      }
    }
    if (key == nullptr) continue;
    // Candidates: every (token, head of the group); distance = |w|² − 2·x·w.
    const std::vector<float> queries =
        TableSlice(table.q, vocab, config.n_heads, kv_head * group, group, d);
    std::vector<float> norms(static_cast<size_t>(vocab) * group);
    for (size_t r = 0; r < norms.size(); ++r) {
      double sum = 0;
      for (int32_t c = 0; c < d; ++c) sum += double{queries[r * d + c]} * queries[r * d + c];
      norms[r] = static_cast<float>(sum);
    }
    for (size_t step = 0; step < plain_view.step_positions.size(); ++step) {
      const std::vector<int32_t>& positions = plain_view.step_positions[step];
      const std::vector<float>& rows = key->q[step];
      const int64_t n_rows = static_cast<int64_t>(rows.size()) / d;
      std::vector<Guesses> guesses(static_cast<size_t>(n_rows));
      std::vector<float> x(static_cast<size_t>(n_rows) * d);
      std::vector<float> y(static_cast<size_t>(n_rows) * vocab * group);
      for (const int32_t position : positions) {  // each row back from each possible position
        for (int64_t r = 0; r < n_rows; ++r) {
          const std::vector<float> back =
              Rotated(*attacker.rope, &rows[static_cast<size_t>(r) * d], d, -position);
          std::copy(back.begin(), back.end(), &x[static_cast<size_t>(r) * d]);
        }
        Products(queries, int64_t{vocab} * group, d, x.data(), n_rows, y.data(), *attacker.pool);
        for (int64_t r = 0; r < n_rows; ++r) {
          for (int64_t c = 0; c < int64_t{vocab} * group; ++c) {
            const float distance =
                norms[static_cast<size_t>(c)] - 2 * y[static_cast<size_t>(r * vocab * group + c)];
            guesses[static_cast<size_t>(r)].Offer(static_cast<int32_t>(c / group), distance);
          }
        }
      }
      for (int64_t r = 0; r < n_rows; ++r) {
        const int32_t token = plain_view.step_tokens[step][static_cast<size_t>(
            plain_view.q_row_token[step][static_cast<size_t>(kv_head)][static_cast<size_t>(r)])];
        guesses[static_cast<size_t>(r)].Score(token, result.recovered);
        truth.push_back(token);
      }
    }
  }
  result.chance = ChanceOf(truth, attacker.anchors);
  return result;
}

}  // namespace silo::eval
