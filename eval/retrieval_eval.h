// `silo-eval retrieval`: ingests a document collection into a knowledge base and measures how
// often the gold answer of each development question is among the k best chunks (recall@k).
//
// A retrieved chunk is a hit for a question when it comes from the question's FAQ file and its
// byte range overlaps the answer (the text after the question's heading, up to the next heading).
#ifndef SILO_EVAL_RETRIEVAL_EVAL_H_
#define SILO_EVAL_RETRIEVAL_EVAL_H_

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "eval/faq_questions.h"
#include "retrieval/knowledge_base.h"

namespace silo::eval {

struct RetrievalEvalOptions {
  std::vector<std::string> docs;  // files and folders to ingest (the FAQ among them)
  std::string faq_dir;            // where the questions come from
  retrieval::KnowledgeBaseOptions knowledge_base;  // its data_dir is kept between runs
  std::vector<int> ks = {1, 5, 10};
};

struct QuestionResult {
  FaqQuestion question;
  int rank = 0;  // 1-based rank of the first hit among the max(ks) best chunks; 0: none
};

struct RetrievalEvalResult {
  std::vector<QuestionResult> questions;
  std::vector<int> ks;
  std::vector<double> recall;  // [ks.size()]
  int64_t chunks = 0;          // in the index
  double ingest_seconds = 0;
  double search_seconds = 0;  // all questions
};

// Ingests (skipping what the data folder already holds unchanged), then asks every question.
// Progress lines go to `log`. The errors of the knowledge base and of LoadFaqQuestions;
// InvalidArgument when ks is empty or holds a value outside [1, 100].
// An evaluation store's node key, made on first use beside (in) its data folder.
absl::StatusOr<crypto::SecretBytes> EvalNodeKey(const std::string& data_dir);

absl::StatusOr<RetrievalEvalResult> RunRetrievalEval(const RetrievalEvalOptions& options,
                                                     std::ostream& log);

// The result as a table (recall@k, questions, chunks, timings) and, when `per_question`, one
// line per question with its rank.
void PrintRetrievalEval(const RetrievalEvalResult& result, bool per_question, std::ostream& out);
// The result as JSON (what the table says, and every question's rank).
std::string RetrievalEvalJson(const RetrievalEvalResult& result);

}  // namespace silo::eval

#endif  // SILO_EVAL_RETRIEVAL_EVAL_H_
