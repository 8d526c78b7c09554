// `silo-eval bench fedrag`: time to first token and per-token latency of LOCAL, CENTRALIZED
// (the plaintext baseline: chunks' text gathered at the querier and prefilled normally) and
// FEDRAG with three owners, over a federation started in this process: silo-coordinator's and
// silo-node's servers (real gRPC over mTLS on loopback, real RocksDB stores and FAISS indexes,
// the default model), a querier with no relevant documents of its own, three owners holding the
// Python FAQ and tutorial, and a compute node next to the querier. Between the querier and the
// owners a TcpShaper adds each configured round trip (the compute node stays unshaped, as the
// coordinator places it close to the querier). The same run measures the raw TCP round trip of
// a 1 KB echo on loopback: the physical floor of FedRAG's one exchange per layer per token.
//
// Thread-safety: one run at a time (it owns its folder).
#ifndef SILO_EVAL_FEDRAG_BENCH_H_
#define SILO_EVAL_FEDRAG_BENCH_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace silo::eval {

struct FedRagBenchOptions {
  std::string work_dir = "build/eval/fedrag-bench";  // certificates, stores, indexes; kept
  std::string docs_dir = "/usr/share/doc/python3.11/html/_sources";
  std::string decoder_model = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string embedder_model = "models/all-minilm-l6-v2";
  std::string make_dev_ca = "deploy/certs/make-dev-ca";
  std::vector<double> rtt_ms = {0, 5, 20};  // added between the querier and each owner
  int n_questions = 5;                      // FAQ questions per mode and network
  int max_tokens = 32;
  int top_k = 6;
  int threads = 1;  // per node
};

// Prints the table to `out` and progress to `log`. The errors of the parts it starts.
absl::Status RunFedRagBench(const FedRagBenchOptions& options, std::ostream& out,
                            std::ostream& log);

}  // namespace silo::eval

#endif  // SILO_EVAL_FEDRAG_BENCH_H_
