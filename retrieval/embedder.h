// Sentence embeddings with a BERT encoder in the sentence-transformers layout
// (all-MiniLM-L6-v2 and its kin): WordPiece ids → word + position + token-type embeddings and
// LayerNorm → n_layers × (bidirectional self-attention with biases, residual, LayerNorm; GELU
// feed-forward, residual, LayerNorm) → mean over the text's tokens ([CLS] and [SEP] included) →
// L2 normalization. Matrix products run on the engine's CPU kernels (engine/cpu/), in place on
// the mapped safetensors weights (F32, F16 or BF16).
//
// The texts of one call are packed without padding: attention runs per text, so a text's vector
// does not depend on what else is in the batch (up to f32 rounding of the kernels).
//
// Thread-safety: Embed and EmbedTokens may be called from several threads at once (their
// matrix products are serialized by the embedder's thread pool).
#ifndef SILO_RETRIEVAL_EMBEDDER_H_
#define SILO_RETRIEVAL_EMBEDDER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "retrieval/wordpiece_tokenizer.h"

namespace silo::retrieval {

struct EmbedderOptions {
  // Threads of the matrix products, the caller included; 0: one per hardware thread.
  int n_threads = 0;
  // Tokens per text, [CLS] and [SEP] included; longer texts are truncated. 0: the model's
  // (max_seq_length of sentence_bert_config.json, else max_position_embeddings).
  int max_tokens = 0;
};

// Sizes of the encoder, from config.json.
struct EncoderConfig {
  int32_t dim = 0;  // hidden_size; also the embedding's size
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t head_dim = 0;
  int32_t ffn_dim = 0;  // intermediate_size
  int32_t vocab_size = 0;
  int32_t n_positions = 0;  // max_position_embeddings
  int32_t n_token_types = 0;
  float layer_norm_eps = 1e-12f;
};

class Embedder {
 public:
  // Texts of one call are split into passes of at most this many tokens, which bounds the
  // activations' memory (about 40 KB per token for all-MiniLM-L6-v2).
  static constexpr int64_t kMaxTokensPerPass = 8192;

  // Loads a model folder: config.json (model_type "bert", hidden_act "gelu"), model.safetensors
  // (or its sharded index), vocab.txt and the optional tokenizer_config.json,
  // sentence_bert_config.json and pooling_config.json (or 1_Pooling/config.json; only mean
  // pooling is supported). NotFound when a required file is missing; InvalidArgument when a
  // file is malformed, a tensor is missing or has the wrong shape or type, or options.max_tokens
  // exceeds the model's positions; DataLoss when the weights are truncated.
  static absl::StatusOr<std::unique_ptr<Embedder>> Open(const std::string& model_dir,
                                                        const EmbedderOptions& options = {});
  ~Embedder();

  // Unit vectors of `texts`, [texts.size(), dim()] row-major f32. A text longer than
  // max_tokens() word pieces ([CLS] and [SEP] included) is truncated to its first
  // max_tokens() - 2 pieces; any byte string is a valid text (see WordPieceTokenizer).
  absl::StatusOr<std::vector<float>> Embed(std::span<const std::string> texts) const;
  // The same from token ids, each sequence as Encode makes it. InvalidArgument when a sequence
  // is empty or longer than max_tokens(), or an id is outside [0, vocab_size).
  absl::StatusOr<std::vector<float>> EmbedTokens(
      std::span<const std::vector<int32_t>> token_ids) const;

  int dim() const { return config_.dim; }
  int max_tokens() const { return max_tokens_; }
  const EncoderConfig& config() const { return config_; }
  const WordPieceTokenizer& tokenizer() const;

 private:
  struct Weights;

  Embedder();
  // Runs the encoder on `token_ids` (validated; at most kMaxTokensPerPass tokens in all) and
  // writes their pooled, normalized vectors to out, [token_ids.size(), dim].
  void Forward(std::span<const std::vector<int32_t>> token_ids, float* out) const;

  EncoderConfig config_;
  int max_tokens_ = 0;
  std::unique_ptr<Weights> weights_;
};

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_EMBEDDER_H_
