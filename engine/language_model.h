// A model opened with everything needed to talk to it: weights, tokenizer and chat template,
// found from one path (a .gguf file carries all three; a Hugging Face folder has
// tokenizer.json and tokenizer_config.json beside the weights).
//
// Thread-safety: immutable after Open.
#ifndef SILO_ENGINE_LANGUAGE_MODEL_H_
#define SILO_ENGINE_LANGUAGE_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace silo::engine {

class LanguageModel {
 public:
  // The errors of Model::Open and of the tokenizer's loader; InvalidArgument when the tokenizer's
  // vocabulary is larger than the model's or the chat template is of an unknown family.
  static absl::StatusOr<LanguageModel> Open(const std::string& path);

  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  // nullopt when the model file has no chat template (a base model).
  const std::optional<ChatTemplate>& chat_template() const { return chat_template_; }

  // Token ids of a conversation rendered with the chat template and followed by the assistant's
  // turn header, or of the last message's content alone (with bos when the model wants it) for a
  // model without a template.
  std::vector<int32_t> EncodeChat(std::span<const ChatMessage> messages) const;

 private:
  LanguageModel(std::unique_ptr<Model> model, Tokenizer tokenizer,
                std::optional<ChatTemplate> chat_template)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        chat_template_(std::move(chat_template)) {}

  std::unique_ptr<Model> model_;
  Tokenizer tokenizer_;
  std::optional<ChatTemplate> chat_template_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_LANGUAGE_MODEL_H_
