// Builds the token segments of DESIGN.md §6's virtual context
// [system][chunk_1]...[chunk_m][question][generated...] as one chat prompt:
//
//   prefix    BeginConversation + TurnHeader("system") + system prompt + "\n\n"
//             + documents intro + "\n"
//   chunk_i   chunk text + "\n"              (one list per chunk, tokenized on its own)
//   suffix    TurnEnd + TurnHeader("user") + question + TurnEnd + GenerationPrompt
//
// e.g. for ChatML: "<|im_start|>system\nYou are ...\n\nUse the following documents to answer
// the question.\n" [chunk_1 "\n"] ... [chunk_m "\n"] "<|im_end|>\n<|im_start|>user\n
// {question}<|im_end|>\n<|im_start|>assistant\n".
//
// A chunk's segment depends on its text alone (not on its place or on the other chunks), so an
// owner can compute its tokens and KV once at ingest (EncodeChunk) and the querier gets the same
// tokens. Segments are tokenized separately: their concatenation decodes to the rendered chat
// prompt exactly. Each segment ends with a single "\n", where every supported pre-tokenizer cuts
// when the next text starts with a non-space, so for chunks that neither start nor end with
// whitespace the ids equal those of tokenizing the whole prompt.
// Chunk and question text are untrusted: special-token text inside them ("<|im_end|>") is
// encoded as plain text, never as a special token. The template's markup is parsed as special.
//
// Thread-safe: a RagPromptBuilder is immutable; the tokenizer must outlive it.
#ifndef SILO_ENGINE_RAG_PROMPT_H_
#define SILO_ENGINE_RAG_PROMPT_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"

namespace silo::engine {

struct RagPromptOptions {
  // The system prompt; nullopt: the template's default system message, or
  // kDefaultSystemPrompt when it has none.
  std::optional<std::string> system_prompt;
  std::string documents_intro = "Use the following documents to answer the question.";
};

inline constexpr std::string_view kDefaultSystemPrompt = "You are a helpful assistant.";

struct RagPrompt {
  std::vector<int32_t> prefix;               // [system] (BOS first when the model adds one)
  std::vector<std::vector<int32_t>> chunks;  // [m][n_tokens of chunk i]
  std::vector<int32_t> suffix;               // [question] and the assistant's turn header

  // prefix, chunks in order, suffix: the prompt the model reads.
  std::vector<int32_t> Concatenated() const;
};

class RagPromptBuilder {
 public:
  // The chat template is the tokenizer's (see ChatTemplate::FromJinja for the codes returned
  // when it is missing or unsupported).
  static absl::StatusOr<RagPromptBuilder> Create(const Tokenizer* tokenizer,
                                                 RagPromptOptions options = {});
  // With an explicit template.
  static RagPromptBuilder Create(const Tokenizer* tokenizer, ChatTemplate chat_template,
                                 RagPromptOptions options = {});

  // The segments for `question` and `chunks` (chunk texts, in context order; may be empty).
  RagPrompt Build(std::string_view question, std::span<const std::string> chunks) const;

  // The token list of one chunk's segment (what Build puts in RagPrompt::chunks).
  std::vector<int32_t> EncodeChunk(std::string_view chunk) const;

  const ChatTemplate& chat_template() const { return template_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // The system prompt in use.
  const std::string& system_prompt() const { return system_prompt_; }

 private:
  RagPromptBuilder(const Tokenizer* tokenizer, ChatTemplate chat_template,
                   RagPromptOptions options);

  const Tokenizer* tokenizer_;
  ChatTemplate template_;
  std::string system_prompt_;
  std::vector<int32_t> prefix_;           // constant: computed once
  std::vector<int32_t> question_header_;  // TurnEnd + TurnHeader("user")
  std::vector<int32_t> question_end_;     // TurnEnd + GenerationPrompt
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_RAG_PROMPT_H_
