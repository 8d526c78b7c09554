#include "eval/privacy_states.h"

#include <algorithm>
#include <numeric>

#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"

namespace silo::eval {
namespace {

// Index of `layer` in `layers`, or -1.
int32_t LayerIndex(const std::vector<int32_t>& layers, int32_t layer) {
  const auto found = std::find(layers.begin(), layers.end(), layer);
  return found == layers.end() ? -1 : static_cast<int32_t>(found - layers.begin());
}

absl::Status CheckLayers(const std::vector<int32_t>& layers, const engine::ModelConfig& config) {
  if (layers.empty()) return absl::InvalidArgumentError("no layer to record");
  for (const int32_t layer : layers) {
    if (layer < 0 || layer >= config.n_layers) {
      return absl::InvalidArgumentError(StrCat("layer ", layer, " is not in the model"));
    }
  }
  return absl::OkStatus();
}

// Keeps the query rows of the recorded layers, one step per forward pass.
class QueryRecorder final : public engine::AttentionHook {
 public:
  explicit QueryRecorder(PlainSessionStates& states) : states_(states) {}

  absl::Status AddPartials(int32_t layer, std::span<const float> q,
                           std::span<const int32_t> /*positions*/,
                           engine::AttentionPartials& /*partials*/) override {
    if (layer == 0) {
      for (auto& steps : states_.q) steps.emplace_back();
    }
    const int32_t index = LayerIndex(states_.layers, layer);
    if (index >= 0) states_.q[static_cast<size_t>(index)].back().assign(q.begin(), q.end());
    return absl::OkStatus();
  }

 private:
  PlainSessionStates& states_;
};

// Keeps one token's query rows at the recorded layers of a token-alone forward.
class TokenQueryRecorder final : public engine::AttentionHook {
 public:
  TokenQueryRecorder(std::vector<TokenAloneTable>& tables, const std::vector<int32_t>& layers,
                     int32_t token, size_t q_size)
      : tables_(tables), layers_(layers), token_(token), q_size_(q_size) {}

  absl::Status AddPartials(int32_t layer, std::span<const float> q,
                           std::span<const int32_t> /*positions*/,
                           engine::AttentionPartials& /*partials*/) override {
    const int32_t index = LayerIndex(layers_, layer);
    if (index >= 0) {
      std::copy(q.begin(), q.end(),
                tables_[static_cast<size_t>(index)].q.begin() +
                    static_cast<std::ptrdiff_t>(static_cast<size_t>(token_) * q_size_));
    }
    return absl::OkStatus();
  }

 private:
  std::vector<TokenAloneTable>& tables_;
  const std::vector<int32_t>& layers_;
  int32_t token_;
  size_t q_size_;
};

}  // namespace

std::vector<int32_t> PlainSessionStates::OwnerTokens(int32_t owner) const {
  std::vector<int32_t> tokens;
  for (size_t c = 0; c < chunk_tokens.size(); ++c) {
    if (chunk_owner[c] == owner) {
      tokens.insert(tokens.end(), chunk_tokens[c].begin(), chunk_tokens[c].end());
    }
  }
  return tokens;
}

std::vector<int32_t> PlainSessionStates::OwnerPositions(int32_t owner) const {
  std::vector<int32_t> positions;
  for (size_t c = 0; c < chunk_tokens.size(); ++c) {
    if (chunk_owner[c] != owner) continue;
    for (size_t i = 0; i < chunk_tokens[c].size(); ++i) {
      positions.push_back(chunk_start[c] + static_cast<int32_t>(i));
    }
  }
  return positions;
}

std::vector<int32_t> PlainSessionStates::StepTokens(int32_t step) const {
  if (step == 0) return suffix;
  return {generated[static_cast<size_t>(step - 1)]};
}

std::vector<int32_t> PlainSessionStates::StepPositions(int32_t step) const {
  const int32_t first =
      step == 0 ? suffix_start : suffix_start + static_cast<int32_t>(suffix.size()) + step - 1;
  std::vector<int32_t> positions(step == 0 ? suffix.size() : 1);
  std::iota(positions.begin(), positions.end(), first);
  return positions;
}

absl::StatusOr<PlainSessionStates> RecordPlainSession(engine::Transformer& transformer,
                                                      const engine::RagPromptBuilder& prompts,
                                                      const std::string& question,
                                                      const std::vector<std::string>& chunks,
                                                      const PlainSessionOptions& options) {
  const engine::ModelConfig& config = transformer.model().config();
  SILO_RETURN_IF_ERROR(CheckLayers(options.layers, config));
  if (chunks.empty()) return absl::InvalidArgumentError("a session needs chunks");
  if (options.n_owners < 1 || options.decode_steps < 1) {
    return absl::InvalidArgumentError("owners and decode steps must be positive");
  }
  PlainSessionStates states;
  states.n_heads = config.n_heads;
  states.n_kv_heads = config.n_kv_heads;
  states.head_dim = config.head_dim;
  states.layers = options.layers;
  states.n_owners = std::min<int32_t>(options.n_owners, static_cast<int32_t>(chunks.size()));
  const engine::RagPrompt prompt = prompts.Build(question, chunks);
  states.prefix_tokens = static_cast<int32_t>(prompt.prefix.size());
  states.chunk_tokens = prompt.chunks;
  states.suffix = prompt.suffix;

  const int64_t capacity =
      static_cast<int64_t>(prompt.Concatenated().size()) + options.decode_steps + 2;
  engine::KvCache cache(config, attention::KvDType::kF32, capacity);
  const engine::SequenceId sequence = cache.NewSequence();
  std::vector<int32_t> positions(prompt.prefix.size());
  std::iota(positions.begin(), positions.end(), 0);
  std::vector<float> logits;
  const engine::SequenceInput prefix{.sequence = sequence,
                                     .tokens = prompt.prefix,
                                     .positions = positions,
                                     .logits = engine::LogitsWanted::kNone,
                                     .hook = nullptr,
                                     .capture = nullptr};
  SILO_RETURN_IF_ERROR(transformer.Forward({&prefix, 1}, cache, logits));

  const size_t n_layers = options.layers.size();
  const size_t d = static_cast<size_t>(config.head_dim);
  states.k.assign(n_layers,
                  std::vector<std::vector<std::vector<float>>>(
                      static_cast<size_t>(states.n_owners),
                      std::vector<std::vector<float>>(static_cast<size_t>(config.n_kv_heads))));
  states.v = states.k;
  states.q.assign(n_layers, {});
  int32_t position = states.prefix_tokens;
  for (size_t c = 0; c < prompt.chunks.size(); ++c) {
    const std::vector<int32_t>& tokens = prompt.chunks[c];
    const int32_t owner = static_cast<int32_t>(c) % states.n_owners;
    states.chunk_start.push_back(position);
    states.chunk_owner.push_back(owner);
    SILO_ASSIGN_OR_RETURN(const engine::KvShard shard, engine::PrefillKvShard(transformer, tokens));
    positions.resize(tokens.size());
    std::iota(positions.begin(), positions.end(), position);
    SILO_RETURN_IF_ERROR(cache.AppendShard(sequence, shard, positions, transformer.rope()));
    for (size_t l = 0; l < n_layers; ++l) {
      for (int32_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
        const int64_t at = shard.Offset(options.layers[l], kv_head, 0);
        std::vector<float> k(tokens.size() * d), v(tokens.size() * d);
        for (size_t i = 0; i < k.size(); ++i) {
          k[i] = HalfToFloat(shard.k[static_cast<size_t>(at) + i]);
          v[i] = HalfToFloat(shard.v[static_cast<size_t>(at) + i]);
        }
        transformer.rope().Rotate(positions.data(), static_cast<int64_t>(tokens.size()), 1,
                                  k.data());
        std::vector<float>& owner_k =
            states.k[l][static_cast<size_t>(owner)][static_cast<size_t>(kv_head)];
        std::vector<float>& owner_v =
            states.v[l][static_cast<size_t>(owner)][static_cast<size_t>(kv_head)];
        owner_k.insert(owner_k.end(), k.begin(), k.end());
        owner_v.insert(owner_v.end(), v.begin(), v.end());
      }
    }
    position += static_cast<int32_t>(tokens.size());
  }
  states.suffix_start = position;

  QueryRecorder recorder(states);
  engine::GenerateOptions generate;
  generate.max_tokens = options.decode_steps + 1;  // the last one is not fed back
  generate.first_position = states.suffix_start;
  generate.hook = &recorder;
  SILO_RETURN_IF_ERROR(engine::Generate(transformer, cache, sequence, prompt.suffix, generate,
                                        [&](const engine::SampledToken& token) {
                                          states.generated.push_back(token.id);
                                          return true;
                                        })
                           .status());
  if (states.generated.size() < static_cast<size_t>(options.decode_steps)) {
    return absl::InternalError("the model stopped before the decode steps asked for");
  }
  states.generated.resize(static_cast<size_t>(options.decode_steps));
  for (auto& steps : states.q) steps.resize(static_cast<size_t>(options.decode_steps) + 1);
  return states;
}

absl::StatusOr<std::vector<TokenAloneTable>> ComputeTokenAloneTables(
    engine::Transformer& transformer, const std::vector<int32_t>& layers, int32_t vocab) {
  const engine::ModelConfig& config = transformer.model().config();
  SILO_RETURN_IF_ERROR(CheckLayers(layers, config));
  if (vocab <= 0 || vocab > config.vocab_size) vocab = config.vocab_size;
  const size_t q_size = static_cast<size_t>(config.n_heads) * static_cast<size_t>(config.head_dim);
  const size_t kv_size =
      static_cast<size_t>(config.n_kv_heads) * static_cast<size_t>(config.head_dim);
  std::vector<TokenAloneTable> tables(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    tables[l].layer = layers[l];
    tables[l].vocab = vocab;
    tables[l].q.resize(static_cast<size_t>(vocab) * q_size);
    tables[l].k.resize(static_cast<size_t>(vocab) * kv_size);
    tables[l].v.resize(static_cast<size_t>(vocab) * kv_size);
  }
  // Batches of one-token sequences: each attends to itself only.
  constexpr int32_t kBatch = 256;
  engine::KvCache cache(config, attention::KvDType::kF32, kBatch);
  const int32_t zero = 0;
  std::vector<float> logits;
  for (int32_t first = 0; first < vocab; first += kBatch) {
    const int32_t n = std::min(kBatch, vocab - first);
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    std::iota(tokens.begin(), tokens.end(), first);
    std::vector<engine::KvShard> shards(static_cast<size_t>(n));
    std::vector<TokenQueryRecorder> recorders;
    recorders.reserve(static_cast<size_t>(n));
    std::vector<engine::SequenceInput> batch;
    for (int32_t i = 0; i < n; ++i) {
      recorders.emplace_back(tables, layers, first + i, q_size);
      batch.push_back({.sequence = cache.NewSequence(),
                       .tokens = {&tokens[static_cast<size_t>(i)], 1},
                       .positions = {&zero, 1},
                       .logits = engine::LogitsWanted::kNone,
                       .hook = &recorders.back(),
                       .capture = &shards[static_cast<size_t>(i)]});
    }
    SILO_RETURN_IF_ERROR(transformer.Forward(batch, cache, logits));
    for (const engine::SequenceInput& input : batch)
      SILO_RETURN_IF_ERROR(cache.Free(input.sequence));
    for (size_t l = 0; l < layers.size(); ++l) {
      for (int32_t i = 0; i < n; ++i) {
        const engine::KvShard& shard = shards[static_cast<size_t>(i)];
        const size_t out = static_cast<size_t>(first + i) * kv_size;
        for (int32_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
          const int64_t at = shard.Offset(layers[l], kv_head, 0);
          for (size_t j = 0; j < static_cast<size_t>(config.head_dim); ++j) {
            const size_t to =
                out + static_cast<size_t>(kv_head) * static_cast<size_t>(config.head_dim) + j;
            tables[l].k[to] = HalfToFloat(shard.k[static_cast<size_t>(at) + j]);
            tables[l].v[to] = HalfToFloat(shard.v[static_cast<size_t>(at) + j]);
          }
        }
      }
    }
  }
  return tables;
}

}  // namespace silo::eval
