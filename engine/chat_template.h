// Chat templates: renders a conversation into the prompt text a chat model was trained on. Two
// families are known, detected from the model's Jinja template (tokenizer.chat_template) by
// their markers, not by running Jinja:
//
//   kChatMl  (SmolLM2, Qwen2)  <|im_start|>{role}\n{content}<|im_end|>\n ...
//                              generation prompt <|im_start|>assistant\n
//            A default system message that the template inserts when the conversation has none
//            (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
//            is taken from the template text and inserted the same way.
//   kLlama3                    <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n
//                              {content, trimmed}<|eot_id|> ...
//                              generation prompt <|start_header_id|>assistant<|end_header_id|>\n\n
//            (Llama-3.1's "Cutting Knowledge Date" system preamble is not reproduced.)
//
// The rendered text holds special tokens as text: encode it with parse_special = true.
//
// Thread-safe: a ChatTemplate is immutable.
#ifndef SILO_ENGINE_CHAT_TEMPLATE_H_
#define SILO_ENGINE_CHAT_TEMPLATE_H_

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace silo::engine {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

class ChatTemplate {
 public:
  enum class Kind { kChatMl, kLlama3 };

  // Detects the family of a Jinja chat template. NotFound when `jinja` is empty (the model has
  // no template); InvalidArgument when it is neither ChatML nor Llama-3.
  static absl::StatusOr<ChatTemplate> FromJinja(std::string_view jinja);
  // A template of `kind`, with an optional default system message (ChatML only).
  static ChatTemplate Of(Kind kind, std::optional<std::string> default_system = std::nullopt);

  Kind kind() const { return kind_; }
  // The system message added when a conversation starts without one (nullopt: none is added).
  const std::optional<std::string>& default_system() const { return default_system_; }

  // The prompt text of `messages`, followed by the assistant's turn header when
  // `add_generation_prompt`.
  std::string Render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

  // Pieces of the format, for prompts assembled from separately tokenized parts
  // (RagPromptBuilder): Render() is BeginConversation() then, per message,
  // TurnHeader(role) + content + TurnEnd(), then GenerationPrompt().
  std::string BeginConversation() const;  // "" (ChatML) or "<|begin_of_text|>" (Llama-3)
  std::string TurnHeader(std::string_view role) const;
  std::string TurnEnd() const;
  std::string GenerationPrompt() const { return TurnHeader("assistant"); }

 private:
  ChatTemplate(Kind kind, std::optional<std::string> default_system)
      : kind_(kind), default_system_(std::move(default_system)) {}

  Kind kind_;
  std::optional<std::string> default_system_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_CHAT_TEMPLATE_H_
