#include "engine/model_config.h"

#include <cmath>
#include <numbers>
#include <string>

#include "absl/status/status.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

// Bounds that keep every derived size inside int32 and every buffer sane.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxDim = 65536;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 1024;
constexpr int64_t kMaxFfnDim = 1 << 20;
constexpr int64_t kMaxVocab = 1 << 24;

absl::Status CheckRange(std::string_view name, int64_t value, int64_t max) {
  if (value <= 0 || value > max) {
    return absl::InvalidArgumentError(
        StrCat("model config: ", name, " = ", value, " is outside [1, ", max, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> GgufInt(const GgufFile& file, std::string_view arch, std::string_view key) {
  SILO_ASSIGN_OR_RETURN(int64_t value, file.GetInt64(StrCat(arch, ".", key)));
  if (value < 0 || value > INT32_MAX) {
    return absl::InvalidArgumentError(
        StrCat("GGUF ", arch, ".", key, " = ", value, " is out of range"));
  }
  return static_cast<int32_t>(value);
}

}  // namespace

absl::Status ValidateModelConfig(const ModelConfig& c) {
  SILO_RETURN_IF_ERROR(CheckRange("n_layers", c.n_layers, kMaxLayers));
  SILO_RETURN_IF_ERROR(CheckRange("dim", c.dim, kMaxDim));
  SILO_RETURN_IF_ERROR(CheckRange("n_heads", c.n_heads, kMaxHeads));
  SILO_RETURN_IF_ERROR(CheckRange("n_kv_heads", c.n_kv_heads, kMaxHeads));
  SILO_RETURN_IF_ERROR(CheckRange("head_dim", c.head_dim, kMaxHeadDim));
  SILO_RETURN_IF_ERROR(CheckRange("ffn_dim", c.ffn_dim, kMaxFfnDim));
  SILO_RETURN_IF_ERROR(CheckRange("vocab_size", c.vocab_size, kMaxVocab));
  SILO_RETURN_IF_ERROR(CheckRange("n_ctx_train", c.n_ctx_train, INT32_MAX));
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        StrCat("model config: n_kv_heads ", c.n_kv_heads, " does not divide n_heads ", c.n_heads));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(StrCat("model config: head_dim ", c.head_dim, " is odd"));
  }
  if (static_cast<int64_t>(c.n_heads) * c.head_dim > kMaxDim) {
    return absl::InvalidArgumentError("model config: n_heads * head_dim is too large");
  }
  if (!std::isfinite(c.rms_norm_eps) || c.rms_norm_eps <= 0 || !std::isfinite(c.rope_theta) ||
      c.rope_theta <= 1) {
    return absl::InvalidArgumentError("model config: rms_norm_eps or rope_theta out of range");
  }
  if (!c.rope_freq_factors.empty()) {
    if (c.rope_freq_factors.size() != static_cast<size_t>(c.head_dim / 2)) {
      return absl::InvalidArgumentError(StrCat("model config: ", c.rope_freq_factors.size(),
                                               " RoPE frequency factors for head_dim ",
                                               c.head_dim));
    }
    for (float factor : c.rope_freq_factors) {
      if (!std::isfinite(factor) || factor <= 0) {
        return absl::InvalidArgumentError("model config: a RoPE frequency factor is not positive");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file) {
  SILO_ASSIGN_OR_RETURN(std::string_view arch, file.GetString("general.architecture"));
  ModelConfig c;
  if (arch == "llama") {
    c.architecture = Architecture::kLlama;
    c.rope_style = RopeStyle::kAdjacentPairs;
  } else if (arch == "qwen2") {
    c.architecture = Architecture::kQwen2;
    c.rope_style = RopeStyle::kHalves;
    c.qkv_bias = true;
  } else {
    return absl::InvalidArgumentError(
        StrCat("GGUF architecture '", arch, "' is not supported (llama, qwen2)"));
  }
  SILO_ASSIGN_OR_RETURN(c.n_layers, GgufInt(file, arch, "block_count"));
  SILO_ASSIGN_OR_RETURN(c.dim, GgufInt(file, arch, "embedding_length"));
  SILO_ASSIGN_OR_RETURN(c.n_heads, GgufInt(file, arch, "attention.head_count"));
  c.n_kv_heads = c.n_heads;
  if (file.metadata().contains(StrCat(arch, ".attention.head_count_kv"))) {
    SILO_ASSIGN_OR_RETURN(c.n_kv_heads, GgufInt(file, arch, "attention.head_count_kv"));
  }
  SILO_ASSIGN_OR_RETURN(c.ffn_dim, GgufInt(file, arch, "feed_forward_length"));
  SILO_ASSIGN_OR_RETURN(c.n_ctx_train, GgufInt(file, arch, "context_length"));
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  if (file.metadata().contains(StrCat(arch, ".attention.key_length"))) {
    SILO_ASSIGN_OR_RETURN(c.head_dim, GgufInt(file, arch, "attention.key_length"));
  }
  if (file.metadata().contains(StrCat(arch, ".rope.dimension_count"))) {
    SILO_ASSIGN_OR_RETURN(int32_t rope_dims, GgufInt(file, arch, "rope.dimension_count"));
    if (rope_dims != c.head_dim) {
      return absl::InvalidArgumentError(StrCat("GGUF rope.dimension_count ", rope_dims,
                                               " differs from head_dim ", c.head_dim,
                                               " (partial RoPE is not supported)"));
    }
  }
  SILO_ASSIGN_OR_RETURN(double eps,
                        file.GetFloat(StrCat(arch, ".attention.layer_norm_rms_epsilon")));
  c.rms_norm_eps = static_cast<float>(eps);
  if (file.metadata().contains(StrCat(arch, ".rope.freq_base"))) {
    SILO_ASSIGN_OR_RETURN(double theta, file.GetFloat(StrCat(arch, ".rope.freq_base")));
    c.rope_theta = static_cast<float>(theta);
  }
  // vocab_size is optional in GGUF (the token list and the embedding give it); the loader
  // fills it from the embedding when absent.
  if (file.metadata().contains(StrCat(arch, ".vocab_size"))) {
    SILO_ASSIGN_OR_RETURN(c.vocab_size, GgufInt(file, arch, "vocab_size"));
  } else if (auto tokens = file.GetArray("tokenizer.ggml.tokens"); tokens.ok()) {
    c.vocab_size = static_cast<int32_t>((*tokens)->values.size());
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfigFromHfJson(std::string_view json_text) {
  SILO_ASSIGN_OR_RETURN(JsonValue json, ParseJson(json_text));
  if (!json.is_object()) return absl::InvalidArgumentError("config.json is not an object");
  ModelConfig c;
  c.rope_style = RopeStyle::kHalves;
  SILO_ASSIGN_OR_RETURN(std::string_view model_type, json.GetString("model_type"));
  if (model_type == "llama") {
    c.architecture = Architecture::kLlama;
  } else if (model_type == "qwen2") {
    c.architecture = Architecture::kQwen2;
    c.qkv_bias = true;
  } else {
    return absl::InvalidArgumentError(
        StrCat("config.json model_type '", model_type, "' is not supported (llama, qwen2)"));
  }
  auto get_int = [&](std::string_view key, int32_t* out) -> absl::Status {
    SILO_ASSIGN_OR_RETURN(int64_t value, json.GetInt(key));
    if (value < 0 || value > INT32_MAX) {
      return absl::InvalidArgumentError(StrCat("config.json ", key, " is out of range"));
    }
    *out = static_cast<int32_t>(value);
    return absl::OkStatus();
  };
  SILO_RETURN_IF_ERROR(get_int("num_hidden_layers", &c.n_layers));
  SILO_RETURN_IF_ERROR(get_int("hidden_size", &c.dim));
  SILO_RETURN_IF_ERROR(get_int("num_attention_heads", &c.n_heads));
  c.n_kv_heads = c.n_heads;
  if (json.Find("num_key_value_heads") != nullptr) {
    SILO_RETURN_IF_ERROR(get_int("num_key_value_heads", &c.n_kv_heads));
  }
  SILO_RETURN_IF_ERROR(get_int("intermediate_size", &c.ffn_dim));
  SILO_RETURN_IF_ERROR(get_int("vocab_size", &c.vocab_size));
  SILO_RETURN_IF_ERROR(get_int("max_position_embeddings", &c.n_ctx_train));
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  if (const JsonValue* head_dim = json.Find("head_dim");
      head_dim != nullptr && !head_dim->is_null()) {
    SILO_RETURN_IF_ERROR(get_int("head_dim", &c.head_dim));
  }
  SILO_ASSIGN_OR_RETURN(double eps, json.GetDouble("rms_norm_eps"));
  c.rms_norm_eps = static_cast<float>(eps);
  if (json.Find("rope_theta") != nullptr) {
    SILO_ASSIGN_OR_RETURN(double theta, json.GetDouble("rope_theta"));
    c.rope_theta = static_cast<float>(theta);
  }
  if (const JsonValue* tie = json.Find("tie_word_embeddings"); tie != nullptr) {
    SILO_ASSIGN_OR_RETURN(c.tied_embeddings, tie->AsBool());
  }
  if (const JsonValue* bias = json.Find("attention_bias"); bias != nullptr) {
    SILO_ASSIGN_OR_RETURN(bool attention_bias, bias->AsBool());
    c.qkv_bias = c.qkv_bias || attention_bias;
  }
  if (const JsonValue* scaling = json.Find("rope_scaling");
      scaling != nullptr && !scaling->is_null()) {
    const JsonValue* type = scaling->Find("rope_type");
    if (type == nullptr) type = scaling->Find("type");
    if (type == nullptr) return absl::InvalidArgumentError("config.json rope_scaling has no type");
    SILO_ASSIGN_OR_RETURN(std::string_view type_name, type->AsString());
    if (type_name != "llama3") {
      return absl::InvalidArgumentError(
          StrCat("config.json rope_scaling type '", type_name, "' is not supported (llama3)"));
    }
    SILO_ASSIGN_OR_RETURN(double factor, scaling->GetDouble("factor"));
    SILO_ASSIGN_OR_RETURN(double low, scaling->GetDouble("low_freq_factor"));
    SILO_ASSIGN_OR_RETURN(double high, scaling->GetDouble("high_freq_factor"));
    SILO_ASSIGN_OR_RETURN(int64_t original, scaling->GetInt("original_max_position_embeddings"));
    if (!(factor > 0) || !(low > 0) || !(high > low) || original <= 0 || original > INT32_MAX) {
      return absl::InvalidArgumentError("config.json rope_scaling values are out of range");
    }
    SILO_RETURN_IF_ERROR(ValidateModelConfig(c));
    c.rope_freq_factors = Llama3RopeFreqFactors(
        c.head_dim, c.rope_theta, static_cast<float>(factor), static_cast<float>(low),
        static_cast<float>(high), static_cast<int32_t>(original));
  }
  SILO_RETURN_IF_ERROR(ValidateModelConfig(c));
  return c;
}

std::vector<float> Llama3RopeFreqFactors(int32_t head_dim, float rope_theta, float factor,
                                         float low_freq_factor, float high_freq_factor,
                                         int32_t original_context) {
  const double low_freq_wavelength = original_context / static_cast<double>(low_freq_factor);
  const double high_freq_wavelength = original_context / static_cast<double>(high_freq_factor);
  std::vector<float> factors(head_dim / 2);
  for (int32_t i = 0; i < head_dim / 2; ++i) {
    const double frequency = std::pow(static_cast<double>(rope_theta), -2.0 * i / head_dim);
    const double wavelength = 2 * std::numbers::pi / frequency;
    double divisor = 1;
    if (wavelength > low_freq_wavelength) {
      divisor = factor;
    } else if (wavelength >= high_freq_wavelength) {
      const double smooth =
          (original_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor);
      divisor = 1 / ((1 - smooth) / factor + smooth);
    }
    factors[i] = static_cast<float>(divisor);
  }
  return factors;
}

}  // namespace silo::engine
