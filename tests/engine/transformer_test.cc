// The forward pass against a plain reference implementation (llama2.c-style loops in double) on
// tiny random models, and the KV cache's prefix sharing, rollback, shards and attention hook
// against the same reference.
#include "engine/transformer.h"

#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "attention/backend.h"
#include "common/status_macros.h"
#include "engine/model.h"
#include "engine/thread_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TinyModel;
using ::silo::testing::TinyModelOptions;
using Matrix = std::vector<double>;

// y [n, rows] = x [n, cols] · Wᵀ, W [rows, cols].
Matrix Project(const Matrix& x, const std::vector<float>& w, int64_t n, int64_t rows,
               int64_t cols) {
  Matrix y(n * rows);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += x[t * cols + c] * w[r * cols + c];
      y[t * rows + r] = sum;
    }
  }
  return y;
}

Matrix Norm(const Matrix& x, const std::vector<float>& weight, int64_t n, int64_t dim) {
  Matrix y(x.size());
  for (int64_t t = 0; t < n; ++t) {
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += x[t * dim + i] * x[t * dim + i];
    const double inverse_rms = 1 / std::sqrt(sum / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] = x[t * dim + i] * inverse_rms * weight[i];
  }
  return y;
}

void ReferenceRope(Matrix& x, const std::vector<int32_t>& positions, int64_t n_heads,
                   int64_t head_dim, bool adjacent_pairs, double theta) {
  const int64_t half = head_dim / 2;
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t h = 0; h < n_heads; ++h) {
      double* v = &x[(t * n_heads + h) * head_dim];
      for (int64_t i = 0; i < half; ++i) {
        const double angle = positions[t] * std::pow(theta, -2.0 * i / head_dim);
        const int64_t a = adjacent_pairs ? 2 * i : i;
        const int64_t b = adjacent_pairs ? 2 * i + 1 : i + half;
        const double va = v[a], vb = v[b];
        v[a] = va * std::cos(angle) - vb * std::sin(angle);
        v[b] = va * std::sin(angle) + vb * std::cos(angle);
      }
    }
  }
}

// Logits [n, vocab] of every token, causal by position (key j visible to query t iff
// positions[j] <= positions[t]).
Matrix ReferenceLogits(const TinyModel& m, const std::vector<int32_t>& tokens,
                       const std::vector<int32_t>& positions) {
  const TinyModelOptions& o = m.options;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t dim = o.dim, head_dim = o.dim / o.n_heads, group = o.n_heads / o.n_kv_heads;
  const int64_t q_dim = o.n_heads * head_dim, kv_dim = o.n_kv_heads * head_dim;
  Matrix x(n * dim);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < dim; ++i) x[t * dim + i] = m.token_embedding[tokens[t] * dim + i];
  }
  for (const TinyModel::Layer& l : m.layers) {
    Matrix h = Norm(x, l.attn_norm, n, dim);
    Matrix q = Project(h, l.wq, n, q_dim, dim);
    Matrix k = Project(h, l.wk, n, kv_dim, dim);
    Matrix v = Project(h, l.wv, n, kv_dim, dim);
    if (!l.bq.empty()) {
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t i = 0; i < q_dim; ++i) q[t * q_dim + i] += l.bq[i];
        for (int64_t i = 0; i < kv_dim; ++i) k[t * kv_dim + i] += l.bk[i];
        for (int64_t i = 0; i < kv_dim; ++i) v[t * kv_dim + i] += l.bv[i];
      }
    }
    const bool adjacent = o.architecture == "llama";
    ReferenceRope(q, positions, o.n_heads, head_dim, adjacent, o.rope_theta);
    ReferenceRope(k, positions, o.n_kv_heads, head_dim, adjacent, o.rope_theta);
    Matrix attn(n * q_dim, 0.0);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t head = 0; head < o.n_heads; ++head) {
        const int64_t kv_head = head / group;
        std::vector<double> scores(n, -INFINITY);
        double max = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          if (positions[j] > positions[t]) continue;
          double s = 0;
          for (int64_t c = 0; c < head_dim; ++c) {
            s += q[(t * o.n_heads + head) * head_dim + c] *
                 k[(j * o.n_kv_heads + kv_head) * head_dim + c];
          }
          scores[j] = s / std::sqrt(static_cast<double>(head_dim));
          max = std::max(max, scores[j]);
        }
        double total = 0;
        for (int64_t j = 0; j < n; ++j) total += std::exp(scores[j] - max);
        for (int64_t j = 0; j < n; ++j) {
          const double p = std::exp(scores[j] - max) / total;
          for (int64_t c = 0; c < head_dim; ++c) {
            attn[(t * o.n_heads + head) * head_dim + c] +=
                p * v[(j * o.n_kv_heads + kv_head) * head_dim + c];
          }
        }
      }
    }
    Matrix out = Project(attn, l.wo, n, dim, q_dim);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += out[i];
    h = Norm(x, l.ffn_norm, n, dim);
    Matrix g = Project(h, l.w_gate, n, o.ffn_dim, dim);
    Matrix u = Project(h, l.w_up, n, o.ffn_dim, dim);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    Matrix down = Project(g, l.w_down, n, dim, o.ffn_dim);
    for (int64_t i = 0; i < n * dim; ++i) x[i] += down[i];
  }
  return Project(Norm(x, m.output_norm, n, dim), m.output, n, o.vocab_size, dim);
}

std::vector<int32_t> Range(int32_t first, int32_t count) {
  std::vector<int32_t> values(count);
  std::iota(values.begin(), values.end(), first);
  return values;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Largest |a - b| over rows [first_row, first_row + n_rows) of the reference.
double MaxDifference(const std::vector<float>& logits, const Matrix& reference, int64_t first_row,
                     int64_t n_rows, int64_t vocab) {
  EXPECT_EQ(logits.size(), static_cast<size_t>(n_rows * vocab));
  double max = 0;
  for (int64_t i = 0; i < n_rows * vocab && i < static_cast<int64_t>(logits.size()); ++i) {
    max = std::max(max, std::abs(logits[i] - reference[first_row * vocab + i]));
  }
  return max;
}

class TransformerTest : public ::testing::TestWithParam<TinyModelOptions> {
 protected:
  void SetUp() override {
    tiny_ = silo::testing::MakeTinyModel(GetParam());
    const std::string path = dir_.WriteFile("tiny.gguf", tiny_.gguf);
    ASSERT_OK_AND_ASSIGN(model_, Model::Open(path));
    transformer_ = std::make_unique<Transformer>(*model_, pool_);
  }

  KvCache NewCache(attention::KvDType dtype = attention::KvDType::kF32) {
    return KvCache(model_->config(), dtype, 1024);
  }

  absl::Status Run(KvCache& cache, SequenceId sequence, const std::vector<int32_t>& tokens,
                   const std::vector<int32_t>& positions, LogitsWanted wanted,
                   std::vector<float>& logits) {
    SequenceInput input{
        .sequence = sequence, .tokens = tokens, .positions = positions, .logits = wanted};
    return transformer_->Forward({&input, 1}, cache, logits);
  }

  int64_t vocab() const { return tiny_.options.vocab_size; }

  silo::testing::TempDir dir_;
  ThreadPool pool_{2};
  TinyModel tiny_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Transformer> transformer_;
};

// f32 weights and an f32 cache: only float rounding separates the engine from the reference.
constexpr double kF32Tolerance = 2e-3;
// An f16 cache rounds K and V to 11 bits.
constexpr double kF16Tolerance = 3e-2;

TEST_P(TransformerTest, PrefillMatchesReference) {
  const std::vector<int32_t> tokens = {3, 17, 42, 5, 91, 0, 64, 8, 33, 12, 70, 2, 19};
  const std::vector<int32_t> positions = Range(0, static_cast<int32_t>(tokens.size()));
  const Matrix reference = ReferenceLogits(tiny_, tokens, positions);
  for (auto dtype : {attention::KvDType::kF32, attention::KvDType::kF16}) {
    KvCache cache = NewCache(dtype);
    const SequenceId s = cache.NewSequence();
    std::vector<float> logits;
    ASSERT_OK(Run(cache, s, tokens, positions, LogitsWanted::kAll, logits));
    EXPECT_LE(MaxDifference(logits, reference, 0, tokens.size(), vocab()),
              dtype == attention::KvDType::kF32 ? kF32Tolerance : kF16Tolerance);
    EXPECT_THAT(cache.Length(s), ::silo::testing::IsOkAndHolds(tokens.size()));
  }
}

TEST_P(TransformerTest, IncrementalDecodeMatchesReference) {
  const std::vector<int32_t> tokens = {7, 1, 88, 23, 23, 23, 50, 4, 61, 9};
  const Matrix reference = ReferenceLogits(tiny_, tokens, Range(0, tokens.size()));
  KvCache cache = NewCache();
  const SequenceId s = cache.NewSequence();
  std::vector<float> logits;
  ASSERT_OK(Run(cache, s, {tokens.begin(), tokens.begin() + 4}, Range(0, 4), LogitsWanted::kLast,
                logits));
  EXPECT_LE(MaxDifference(logits, reference, 3, 1, vocab()), kF32Tolerance);
  for (int32_t t = 4; t < static_cast<int32_t>(tokens.size()); ++t) {
    ASSERT_OK(Run(cache, s, {tokens[t]}, {t}, LogitsWanted::kLast, logits));
    EXPECT_LE(MaxDifference(logits, reference, t, 1, vocab()), kF32Tolerance) << "token " << t;
  }
}

TEST_P(TransformerTest, BatchOfSequencesMatchesSeparateReferences) {
  const std::vector<int32_t> a = {5, 6, 7, 8, 9};
  const std::vector<int32_t> b = {40, 41, 2};
  KvCache cache = NewCache();
  const SequenceId sa = cache.NewSequence();
  const SequenceId sb = cache.NewSequence();
  const std::vector<int32_t> pa = Range(0, 5), pb = Range(0, 3);
  std::vector<SequenceInput> batch = {
      {.sequence = sa, .tokens = a, .positions = pa, .logits = LogitsWanted::kAll},
      {.sequence = sb, .tokens = b, .positions = pb, .logits = LogitsWanted::kLast}};
  std::vector<float> logits;
  ASSERT_OK(transformer_->Forward(batch, cache, logits));
  ASSERT_EQ(logits.size(), static_cast<size_t>(6 * vocab()));
  const Matrix ref_a = ReferenceLogits(tiny_, a, pa);
  const Matrix ref_b = ReferenceLogits(tiny_, b, pb);
  std::vector<float> logits_a(logits.begin(), logits.begin() + 5 * vocab());
  std::vector<float> logits_b(logits.begin() + 5 * vocab(), logits.end());
  EXPECT_LE(MaxDifference(logits_a, ref_a, 0, 5, vocab()), kF32Tolerance);
  EXPECT_LE(MaxDifference(logits_b, ref_b, 2, 1, vocab()), kF32Tolerance);
}

TEST_P(TransformerTest, ForkedSequencesShareThePrefix) {
  const std::vector<int32_t> prefix = {11, 12, 13, 14, 15, 16};
  const std::vector<int32_t> x = {30, 31, 32}, y = {60, 61};
  KvCache cache = NewCache();
  const SequenceId root = cache.NewSequence();
  std::vector<float> logits;
  ASSERT_OK(Run(cache, root, prefix, Range(0, 6), LogitsWanted::kNone, logits));
  ASSERT_OK_AND_ASSIGN(SequenceId sx, cache.Fork(root));
  ASSERT_OK_AND_ASSIGN(SequenceId sy, cache.Fork(root, 4));  // sees only 4 prefix rows
  const std::vector<int32_t> px = Range(6, 3), py = Range(4, 2);
  std::vector<SequenceInput> batch = {
      {.sequence = sx, .tokens = x, .positions = px, .logits = LogitsWanted::kAll},
      {.sequence = sy, .tokens = y, .positions = py, .logits = LogitsWanted::kAll}};
  ASSERT_OK(transformer_->Forward(batch, cache, logits));
  const Matrix ref_x = ReferenceLogits(tiny_, Concat(prefix, x), Range(0, 9));
  const Matrix ref_y = ReferenceLogits(tiny_, Concat({11, 12, 13, 14}, y), Range(0, 6));
  std::vector<float> logits_x(logits.begin(), logits.begin() + 3 * vocab());
  std::vector<float> logits_y(logits.begin() + 3 * vocab(), logits.end());
  EXPECT_LE(MaxDifference(logits_x, ref_x, 6, 3, vocab()), kF32Tolerance);
  EXPECT_LE(MaxDifference(logits_y, ref_y, 4, 2, vocab()), kF32Tolerance);
  EXPECT_EQ(cache.used_tokens(), 6 + 3 + 2);  // the prefix is held once
  // The parent cannot drop rows its children see, nor be freed before them.
  EXPECT_THAT(cache.Truncate(root, 5), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(cache.Free(root), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(cache.Free(sx));
  ASSERT_OK(cache.Truncate(root, 4));
  ASSERT_OK(cache.Free(sy));
  ASSERT_OK(cache.Free(root));
  EXPECT_EQ(cache.used_tokens(), 0);
}

TEST_P(TransformerTest, TruncateRollsBackToAPrefix) {
  const std::vector<int32_t> prompt = {9, 8, 7, 6};
  KvCache cache = NewCache();
  const SequenceId s = cache.NewSequence();
  std::vector<float> logits;
  ASSERT_OK(Run(cache, s, prompt, Range(0, 4), LogitsWanted::kNone, logits));
  ASSERT_OK(Run(cache, s, {50, 51, 52}, Range(4, 3), LogitsWanted::kNone, logits));
  ASSERT_OK(cache.Truncate(s, 5));  // keep the first drafted token only
  ASSERT_OK(Run(cache, s, {70}, {5}, LogitsWanted::kLast, logits));
  const Matrix reference = ReferenceLogits(tiny_, {9, 8, 7, 6, 50, 70}, Range(0, 6));
  EXPECT_LE(MaxDifference(logits, reference, 5, 1, vocab()), kF32Tolerance);
  EXPECT_THAT(cache.Truncate(s, 7), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(TransformerTest, ChunkShardReRotatedEqualsPrefillAtThosePositions) {
  const std::vector<int32_t> chunk = {21, 22, 23, 24, 25, 26, 27};
  const std::vector<int32_t> question = {80, 81, 82};
  // The chunk prefilled alone at 0..6, its pre-RoPE K and V captured.
  KvCache cache = NewCache();
  KvShard shard;
  {
    const SequenceId alone = cache.NewSequence();
    const std::vector<int32_t> positions = Range(0, 7);
    SequenceInput input{.sequence = alone,
                        .tokens = chunk,
                        .positions = positions,
                        .logits = LogitsWanted::kNone,
                        .capture = &shard};
    std::vector<float> unused;
    ASSERT_OK(transformer_->Forward({&input, 1}, cache, unused));
    ASSERT_OK(cache.Free(alone));
  }
  ASSERT_OK(ValidateKvShard(shard, model_->config()));
  // Imported at positions 10..16, then the question at 17..19.
  const SequenceId s = cache.NewSequence();
  ASSERT_OK(cache.AppendShard(s, shard, Range(10, 7), transformer_->rope()));
  std::vector<float> logits;
  ASSERT_OK(Run(cache, s, question, Range(17, 3), LogitsWanted::kAll, logits));
  const Matrix reference = ReferenceLogits(tiny_, Concat(chunk, question), Range(10, 10));
  EXPECT_LE(MaxDifference(logits, reference, 7, 3, vocab()), kF16Tolerance);
  KvShard wrong = shard;
  wrong.k.pop_back();
  EXPECT_THAT(ValidateKvShard(wrong, model_->config()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Supplies attention over a chunk held in another cache: what FedRAG's compute node returns.
class RemoteChunkHook : public AttentionHook {
 public:
  RemoteChunkHook(const KvCache& remote, SequenceId chunk, const ModelConfig& config)
      : remote_(remote), chunk_(chunk), config_(config) {}

  absl::Status AddPartials(int32_t layer, std::span<const float> q,
                           std::span<const int32_t> positions,
                           AttentionPartials& partials) override {
    if (fail_at_layer_ == layer) return absl::UnavailableError("compute node went away");
    const int64_t n = static_cast<int64_t>(positions.size());
    const std::vector<KvCache::Segment> segments = remote_.Segments(chunk_, layer);
    partials.n_parts = static_cast<int32_t>(segments.size());
    partials.o.resize(segments.size() * n * config_.q_dim());
    partials.m.resize(segments.size() * n * config_.n_heads);
    partials.l.resize(partials.m.size());
    auto backend = attention::CreateBackend(attention::BackendKind::kCpu);
    SILO_RETURN_IF_ERROR(backend.status());
    for (size_t p = 0; p < segments.size(); ++p) {
      attention::PartialAttentionArgs args{
          .q = q.data(),
          .k = segments[p].k,
          .v = segments[p].v,
          .kv_dtype = remote_.dtype(),
          .q_positions = positions.data(),
          .kv_positions = segments[p].positions,
          .n_q = static_cast<int32_t>(n),
          .n_kv = static_cast<int32_t>(segments[p].n_rows),
          .n_heads = config_.n_heads,
          .n_kv_heads = config_.n_kv_heads,
          .head_dim = config_.head_dim,
          .scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim)),
          .o = &partials.o[p * n * config_.q_dim()],
          .m = &partials.m[p * n * config_.n_heads],
          .l = &partials.l[p * n * config_.n_heads]};
      SILO_RETURN_IF_ERROR((*backend)->PartialAttention(args));
    }
    return absl::OkStatus();
  }

  int32_t fail_at_layer_ = -1;

 private:
  const KvCache& remote_;
  SequenceId chunk_;
  const ModelConfig& config_;
};

TEST_P(TransformerTest, HookPartialsMergeExactlyWithLocalAttention) {
  const std::vector<int32_t> system = {1, 2, 3};
  const std::vector<int32_t> chunk = {44, 45, 46, 47, 48};
  const std::vector<int32_t> question = {70, 71, 72, 73};
  // The owner's side: the chunk at its assigned positions 3..7, after the system prompt's rows
  // (which stay at the querier). Its prefill attends to the system prompt as in the reference.
  KvCache owner = NewCache();
  const SequenceId owner_system = owner.NewSequence();
  std::vector<float> logits;
  ASSERT_OK(Run(owner, owner_system, system, Range(0, 3), LogitsWanted::kNone, logits));
  ASSERT_OK_AND_ASSIGN(SequenceId owner_chunk, owner.Fork(owner_system));
  ASSERT_OK(Run(owner, owner_chunk, chunk, Range(3, 5), LogitsWanted::kNone, logits));
  // The querier: system prompt and question locally, the chunk through the hook.
  KvCache querier = NewCache();
  const SequenceId s = querier.NewSequence();
  ASSERT_OK(Run(querier, s, system, Range(0, 3), LogitsWanted::kNone, logits));
  // The chunk's rows as the compute node would hold them (here unscrambled).
  KvCache chunk_cache = NewCache();
  const SequenceId remote = chunk_cache.NewSequence();
  ASSERT_OK_AND_ASSIGN(int64_t first, chunk_cache.AppendRows(remote, Range(3, 5)));
  for (int32_t layer = 0; layer < model_->config().n_layers; ++layer) {
    const KvCache::Segment own = owner.Segments(owner_chunk, layer).back();
    ASSERT_EQ(own.n_rows, 5);
    chunk_cache.WriteRows(remote, layer, first, 5, static_cast<const float*>(own.k),
                          static_cast<const float*>(own.v));
  }
  RemoteChunkHook hook(chunk_cache, remote, model_->config());
  const std::vector<int32_t> question_positions = Range(8, 4);
  SequenceInput input{.sequence = s,
                      .tokens = question,
                      .positions = question_positions,
                      .logits = LogitsWanted::kAll,
                      .hook = &hook};
  ASSERT_OK(transformer_->Forward({&input, 1}, querier, logits));
  const Matrix reference =
      ReferenceLogits(tiny_, Concat(Concat(system, chunk), question), Range(0, 12));
  EXPECT_LE(MaxDifference(logits, reference, 8, 4, vocab()), kF32Tolerance);

  // A failing hook aborts the step and leaves the querier's cache as it was.
  hook.fail_at_layer_ = 1;
  const std::vector<int32_t> next = {5}, next_position = {12};
  SequenceInput step{.sequence = s, .tokens = next, .positions = next_position, .hook = &hook};
  EXPECT_THAT(transformer_->Forward({&step, 1}, querier, logits),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(querier.Length(s), ::silo::testing::IsOkAndHolds(7));
}

TEST_P(TransformerTest, BadInputIsRejectedAndTheCacheUnchanged) {
  KvCache cache(model_->config(), attention::KvDType::kF32, 8);
  const SequenceId s = cache.NewSequence();
  std::vector<float> logits;
  EXPECT_THAT(
      Run(cache, s, {1, static_cast<int32_t>(vocab())}, Range(0, 2), LogitsWanted::kLast, logits),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Run(cache, s, {1, -1}, Range(0, 2), LogitsWanted::kLast, logits),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Run(cache, s, {1, 2}, Range(0, 1), LogitsWanted::kLast, logits),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Run(cache, s + 100, {1}, Range(0, 1), LogitsWanted::kLast, logits),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(Run(cache, s, Range(0, 9), Range(0, 9), LogitsWanted::kLast, logits),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(transformer_->Forward({}, cache, logits),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(cache.Length(s), ::silo::testing::IsOkAndHolds(0));
  EXPECT_EQ(cache.used_tokens(), 0);
}

TinyModelOptions Llama() { return {}; }
TinyModelOptions LlamaUntiedMha() {
  return {.n_heads = 4, .n_kv_heads = 4, .tied_embeddings = false, .seed = 2};
}
TinyModelOptions Qwen2() {
  return {.architecture = "qwen2", .dim = 96, .n_heads = 6, .n_kv_heads = 2, .seed = 3};
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, TransformerTest, ::testing::Values(Llama(), LlamaUntiedMha(), Qwen2()),
    [](const auto& info) {
      return std::string(info.index == 0 ? "Llama" : info.index == 1 ? "LlamaUntiedMha" : "Qwen2");
    });

}  // namespace
}  // namespace silo::engine
