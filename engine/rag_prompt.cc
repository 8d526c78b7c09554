#include "engine/rag_prompt.h"

#include <utility>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

void Append(std::vector<int32_t>* out, const std::vector<int32_t>& ids) {
  out->insert(out->end(), ids.begin(), ids.end());
}

}  // namespace

std::vector<int32_t> RagPrompt::Concatenated() const {
  std::vector<int32_t> out = prefix;
  for (const std::vector<int32_t>& chunk : chunks) Append(&out, chunk);
  Append(&out, suffix);
  return out;
}

absl::StatusOr<RagPromptBuilder> RagPromptBuilder::Create(const Tokenizer* tokenizer,
                                                          RagPromptOptions options) {
  SILO_ASSIGN_OR_RETURN(ChatTemplate chat_template,
                        ChatTemplate::FromJinja(tokenizer->chat_template()));
  return RagPromptBuilder(tokenizer, std::move(chat_template), std::move(options));
}

RagPromptBuilder RagPromptBuilder::Create(const Tokenizer* tokenizer, ChatTemplate chat_template,
                                          RagPromptOptions options) {
  return RagPromptBuilder(tokenizer, std::move(chat_template), std::move(options));
}

RagPromptBuilder::RagPromptBuilder(const Tokenizer* tokenizer, ChatTemplate chat_template,
                                   RagPromptOptions options)
    : tokenizer_(tokenizer), template_(std::move(chat_template)) {
  if (options.system_prompt.has_value()) {
    system_prompt_ = std::move(*options.system_prompt);
  } else if (template_.default_system().has_value()) {
    system_prompt_ = *template_.default_system();
  } else {
    system_prompt_ = std::string(kDefaultSystemPrompt);
  }
  // Markup is parsed for special tokens; the prompt texts (operator-given) are not.
  auto markup = [&](std::string_view text) { return tokenizer_->Encode(text, true); };
  auto plain = [&](std::string_view text) { return tokenizer_->Encode(text, false); };
  if (tokenizer_->add_bos() && tokenizer_->bos_id().has_value() &&
      template_.BeginConversation().empty()) {
    prefix_.push_back(*tokenizer_->bos_id());
  }
  Append(&prefix_, markup(StrCat(template_.BeginConversation(), template_.TurnHeader("system"))));
  Append(&prefix_, plain(StrCat(system_prompt_, "\n\n", options.documents_intro, "\n")));
  question_header_ = markup(StrCat(template_.TurnEnd(), template_.TurnHeader("user")));
  question_end_ = markup(StrCat(template_.TurnEnd(), template_.GenerationPrompt()));
}

std::vector<int32_t> RagPromptBuilder::EncodeChunk(std::string_view chunk) const {
  return tokenizer_->Encode(StrCat(chunk, "\n"), /*parse_special=*/false);
}

RagPrompt RagPromptBuilder::Build(std::string_view question,
                                  std::span<const std::string> chunks) const {
  RagPrompt prompt;
  prompt.prefix = prefix_;
  prompt.chunks.reserve(chunks.size());
  for (const std::string& chunk : chunks) prompt.chunks.push_back(EncodeChunk(chunk));
  prompt.suffix = question_header_;
  Append(&prompt.suffix, tokenizer_->Encode(question, /*parse_special=*/false));
  Append(&prompt.suffix, question_end_);
  return prompt;
}

}  // namespace silo::engine
