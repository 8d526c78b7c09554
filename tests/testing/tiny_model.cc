#include "tests/testing/tiny_model.h"

#include <cmath>
#include <random>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "tests/testing/gguf_writer.h"

namespace silo::testing {
namespace {

std::vector<float> Random(std::mt19937_64& rng, size_t n, float scale, float offset = 0) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = offset + scale * normal(rng);
  return values;
}

std::string_view Bytes(const std::vector<float>& values) {
  return {reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)};
}

}  // namespace

TinyModel MakeTinyModel(const TinyModelOptions& o) {
  std::mt19937_64 rng(o.seed);
  TinyModel m;
  m.options = o;
  const int32_t head_dim = o.dim / o.n_heads;
  const size_t q_dim = static_cast<size_t>(o.n_heads) * head_dim;
  const size_t kv_dim = static_cast<size_t>(o.n_kv_heads) * head_dim;
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(o.dim));
  m.token_embedding = Random(rng, static_cast<size_t>(o.vocab_size) * o.dim, 1.0f);
  m.output = o.tied_embeddings ? m.token_embedding
                               : Random(rng, static_cast<size_t>(o.vocab_size) * o.dim, 1.0f);
  m.output_norm = Random(rng, o.dim, 0.1f, 1.0f);
  const bool bias = o.architecture == "qwen2";
  for (int32_t i = 0; i < o.n_layers; ++i) {
    TinyModel::Layer l;
    l.attn_norm = Random(rng, o.dim, 0.1f, 1.0f);
    l.wq = Random(rng, q_dim * o.dim, 2 * in_scale);
    l.wk = Random(rng, kv_dim * o.dim, 2 * in_scale);
    l.wv = Random(rng, kv_dim * o.dim, in_scale);
    l.wo = Random(rng, o.dim * q_dim, in_scale);
    if (bias) {
      l.bq = Random(rng, q_dim, 0.1f);
      l.bk = Random(rng, kv_dim, 0.1f);
      l.bv = Random(rng, kv_dim, 0.1f);
    }
    l.ffn_norm = Random(rng, o.dim, 0.1f, 1.0f);
    l.w_gate = Random(rng, static_cast<size_t>(o.ffn_dim) * o.dim, in_scale);
    l.w_up = Random(rng, static_cast<size_t>(o.ffn_dim) * o.dim, in_scale);
    l.w_down = Random(rng, static_cast<size_t>(o.dim) * o.ffn_dim,
                      1.0f / std::sqrt(static_cast<float>(o.ffn_dim)));
    m.layers.push_back(std::move(l));
  }

  GgufWriter writer;
  const std::string& arch = o.architecture;
  writer.AddString("general.architecture", arch);
  writer.AddUint32(arch + ".block_count", o.n_layers);
  writer.AddUint32(arch + ".embedding_length", o.dim);
  writer.AddUint32(arch + ".attention.head_count", o.n_heads);
  writer.AddUint32(arch + ".attention.head_count_kv", o.n_kv_heads);
  writer.AddUint32(arch + ".feed_forward_length", o.ffn_dim);
  writer.AddUint32(arch + ".context_length", 4096);
  writer.AddUint32(arch + ".vocab_size", o.vocab_size);
  writer.AddFloat32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
  writer.AddFloat32(arch + ".rope.freq_base", o.rope_theta);
  const uint32_t f32 = 0;  // GgmlType::kF32
  auto matrix = [&](std::string_view name, const std::vector<float>& w, uint64_t rows,
                    uint64_t cols) {
    writer.AddTensor(name, {cols, rows}, f32, Bytes(w));
  };
  auto vector = [&](std::string_view name, const std::vector<float>& w) {
    writer.AddTensor(name, {w.size()}, f32, Bytes(w));
  };
  matrix("token_embd.weight", m.token_embedding, o.vocab_size, o.dim);
  if (!o.tied_embeddings) matrix("output.weight", m.output, o.vocab_size, o.dim);
  vector("output_norm.weight", m.output_norm);
  for (int32_t i = 0; i < o.n_layers; ++i) {
    const TinyModel::Layer& l = m.layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    vector(p + "attn_norm.weight", l.attn_norm);
    matrix(p + "attn_q.weight", l.wq, q_dim, o.dim);
    matrix(p + "attn_k.weight", l.wk, kv_dim, o.dim);
    matrix(p + "attn_v.weight", l.wv, kv_dim, o.dim);
    matrix(p + "attn_output.weight", l.wo, o.dim, q_dim);
    if (bias) {
      vector(p + "attn_q.bias", l.bq);
      vector(p + "attn_k.bias", l.bk);
      vector(p + "attn_v.bias", l.bv);
    }
    vector(p + "ffn_norm.weight", l.ffn_norm);
    matrix(p + "ffn_gate.weight", l.w_gate, o.ffn_dim, o.dim);
    matrix(p + "ffn_up.weight", l.w_up, o.ffn_dim, o.dim);
    matrix(p + "ffn_down.weight", l.w_down, o.dim, o.ffn_dim);
  }
  m.gguf = writer.Build();
  return m;
}

}  // namespace silo::testing
