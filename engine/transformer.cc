#include "engine/transformer.h"

#include <numeric>

#include <algorithm>
#include <cmath>
#include <set>

#include "attention/backend.h"
#include "common/check.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

// Query rows per attention task: small enough to balance causal prefill across threads.
constexpr int64_t kAttentionBlockRows = 16;

// out[t] = x[t] / rms(x[t]) ⊙ weight, for n rows of `dim`.
void RmsNorm(const float* x, const std::vector<float>& weight, float eps, int64_t n, int32_t dim,
             float* out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x + t * dim;
    double sum_squares = 0;
    for (int32_t i = 0; i < dim; ++i) sum_squares += static_cast<double>(row[i]) * row[i];
    const float inverse_rms = static_cast<float>(1.0 / std::sqrt(sum_squares / dim + eps));
    float* y = out + t * dim;
    for (int32_t i = 0; i < dim; ++i) y[i] = row[i] * inverse_rms * weight[i];
  }
}

void AddBias(const std::vector<float>& bias, int64_t n, float* x) {
  const int64_t width = static_cast<int64_t>(bias.size());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < width; ++i) x[t * width + i] += bias[i];
  }
}

// Attention block b of n_blocks, in an order that pairs early (cheap under a causal mask) with
// late (expensive) blocks, so that contiguous ranges of tasks cost about the same.
int64_t InterleavedBlock(int64_t task, int64_t n_blocks) {
  return task % 2 == 0 ? task / 2 : n_blocks - 1 - task / 2;
}

}  // namespace

Transformer::Transformer(const Model& model, ThreadPool& pool, MatMulPrecision precision)
    : model_(model), pool_(pool), precision_(precision), rope_(model.config()) {}

void Transformer::Multiply(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
  MatMul(w, x, n_tokens, y, pool_, precision_);
}

absl::Status Transformer::Attention(const SequenceInput& input, int32_t layer, const KvCache& cache,
                                    const float* q, float* out) {
  const ModelConfig& c = model_.config();
  const int64_t n = static_cast<int64_t>(input.tokens.size());
  const int64_t q_dim = c.q_dim();
  const int64_t rows = n * c.n_heads;  // (token, head) rows
  const std::vector<KvCache::Segment> segments = cache.Segments(input.sequence, layer);

  AttentionPartials extra;
  if (input.hook != nullptr) {
    SILO_RETURN_IF_ERROR(input.hook->AddPartials(layer, std::span<const float>(q, n * q_dim),
                                                 input.positions, extra));
    if (extra.n_parts < 0 || extra.o.size() != static_cast<size_t>(extra.n_parts * n * q_dim) ||
        extra.m.size() != static_cast<size_t>(extra.n_parts * rows) ||
        extra.l.size() != extra.m.size()) {
      return absl::InvalidArgumentError(
          StrCat("attention hook of layer ", layer, " returned partials of the wrong size"));
    }
  }
  const int64_t n_local = static_cast<int64_t>(segments.size());
  const int64_t n_parts = n_local + extra.n_parts;
  parts_o_.resize(std::max<int64_t>(n_parts, 1) * n * q_dim);
  parts_m_.resize(std::max<int64_t>(n_parts, 1) * rows);
  parts_l_.resize(parts_m_.size());
  std::copy(extra.o.begin(), extra.o.end(), parts_o_.begin() + n_local * n * q_dim);
  std::copy(extra.m.begin(), extra.m.end(), parts_m_.begin() + n_local * rows);
  std::copy(extra.l.begin(), extra.l.end(), parts_l_.begin() + n_local * rows);

  const int64_t n_blocks = (n + kAttentionBlockRows - 1) / kAttentionBlockRows;
  std::vector<absl::Status> block_status(n_blocks);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  pool_.ParallelFor(n_blocks, [&](int64_t begin, int64_t end) {
    auto backend = attention::CreateBackend(attention::BackendKind::kCpu);
    SILO_CHECK_OK(backend.status());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = InterleavedBlock(task, n_blocks);
      const int64_t first = block * kAttentionBlockRows;
      const int64_t count = std::min(kAttentionBlockRows, n - first);
      for (int64_t s = 0; s < n_local; ++s) {
        const KvCache::Segment& segment = segments[s];
        attention::PartialAttentionArgs args{
            .q = q + first * q_dim,
            .k = segment.k,
            .v = segment.v,
            .kv_dtype = cache.dtype(),
            .q_positions = input.positions.data() + first,
            .kv_positions = segment.positions,
            .n_q = static_cast<int32_t>(count),
            .n_kv = static_cast<int32_t>(segment.n_rows),
            .n_heads = c.n_heads,
            .n_kv_heads = c.n_kv_heads,
            .head_dim = c.head_dim,
            .scale = scale,
            .o = parts_o_.data() + (s * n + first) * q_dim,
            .m = parts_m_.data() + s * rows + first * c.n_heads,
            .l = parts_l_.data() + s * rows + first * c.n_heads,
        };
        block_status[block] = (*backend)->PartialAttention(args);
        if (!block_status[block].ok()) break;
      }
    }
  });
  for (const absl::Status& status : block_status) SILO_RETURN_IF_ERROR(status);

  if (n_parts == 0) {  // nothing to attend to: an empty sequence with no extra partials
    std::fill(out, out + n * q_dim, 0.0f);
    return absl::OkStatus();
  }
  std::vector<float> merged_m(rows), merged_l(rows);
  attention::MergeArgs merge{.o = parts_o_.data(),
                             .m = parts_m_.data(),
                             .l = parts_l_.data(),
                             .n_parts = static_cast<int32_t>(n_parts),
                             .n_rows = static_cast<int32_t>(rows),
                             .head_dim = c.head_dim,
                             .out_o = out,
                             .out_m = merged_m.data(),
                             .out_l = merged_l.data()};
  auto backend = attention::CreateBackend(attention::BackendKind::kCpu);
  SILO_RETURN_IF_ERROR(backend.status());
  return (*backend)->MergePartials(merge);
}

absl::Status Transformer::Forward(std::span<const SequenceInput> batch, KvCache& cache,
                                  std::vector<float>& logits) {
  const ModelConfig& c = model_.config();
  if (batch.empty()) return absl::InvalidArgumentError("forward: empty batch");
  int64_t n_tokens = 0;
  int64_t n_logit_rows = 0;
  std::set<SequenceId> seen;
  for (const SequenceInput& input : batch) {
    if (input.tokens.empty() || input.tokens.size() != input.positions.size()) {
      return absl::InvalidArgumentError(StrCat("forward: sequence ", input.sequence, " has ",
                                               input.tokens.size(), " tokens and ",
                                               input.positions.size(), " positions"));
    }
    if (!seen.insert(input.sequence).second) {
      return absl::InvalidArgumentError(
          StrCat("forward: sequence ", input.sequence, " appears twice in one batch"));
    }
    if (!cache.Contains(input.sequence)) {
      return absl::NotFoundError(StrCat("forward: no sequence ", input.sequence));
    }
    for (int32_t token : input.tokens) {
      if (token < 0 || token >= c.vocab_size) {
        return absl::InvalidArgumentError(
            StrCat("forward: token id ", token, " outside [0, ", c.vocab_size, ")"));
      }
    }
    n_tokens += static_cast<int64_t>(input.tokens.size());
    n_logit_rows += input.logits == LogitsWanted::kAll ? static_cast<int64_t>(input.tokens.size())
                    : input.logits == LogitsWanted::kLast ? 1
                                                          : 0;
  }

  // Rows enter the cache first (so attention sees them), and leave again on any error.
  std::vector<std::pair<SequenceId, int64_t>> rollback;
  std::vector<int64_t> first_rows;
  auto undo = [&] {
    for (const auto& [sequence, length] : rollback) (void)cache.Truncate(sequence, length);
  };
  for (const SequenceInput& input : batch) {
    absl::StatusOr<int64_t> first = cache.AppendRows(input.sequence, input.positions);
    if (!first.ok()) {
      undo();
      return first.status();
    }
    rollback.emplace_back(input.sequence, *first);
    first_rows.push_back(*first);
    if (input.capture != nullptr) {
      KvShard& shard = *input.capture;
      shard.n_layers = c.n_layers;
      shard.n_kv_heads = c.n_kv_heads;
      shard.n_tokens = static_cast<int32_t>(input.tokens.size());
      shard.head_dim = c.head_dim;
      shard.k.resize(static_cast<size_t>(c.n_layers) * c.kv_dim() * input.tokens.size());
      shard.v.resize(shard.k.size());
    }
  }

  const int64_t dim = c.dim;
  x_.resize(n_tokens * dim);
  norm_.resize(n_tokens * dim);
  q_.resize(n_tokens * c.q_dim());
  k_.resize(n_tokens * c.kv_dim());
  v_.resize(n_tokens * c.kv_dim());
  attn_.resize(n_tokens * c.q_dim());
  gate_.resize(n_tokens * c.ffn_dim);
  up_.resize(n_tokens * c.ffn_dim);

  {
    int64_t t = 0;
    for (const SequenceInput& input : batch) {
      for (int32_t token : input.tokens) model_.EmbedToken(token, &x_[t++ * dim]);
    }
  }

  for (int32_t layer = 0; layer < c.n_layers; ++layer) {
    const LayerWeights& w = model_.layer(layer);
    RmsNorm(x_.data(), w.attn_norm, c.rms_norm_eps, n_tokens, c.dim, norm_.data());
    Multiply(w.wq, norm_.data(), n_tokens, q_.data());
    Multiply(w.wk, norm_.data(), n_tokens, k_.data());
    Multiply(w.wv, norm_.data(), n_tokens, v_.data());
    if (c.qkv_bias) {
      AddBias(w.bq, n_tokens, q_.data());
      AddBias(w.bk, n_tokens, k_.data());
      AddBias(w.bv, n_tokens, v_.data());
    }
    int64_t t = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const SequenceInput& input = batch[i];
      const int64_t n = static_cast<int64_t>(input.tokens.size());
      float* k = &k_[t * c.kv_dim()];
      float* v = &v_[t * c.kv_dim()];
      if (input.capture != nullptr) {
        KvShard& shard = *input.capture;
        for (int64_t r = 0; r < n; ++r) {
          for (int32_t h = 0; h < c.n_kv_heads; ++h) {
            const int64_t to = shard.Offset(layer, h, static_cast<int32_t>(r));
            const int64_t from = (r * c.n_kv_heads + h) * c.head_dim;
            for (int32_t e = 0; e < c.head_dim; ++e) {
              shard.k[to + e] = FloatToHalf(k[from + e]);
              shard.v[to + e] = FloatToHalf(v[from + e]);
            }
          }
        }
      }
      rope_.Rotate(input.positions.data(), n, c.n_heads, &q_[t * c.q_dim()]);
      rope_.Rotate(input.positions.data(), n, c.n_kv_heads, k);
      cache.WriteRows(input.sequence, layer, first_rows[i], n, k, v);
      t += n;
    }
    t = 0;
    for (const SequenceInput& input : batch) {
      absl::Status status =
          Attention(input, layer, cache, &q_[t * c.q_dim()], &attn_[t * c.q_dim()]);
      if (!status.ok()) {
        undo();
        return status;
      }
      t += static_cast<int64_t>(input.tokens.size());
    }
    Multiply(w.wo, attn_.data(), n_tokens, norm_.data());
    for (int64_t i = 0; i < n_tokens * dim; ++i) x_[i] += norm_[i];

    RmsNorm(x_.data(), w.ffn_norm, c.rms_norm_eps, n_tokens, c.dim, norm_.data());
    Multiply(w.w_gate, norm_.data(), n_tokens, gate_.data());
    Multiply(w.w_up, norm_.data(), n_tokens, up_.data());
    for (int64_t i = 0; i < n_tokens * c.ffn_dim; ++i) {
      const float g = gate_[i];
      gate_[i] = g / (1.0f + std::exp(-g)) * up_[i];  // SiLU(gate) ⊙ up
    }
    Multiply(w.w_down, gate_.data(), n_tokens, norm_.data());
    for (int64_t i = 0; i < n_tokens * dim; ++i) x_[i] += norm_[i];
  }

  // Final norm of the rows whose logits are wanted, gathered, then one matmul.
  std::vector<float> wanted(n_logit_rows * dim);
  int64_t row = 0;
  int64_t t = 0;
  for (const SequenceInput& input : batch) {
    const int64_t n = static_cast<int64_t>(input.tokens.size());
    const int64_t first = input.logits == LogitsWanted::kAll    ? 0
                          : input.logits == LogitsWanted::kLast ? n - 1
                                                                : n;
    for (int64_t r = first; r < n; ++r, ++row) {
      RmsNorm(&x_[(t + r) * dim], model_.output_norm(), c.rms_norm_eps, 1, c.dim,
              &wanted[row * dim]);
    }
    t += n;
  }
  logits.resize(n_logit_rows * c.vocab_size);
  if (n_logit_rows > 0) Multiply(model_.output(), wanted.data(), n_logit_rows, logits.data());
  return absl::OkStatus();
}

absl::StatusOr<KvShard> PrefillKvShard(Transformer& transformer, std::span<const int32_t> tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("KV shard of no tokens");
  std::vector<int32_t> positions(tokens.size());
  std::iota(positions.begin(), positions.end(), 0);
  KvShard shard;
  std::vector<float> logits;
  KvCache cache(transformer.model().config(), attention::KvDType::kF16,
                static_cast<int64_t>(tokens.size()));
  const SequenceInput input{.sequence = cache.NewSequence(),
                            .tokens = tokens,
                            .positions = positions,
                            .logits = LogitsWanted::kNone,
                            .hook = nullptr,
                            .capture = &shard};
  SILO_RETURN_IF_ERROR(transformer.Forward({&input, 1}, cache, logits));
  return shard;
}

}  // namespace silo::engine
