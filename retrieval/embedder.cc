#include "retrieval/embedder.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <utility>

#include "common/check.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "engine/cpu/quantized_matmul.h"
#include "engine/dequantize.h"
#include "engine/gguf_file.h"
#include "engine/model.h"
#include "engine/safetensors_file.h"
#include "engine/thread_pool.h"
#include "retrieval/internal/read_file.h"

namespace silo::retrieval {
namespace {

using engine::GgmlType;
using engine::SafetensorsDType;
using engine::SafetensorsModel;
using engine::SafetensorsTensor;
using engine::WeightMatrix;

constexpr int64_t kMaxConfigBytes = 1 << 20;
constexpr int32_t kMaxDim = 1 << 16;
constexpr int32_t kMaxLayers = 1 << 10;
constexpr int32_t kMaxPositions = 1 << 16;
constexpr float kSqrtHalf = 0.70710678118654752440f;

struct LayerNorm {
  std::vector<float> weight;  // [dim]
  std::vector<float> bias;    // [dim]
};

struct Linear {
  WeightMatrix w;           // [out, in], in the mapping
  std::vector<float> bias;  // [out]
};

struct Layer {
  Linear query, key, value, attention_output;  // [dim, dim]
  LayerNorm attention_norm;
  Linear intermediate;  // [ffn_dim, dim]
  Linear output;        // [dim, ffn_dim]
  LayerNorm output_norm;
};

absl::Status CheckShape(const SafetensorsTensor& tensor, const std::vector<int64_t>& shape) {
  if (tensor.shape != shape) {
    std::string want, have;
    for (int64_t d : shape) want = StrCat(want, want.empty() ? "" : ", ", d);
    for (int64_t d : tensor.shape) have = StrCat(have, have.empty() ? "" : ", ", d);
    return absl::InvalidArgumentError(
        StrCat("tensor ", tensor.name, " has shape [", have, "], expected [", want, "]"));
  }
  return absl::OkStatus();
}

// Reads the weights of one model, with tensor names optionally prefixed by "bert.".
class WeightReader {
 public:
  explicit WeightReader(const SafetensorsModel& model) : model_(model) {
    if (!model.FindTensor("embeddings.word_embeddings.weight").ok() &&
        model.FindTensor("bert.embeddings.word_embeddings.weight").ok()) {
      prefix_ = "bert.";
    }
  }

  absl::StatusOr<const SafetensorsTensor*> Find(std::string_view name,
                                                const std::vector<int64_t>& shape) const {
    absl::StatusOr<const SafetensorsTensor*> tensor = model_.FindTensor(StrCat(prefix_, name));
    if (!tensor.ok()) {
      return absl::InvalidArgumentError(StrCat("the model has no tensor ", prefix_, name));
    }
    SILO_RETURN_IF_ERROR(CheckShape(**tensor, shape));
    SILO_RETURN_IF_ERROR(engine::GgmlTypeOf(**tensor).status());
    return *tensor;
  }

  // A tensor of `shape` converted to f32, flattened.
  absl::StatusOr<std::vector<float>> F32(std::string_view name,
                                         const std::vector<int64_t>& shape) const {
    SILO_ASSIGN_OR_RETURN(const SafetensorsTensor* tensor, Find(name, shape));
    return engine::SafetensorsToF32(*tensor);
  }

  absl::StatusOr<LayerNorm> Norm(std::string_view name, int64_t dim) const {
    LayerNorm norm;
    SILO_ASSIGN_OR_RETURN(norm.weight, F32(StrCat(name, ".weight"), {dim}));
    SILO_ASSIGN_OR_RETURN(norm.bias, F32(StrCat(name, ".bias"), {dim}));
    return norm;
  }

  absl::StatusOr<Linear> Dense(std::string_view name, int64_t rows, int64_t cols) const {
    SILO_ASSIGN_OR_RETURN(const SafetensorsTensor* tensor,
                          Find(StrCat(name, ".weight"), {rows, cols}));
    Linear linear;
    SILO_ASSIGN_OR_RETURN(linear.w, engine::SafetensorsMatrix(*tensor));
    SILO_ASSIGN_OR_RETURN(linear.bias, F32(StrCat(name, ".bias"), {rows}));
    return linear;
  }

 private:
  const SafetensorsModel& model_;
  std::string prefix_;
};

absl::StatusOr<int32_t> GetSize(const JsonValue& config, std::string_view key, int32_t max) {
  SILO_ASSIGN_OR_RETURN(const int64_t value, config.GetInt(key));
  if (value < 1 || value > max) {
    return absl::InvalidArgumentError(StrCat(key, " = ", value, " is outside [1, ", max, "]"));
  }
  return static_cast<int32_t>(value);
}

absl::StatusOr<EncoderConfig> ParseConfig(std::string_view text) {
  SILO_ASSIGN_OR_RETURN(const JsonValue config, ParseJson(text));
  if (!config.is_object()) return absl::InvalidArgumentError("not a JSON object");
  if (const JsonValue* type = config.Find("model_type"); type != nullptr) {
    SILO_ASSIGN_OR_RETURN(const std::string_view model_type, type->AsString());
    if (model_type != "bert") {
      return absl::InvalidArgumentError(StrCat("model_type \"", model_type, "\" is not bert"));
    }
  }
  if (const JsonValue* act = config.Find("hidden_act"); act != nullptr) {
    SILO_ASSIGN_OR_RETURN(const std::string_view hidden_act, act->AsString());
    if (hidden_act != "gelu") {
      return absl::InvalidArgumentError(StrCat("hidden_act \"", hidden_act, "\" is not gelu"));
    }
  }
  if (const JsonValue* pos = config.Find("position_embedding_type"); pos != nullptr) {
    SILO_ASSIGN_OR_RETURN(const std::string_view type, pos->AsString());
    if (type != "absolute") {
      return absl::InvalidArgumentError(
          StrCat("position_embedding_type \"", type, "\" is not absolute"));
    }
  }
  EncoderConfig c;
  SILO_ASSIGN_OR_RETURN(c.dim, GetSize(config, "hidden_size", kMaxDim));
  SILO_ASSIGN_OR_RETURN(c.n_layers, GetSize(config, "num_hidden_layers", kMaxLayers));
  SILO_ASSIGN_OR_RETURN(c.n_heads, GetSize(config, "num_attention_heads", kMaxDim));
  SILO_ASSIGN_OR_RETURN(c.ffn_dim, GetSize(config, "intermediate_size", 8 * kMaxDim));
  SILO_ASSIGN_OR_RETURN(c.vocab_size, GetSize(config, "vocab_size", 1 << 24));
  SILO_ASSIGN_OR_RETURN(c.n_positions, GetSize(config, "max_position_embeddings", kMaxPositions));
  SILO_ASSIGN_OR_RETURN(c.n_token_types, GetSize(config, "type_vocab_size", 1 << 10));
  if (const JsonValue* eps = config.Find("layer_norm_eps"); eps != nullptr) {
    SILO_ASSIGN_OR_RETURN(const double value, eps->AsDouble());
    if (!(value > 0 && value < 1)) {
      return absl::InvalidArgumentError(StrCat("layer_norm_eps = ", value, " is outside (0, 1)"));
    }
    c.layer_norm_eps = static_cast<float>(value);
  }
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(
        StrCat("hidden_size ", c.dim, " is not a multiple of num_attention_heads ", c.n_heads));
  }
  c.head_dim = c.dim / c.n_heads;
  return c;
}

// The JSON object in `path`, or nullopt when the file does not exist.
absl::StatusOr<std::optional<JsonValue>> ReadOptionalJson(const std::string& path) {
  absl::StatusOr<std::string> text = internal::ReadSmallFile(path, kMaxConfigBytes);
  if (absl::IsNotFound(text.status())) return std::optional<JsonValue>();
  if (!text.ok()) return text.status();
  absl::StatusOr<JsonValue> json = ParseJson(*text);
  if (!json.ok()) return absl::InvalidArgumentError(StrCat(path, ": ", json.status().message()));
  if (!json->is_object()) return absl::InvalidArgumentError(StrCat(path, " is not an object"));
  return std::optional<JsonValue>(*std::move(json));
}

absl::Status CheckMeanPooling(const std::string& model_dir) {
  for (const std::string name : {"pooling_config.json", "1_Pooling/config.json"}) {
    const std::string path = StrCat(model_dir, "/", name);
    SILO_ASSIGN_OR_RETURN(const std::optional<JsonValue> pooling, ReadOptionalJson(path));
    if (!pooling.has_value()) continue;
    for (const auto& [key, value] : *pooling->AsObject().value()) {
      if (!key.starts_with("pooling_mode_")) continue;
      absl::StatusOr<bool> on = value.AsBool();
      if (!on.ok()) return absl::InvalidArgumentError(StrCat(path, ": ", key, " is not a bool"));
      if (*on != (key == "pooling_mode_mean_tokens")) {
        return absl::InvalidArgumentError(
            StrCat(path, ": only mean pooling (pooling_mode_mean_tokens alone) is supported"));
      }
    }
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

// x = LayerNorm(x + y) over one row of `dim` values (y may be null).
void AddLayerNorm(const float* y, const LayerNorm& norm, float eps, int64_t dim, float* x) {
  double sum = 0;
  for (int64_t i = 0; i < dim; ++i) {
    if (y != nullptr) x[i] += y[i];
    sum += x[i];
  }
  const double mean = sum / dim;
  double sum_sq = 0;
  for (int64_t i = 0; i < dim; ++i) sum_sq += (x[i] - mean) * (x[i] - mean);
  const float inv_std = static_cast<float>(1.0 / std::sqrt(sum_sq / dim + eps));
  const float mean_f = static_cast<float>(mean);
  for (int64_t i = 0; i < dim; ++i) {
    x[i] = (x[i] - mean_f) * inv_std * norm.weight[i] + norm.bias[i];
  }
}

}  // namespace

struct Embedder::Weights {
  Weights(SafetensorsModel model, WordPieceTokenizer tokenizer)
      : model(std::move(model)), tokenizer(std::move(tokenizer)) {}

  SafetensorsModel model;
  WordPieceTokenizer tokenizer;
  std::unique_ptr<engine::ThreadPool> pool;

  GgmlType word_embeddings_type = GgmlType::kF32;
  const SafetensorsTensor* word_embeddings = nullptr;  // [vocab_size, dim], in the mapping
  std::vector<float> position_embeddings;              // [n_positions, dim]
  std::vector<float> token_type_embedding;             // [dim], type 0
  LayerNorm embedding_norm;
  std::vector<Layer> layers;
};

Embedder::Embedder() = default;
Embedder::~Embedder() = default;

const WordPieceTokenizer& Embedder::tokenizer() const { return weights_->tokenizer; }

absl::StatusOr<std::unique_ptr<Embedder>> Embedder::Open(const std::string& model_dir,
                                                         const EmbedderOptions& options) {
  const std::string config_path = StrCat(model_dir, "/config.json");
  SILO_ASSIGN_OR_RETURN(const std::string config_text,
                        internal::ReadSmallFile(config_path, kMaxConfigBytes));
  absl::StatusOr<EncoderConfig> config = ParseConfig(config_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        StrCat(config_path, ": ", config.status().message()));
  }
  const EncoderConfig& c = *config;

  int64_t max_tokens = c.n_positions;
  const std::string sbert_path = StrCat(model_dir, "/sentence_bert_config.json");
  SILO_ASSIGN_OR_RETURN(const std::optional<JsonValue> sbert, ReadOptionalJson(sbert_path));
  if (sbert.has_value() && sbert->Find("max_seq_length") != nullptr) {
    absl::StatusOr<int64_t> length = sbert->GetInt("max_seq_length");
    if (!length.ok()) {
      return absl::InvalidArgumentError(StrCat(sbert_path, ": ", length.status().message()));
    }
    max_tokens = *length;
  }
  if (options.max_tokens > 0) max_tokens = options.max_tokens;
  if (max_tokens < 2 || max_tokens > c.n_positions) {
    return absl::InvalidArgumentError(StrCat("max_tokens ", max_tokens, " is outside [2, ",
                                             c.n_positions, "] (the model's positions)"));
  }
  SILO_RETURN_IF_ERROR(CheckMeanPooling(model_dir));

  SILO_ASSIGN_OR_RETURN(WordPieceTokenizer tokenizer, WordPieceTokenizer::FromModelDir(model_dir));
  if (tokenizer.vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(StrCat("vocab.txt has ", tokenizer.vocab_size(),
                                             " tokens, the model's vocab_size is ", c.vocab_size));
  }
  SILO_ASSIGN_OR_RETURN(SafetensorsModel model, SafetensorsModel::Open(model_dir));

  auto embedder = std::unique_ptr<Embedder>(new Embedder());
  embedder->config_ = c;
  embedder->max_tokens_ = static_cast<int>(max_tokens);
  embedder->weights_ = std::make_unique<Weights>(std::move(model), std::move(tokenizer));
  Weights& w = *embedder->weights_;

  const WeightReader reader(w.model);
  const int64_t dim = c.dim;
  SILO_ASSIGN_OR_RETURN(w.word_embeddings,
                        reader.Find("embeddings.word_embeddings.weight", {c.vocab_size, dim}));
  SILO_ASSIGN_OR_RETURN(w.word_embeddings_type, engine::GgmlTypeOf(*w.word_embeddings));
  SILO_ASSIGN_OR_RETURN(w.position_embeddings,
                        reader.F32("embeddings.position_embeddings.weight", {c.n_positions, dim}));
  SILO_ASSIGN_OR_RETURN(
      std::vector<float> token_types,
      reader.F32("embeddings.token_type_embeddings.weight", {c.n_token_types, dim}));
  w.token_type_embedding.assign(token_types.begin(), token_types.begin() + dim);
  SILO_ASSIGN_OR_RETURN(w.embedding_norm, reader.Norm("embeddings.LayerNorm", dim));
  for (int32_t i = 0; i < c.n_layers; ++i) {
    const std::string p = StrCat("encoder.layer.", i, ".");
    Layer layer;
    SILO_ASSIGN_OR_RETURN(layer.query, reader.Dense(StrCat(p, "attention.self.query"), dim, dim));
    SILO_ASSIGN_OR_RETURN(layer.key, reader.Dense(StrCat(p, "attention.self.key"), dim, dim));
    SILO_ASSIGN_OR_RETURN(layer.value, reader.Dense(StrCat(p, "attention.self.value"), dim, dim));
    SILO_ASSIGN_OR_RETURN(layer.attention_output,
                          reader.Dense(StrCat(p, "attention.output.dense"), dim, dim));
    SILO_ASSIGN_OR_RETURN(layer.attention_norm,
                          reader.Norm(StrCat(p, "attention.output.LayerNorm"), dim));
    SILO_ASSIGN_OR_RETURN(layer.intermediate,
                          reader.Dense(StrCat(p, "intermediate.dense"), c.ffn_dim, dim));
    SILO_ASSIGN_OR_RETURN(layer.output, reader.Dense(StrCat(p, "output.dense"), dim, c.ffn_dim));
    SILO_ASSIGN_OR_RETURN(layer.output_norm, reader.Norm(StrCat(p, "output.LayerNorm"), dim));
    w.layers.push_back(std::move(layer));
  }
  w.pool = std::make_unique<engine::ThreadPool>(options.n_threads);
  return embedder;
}

absl::StatusOr<std::vector<float>> Embedder::Embed(std::span<const std::string> texts) const {
  std::vector<std::vector<int32_t>> ids(texts.size());
  weights_->pool->ParallelFor(static_cast<int64_t>(texts.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      ids[i] = weights_->tokenizer.Encode(texts[i], max_tokens_);
    }
  });
  return EmbedTokens(ids);
}

absl::StatusOr<std::vector<float>> Embedder::EmbedTokens(
    std::span<const std::vector<int32_t>> token_ids) const {
  for (size_t i = 0; i < token_ids.size(); ++i) {
    const std::vector<int32_t>& ids = token_ids[i];
    if (ids.empty() || static_cast<int64_t>(ids.size()) > max_tokens_) {
      return absl::InvalidArgumentError(
          StrCat("sequence ", i, " has ", ids.size(), " tokens, outside [1, ", max_tokens_, "]"));
    }
    for (const int32_t id : ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(StrCat("sequence ", i, " has token id ", id,
                                                 ", outside [0, ", config_.vocab_size, ")"));
      }
    }
  }
  std::vector<float> out(token_ids.size() * config_.dim);  // [n_texts, dim]
  size_t begin = 0;
  while (begin < token_ids.size()) {  // passes of at most kMaxTokensPerPass tokens
    size_t end = begin;
    int64_t n_tokens = 0;
    while (end < token_ids.size() &&
           (end == begin ||
            n_tokens + static_cast<int64_t>(token_ids[end].size()) <= kMaxTokensPerPass)) {
      n_tokens += static_cast<int64_t>(token_ids[end].size());
      ++end;
    }
    Forward(token_ids.subspan(begin, end - begin), out.data() + begin * config_.dim);
    begin = end;
  }
  return out;
}

void Embedder::Forward(std::span<const std::vector<int32_t>> token_ids, float* out) const {
  const EncoderConfig& c = config_;
  const Weights& w = *weights_;
  engine::ThreadPool& pool = *w.pool;
  const int64_t dim = c.dim;
  const int64_t head_dim = c.head_dim;
  const int64_t n_seqs = static_cast<int64_t>(token_ids.size());

  std::vector<int64_t> offsets(n_seqs + 1, 0);  // first row of each sequence, then n_tokens
  for (int64_t s = 0; s < n_seqs; ++s) {
    offsets[s + 1] = offsets[s] + static_cast<int64_t>(token_ids[s].size());
  }
  const int64_t n_tokens = offsets[n_seqs];

  std::vector<float> x(n_tokens * dim);          // [n_tokens, dim] hidden state
  std::vector<float> q(n_tokens * dim);          // [n_tokens, n_heads, head_dim]
  std::vector<float> k(n_tokens * dim);          // [n_tokens, n_heads, head_dim]
  std::vector<float> v(n_tokens * dim);          // [n_tokens, n_heads, head_dim]
  std::vector<float> ctx(n_tokens * dim);        // [n_tokens, n_heads, head_dim] attention output
  std::vector<float> y(n_tokens * dim);          // [n_tokens, dim] projection output
  std::vector<float> ffn(n_tokens * c.ffn_dim);  // [n_tokens, ffn_dim]

  // Embeddings: word + position + token type 0, then LayerNorm.
  const size_t word_row_bytes = dim * engine::ElementBytes(w.word_embeddings->dtype);
  pool.ParallelFor(n_seqs, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      for (size_t p = 0; p < token_ids[s].size(); ++p) {
        float* row = x.data() + (offsets[s] + p) * dim;
        const auto bytes =
            w.word_embeddings->data.subspan(token_ids[s][p] * word_row_bytes, word_row_bytes);
        // Type and sizes were checked at Open.
        SILO_CHECK_OK(
            engine::DequantizeRow(w.word_embeddings_type, bytes, std::span<float>(row, dim)));
        const float* position = w.position_embeddings.data() + p * dim;
        for (int64_t i = 0; i < dim; ++i) row[i] += position[i] + w.token_type_embedding[i];
        AddLayerNorm(nullptr, w.embedding_norm, c.layer_norm_eps, dim, row);
      }
    }
  });

  // Rows of `m` plus bias, over all tokens.
  const auto add_bias = [&](std::vector<float>& m, const std::vector<float>& bias) {
    const int64_t cols = static_cast<int64_t>(bias.size());
    pool.ParallelFor(n_tokens, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* row = m.data() + t * cols;
        for (int64_t i = 0; i < cols; ++i) row[i] += bias[i];
      }
    });
  };
  // x = LayerNorm(x + y + bias).
  const auto residual_norm = [&](const std::vector<float>& bias, const LayerNorm& norm) {
    pool.ParallelFor(n_tokens, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* row = y.data() + t * dim;
        for (int64_t i = 0; i < dim; ++i) row[i] += bias[i];
        AddLayerNorm(row, norm, c.layer_norm_eps, dim, x.data() + t * dim);
      }
    });
  };

  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (const Layer& layer : w.layers) {
    engine::MatMul(layer.query.w, x.data(), n_tokens, q.data(), pool);
    engine::MatMul(layer.key.w, x.data(), n_tokens, k.data(), pool);
    engine::MatMul(layer.value.w, x.data(), n_tokens, v.data(), pool);
    add_bias(q, layer.query.bias);
    add_bias(k, layer.key.bias);
    add_bias(v, layer.value.bias);

    // Bidirectional attention within each sequence, one (sequence, head) pair per work item.
    pool.ParallelFor(n_seqs * c.n_heads, [&](int64_t begin, int64_t end) {
      std::vector<float> scores;  // [n_tokens of the sequence]
      for (int64_t item = begin; item < end; ++item) {
        const int64_t s = item / c.n_heads;
        const int64_t h = item % c.n_heads;
        const int64_t first = offsets[s];
        const int64_t len = offsets[s + 1] - first;
        scores.resize(len);
        for (int64_t i = 0; i < len; ++i) {
          const float* qi = q.data() + (first + i) * dim + h * head_dim;
          float max_score = -INFINITY;
          for (int64_t j = 0; j < len; ++j) {
            const float* kj = k.data() + (first + j) * dim + h * head_dim;
            float dot = 0;
            for (int64_t d = 0; d < head_dim; ++d) dot += qi[d] * kj[d];
            scores[j] = dot * scale;
            max_score = std::max(max_score, scores[j]);
          }
          float sum = 0;
          for (int64_t j = 0; j < len; ++j) {
            scores[j] = std::exp(scores[j] - max_score);
            sum += scores[j];
          }
          float* oi = ctx.data() + (first + i) * dim + h * head_dim;
          std::fill(oi, oi + head_dim, 0.0f);
          for (int64_t j = 0; j < len; ++j) {
            const float p = scores[j] / sum;
            const float* vj = v.data() + (first + j) * dim + h * head_dim;
            for (int64_t d = 0; d < head_dim; ++d) oi[d] += p * vj[d];
          }
        }
      }
    });
    engine::MatMul(layer.attention_output.w, ctx.data(), n_tokens, y.data(), pool);
    residual_norm(layer.attention_output.bias, layer.attention_norm);

    // Feed-forward: GELU (erf form) between two projections.
    engine::MatMul(layer.intermediate.w, x.data(), n_tokens, ffn.data(), pool);
    pool.ParallelFor(n_tokens, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* row = ffn.data() + t * c.ffn_dim;
        for (int64_t i = 0; i < c.ffn_dim; ++i) {
          const float a = row[i] + layer.intermediate.bias[i];
          row[i] = 0.5f * a * (1.0f + std::erf(a * kSqrtHalf));
        }
      }
    });
    engine::MatMul(layer.output.w, ffn.data(), n_tokens, y.data(), pool);
    residual_norm(layer.output.bias, layer.output_norm);
  }

  // Mean over each sequence's tokens, then L2 normalization (norm floored at 1e-12).
  pool.ParallelFor(n_seqs, [&](int64_t begin, int64_t end) {
    std::vector<double> sum(dim);
    for (int64_t s = begin; s < end; ++s) {
      std::fill(sum.begin(), sum.end(), 0.0);
      for (int64_t t = offsets[s]; t < offsets[s + 1]; ++t) {
        for (int64_t i = 0; i < dim; ++i) sum[i] += x[t * dim + i];
      }
      double norm_sq = 0;
      for (int64_t i = 0; i < dim; ++i) norm_sq += sum[i] * sum[i];
      // The mean's norm is the sum's divided by the count: normalize the sum directly.
      const double inv_norm =
          1.0 / std::max(std::sqrt(norm_sq), 1e-12 * (offsets[s + 1] - offsets[s]));
      for (int64_t i = 0; i < dim; ++i) out[s * dim + i] = static_cast<float>(sum[i] * inv_norm);
    }
  });
}

}  // namespace silo::retrieval
