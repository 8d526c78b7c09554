// libFuzzer target: any bytes given as a GGUF model file give a model and a tokenizer, or an
// error, never a crash, leak or undefined behaviour (built with ASan and UBSan by scripts/fuzz).
// What loads is used the way a node uses it: a two-token forward pass when the model is small
// enough to be quick, and a round trip of text through the tokenizer.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/gguf_file.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/thread_pool.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"

namespace {

void RunTwoTokens(const silo::engine::Model& model) {
  const silo::engine::ModelConfig& c = model.config();
  // Loading checked every tensor against the file's size; this bounds the work per input.
  if (static_cast<int64_t>(c.n_layers) * c.dim * (c.ffn_dim + c.q_dim()) > (1 << 20) ||
      static_cast<int64_t>(c.vocab_size) * c.dim > (1 << 20)) {
    return;
  }
  static silo::engine::ThreadPool pool(1);
  silo::engine::Transformer transformer(model, pool);
  silo::engine::KvCache cache(c, silo::attention::KvDType::kF16, 2);
  const int32_t tokens[2] = {0, c.vocab_size - 1};
  const int32_t positions[2] = {0, 1};
  silo::engine::SequenceInput input{.sequence = cache.NewSequence(),
                                    .tokens = tokens,
                                    .positions = positions,
                                    .logits = silo::engine::LogitsWanted::kAll};
  std::vector<float> logits;
  (void)transformer.Forward({&input, 1}, cache, logits);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  if (auto file = silo::engine::GgufFile::Parse(bytes, "fuzz"); file.ok()) {
    if (auto tokenizer = silo::engine::Tokenizer::FromGguf(*file); tokenizer.ok()) {
      const std::vector<int32_t> ids =
          tokenizer->Encode("Hello, wörld! 123 <|im_start|>  \n\tcode()", /*parse_special=*/true);
      (void)tokenizer->Decode(ids);
    }
  }
  if (auto file = silo::engine::GgufFile::Parse(bytes, "fuzz"); file.ok()) {
    if (auto model = silo::engine::Model::FromGguf(*std::move(file)); model.ok()) {
      RunTwoTokens(**model);
    }
  }
  return 0;
}
