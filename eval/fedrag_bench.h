// `silo-eval bench fedrag`: time to first token and per-token latency of LOCAL, CENTRALIZED
// (the plaintext baseline: chunks' text gathered at the querier and prefilled normally) and
// FEDRAG with three owners, over a LocalFederation, once per round trip added between the
// querier and the owners. The same run measures the raw TCP round trip of a 1 KB echo on
// loopback: the physical floor of FedRAG's one exchange per layer per token.
//
// Thread-safety: one run at a time (it owns its folder).
#ifndef SILO_EVAL_FEDRAG_BENCH_H_
#define SILO_EVAL_FEDRAG_BENCH_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "eval/local_federation.h"

namespace silo::eval {

struct FedRagBenchOptions {
  LocalFederationOptions federation{.work_dir = "build/eval/federation"};
  std::vector<double> rtt_ms = {0, 5, 20};  // added between the querier and each owner
  int n_questions = 5;                      // FAQ questions per mode and network
  int max_tokens = 32;
  int top_k = 6;
};

// Prints the table to `out` and progress to `log`. The errors of the parts it starts.
absl::Status RunFedRagBench(const FedRagBenchOptions& options, std::ostream& out,
                            std::ostream& log);

}  // namespace silo::eval

#endif  // SILO_EVAL_FEDRAG_BENCH_H_
