// Tiny decoders with random f32 weights, written as GGUF files, for tests that need a model but
// not a real one. The weights are kept beside the file so that a test can run a plain reference
// implementation on them.
#ifndef SILO_TESTS_TESTING_TINY_MODEL_H_
#define SILO_TESTS_TESTING_TINY_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace silo::testing {

struct TinyModelOptions {
  std::string architecture = "llama";  // "llama" or "qwen2" (QKV biases)
  int32_t n_layers = 2;
  int32_t dim = 64;
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t ffn_dim = 96;
  int32_t vocab_size = 96;
  bool tied_embeddings = true;
  float rope_theta = 10000.0f;
  uint64_t seed = 1;
};

struct TinyModel {
  struct Layer {
    // Matrices [rows (out), cols (in)], row-major.
    std::vector<float> attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
  };
  TinyModelOptions options;
  std::vector<float> token_embedding;  // [vocab_size, dim]
  std::vector<float> output;           // [vocab_size, dim] (a copy of the embedding when tied)
  std::vector<float> output_norm;      // [dim]
  std::vector<Layer> layers;
  std::string gguf;  // the model as a GGUF file (F32 tensors)
};

TinyModel MakeTinyModel(const TinyModelOptions& options);

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_TINY_MODEL_H_
