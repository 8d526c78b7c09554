#include "eval/privacy_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/half.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "coordinator/coordinator_state.h"
#include "engine/transformer.h"
#include "eval/faq_questions.h"
#include "eval/privacy_plots.h"
#include "eval/retrieval_eval.h"
#include "retrieval/knowledge_base.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

constexpr char kPublicText[] = "/usr/share/common-licenses/GPL-3";

v1::PrivacySettings Privacy(v1::KeyScope scope, v1::Mixer mixer, uint32_t protect_layers,
                            v1::ProtectMode mode) {
  v1::PrivacySettings privacy;
  privacy.set_key_scope(scope);
  privacy.set_mixer(mixer);
  privacy.set_block_rows(scope == v1::KEY_SCOPE_BLOCK ? 64 : 0);
  privacy.set_protect_layers(protect_layers);
  privacy.set_protect_mode(protect_layers > 0 ? mode : v1::PROTECT_MODE_SKIP);
  return privacy;
}

std::string ScopeName(v1::KeyScope scope) {
  switch (scope) {
    case v1::KEY_SCOPE_CHUNK:
      return "chunk";
    case v1::KEY_SCOPE_BLOCK:
      return "block64";
    default:
      return "session";
  }
}

// The settings swept: three baselines, then FedRAG's knobs.
std::vector<SettingResult> SweptSettings(bool smoke) {
  std::vector<SettingResult> settings;
  const auto baseline = [&](std::string name, ViewKind kind, uint32_t layer) {
    SettingResult& result = settings.emplace_back();
    result.setting.name = std::move(name);
    result.setting.kind = kind;
    result.setting.privacy =
        Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS, layer, v1::PROTECT_MODE_SKIP);
    result.protect_mode = "none";
  };
  baseline("baseline plaintext", ViewKind::kPlaintext, 0);
  baseline("baseline permutation", ViewKind::kPermutation, 0);
  baseline("baseline orthogonal", ViewKind::kOrthogonal, 0);
  if (!smoke) {
    // Plaintext at the layers protect_layers exposes: what the attacks would get there if the
    // scrambler were broken (an upper bound for attack 3, which goes after Φ itself).
    for (const uint32_t layer : {1u, 2u, 4u}) {
      baseline(StrCat("baseline plaintext layer ", layer), ViewKind::kPlaintext, layer);
    }
  }
  const auto fedrag = [&](v1::KeyScope scope, v1::Mixer mixer, uint32_t n, v1::ProtectMode mode) {
    const std::string protect_mode = n == 0                          ? "none"
                                     : mode == v1::PROTECT_MODE_SKIP ? "skip"
                                                                     : "owner";
    const std::string name =
        StrCat("fedrag ", ScopeName(scope), " ", mixer == v1::MIXER_DENSE ? "dense" : "sphps",
               " protect ", n, n == 0 ? "" : StrCat(" ", protect_mode));
    for (const SettingResult& known : settings) {
      if (known.setting.name == name) return;
    }
    SettingResult& result = settings.emplace_back();
    result.protect_mode = protect_mode;
    result.setting.kind = ViewKind::kFedRag;
    result.setting.privacy = Privacy(scope, mixer, n, mode);
    result.setting.name = name;
  };
  if (smoke) {
    const v1::PrivacySettings defaults = coordinator::DefaultPrivacySettings();
    fedrag(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS, 0, v1::PROTECT_MODE_SKIP);  // the paper's
    fedrag(defaults.key_scope(), defaults.mixer(), defaults.protect_layers(),
           defaults.protect_mode());
    fedrag(defaults.key_scope(), defaults.mixer(), std::max(1u, defaults.protect_layers()),
           v1::PROTECT_MODE_OWNER);
    return settings;
  }
  for (const uint32_t n : {0u, 1u, 2u, 4u}) {
    for (const v1::ProtectMode mode : {v1::PROTECT_MODE_SKIP, v1::PROTECT_MODE_OWNER}) {
      if (n == 0 && mode == v1::PROTECT_MODE_OWNER) continue;
      for (const v1::KeyScope scope :
           {v1::KEY_SCOPE_SESSION, v1::KEY_SCOPE_CHUNK, v1::KEY_SCOPE_BLOCK}) {
        for (const v1::Mixer mixer : {v1::MIXER_SPHPS, v1::MIXER_DENSE}) {
          fedrag(scope, mixer, n, mode);
        }
      }
    }
  }
  return settings;
}

// Token ids of a public text, most frequent first.
absl::StatusOr<std::vector<int32_t>> PublicTokensByFrequency(const engine::Tokenizer& tokenizer) {
  std::ifstream file(kPublicText);
  if (!file) return absl::NotFoundError(StrCat("cannot read ", kPublicText));
  std::stringstream text;
  text << file.rdbuf();
  std::map<int32_t, int64_t> counts;
  for (const int32_t token : tokenizer.Encode(text.str(), /*parse_special=*/false)) ++counts[token];
  std::vector<std::pair<int64_t, int32_t>> ranked;
  ranked.reserve(counts.size());
  for (const auto& [token, count] : counts) ranked.emplace_back(-count, token);
  std::sort(ranked.begin(), ranked.end());
  std::vector<int32_t> tokens;
  tokens.reserve(ranked.size());
  for (const auto& [count, token] : ranked) tokens.push_back(token);
  return tokens;
}

// Adds `attacks` into `into`, matching by attack and target.
void Accumulate(const std::vector<AttackResult>& attacks, std::vector<AttackResult>& into) {
  for (const AttackResult& attack : attacks) {
    auto found = std::find_if(into.begin(), into.end(), [&](const AttackResult& known) {
      return known.attack == attack.attack && known.target == attack.target;
    });
    if (found == into.end()) {
      into.push_back(attack);
    } else {
      found->recovered.Add(attack.recovered);
      found->chance.Add(attack.chance);
    }
  }
}

double Percent(int64_t part, int64_t whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

// Sentences of the embedding-inversion pool: every FAQ question, then sentences of the Python
// tutorial, up to `limit`.
std::vector<std::string> SentencePool(const std::vector<FaqQuestion>& faq,
                                      const std::string& docs_dir, size_t limit) {
  std::vector<std::string> pool;
  pool.reserve(faq.size());
  for (const FaqQuestion& question : faq) pool.push_back(question.question);
  std::vector<fs::path> files;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(fs::path(docs_dir) / "tutorial", error)) {
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& path : files) {
    std::ifstream file(path);
    std::string line, sentence;
    while (pool.size() < limit && std::getline(file, line)) {
      for (const char c : line) {
        sentence += c;
        if ((c == '.' || c == '?') && sentence.size() > 20) {
          pool.push_back(sentence);
          sentence.clear();
        }
      }
      sentence += ' ';
      if (sentence.size() > 400) sentence.clear();
    }
  }
  if (pool.size() > limit) pool.resize(limit);
  return pool;
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// The default, in this order of preference:
//   1. the cheapest FedRAG setting (per-token latency) whose perplexity rises by at most 1% and
//      under which every attack the knobs control is at most chance + 1 point top-1;
//   2. a trade-off: among the settings that keep every attack needing only the open weights at
//      most chance + 1 point, the one with the smallest perplexity cost (within 0.2 points of
//      it, the cheapest);
//   3. the setting whose strongest attack exceeds chance the least.
void ChooseDefault(PrivacyEvalResult& result) {
  const auto excess = [](const SettingResult& setting, bool with_pool) {
    double most = 0;
    for (const AttackResult& attack : setting.attacks) {
      if (!IsControlledByPrivacySettings(attack) || (!with_pool && NeedsDocumentPool(attack))) {
        continue;
      }
      most = std::max(most, Percent(attack.recovered.top1, attack.recovered.n) -
                                Percent(attack.chance.top1, attack.chance.n));
    }
    return most;
  };
  // A lower perplexity than the reference is no cost.
  const auto cost = [](const SettingResult& setting) {
    return std::max(0.0, 100 * (setting.perplexity / setting.reference_perplexity - 1.0));
  };
  std::vector<const SettingResult*> measured;
  for (const SettingResult& setting : result.settings) {
    if (setting.setting.kind == ViewKind::kFedRag && setting.perplexity >= 0) {
      measured.push_back(&setting);
    }
  }
  if (measured.empty()) {
    result.default_reason = "not chosen: no setting has a measured utility cost";
    return;
  }
  const auto cheapest = [](const std::vector<const SettingResult*>& settings) {
    return *std::min_element(settings.begin(), settings.end(),
                             [](const SettingResult* a, const SettingResult* b) {
                               return a->ms_per_token < b->ms_per_token;
                             });
  };
  std::vector<const SettingResult*> eligible;
  for (const SettingResult* setting : measured) {
    if (cost(*setting) <= 1.0 && excess(*setting, true) <= 1.0) eligible.push_back(setting);
  }
  if (!eligible.empty()) {
    result.chosen_default = cheapest(eligible)->setting.name;
    result.default_reason =
        "the cheapest setting (per-token latency) within 1% perplexity under which every attack "
        "the knobs control is at most chance + 1 point top-1";
    return;
  }
  for (const SettingResult* setting : measured) {
    if (excess(*setting, false) <= 1.0) eligible.push_back(setting);
  }
  if (!eligible.empty()) {
    double least_cost = cost(*eligible.front());
    for (const SettingResult* setting : eligible) least_cost = std::min(least_cost, cost(*setting));
    std::erase_if(eligible,
                  [&](const SettingResult* setting) { return cost(*setting) > least_cost + 0.2; });
    const SettingResult& chosen = *cheapest(eligible);
    result.chosen_default = chosen.setting.name;
    result.default_reason = absl::StrFormat(
        "a trade-off, as no setting meets the thresholds: it keeps every attack that needs only "
        "the open weights at most chance + 1 point top-1 at the smallest perplexity cost of such "
        "settings (%.1f%%); attacks holding a pool of the documents still recover up to %.1f "
        "points above chance under it",
        cost(chosen), excess(chosen, true));
    return;
  }
  const SettingResult* least = measured.front();
  for (const SettingResult* setting : measured) {
    if (excess(*setting, true) < excess(*least, true)) least = setting;
  }
  result.chosen_default = least->setting.name;
  result.default_reason = absl::StrFormat(
      "a trade-off, as no setting meets the thresholds: its strongest attack exceeds chance the "
      "least (%.1f points top-1)",
      excess(*least, true));
}

void PrintTable(const PrivacyEvalResult& result, int n_questions, std::ostream& out);

absl::Status WriteReports(const PrivacyEvalOptions& options, const PrivacyEvalResult& result,
                          int n_questions) {
  std::error_code error;
  fs::create_directories(options.out_dir, error);
  std::ofstream csv(fs::path(options.out_dir) / "privacy.csv");
  csv << "setting,protect_mode,layer,attack,target,rows,top1,top5,chance_top1,chance_top5,"
         "perplexity,reference_perplexity,bytes_per_token,ms_per_token\n";
  std::ofstream json(fs::path(options.out_dir) / "privacy.json");
  json << "{\n  \"questions\": " << n_questions << ",\n  \"default\": \""
       << JsonEscape(result.chosen_default) << "\",\n  \"default_reason\": \""
       << JsonEscape(result.default_reason) << "\",\n  \"settings\": [\n";
  for (size_t s = 0; s < result.settings.size(); ++s) {
    const SettingResult& setting = result.settings[s];
    json << "    {\"name\": \"" << JsonEscape(setting.setting.name) << "\", \"protect_mode\": \""
         << setting.protect_mode << "\", \"layer\": " << setting.setting.privacy.protect_layers()
         << absl::StrFormat(
                ", \"perplexity\": %.6g, \"reference_perplexity\": %.6g, "
                "\"bytes_per_token\": %.6g, \"ms_per_token\": %.6g",
                setting.perplexity, setting.reference_perplexity, setting.bytes_per_token,
                setting.ms_per_token)
         << ", \"attacks\": [";
    for (size_t a = 0; a < setting.attacks.size(); ++a) {
      const AttackResult& attack = setting.attacks[a];
      json << (a == 0 ? "" : ", ")
           << absl::StrFormat(
                  "{\"attack\": \"%s\", \"target\": \"%s\", \"rows\": %d, \"top1\": %d, "
                  "\"top5\": %d, \"chance_top1\": %d, \"chance_top5\": %d}",
                  attack.attack, attack.target, attack.recovered.n, attack.recovered.top1,
                  attack.recovered.top5, attack.chance.top1, attack.chance.top5);
      csv << absl::StrFormat(
          "\"%s\",%s,%d,%s,%s,%d,%d,%d,%d,%d,%.6g,%.6g,%.6g,%.6g\n", setting.setting.name,
          setting.protect_mode, setting.setting.privacy.protect_layers(), attack.attack,
          attack.target, attack.recovered.n, attack.recovered.top1, attack.recovered.top5,
          attack.chance.top1, attack.chance.top5, setting.perplexity, setting.reference_perplexity,
          setting.bytes_per_token, setting.ms_per_token);
    }
    json << "]}" << (s + 1 < result.settings.size() ? "," : "") << "\n";
  }
  json << "  ]\n}\n";
  std::ofstream markdown(fs::path(options.out_dir) / "privacy.md");
  PrintTable(result, n_questions, markdown);
  if (!csv || !json || !markdown) {
    return absl::InternalError(StrCat("cannot write under ", options.out_dir));
  }
  return WritePrivacyPlots(result, options.out_dir);
}

void PrintTable(const PrivacyEvalResult& result, int n_questions, std::ostream& out) {
  out << absl::StrFormat("# Privacy of FedRAG: tokens recovered by each attack (%d questions)\n\n",
                         n_questions);
  out << "| setting | layer seen | attack | target | rows | top-1 % | top-5 % | chance top-1 % | "
         "chance top-5 % | perplexity (ref) | bytes/token | ms/token |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const SettingResult& setting : result.settings) {
    for (const AttackResult& attack : setting.attacks) {
      out << absl::StrFormat("| %s | %d | %s | %s | %d | %.1f | %.1f | %.1f | %.1f | ",
                             setting.setting.name, setting.setting.privacy.protect_layers(),
                             attack.attack, attack.target, attack.recovered.n,
                             Percent(attack.recovered.top1, attack.recovered.n),
                             Percent(attack.recovered.top5, attack.recovered.n),
                             Percent(attack.chance.top1, attack.chance.n),
                             Percent(attack.chance.top5, attack.chance.n));
      if (setting.perplexity >= 0) {
        out << absl::StrFormat("%.3f (%.3f) | %.0f | %.1f |\n", setting.perplexity,
                               setting.reference_perplexity, setting.bytes_per_token,
                               setting.ms_per_token);
      } else {
        out << "— | — | — |\n";
      }
    }
  }
  out << "\nDefault: " << (result.chosen_default.empty() ? "none" : result.chosen_default) << " — "
      << result.default_reason << "\n";
}

// The attack corpus (the FAQ in one store; each session deals its chunks to three owners) and
// the decoder that runs the plaintext sessions.
struct AttackCorpus {
  std::vector<FaqQuestion> faq;
  std::unique_ptr<retrieval::KnowledgeBase> base;
  std::unique_ptr<engine::ThreadPool> pool;
  std::unique_ptr<engine::Transformer> transformer;
  std::optional<engine::RagPromptBuilder> prompts;

  // InvalidArgument when the FAQ has fewer than `n_questions` questions.
  static absl::StatusOr<AttackCorpus> Open(const PrivacyEvalOptions& options, int n_questions,
                                           std::ostream& log) {
    AttackCorpus corpus;
    const std::string faq_dir = options.federation.docs_dir + "/faq";
    SILO_ASSIGN_OR_RETURN(corpus.faq, LoadFaqQuestions(faq_dir));
    if (static_cast<int>(corpus.faq.size()) < n_questions) {
      return absl::InvalidArgumentError(
          StrCat("the FAQ has only ", corpus.faq.size(), " questions"));
    }
    retrieval::KnowledgeBaseOptions kb;
    kb.data_dir = options.corpus_dir;
    kb.decoder_model = options.federation.decoder_model;
    kb.embedder_model = options.federation.embedder_model;
    kb.kv_shards = retrieval::KvShardMode::kOff;
    kb.threads = options.threads;
    SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key, EvalNodeKey(kb.data_dir));
    SILO_ASSIGN_OR_RETURN(corpus.base, retrieval::KnowledgeBase::Open(kb, key));
    log << "ingesting " << faq_dir << " into " << kb.data_dir << "\n";
    SILO_RETURN_IF_ERROR(corpus.base->Ingest(std::vector<std::string>{faq_dir}).status());
    const engine::LanguageModel& decoder = corpus.base->decoder();
    corpus.pool = std::make_unique<engine::ThreadPool>(options.threads);
    corpus.transformer = std::make_unique<engine::Transformer>(decoder.model(), *corpus.pool);
    SILO_ASSIGN_OR_RETURN(corpus.prompts, engine::RagPromptBuilder::Create(&decoder.tokenizer()));
    return corpus;
  }

  // Question i of n, spread over the FAQ.
  const FaqQuestion& Question(int i, int n) const {
    const size_t stride = std::max<size_t>(1, faq.size() / static_cast<size_t>(n));
    return faq[static_cast<size_t>(i) * stride % faq.size()];
  }

  // The plaintext session of `question` over its top_k chunks.
  absl::StatusOr<PlainSessionStates> Record(const FaqQuestion& question, int top_k,
                                            int decode_steps,
                                            const std::vector<int32_t>& layers) const {
    SILO_ASSIGN_OR_RETURN(const std::vector<retrieval::SearchHit> hits,
                          base->Search(question.question, top_k));
    std::vector<std::string> chunks;
    chunks.reserve(hits.size());
    for (const retrieval::SearchHit& hit : hits) chunks.push_back(hit.text);
    PlainSessionOptions session_options;
    session_options.decode_steps = decode_steps;
    session_options.layers = layers;
    return RecordPlainSession(*transformer, *prompts, question.question, chunks, session_options);
  }
};

struct CostFigures {
  double perplexity = 0, bytes_per_token = 0, ms_per_token = 0;
};

// Gold-answer perplexity, bytes and per-token latency of every FedRAG setting end to end over a
// LocalFederation, and the perplexity of the plaintext computation of the same chunks
// (centralized, each chunk's KV alone) as their reference. A setting the nodes do not implement
// keeps its negative figures (logged).
absl::Status MeasurePrivacyCost(const PrivacyEvalOptions& options,
                                const std::vector<FaqQuestion>& faq, PrivacyEvalResult& result,
                                std::ostream& log) {
  log << "end-to-end cost: preparing " << options.federation.work_dir << "\n";
  SILO_RETURN_IF_ERROR(LocalFederation::Prepare(options.federation, log));
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<LocalFederation> federation,
                        LocalFederation::Start(options.federation, 0, 0));
  std::vector<std::pair<std::string, std::string>> questions;  // question, gold answer
  const size_t stride =
      std::max<size_t>(1, faq.size() / static_cast<size_t>(std::max(1, options.cost_questions)));
  for (int q = 0; q < options.cost_questions && static_cast<size_t>(q) * stride < faq.size(); ++q) {
    const FaqQuestion& question = faq[static_cast<size_t>(q) * stride];
    SILO_ASSIGN_OR_RETURN(std::string answer, LoadAnswerText(question));
    questions.emplace_back(question.question, std::move(answer));
  }
  const auto run = [&](v1::GenerationMode mode,
                       const v1::PrivacySettings& privacy) -> absl::StatusOr<CostFigures> {
    double logprob = 0, decode_ms = 0;
    int64_t tokens = 0, decode_tokens = 0, bytes = 0;
    for (const auto& [text, answer] : questions) {
      v1::QueryRequest request = LocalQueryRequest(text, mode, options.top_k, options.cost_tokens);
      request.set_kv_mode(v1::KV_MODE_POSITION_INDEPENDENT);
      request.set_kv_dtype(v1::DTYPE_F16);
      request.set_forced_answer(answer);
      *request.mutable_privacy() = privacy;
      SILO_ASSIGN_OR_RETURN(const v1::QueryDone done, federation->Query(request));
      const v1::QueryStats& stats = done.stats();
      logprob += stats.forced_answer_logprob();
      tokens += stats.n_generated_tokens();
      bytes += stats.bytes_sent() + stats.bytes_received() + stats.upload_bytes();
      if (stats.n_generated_tokens() > 1) {
        decode_ms += static_cast<double>(stats.total_ns() - stats.ttft_ns()) / 1e6;
        decode_tokens += stats.n_generated_tokens() - 1;
      }
    }
    if (tokens == 0) return absl::InternalError("no gold-answer token was scored");
    return CostFigures{
        .perplexity = std::exp(-logprob / static_cast<double>(tokens)),
        .bytes_per_token = static_cast<double>(bytes) / static_cast<double>(tokens),
        .ms_per_token = decode_tokens > 0 ? decode_ms / static_cast<double>(decode_tokens) : 0};
  };
  SILO_ASSIGN_OR_RETURN(const CostFigures reference,
                        run(v1::GENERATION_MODE_CENTRALIZED, v1::PrivacySettings()));
  log << "  reference (centralized, chunkwise): perplexity " << reference.perplexity << "\n";
  for (SettingResult& setting : result.settings) {
    if (setting.setting.kind != ViewKind::kFedRag) continue;
    absl::StatusOr<CostFigures> cost = run(v1::GENERATION_MODE_FEDRAG, setting.setting.privacy);
    if (!cost.ok()) {
      log << "  " << setting.setting.name << ": " << cost.status() << "\n";
      if (cost.status().code() == absl::StatusCode::kUnimplemented) continue;
      return cost.status();
    }
    setting.perplexity = cost->perplexity;
    setting.reference_perplexity = reference.perplexity;
    setting.bytes_per_token = cost->bytes_per_token;
    setting.ms_per_token = cost->ms_per_token;
    log << "  " << setting.setting.name
        << absl::StrFormat(": perplexity %.4f, %.0f B/token, %.1f ms/token\n", cost->perplexity,
                           cost->bytes_per_token, cost->ms_per_token);
  }
  return absl::OkStatus();
}

}  // namespace

// NotFound, or ParseJson's error.
absl::StatusOr<JsonValue> ReadJsonFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(StrCat("cannot read ", path));
  std::stringstream text;
  text << file.rdbuf();
  return ParseJson(text.str());
}

// The views ExportInversionData writes: session scope for FedRAG.
struct InversionView {
  const char* name;
  ViewKind kind;
  uint32_t layer;
  v1::Mixer mixer;  // FedRAG's
};
constexpr std::array<InversionView, 5> kInversionViews = {{
    {.name = "plaintext-layer0",
     .kind = ViewKind::kPlaintext,
     .layer = 0,
     .mixer = v1::MIXER_SPHPS},
    {.name = "fedrag-session-sphps-layer0",
     .kind = ViewKind::kFedRag,
     .layer = 0,
     .mixer = v1::MIXER_SPHPS},
    {.name = "plaintext-layer1",
     .kind = ViewKind::kPlaintext,
     .layer = 1,
     .mixer = v1::MIXER_SPHPS},
    {.name = "fedrag-session-sphps-layer1",
     .kind = ViewKind::kFedRag,
     .layer = 1,
     .mixer = v1::MIXER_SPHPS},
    {.name = "fedrag-session-dense-layer1",
     .kind = ViewKind::kFedRag,
     .layer = 1,
     .mixer = v1::MIXER_DENSE},
}};

// Adds the learned inversion's figures (eval/learned_inversion.py's inversion.json) to the
// settings whose compute node receives the rows of a view it was tested on: the plaintext
// baseline of that layer, or FedRAG with session scope and the view's mixer exposing that layer
// (skip or owner). NotFound, or InvalidArgument for a file that is not such a result.
absl::Status AddLearnedInversion(const std::string& json_path, PrivacyEvalResult& result) {
  SILO_ASSIGN_OR_RETURN(const JsonValue json, ReadJsonFile(json_path));
  SILO_ASSIGN_OR_RETURN(const JsonValue* results, json.Get("results"));
  SILO_ASSIGN_OR_RETURN(const JsonValue::Array* list, results->AsArray());
  for (const JsonValue& entry : *list) {
    SILO_ASSIGN_OR_RETURN(const std::string_view name, entry.GetString("view"));
    const auto* view = std::find_if(kInversionViews.begin(), kInversionViews.end(),
                                    [&](const InversionView& v) { return name == v.name; });
    if (view == kInversionViews.end()) {
      return absl::InvalidArgumentError(StrCat(json_path, ": unknown view ", name));
    }
    AttackResult attack{.attack = "learned-inversion",
                        .target = "chunk tokens, held-out sessions",
                        .recovered = {},
                        .chance = {}};
    SILO_ASSIGN_OR_RETURN(attack.recovered.n, entry.GetInt("test_rows"));
    SILO_ASSIGN_OR_RETURN(attack.recovered.top1, entry.GetInt("test_top1"));
    SILO_ASSIGN_OR_RETURN(attack.recovered.top5, entry.GetInt("test_top5"));
    attack.chance.n = attack.recovered.n;
    SILO_ASSIGN_OR_RETURN(attack.chance.top1, entry.GetInt("chance_top1"));
    SILO_ASSIGN_OR_RETURN(attack.chance.top5, entry.GetInt("chance_top5"));
    const RecoveryCount& r = attack.recovered;
    if (r.n <= 0 || r.top1 < 0 || r.top1 > r.top5 || r.top5 > r.n || attack.chance.top1 < 0 ||
        attack.chance.top1 > attack.chance.top5 || attack.chance.top5 > r.n) {
      return absl::InvalidArgumentError(StrCat(json_path, ": inconsistent counts for ", name));
    }
    for (SettingResult& setting : result.settings) {
      const v1::PrivacySettings& privacy = setting.setting.privacy;
      const bool same_view =
          setting.setting.kind == view->kind && privacy.protect_layers() == view->layer &&
          (view->kind == ViewKind::kPlaintext ||
           (privacy.key_scope() == v1::KEY_SCOPE_SESSION && privacy.mixer() == view->mixer));
      if (same_view) setting.attacks.push_back(attack);
    }
  }
  return absl::OkStatus();
}

// The settings, attacks and costs of an earlier run's privacy.json, and its question count.
absl::StatusOr<std::pair<PrivacyEvalResult, int>> ReadPrivacyJson(const std::string& json_path) {
  SILO_ASSIGN_OR_RETURN(const JsonValue json, ReadJsonFile(json_path));
  SILO_ASSIGN_OR_RETURN(const int64_t n_questions, json.GetInt("questions"));
  SILO_ASSIGN_OR_RETURN(const JsonValue* settings, json.Get("settings"));
  SILO_ASSIGN_OR_RETURN(const JsonValue::Array* list, settings->AsArray());
  PrivacyEvalResult result;
  for (const JsonValue& entry : *list) {
    SettingResult& setting = result.settings.emplace_back();
    SILO_ASSIGN_OR_RETURN(const std::string_view name, entry.GetString("name"));
    setting.setting.name = std::string(name);
    const std::string& setting_name = setting.setting.name;
    setting.setting.kind = setting_name.starts_with("fedrag") ? ViewKind::kFedRag
                           : setting_name.starts_with("baseline permutation")
                               ? ViewKind::kPermutation
                           : setting_name.starts_with("baseline orthogonal") ? ViewKind::kOrthogonal
                                                                             : ViewKind::kPlaintext;
    // "fedrag <scope> <mixer> protect ...", as SweptSettings names them.
    const std::vector<std::string> words = absl::StrSplit(setting.setting.name, ' ');
    if (setting.setting.kind == ViewKind::kFedRag && words.size() >= 3) {
      setting.setting.privacy.set_key_scope(words[1] == "session" ? v1::KEY_SCOPE_SESSION
                                            : words[1] == "chunk" ? v1::KEY_SCOPE_CHUNK
                                                                  : v1::KEY_SCOPE_BLOCK);
      setting.setting.privacy.set_mixer(words[2] == "dense" ? v1::MIXER_DENSE : v1::MIXER_SPHPS);
    }
    SILO_ASSIGN_OR_RETURN(const std::string_view mode, entry.GetString("protect_mode"));
    setting.protect_mode = std::string(mode);
    SILO_ASSIGN_OR_RETURN(const int64_t layer, entry.GetInt("layer"));
    setting.setting.privacy.set_protect_layers(static_cast<uint32_t>(layer));
    SILO_ASSIGN_OR_RETURN(setting.perplexity, entry.GetDouble("perplexity"));
    SILO_ASSIGN_OR_RETURN(setting.reference_perplexity, entry.GetDouble("reference_perplexity"));
    SILO_ASSIGN_OR_RETURN(setting.bytes_per_token, entry.GetDouble("bytes_per_token"));
    SILO_ASSIGN_OR_RETURN(setting.ms_per_token, entry.GetDouble("ms_per_token"));
    SILO_ASSIGN_OR_RETURN(const JsonValue* attacks, entry.Get("attacks"));
    SILO_ASSIGN_OR_RETURN(const JsonValue::Array* attack_list, attacks->AsArray());
    for (const JsonValue& item : *attack_list) {
      AttackResult& attack = setting.attacks.emplace_back();
      SILO_ASSIGN_OR_RETURN(const std::string_view attack_name, item.GetString("attack"));
      SILO_ASSIGN_OR_RETURN(const std::string_view target, item.GetString("target"));
      attack.attack = std::string(attack_name);
      attack.target = std::string(target);
      SILO_ASSIGN_OR_RETURN(attack.recovered.n, item.GetInt("rows"));
      SILO_ASSIGN_OR_RETURN(attack.recovered.top1, item.GetInt("top1"));
      SILO_ASSIGN_OR_RETURN(attack.recovered.top5, item.GetInt("top5"));
      attack.chance.n = attack.recovered.n;
      SILO_ASSIGN_OR_RETURN(attack.chance.top1, item.GetInt("chance_top1"));
      SILO_ASSIGN_OR_RETURN(attack.chance.top5, item.GetInt("chance_top5"));
    }
  }
  return std::make_pair(std::move(result), static_cast<int>(n_questions));
}

absl::StatusOr<PrivacyEvalResult> RewritePrivacyReports(const PrivacyEvalOptions& options,
                                                        const std::string& json_path,
                                                        std::ostream& out) {
  SILO_ASSIGN_OR_RETURN(auto read, ReadPrivacyJson(json_path));
  auto& [result, n_questions] = read;
  if (!options.inversion_results.empty()) {
    for (SettingResult& setting : result.settings) {
      std::erase_if(setting.attacks, [](const AttackResult& attack) {
        return attack.attack == "learned-inversion";
      });
    }
    SILO_RETURN_IF_ERROR(AddLearnedInversion(options.inversion_results, result));
  }
  ChooseDefault(result);
  PrintTable(result, n_questions, out);
  SILO_RETURN_IF_ERROR(WriteReports(options, result, n_questions));
  return std::move(result);
}

absl::Status ExportInversionData(const PrivacyEvalOptions& options, const std::string& dir,
                                 int n_questions, std::ostream& log) {
  if (n_questions < 2) return absl::InvalidArgumentError("export at least two sessions");
  SILO_ASSIGN_OR_RETURN(AttackCorpus corpus, AttackCorpus::Open(options, n_questions, log));
  struct View {
    std::string name;
    ObserverSetting setting;
    std::ofstream rows, leverage, label, session;
    int64_t n = 0;
  };
  std::vector<View> views;
  for (const InversionView& exported : kInversionViews) {
    View& view = views.emplace_back();
    view.name = exported.name;
    view.setting.name = view.name;
    view.setting.kind = exported.kind;
    view.setting.privacy =
        Privacy(v1::KEY_SCOPE_SESSION, exported.mixer, exported.layer, v1::PROTECT_MODE_SKIP);
  }
  std::error_code error;
  fs::create_directories(dir, error);
  for (View& view : views) {
    const fs::path base = fs::path(dir) / view.name;
    view.rows.open(base.string() + ".rows.f16", std::ios::binary);
    view.leverage.open(base.string() + ".leverage.f32", std::ios::binary);
    view.label.open(base.string() + ".label.i32", std::ios::binary);
    view.session.open(base.string() + ".session.i32", std::ios::binary);
  }
  int32_t dim = 0;
  for (int q = 0; q < n_questions; ++q) {
    const FaqQuestion& question = corpus.Question(q, n_questions);
    log << "session " << q + 1 << "/" << n_questions << ": " << question.question << "\n";
    SILO_ASSIGN_OR_RETURN(const PlainSessionStates states,
                          corpus.Record(question, options.top_k, 1, {0, 1}));
    for (size_t v = 0; v < views.size(); ++v) {
      View& view = views[v];
      SILO_ASSIGN_OR_RETURN(
          const ObservedLayer observed,
          ObserveLayer(states, view.setting, 7919 * static_cast<uint64_t>(q) + v));
      for (const ObservedKey& key : observed.keys) {
        dim = key.dim;
        const std::vector<double> leverages = RowLeverages(key.k.data(), key.n_rows, key.dim);
        for (int32_t i = 0; i < key.n_rows; ++i) {
          for (const std::vector<float>* tensor : {&key.k, &key.v}) {
            for (int32_t c = 0; c < key.dim; ++c) {
              const uint16_t half = FloatToHalf((*tensor)[static_cast<size_t>(i) * key.dim + c]);
              view.rows.write(reinterpret_cast<const char*>(&half), 2);
            }
          }
          const float leverage =
              leverages.empty() ? 0.0f : static_cast<float>(leverages[static_cast<size_t>(i)]);
          const int32_t token = key.row_token[static_cast<size_t>(i)];
          const int32_t session = q;
          view.leverage.write(reinterpret_cast<const char*>(&leverage), 4);
          view.label.write(reinterpret_cast<const char*>(&token), 4);
          view.session.write(reinterpret_cast<const char*>(&session), 4);
          ++view.n;
        }
      }
    }
  }
  std::ofstream meta(fs::path(dir) / "meta.json");
  meta << "{\"dim\": " << dim
       << ", \"vocab\": " << corpus.base->decoder().model().config().vocab_size
       << ", \"sessions\": " << n_questions << ", \"views\": [";
  for (size_t v = 0; v < views.size(); ++v) {
    views[v].rows.close();
    meta << (v == 0 ? "" : ", ") << "{\"name\": \"" << views[v].name
         << "\", \"rows\": " << views[v].n << "}";
    if (!views[v].rows || !views[v].leverage || !views[v].label || !views[v].session) {
      return absl::InternalError(StrCat("cannot write ", views[v].name, " under ", dir));
    }
  }
  meta << "]}\n";
  if (!meta) return absl::InternalError(StrCat("cannot write ", dir, "/meta.json"));
  return absl::OkStatus();
}

bool IsControlledByPrivacySettings(const AttackResult& attack) {
  // The querier receives partials under every setting (FedRAG needs them); scope only changes
  // how many rows each sums.
  return attack.attack != "embedding-inversion" && attack.attack != "querier-partials";
}

bool NeedsDocumentPool(const AttackResult& attack) {
  return attack.attack == "linear-invariants" || attack.attack == "block-pairs";
}

absl::StatusOr<PrivacyEvalResult> RunPrivacyEval(const PrivacyEvalOptions& options,
                                                 std::ostream& out, std::ostream& log) {
  if (options.n_questions < 1 || options.top_k < 1 || options.decode_steps < 1 ||
      options.score_steps < 1 || options.score_steps > options.decode_steps) {
    return absl::InvalidArgumentError(
        "questions, top-k and decode steps must be positive, score steps in [1, decode steps]");
  }
  SILO_ASSIGN_OR_RETURN(AttackCorpus corpus, AttackCorpus::Open(options, options.n_questions, log));
  const std::vector<FaqQuestion>& faq = corpus.faq;
  retrieval::KnowledgeBase* base = corpus.base.get();
  const engine::LanguageModel& decoder = base->decoder();
  const engine::ModelConfig& config = decoder.model().config();
  engine::ThreadPool& pool = *corpus.pool;
  engine::Transformer& transformer = *corpus.transformer;
  const engine::RagPromptBuilder& prompts = *corpus.prompts;

  std::optional<std::pair<PrivacyEvalResult, int>> earlier;
  if (!options.costs_from.empty()) {
    SILO_ASSIGN_OR_RETURN(earlier, ReadPrivacyJson(options.costs_from));
  }
  PrivacyEvalResult result;
  result.settings = SweptSettings(options.smoke);
  if (!options.only.empty()) {
    std::erase_if(result.settings, [&](const SettingResult& setting) {
      return setting.setting.name.find(options.only) == std::string::npos;
    });
    if (result.settings.empty()) {
      return absl::InvalidArgumentError(StrCat("no setting's name contains '", options.only, "'"));
    }
  }
  if (!options.inversion_results.empty()) {
    SILO_RETURN_IF_ERROR(AddLearnedInversion(options.inversion_results, result));
  }
  std::vector<int32_t> layers = {0};  // the owner's view is of layer 0
  for (const SettingResult& setting : result.settings) {
    const auto layer = static_cast<int32_t>(setting.setting.privacy.protect_layers());
    if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers.push_back(layer);
  }
  log << "token-alone tables of layers";
  for (const int32_t layer : layers) log << " " << layer;
  log << " over " << (options.vocab > 0 ? options.vocab : config.vocab_size) << " tokens\n";
  absl::Time start = absl::Now();
  SILO_ASSIGN_OR_RETURN(const std::vector<TokenAloneTable> tables,
                        ComputeTokenAloneTables(transformer, layers, options.vocab));
  log << "  " << absl::ToDoubleSeconds(absl::Now() - start) << " s\n";
  AttackerKnowledge attacker;
  attacker.config = &config;
  attacker.rope = &transformer.rope();
  attacker.pool = &pool;
  SILO_ASSIGN_OR_RETURN(attacker.anchors, PublicTokensByFrequency(decoder.tokenizer()));
  // Attack 2's pool: every chunk of the attack corpus (the attacked ones among them) with its
  // keys at each attacked layer, prefilled alone as owners do.
  start = absl::Now();
  std::vector<std::vector<CandidateChunk>> chunk_pool(layers.size());  // [layer index][chunk]
  SILO_RETURN_IF_ERROR(base->store()
                           .ForEachChunk([&](const retrieval::ChunkRecord& chunk) -> absl::Status {
                             const std::vector<int32_t> tokens = prompts.EncodeChunk(chunk.text);
                             SILO_ASSIGN_OR_RETURN(const engine::KvShard shard,
                                                   engine::PrefillKvShard(transformer, tokens));
                             for (size_t l = 0; l < layers.size(); ++l) {
                               CandidateChunk& candidate = chunk_pool[l].emplace_back();
                               candidate.tokens = tokens;
                               for (int32_t kv_head = 0; kv_head < config.n_kv_heads; ++kv_head) {
                                 const int64_t at = shard.Offset(layers[l], kv_head, 0);
                                 const size_t size = static_cast<size_t>(shard.n_tokens) *
                                                     static_cast<size_t>(config.head_dim);
                                 std::vector<float>& keys = candidate.keys.emplace_back(size);
                                 std::vector<float>& values = candidate.values.emplace_back(size);
                                 for (size_t i = 0; i < size; ++i) {
                                   keys[i] = HalfToFloat(shard.k[static_cast<size_t>(at) + i]);
                                   values[i] = HalfToFloat(shard.v[static_cast<size_t>(at) + i]);
                                 }
                               }
                             }
                             return absl::OkStatus();
                           })
                           .status());
  log << "linear-invariants pool: " << chunk_pool[0].size() << " chunks prefilled in "
      << absl::ToDoubleSeconds(absl::Now() - start) << " s\n";

  // The embedding-inversion pool, embedded once.
  const std::vector<std::string> pool_sentences =
      SentencePool(faq, options.federation.docs_dir, static_cast<size_t>(options.embedding_pool));
  std::vector<float> pool_embeddings;
  for (const std::string& sentence : pool_sentences) {
    SILO_ASSIGN_OR_RETURN(const std::vector<float> embedding, base->EmbedQuestion(sentence));
    pool_embeddings.insert(pool_embeddings.end(), embedding.begin(), embedding.end());
  }
  const size_t embedding_dim = static_cast<size_t>(base->embedding_dim());
  log << "embedding-inversion pool: " << pool_sentences.size() << " sentences\n";
  AttackResult inversion{.attack = "embedding-inversion",
                         .target = "question (exact sentence)",
                         .recovered = {},
                         .chance = {}};

  for (int q = 0; q < options.n_questions; ++q) {
    const FaqQuestion& question = corpus.Question(q, options.n_questions);
    log << "question " << q + 1 << "/" << options.n_questions << ": " << question.question << "\n";
    SILO_ASSIGN_OR_RETURN(const PlainSessionStates states,
                          corpus.Record(question, options.top_k, options.decode_steps, layers));

    // What an owner sees: the retrieval embedding (every mode) and, with OWNER, layer-0 queries.
    {
      SILO_ASSIGN_OR_RETURN(const std::vector<float> seen, base->EmbedQuestion(question.question));
      std::vector<std::pair<float, size_t>> ranked;
      for (size_t i = 0; i < pool_sentences.size(); ++i) {
        float dot = 0;
        for (size_t c = 0; c < embedding_dim; ++c)
          dot += seen[c] * pool_embeddings[i * embedding_dim + c];
        ranked.emplace_back(-dot, i);
      }
      std::partial_sort(ranked.begin(), ranked.begin() + std::min<size_t>(5, ranked.size()),
                        ranked.end());
      ++inversion.recovered.n;
      ++inversion.chance.n;
      for (size_t i = 0; i < 5 && i < ranked.size(); ++i) {
        if (pool_sentences[ranked[i].second] != question.question) continue;
        if (i == 0) ++inversion.recovered.top1;
        ++inversion.recovered.top5;
      }
    }
    ObserverSetting owner_sees{
        .name = "owner", .kind = ViewKind::kPlaintext, .privacy = {}, .wire = v1::DTYPE_F32};
    owner_sees.privacy.set_protect_layers(0);
    SILO_ASSIGN_OR_RETURN(const ObservedLayer plain0, ObserveLayer(states, owner_sees, 7));
    attacker.table = &tables[0];
    const AttackResult owner_query = RunOwnerQueryMatching(plain0, attacker);

    // The public text of the attacks that carry unmixed rows to tokens: the pool without this
    // session's chunks, per layer.
    std::vector<std::vector<const CandidateChunk*>> public_text(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
      for (const CandidateChunk& chunk : chunk_pool[l]) {
        if (std::find(states.chunk_tokens.begin(), states.chunk_tokens.end(), chunk.tokens) ==
            states.chunk_tokens.end()) {
          public_text[l].push_back(&chunk);
        }
      }
    }
    log << "  public text: " << public_text[0].size() << " of " << chunk_pool[0].size()
        << " pool chunks (the session's left out)\n";
    for (size_t s = 0; s < result.settings.size(); ++s) {
      SettingResult& setting = result.settings[s];
      const auto layer = static_cast<int32_t>(setting.setting.privacy.protect_layers());
      const size_t layer_index =
          static_cast<size_t>(std::find(layers.begin(), layers.end(), layer) - layers.begin());
      attacker.table = &tables[layer_index];
      start = absl::Now();
      SILO_ASSIGN_OR_RETURN(
          const ObservedLayer view,
          ObserveLayer(states, setting.setting, 1000 * static_cast<uint64_t>(q) + s));
      const absl::Time observed = absl::Now();
      Accumulate(RunExactScoreAttack(view, attacker, options.score_steps), setting.attacks);
      const absl::Time scored = absl::Now();
      Accumulate(RunVocabularyMatching(view, attacker), setting.attacks);
      Accumulate({RunLinearInvariantAttack(view, attacker, chunk_pool[layer_index]),
                  RunBlockPairAttack(view, attacker, chunk_pool[layer_index])},
                 setting.attacks);
      Accumulate(RunWalshUnmixingAttack(view, attacker), setting.attacks);
      Accumulate({RunUnmixedValueDecoding(view, attacker, public_text[layer_index])},
                 setting.attacks);
      if (setting.setting.kind == ViewKind::kFedRag) {
        Accumulate({RunQuerierPartialAttack(view, attacker, public_text[layer_index])},
                   setting.attacks);
      }
      if (setting.protect_mode == "owner") Accumulate({owner_query}, setting.attacks);
      log << absl::StrFormat("  %s: view %.1f s, exact-scores %.1f s, other attacks %.1f s\n",
                             setting.setting.name, absl::ToDoubleSeconds(observed - start),
                             absl::ToDoubleSeconds(scored - observed),
                             absl::ToDoubleSeconds(absl::Now() - scored));
    }
  }
  inversion.chance.top1 = 0;  // a blind guess names one pool sentence of thousands
  for (SettingResult& setting : result.settings) {
    if (setting.setting.kind == ViewKind::kFedRag) setting.attacks.push_back(inversion);
  }

  if (earlier.has_value()) {
    for (SettingResult& setting : result.settings) {
      for (const SettingResult& known : earlier->first.settings) {
        if (known.setting.name != setting.setting.name) continue;
        setting.perplexity = known.perplexity;
        setting.reference_perplexity = known.reference_perplexity;
        setting.bytes_per_token = known.bytes_per_token;
        setting.ms_per_token = known.ms_per_token;
      }
    }
    log << "utility and cost figures taken from " << options.costs_from << "\n";
  } else if (options.measure_cost) {
    SILO_RETURN_IF_ERROR(MeasurePrivacyCost(options, faq, result, log));
  }
  ChooseDefault(result);
  PrintTable(result, options.n_questions, out);
  SILO_RETURN_IF_ERROR(WriteReports(options, result, options.n_questions));
  return result;
}

}  // namespace silo::eval
