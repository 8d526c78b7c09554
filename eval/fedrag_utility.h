// `silo-eval utility`: how much FedRAG's answers are worth, as the perplexity of the Python FAQ's
// gold answers (teacher-forced through QueryRequest.forced_answer, at most max_tokens tokens of
// each) over a LocalFederation, for
//   local                 the question alone (no retrieval)
//   centralized           the retrieved chunks' text at the querier, prefilled normally
//   centralized-chunkwise the same chunks, each chunk's KV computed alone: the plaintext
//                         computation of exactly the KV FedRAG attends over
//   fedrag-shard          FedRAG over the owners' stored KV shards, rotated (f32 and f16 wire)
//   fedrag-prefill        FedRAG with owners prefilling their chunks anew (f32 wire)
//   fedrag-default        FedRAG with the federation's default privacy settings (the first
//                         layer not delegated: an approximation; f16 wire)
// (the rows above it delegate every layer, protect_layers 0),
// and the relative difference of each FedRAG row from centralized-chunkwise (its perplexity, and
// the mean absolute difference of the per-question log-likelihood).
//
// Thread-safety: one run at a time.
#ifndef SILO_EVAL_FEDRAG_UTILITY_H_
#define SILO_EVAL_FEDRAG_UTILITY_H_

#include <ostream>

#include "absl/status/status.h"
#include "eval/local_federation.h"

namespace silo::eval {

struct FedRagUtilityOptions {
  LocalFederationOptions federation{.work_dir = "build/eval/federation"};
  int n_questions = 20;  // FAQ questions, spread over the files
  int max_tokens = 64;   // of each gold answer
  int top_k = 4;
};

// Prints the table to `out` and progress to `log`.
absl::Status RunFedRagUtility(const FedRagUtilityOptions& options, std::ostream& out,
                              std::ostream& log);

}  // namespace silo::eval

#endif  // SILO_EVAL_FEDRAG_UTILITY_H_
