#include "engine/chat_template.h"

#include <utility>

#include "absl/status/status.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

// The default system message of a ChatML template: the text of a literal
// '<|im_start|>system\n...<|im_end|>' that the template emits (SmolLM2 and Qwen2 emit it when
// messages[0] is not a system message). The "\n" may be a real newline or Jinja's escape.
std::optional<std::string> DefaultSystemOf(std::string_view jinja) {
  constexpr std::string_view kHeader = "<|im_start|>system";
  for (size_t pos = jinja.find(kHeader); pos != std::string_view::npos;
       pos = jinja.find(kHeader, pos + 1)) {
    std::string_view rest = jinja.substr(pos + kHeader.size());
    if (rest.starts_with("\n")) {
      rest.remove_prefix(1);
    } else if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else {
      continue;
    }
    const size_t end = rest.find("<|im_end|>");
    if (end == std::string_view::npos) continue;
    const std::string_view text = rest.substr(0, end);
    // A literal system message holds no Jinja expression or string quote.
    if (text.empty() || text.find_first_of("'\"{}") != std::string_view::npos) continue;
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == 'n') {
        out.push_back('\n');
        ++i;
      } else {
        out.push_back(text[i]);
      }
    }
    return out;
  }
  return std::nullopt;
}

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(std::string_view jinja) {
  if (jinja.empty()) return absl::NotFoundError("the model has no chat template");
  if (jinja.find("<|im_start|>") != std::string_view::npos &&
      jinja.find("<|im_end|>") != std::string_view::npos) {
    return ChatTemplate(Kind::kChatMl, DefaultSystemOf(jinja));
  }
  if (jinja.find("<|start_header_id|>") != std::string_view::npos &&
      jinja.find("<|end_header_id|>") != std::string_view::npos &&
      jinja.find("<|eot_id|>") != std::string_view::npos) {
    return ChatTemplate(Kind::kLlama3, std::nullopt);
  }
  return absl::InvalidArgumentError(
      StrCat("unsupported chat template (neither ChatML nor Llama-3): ",
             jinja.substr(0, std::min<size_t>(jinja.size(), 80)), "..."));
}

ChatTemplate ChatTemplate::Of(Kind kind, std::optional<std::string> default_system) {
  if (kind != Kind::kChatMl) default_system.reset();
  return ChatTemplate(kind, std::move(default_system));
}

std::string ChatTemplate::BeginConversation() const {
  return kind_ == Kind::kLlama3 ? "<|begin_of_text|>" : "";
}

std::string ChatTemplate::TurnHeader(std::string_view role) const {
  if (kind_ == Kind::kLlama3) return StrCat("<|start_header_id|>", role, "<|end_header_id|>\n\n");
  return StrCat("<|im_start|>", role, "\n");
}

std::string ChatTemplate::TurnEnd() const {
  return kind_ == Kind::kLlama3 ? "<|eot_id|>" : "<|im_end|>\n";
}

std::string ChatTemplate::Render(std::span<const ChatMessage> messages,
                                 bool add_generation_prompt) const {
  std::string out = BeginConversation();
  if (default_system_.has_value() && !messages.empty() && messages[0].role != "system") {
    out += TurnHeader("system") + *default_system_ + TurnEnd();
  }
  for (const ChatMessage& m : messages) {
    const std::string_view content = kind_ == Kind::kLlama3 ? Trim(m.content) : m.content;
    out += TurnHeader(m.role);
    out.append(content);
    out += TurnEnd();
  }
  if (add_generation_prompt) out += GenerationPrompt();
  return out;
}

}  // namespace silo::engine
