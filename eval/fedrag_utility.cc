#include "eval/fedrag_utility.h"

#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "eval/faq_questions.h"

namespace silo::eval {
namespace {

struct Setting {
  std::string name;
  v1::GenerationMode mode;
  v1::KvMode kv_mode;
  v1::DType kv_dtype;
  // Layers whose chunk attention is not delegated; nullopt: the federation's default.
  std::optional<uint32_t> protect_layers = 0;
};

}  // namespace

absl::Status RunFedRagUtility(const FedRagUtilityOptions& options, std::ostream& out,
                              std::ostream& log) {
  if (options.n_questions < 1 || options.max_tokens < 1 || options.top_k < 1) {
    return absl::InvalidArgumentError("questions, max-tokens and top-k must be positive");
  }
  log << "preparing " << options.federation.work_dir << " (certificates, ingest)\n";
  SILO_RETURN_IF_ERROR(LocalFederation::Prepare(options.federation, log));
  SILO_ASSIGN_OR_RETURN(const std::vector<FaqQuestion> faq,
                        LoadFaqQuestions(options.federation.docs_dir + "/faq"));
  if (static_cast<int>(faq.size()) < options.n_questions) {
    return absl::InvalidArgumentError(StrCat("the FAQ has only ", faq.size(), " questions"));
  }
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<LocalFederation> federation,
                        LocalFederation::Start(options.federation, 0, 0));

  const std::vector<Setting> settings = {
      {"local", v1::GENERATION_MODE_LOCAL, v1::KV_MODE_POSITION_INDEPENDENT, v1::DTYPE_F32},
      {"centralized", v1::GENERATION_MODE_CENTRALIZED, v1::KV_MODE_PREFILL, v1::DTYPE_F32},
      {"centralized-chunkwise", v1::GENERATION_MODE_CENTRALIZED, v1::KV_MODE_POSITION_INDEPENDENT,
       v1::DTYPE_F32},
      {"fedrag-shard f32", v1::GENERATION_MODE_FEDRAG, v1::KV_MODE_POSITION_INDEPENDENT,
       v1::DTYPE_F32},
      {"fedrag-shard f16", v1::GENERATION_MODE_FEDRAG, v1::KV_MODE_POSITION_INDEPENDENT,
       v1::DTYPE_F16},
      {"fedrag-prefill f32", v1::GENERATION_MODE_FEDRAG, v1::KV_MODE_PREFILL, v1::DTYPE_F32},
      {"fedrag-default f16", v1::GENERATION_MODE_FEDRAG, v1::KV_MODE_POSITION_INDEPENDENT,
       v1::DTYPE_F16, std::nullopt}};
  // Per setting: Σ log p and tokens over all questions; per question log-likelihoods.
  std::map<std::string, double> logprob;
  std::map<std::string, int64_t> tokens;
  std::map<std::string, std::vector<double>> per_question;
  const size_t stride = std::max<size_t>(1, faq.size() / static_cast<size_t>(options.n_questions));
  for (int q = 0; q < options.n_questions; ++q) {
    const FaqQuestion& question = faq[static_cast<size_t>(q) * stride];
    SILO_ASSIGN_OR_RETURN(const std::string answer, LoadAnswerText(question));
    for (const Setting& setting : settings) {
      v1::QueryRequest request =
          LocalQueryRequest(question.question, setting.mode, options.top_k, options.max_tokens);
      request.set_kv_mode(setting.kv_mode);
      request.set_kv_dtype(setting.kv_dtype);
      request.set_forced_answer(answer);
      if (setting.protect_layers.has_value()) {
        request.mutable_privacy()->set_protect_layers(*setting.protect_layers);
      }
      SILO_ASSIGN_OR_RETURN(const v1::QueryDone done, federation->Query(request));
      logprob[setting.name] += done.stats().forced_answer_logprob();
      tokens[setting.name] += done.stats().n_generated_tokens();
      per_question[setting.name].push_back(done.stats().forced_answer_logprob());
    }
    log << "  " << q + 1 << "/" << options.n_questions << ": " << question.question << "\n";
  }

  out << absl::StrFormat(
      "Gold-answer perplexity over %d Python FAQ questions (first %d tokens of each answer, "
      "top-%d chunks from three owners; the answers are in the owners' documents)\n",
      options.n_questions, options.max_tokens, options.top_k);
  out << absl::StrFormat("%-24s %10s %8s %26s %26s\n", "setting", "perplexity", "tokens",
                         "rel. diff vs chunkwise", "mean |dlogL| per question");
  const std::string reference = "centralized-chunkwise";
  const double reference_ppl = std::exp(-logprob[reference] / tokens[reference]);
  for (const Setting& setting : settings) {
    const double ppl = std::exp(-logprob[setting.name] / tokens[setting.name]);
    out << absl::StrFormat("%-24s %10.4f %8d", setting.name, ppl, tokens[setting.name]);
    if (setting.mode == v1::GENERATION_MODE_FEDRAG) {
      double diff = 0;
      for (size_t i = 0; i < per_question[setting.name].size(); ++i) {
        diff += std::abs(per_question[setting.name][i] - per_question[reference][i]);
      }
      out << absl::StrFormat(" %26.2e %26.2e", std::abs(ppl - reference_ppl) / reference_ppl,
                             diff / options.n_questions);
    }
    out << "\n";
  }
  return absl::OkStatus();
}

}  // namespace silo::eval
