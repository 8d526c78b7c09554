#include "engine/language_model.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace silo::engine {

absl::StatusOr<LanguageModel> LanguageModel::Open(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Open(path));
  absl::StatusOr<Tokenizer> tokenizer =
      model->gguf() != nullptr
          ? Tokenizer::FromGguf(*model->gguf())
          : Tokenizer::FromTokenizerJson(
                (std::filesystem::path(model->hf_dir()) / "tokenizer.json").string());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": tokenizer: ", tokenizer.status().message()));
  }
  if (tokenizer->vocab_size() > model->config().vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the tokenizer has ", tokenizer->vocab_size(),
                     " tokens but the model's vocabulary only ", model->config().vocab_size));
  }
  std::optional<ChatTemplate> chat_template;
  absl::StatusOr<ChatTemplate> detected = ChatTemplate::FromJinja(tokenizer->chat_template());
  if (detected.ok()) {
    chat_template = *std::move(detected);
  } else if (!absl::IsNotFound(detected.status())) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": chat template: ", detected.status().message()));
  }
  return LanguageModel(std::move(model), *std::move(tokenizer), std::move(chat_template));
}

std::vector<int32_t> LanguageModel::EncodeChat(std::span<const ChatMessage> messages) const {
  if (chat_template_.has_value()) {
    // The rendered text opens the conversation itself (Llama-3's <|begin_of_text|>), so no bos
    // is added, as transformers' apply_chat_template does.
    return tokenizer_.Encode(chat_template_->Render(messages, /*add_generation_prompt=*/true),
                             /*parse_special=*/true);
  }
  std::vector<int32_t> ids;
  if (tokenizer_.add_bos() && tokenizer_.bos_id().has_value()) ids.push_back(*tokenizer_.bos_id());
  if (!messages.empty()) {
    const std::vector<int32_t> text =
        tokenizer_.Encode(messages.back().content, /*parse_special=*/false);
    ids.insert(ids.end(), text.begin(), text.end());
  }
  return ids;
}

}  // namespace silo::engine
