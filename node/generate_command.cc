#include "node/generate_command.h"

#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "engine/language_model.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"

namespace silo::node {
namespace {

absl::Status ValidateOptions(const GenerateCommandOptions& options) {
  if (options.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  if (options.prompt.empty()) return absl::InvalidArgumentError("--prompt must not be empty");
  if (options.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-tokens must be at least 1, not ", options.max_tokens));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads must be 0 (every core) or positive, not ", options.threads));
  }
  return engine::ValidateSamplingParams(options.sampling);
}

}  // namespace

absl::Status RunGenerate(const GenerateCommandOptions& options, std::ostream& out) {
  SILO_RETURN_IF_ERROR(ValidateOptions(options));
  SILO_ASSIGN_OR_RETURN(const engine::LanguageModel language_model,
                        engine::LanguageModel::Open(options.model_path));
  std::vector<engine::ChatMessage> messages;
  if (options.system.has_value()) messages.push_back({"system", *options.system});
  messages.push_back({"user", options.prompt});
  const std::vector<int32_t> prompt = language_model.EncodeChat(messages);

  const engine::ModelConfig& config = language_model.model().config();
  const int64_t needed = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  if (config.n_ctx_train > 0 && needed > config.n_ctx_train) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the prompt (", prompt.size(), " tokens) and --max-tokens ", options.max_tokens,
        " exceed the model's context of ", config.n_ctx_train, " tokens"));
  }
  engine::ThreadPool pool(options.threads);
  engine::Transformer transformer(language_model.model(), pool);
  engine::KvCache cache(config, attention::KvDType::kF16, needed);
  const engine::SequenceId sequence = cache.NewSequence();

  const engine::Tokenizer& tokenizer = language_model.tokenizer();
  engine::StreamingDecoder decoder(&tokenizer);
  // The callback ends generation at an end-of-generation token, so no stop list is needed.
  const engine::GenerateOptions generate_options{.sampling = options.sampling,
                                                 .max_tokens = options.max_tokens,
                                                 .stop_tokens = {},
                                                 .first_position = std::nullopt,
                                                 .hook = nullptr,
                                                 .forced_tokens = {}};
  absl::Status decode_status;
  SILO_ASSIGN_OR_RETURN(const engine::GenerateStats stats,
                        engine::Generate(transformer, cache, sequence, prompt, generate_options,
                                         [&](const engine::SampledToken& token) {
                                           if (tokenizer.IsEndOfGeneration(token.id)) return false;
                                           absl::StatusOr<std::string> text =
                                               decoder.Push(token.id);
                                           if (!text.ok()) {
                                             decode_status = text.status();
                                             return false;
                                           }
                                           out << *text << std::flush;
                                           return true;
                                         }));
  SILO_RETURN_IF_ERROR(decode_status);
  out << decoder.Flush() << "\n"
      << absl::StrFormat("prefill %.1f tok/s, decode %.1f tok/s", stats.PrefillTokensPerSecond(),
                         stats.DecodeTokensPerSecond())
      << std::endl;
  return absl::OkStatus();
}

}  // namespace silo::node
