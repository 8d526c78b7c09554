// A decoder's weights, used in place from the model file: a GGUF file (any tensor type the
// matmul kernels support) or a Hugging Face checkpoint (safetensors, single or sharded, beside
// config.json; F32, F16 or BF16). Matrices stay in the mapping as stored; only norms and biases
// (a few KiB per layer) are converted to f32.
//
// Every tensor is checked against the configuration at load: a missing tensor is NotFound, a
// shape or type that disagrees is InvalidArgument. Thread-safety: immutable after Open.
#ifndef SILO_ENGINE_MODEL_H_
#define SILO_ENGINE_MODEL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cpu/quantized_matmul.h"
#include "engine/gguf_file.h"
#include "engine/model_config.h"
#include "engine/safetensors_file.h"

namespace silo::engine {

struct LayerWeights {
  std::vector<float> attn_norm;   // [dim]
  WeightMatrix wq;                // [q_dim, dim]
  WeightMatrix wk;                // [kv_dim, dim]
  WeightMatrix wv;                // [kv_dim, dim]
  WeightMatrix wo;                // [dim, q_dim]
  std::vector<float> bq, bk, bv;  // [q_dim], [kv_dim], [kv_dim]; empty unless qkv_bias
  std::vector<float> ffn_norm;    // [dim]
  WeightMatrix w_gate;            // [ffn_dim, dim]
  WeightMatrix w_up;              // [ffn_dim, dim]
  WeightMatrix w_down;            // [dim, ffn_dim]
};

// Safetensors tensors as the CPU kernels take them (F32, F16 or BF16; InvalidArgument otherwise):
// the matching GgmlType, a 2-D tensor as a WeightMatrix in place, any tensor converted to f32.
absl::StatusOr<GgmlType> GgmlTypeOf(const SafetensorsTensor& tensor);
absl::StatusOr<WeightMatrix> SafetensorsMatrix(const SafetensorsTensor& tensor);
absl::StatusOr<std::vector<float>> SafetensorsToF32(const SafetensorsTensor& tensor);

class Model {
 public:
  // `path`: a .gguf file; a folder holding config.json and model.safetensors (or its index); or
  // a .safetensors / .safetensors.index.json file with config.json beside it.
  static absl::StatusOr<std::unique_ptr<Model>> Open(const std::string& path);
  // The model of a GGUF file already opened or parsed (its bytes must outlive the model).
  static absl::StatusOr<std::unique_ptr<Model>> FromGguf(GgufFile file);

  const ModelConfig& config() const { return config_; }
  const WeightMatrix& token_embedding() const { return token_embedding_; }  // [vocab_size, dim]
  const WeightMatrix& output() const { return output_; }                    // [vocab_size, dim]
  const std::vector<float>& output_norm() const { return output_norm_; }    // [dim]
  const LayerWeights& layer(int32_t i) const { return layers_[i]; }
  // The GGUF file the model came from (its tokenizer metadata), or null for safetensors.
  const GgufFile* gguf() const { return gguf_ ? &*gguf_ : nullptr; }
  // The folder of a Hugging Face checkpoint (tokenizer.json lives there); empty for GGUF.
  const std::string& hf_dir() const { return hf_dir_; }

  // Writes token `id`'s embedding to `out` [dim]. Precondition: 0 <= id < vocab_size.
  void EmbedToken(int32_t id, float* out) const;

 private:
  Model() = default;
  absl::Status LoadGguf();
  absl::Status LoadSafetensors();

  ModelConfig config_;
  std::optional<GgufFile> gguf_;
  std::optional<SafetensorsModel> safetensors_;
  std::string hf_dir_;
  WeightMatrix token_embedding_;
  WeightMatrix output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_MODEL_H_
