// The hyper-parameters of a decoder (Llama family and Qwen2), read from GGUF metadata or from a
// Hugging Face config.json, checked for consistency before any weight is touched.
//
// Thread-safety: plain values.
#ifndef SILO_ENGINE_MODEL_CONFIG_H_
#define SILO_ENGINE_MODEL_CONFIG_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf_file.h"

namespace silo::engine {

enum class Architecture { kLlama, kQwen2 };

// Which elements of a head RoPE rotates together. GGUF files of the llama architecture store Q
// and K with rows reordered so that pairs are adjacent (ggml's "normal" mode); Hugging Face
// checkpoints and GGUF qwen2 pair element i with element i + head_dim / 2 ("NeoX" mode).
enum class RopeStyle { kAdjacentPairs, kHalves };

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  int32_t n_layers = 0;
  int32_t dim = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;  // divides n_heads (grouped-query attention)
  int32_t head_dim = 0;    // dim / n_heads unless the file says otherwise
  int32_t ffn_dim = 0;
  int32_t vocab_size = 0;
  int32_t n_ctx_train = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::kHalves;
  // Divisor of each rotary frequency, [head_dim / 2]; empty for none. Llama-3's "llama3" scaling
  // is expressed this way (GGUF stores it as the tensor rope_freqs.weight).
  std::vector<float> rope_freq_factors;
  bool qkv_bias = false;         // Qwen2
  bool tied_embeddings = false;  // the output projection is the token embedding

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
};

// InvalidArgument when a size is not positive or out of bounds, n_kv_heads does not divide
// n_heads, head_dim is odd, or the frequency factors have the wrong length.
absl::Status ValidateModelConfig(const ModelConfig& config);

// From `general.architecture` ("llama" or "qwen2") and its `<arch>.*` keys. NotFound when a
// required key is missing; InvalidArgument for another architecture or inconsistent values.
// rope_freq_factors and tied_embeddings depend on tensors and are filled by the model loader.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file);

// From the text of a Hugging Face config.json ("LlamaForCausalLM" / "Qwen2ForCausalLM"),
// rope_scaling of type "llama3" included. InvalidArgument when malformed or unsupported.
absl::StatusOr<ModelConfig> ModelConfigFromHfJson(std::string_view json_text);

// Llama-3's frequency divisors for a head: `factor` for long wavelengths, 1 for short ones and a
// smooth blend between them. [head_dim / 2].
std::vector<float> Llama3RopeFreqFactors(int32_t head_dim, float rope_theta, float factor,
                                         float low_freq_factor, float high_freq_factor,
                                         int32_t original_context);

}  // namespace silo::engine

#endif  // SILO_ENGINE_MODEL_CONFIG_H_
