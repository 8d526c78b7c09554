#include "engine/model.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "engine/dequantize.h"

namespace silo::engine {
namespace {

std::string LayerName(int32_t layer, std::string_view suffix) {
  return StrCat("blk.", layer, ".", suffix);
}

absl::StatusOr<WeightMatrix> GgufMatrix(const GgufFile& file, std::string_view name, int64_t rows,
                                        int64_t cols) {
  SILO_ASSIGN_OR_RETURN(const GgufTensorInfo* info, file.FindTensor(name));
  if (info->dims.size() != 2 || info->dims[0] != cols || info->dims[1] != rows) {
    return absl::InvalidArgumentError(
        StrCat("GGUF tensor ", name, " is not [", rows, ", ", cols, "] (rows, cols)"));
  }
  SILO_ASSIGN_OR_RETURN(GgmlTypeLayout layout, LayoutOf(static_cast<uint32_t>(info->type)));
  WeightMatrix w{.type = info->type,
                 .rows = rows,
                 .cols = cols,
                 .data = file.TensorBytes(*info).data(),
                 .row_bytes = cols / layout.block_elements * layout.block_bytes};
  SILO_RETURN_IF_ERROR(ValidateWeightMatrix(w));
  return w;
}

absl::StatusOr<std::vector<float>> GgufVector(const GgufFile& file, std::string_view name,
                                              int64_t size) {
  SILO_ASSIGN_OR_RETURN(const GgufTensorInfo* info, file.FindTensor(name));
  if (info->dims.size() != 1 || info->dims[0] != size) {
    return absl::InvalidArgumentError(StrCat("GGUF tensor ", name, " is not a vector of ", size));
  }
  std::vector<float> out(size);
  SILO_RETURN_IF_ERROR(DequantizeRow(info->type, file.TensorBytes(*info), out));
  return out;
}

absl::StatusOr<WeightMatrix> HfMatrix(const SafetensorsModel& model, std::string_view name,
                                      int64_t rows, int64_t cols) {
  SILO_ASSIGN_OR_RETURN(const SafetensorsTensor* tensor, model.FindTensor(name));
  if (tensor->shape.size() != 2 || tensor->shape[0] != rows || tensor->shape[1] != cols) {
    return absl::InvalidArgumentError(
        StrCat("safetensors tensor ", name, " is not [", rows, ", ", cols, "]"));
  }
  return SafetensorsMatrix(*tensor);
}

absl::StatusOr<std::vector<float>> HfVector(const SafetensorsModel& model, std::string_view name,
                                            int64_t size) {
  SILO_ASSIGN_OR_RETURN(const SafetensorsTensor* tensor, model.FindTensor(name));
  if (tensor->shape.size() != 1 || tensor->shape[0] != size) {
    return absl::InvalidArgumentError(
        StrCat("safetensors tensor ", name, " is not a vector of ", size));
  }
  return SafetensorsToF32(*tensor);
}

absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("cannot open ", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(StrCat("cannot read ", path.string()));
  return text.str();
}

}  // namespace

absl::StatusOr<GgmlType> GgmlTypeOf(const SafetensorsTensor& tensor) {
  switch (tensor.dtype) {
    case SafetensorsDType::kF32:
      return GgmlType::kF32;
    case SafetensorsDType::kF16:
      return GgmlType::kF16;
    case SafetensorsDType::kBF16:
      return GgmlType::kBF16;
    default:
      return absl::InvalidArgumentError(
          StrCat("safetensors tensor ", tensor.name, " is not F32, F16 or BF16"));
  }
}

absl::StatusOr<WeightMatrix> SafetensorsMatrix(const SafetensorsTensor& tensor) {
  if (tensor.shape.size() != 2) {
    return absl::InvalidArgumentError(
        StrCat("safetensors tensor ", tensor.name, " is not a matrix"));
  }
  SILO_ASSIGN_OR_RETURN(const GgmlType type, GgmlTypeOf(tensor));
  const int64_t cols = tensor.shape[1];
  WeightMatrix w{.type = type,
                 .rows = tensor.shape[0],
                 .cols = cols,
                 .data = tensor.data.data(),
                 .row_bytes = cols * static_cast<int64_t>(ElementBytes(tensor.dtype))};
  SILO_RETURN_IF_ERROR(ValidateWeightMatrix(w));
  return w;
}

absl::StatusOr<std::vector<float>> SafetensorsToF32(const SafetensorsTensor& tensor) {
  SILO_ASSIGN_OR_RETURN(const GgmlType type, GgmlTypeOf(tensor));
  std::vector<float> out(tensor.n_elements);
  SILO_RETURN_IF_ERROR(DequantizeRow(type, tensor.data, out));
  return out;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Open(const std::string& path) {
  const std::filesystem::path fs_path(path);
  if (fs_path.extension() == ".gguf") {
    SILO_ASSIGN_OR_RETURN(GgufFile file, GgufFile::Open(path));
    return FromGguf(std::move(file));
  }
  std::unique_ptr<Model> model(new Model());
  std::error_code error;
  model->hf_dir_ = std::filesystem::is_directory(fs_path, error) ? fs_path.string()
                                                                 : fs_path.parent_path().string();
  SILO_ASSIGN_OR_RETURN(SafetensorsModel weights, SafetensorsModel::Open(path));
  model->safetensors_.emplace(std::move(weights));
  SILO_RETURN_IF_ERROR(model->LoadSafetensors());
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromGguf(GgufFile file) {
  std::unique_ptr<Model> model(new Model());
  model->gguf_.emplace(std::move(file));
  SILO_RETURN_IF_ERROR(model->LoadGguf());
  return model;
}

absl::Status Model::LoadGguf() {
  const GgufFile& file = *gguf_;
  SILO_ASSIGN_OR_RETURN(config_, ModelConfigFromGguf(file));
  SILO_ASSIGN_OR_RETURN(const GgufTensorInfo* embedding, file.FindTensor("token_embd.weight"));
  if (embedding->dims.size() != 2) {
    return absl::InvalidArgumentError("GGUF token_embd.weight is not a matrix");
  }
  if (config_.vocab_size == 0) config_.vocab_size = static_cast<int32_t>(embedding->dims[1]);
  if (auto freqs = file.FindTensor("rope_freqs.weight"); freqs.ok()) {
    SILO_ASSIGN_OR_RETURN(config_.rope_freq_factors,
                          GgufVector(file, "rope_freqs.weight", (*freqs)->n_elements));
  }
  config_.tied_embeddings = !file.FindTensor("output.weight").ok();
  SILO_RETURN_IF_ERROR(ValidateModelConfig(config_));

  const ModelConfig& c = config_;
  SILO_ASSIGN_OR_RETURN(token_embedding_,
                        GgufMatrix(file, "token_embd.weight", c.vocab_size, c.dim));
  if (c.tied_embeddings) {
    output_ = token_embedding_;
  } else {
    SILO_ASSIGN_OR_RETURN(output_, GgufMatrix(file, "output.weight", c.vocab_size, c.dim));
  }
  SILO_ASSIGN_OR_RETURN(output_norm_, GgufVector(file, "output_norm.weight", c.dim));
  layers_.resize(c.n_layers);
  for (int32_t i = 0; i < c.n_layers; ++i) {
    LayerWeights& l = layers_[i];
    SILO_ASSIGN_OR_RETURN(l.attn_norm, GgufVector(file, LayerName(i, "attn_norm.weight"), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wq, GgufMatrix(file, LayerName(i, "attn_q.weight"), c.q_dim(), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wk, GgufMatrix(file, LayerName(i, "attn_k.weight"), c.kv_dim(), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wv, GgufMatrix(file, LayerName(i, "attn_v.weight"), c.kv_dim(), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wo,
                          GgufMatrix(file, LayerName(i, "attn_output.weight"), c.dim, c.q_dim()));
    if (c.qkv_bias) {
      SILO_ASSIGN_OR_RETURN(l.bq, GgufVector(file, LayerName(i, "attn_q.bias"), c.q_dim()));
      SILO_ASSIGN_OR_RETURN(l.bk, GgufVector(file, LayerName(i, "attn_k.bias"), c.kv_dim()));
      SILO_ASSIGN_OR_RETURN(l.bv, GgufVector(file, LayerName(i, "attn_v.bias"), c.kv_dim()));
    }
    SILO_ASSIGN_OR_RETURN(l.ffn_norm, GgufVector(file, LayerName(i, "ffn_norm.weight"), c.dim));
    SILO_ASSIGN_OR_RETURN(l.w_gate,
                          GgufMatrix(file, LayerName(i, "ffn_gate.weight"), c.ffn_dim, c.dim));
    SILO_ASSIGN_OR_RETURN(l.w_up,
                          GgufMatrix(file, LayerName(i, "ffn_up.weight"), c.ffn_dim, c.dim));
    SILO_ASSIGN_OR_RETURN(l.w_down,
                          GgufMatrix(file, LayerName(i, "ffn_down.weight"), c.dim, c.ffn_dim));
  }
  return absl::OkStatus();
}

absl::Status Model::LoadSafetensors() {
  SILO_ASSIGN_OR_RETURN(std::string config_text,
                        ReadTextFile(std::filesystem::path(hf_dir_) / "config.json"));
  SILO_ASSIGN_OR_RETURN(config_, ModelConfigFromHfJson(config_text));
  const SafetensorsModel& st = *safetensors_;
  const ModelConfig& c = config_;
  SILO_ASSIGN_OR_RETURN(token_embedding_,
                        HfMatrix(st, "model.embed_tokens.weight", c.vocab_size, c.dim));
  if (st.FindTensor("lm_head.weight").ok()) {
    SILO_ASSIGN_OR_RETURN(output_, HfMatrix(st, "lm_head.weight", c.vocab_size, c.dim));
    config_.tied_embeddings = false;
  } else if (c.tied_embeddings) {
    output_ = token_embedding_;
  } else {
    return absl::NotFoundError(
        "safetensors: lm_head.weight is missing and embeddings are not tied");
  }
  SILO_ASSIGN_OR_RETURN(output_norm_, HfVector(st, "model.norm.weight", c.dim));
  layers_.resize(c.n_layers);
  for (int32_t i = 0; i < c.n_layers; ++i) {
    const std::string p = StrCat("model.layers.", i, ".");
    LayerWeights& l = layers_[i];
    SILO_ASSIGN_OR_RETURN(l.attn_norm, HfVector(st, p + "input_layernorm.weight", c.dim));
    SILO_ASSIGN_OR_RETURN(l.wq, HfMatrix(st, p + "self_attn.q_proj.weight", c.q_dim(), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wk, HfMatrix(st, p + "self_attn.k_proj.weight", c.kv_dim(), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wv, HfMatrix(st, p + "self_attn.v_proj.weight", c.kv_dim(), c.dim));
    SILO_ASSIGN_OR_RETURN(l.wo, HfMatrix(st, p + "self_attn.o_proj.weight", c.dim, c.q_dim()));
    if (c.qkv_bias) {
      SILO_ASSIGN_OR_RETURN(l.bq, HfVector(st, p + "self_attn.q_proj.bias", c.q_dim()));
      SILO_ASSIGN_OR_RETURN(l.bk, HfVector(st, p + "self_attn.k_proj.bias", c.kv_dim()));
      SILO_ASSIGN_OR_RETURN(l.bv, HfVector(st, p + "self_attn.v_proj.bias", c.kv_dim()));
    }
    SILO_ASSIGN_OR_RETURN(l.ffn_norm, HfVector(st, p + "post_attention_layernorm.weight", c.dim));
    SILO_ASSIGN_OR_RETURN(l.w_gate, HfMatrix(st, p + "mlp.gate_proj.weight", c.ffn_dim, c.dim));
    SILO_ASSIGN_OR_RETURN(l.w_up, HfMatrix(st, p + "mlp.up_proj.weight", c.ffn_dim, c.dim));
    SILO_ASSIGN_OR_RETURN(l.w_down, HfMatrix(st, p + "mlp.down_proj.weight", c.dim, c.ffn_dim));
  }
  return absl::OkStatus();
}

void Model::EmbedToken(int32_t id, float* out) const {
  SILO_CHECK(id >= 0 && id < config_.vocab_size);
  const WeightMatrix& e = token_embedding_;
  const std::span<const uint8_t> row(e.data + static_cast<int64_t>(id) * e.row_bytes,
                                     static_cast<size_t>(e.row_bytes));
  SILO_CHECK_OK(DequantizeRow(e.type, row, std::span<float>(out, e.cols)));
}

}  // namespace silo::engine
