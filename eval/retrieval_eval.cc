#include "eval/retrieval_eval.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "retrieval/node_key.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

absl::StatusOr<crypto::SecretBytes> EvalNodeKey(const std::string& data_dir) {
  const std::string path = (fs::path(data_dir) / "node.key").string();
  std::error_code error;
  fs::create_directories(data_dir, error);
  if (fs::exists(path, error)) return retrieval::ReadNodeKeyFile(path);
  return retrieval::GenerateNodeKeyFile(path);
}

absl::StatusOr<RetrievalEvalResult> RunRetrievalEval(const RetrievalEvalOptions& options,
                                                     std::ostream& log) {
  if (options.ks.empty()) return absl::InvalidArgumentError("no k to measure recall at");
  for (const int k : options.ks) {
    if (k < 1 || k > 100) return absl::InvalidArgumentError(StrCat("k ", k, " is not in [1, 100]"));
  }
  SILO_ASSIGN_OR_RETURN(const std::vector<FaqQuestion> questions,
                        LoadFaqQuestions(options.faq_dir));
  SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key,
                        EvalNodeKey(options.knowledge_base.data_dir));
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<retrieval::KnowledgeBase> base,
                        retrieval::KnowledgeBase::Open(options.knowledge_base, key));
  RetrievalEvalResult result;
  result.ks = options.ks;
  auto start = std::chrono::steady_clock::now();
  double last_line = -10;
  SILO_ASSIGN_OR_RETURN(const retrieval::IngestReport report,
                        base->Ingest(options.docs, [&](const retrieval::IngestProgress& p) {
                          if (p.elapsed_seconds - last_line < 10 && p.files_done != p.files_total)
                            return;
                          last_line = p.elapsed_seconds;
                          log << absl::StrFormat(
                                     "ingest: %d/%d files (%d unchanged), %d chunks, %.0f s\n",
                                     p.files_done, p.files_total, p.files_skipped, p.chunks_written,
                                     p.elapsed_seconds)
                              << std::flush;
                        }));
  result.ingest_seconds = SecondsSince(start);
  for (const std::string& failure : report.failures) log << "ingest failed: " << failure << "\n";
  result.chunks = base->index().size();

  const int max_k = *std::max_element(options.ks.begin(), options.ks.end());
  start = std::chrono::steady_clock::now();
  for (const FaqQuestion& question : questions) {
    SILO_ASSIGN_OR_RETURN(const std::vector<retrieval::SearchHit> hits,
                          base->Search(question.question, max_k));
    QuestionResult answer{.question = question, .rank = 0};
    for (size_t i = 0; i < hits.size(); ++i) {
      const retrieval::SearchHit& hit = hits[i];
      if (hit.source_path == question.source_path && hit.begin_byte < question.answer_end &&
          hit.end_byte > question.answer_begin) {
        answer.rank = static_cast<int>(i) + 1;
        break;
      }
    }
    result.questions.push_back(std::move(answer));
  }
  result.search_seconds = SecondsSince(start);
  for (const int k : options.ks) {
    const auto found =
        std::count_if(result.questions.begin(), result.questions.end(),
                      [k](const QuestionResult& q) { return q.rank >= 1 && q.rank <= k; });
    result.recall.push_back(static_cast<double>(found) / result.questions.size());
  }
  return result;
}

void PrintRetrievalEval(const RetrievalEvalResult& result, bool per_question, std::ostream& out) {
  if (per_question) {
    for (const QuestionResult& q : result.questions) {
      out << absl::StrFormat("%s  %s  %s\n", q.rank == 0 ? "miss" : StrCat("@", q.rank),
                             fs::path(q.question.source_path).filename().string(),
                             q.question.question);
    }
  }
  out << absl::StrFormat(
      "%d questions, %d chunks indexed; ingest %.1f s, search %.1f ms/question\n",
      result.questions.size(), result.chunks, result.ingest_seconds,
      1e3 * result.search_seconds / std::max<size_t>(1, result.questions.size()));
  for (size_t i = 0; i < result.ks.size(); ++i) {
    out << absl::StrFormat("recall@%d  %.3f\n", result.ks[i], result.recall[i]);
  }
}

std::string RetrievalEvalJson(const RetrievalEvalResult& result) {
  std::string json = "{\"recall\": {";
  for (size_t i = 0; i < result.ks.size(); ++i) {
    json += absl::StrFormat("%s\"%d\": %.4f", i == 0 ? "" : ", ", result.ks[i], result.recall[i]);
  }
  json += absl::StrFormat(
      "}, \"chunks\": %d, \"ingest_seconds\": %.2f, \"search_seconds\": %.3f, "
      "\"questions\": [",
      result.chunks, result.ingest_seconds, result.search_seconds);
  for (size_t i = 0; i < result.questions.size(); ++i) {
    const QuestionResult& q = result.questions[i];
    json += StrCat(i == 0 ? "" : ", ", "{\"question\": ", JsonString(q.question.question),
                   ", \"file\": ", JsonString(q.question.source_path), ", \"rank\": ", q.rank, "}");
  }
  return json + "]}\n";
}

}  // namespace silo::eval
