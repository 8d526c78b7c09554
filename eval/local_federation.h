// A federation in this process for evaluations: silo-coordinator's and silo-node's servers (real
// gRPC over mTLS on loopback, real RocksDB stores and FAISS indexes, the default model), a
// querier with no relevant documents of its own ("querier"), three owners holding the Python FAQ
// and tutorial dealt round robin ("owner-a", "owner-b", "owner-c"), and a compute node next to
// the querier ("compute-1"). Owners allow the plaintext baseline (CENTRALIZED), which no real
// federation should. Between the querier and each owner a TcpShaper can add a round trip (the
// compute node stays unshaped: the coordinator places it close to the querier).
//
// Thread-safety: Query may be called from any thread.
#ifndef SILO_EVAL_LOCAL_FEDERATION_H_
#define SILO_EVAL_LOCAL_FEDERATION_H_

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/coordinator_server.h"
#include "eval/tcp_shaper.h"
#include "grpcpp/channel.h"
#include "node/node_server.h"
#include "silo/v1/coordinator.pb.h"

namespace silo::eval {

struct LocalFederationOptions {
  std::string work_dir;  // certificates, keys, stores, indexes; kept between runs
  std::string docs_dir = "/usr/share/doc/python3.11/html/_sources";
  std::string decoder_model = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string embedder_model = "models/all-minilm-l6-v2";
  std::string make_dev_ca = "deploy/certs/make-dev-ca";
  int threads = 1;  // per node
};

inline constexpr char kLocalQuerier[] = "querier";

// A query of `question` at the local querier in `mode`: top_k chunks, max_tokens, owners given
// 10 s; KV mode, wire dtype and privacy left to the caller.
v1::QueryRequest LocalQueryRequest(const std::string& question, v1::GenerationMode mode, int top_k,
                                   int max_tokens);

class LocalFederation {
 public:
  // Certificates, node keys and the institutions' ingested documents, made or brought up to date
  // (make-dev-ca and ingest reuse what is there). Progress to `log`.
  static absl::Status Prepare(const LocalFederationOptions& options, std::ostream& log);

  // Starts the coordinator and the nodes (`rtt_ms` added between the querier and each owner)
  // and waits until every node is online. `run` names the coordinator's database (one per run).
  static absl::StatusOr<std::unique_ptr<LocalFederation>> Start(
      const LocalFederationOptions& options, double rtt_ms, int run);
  ~LocalFederation();  // stops everything

  // A query through the coordinator, as the operator; the final message.
  absl::StatusOr<v1::QueryDone> Query(const v1::QueryRequest& request);

  // Layers of the querier's model.
  int n_layers() const { return n_layers_; }

 private:
  LocalFederation() = default;

  std::unique_ptr<coordinator::CoordinatorServer> coordinator_;
  std::vector<std::unique_ptr<TcpShaper>> shapers_;
  std::vector<std::unique_ptr<node::NodeServer>> nodes_;
  std::shared_ptr<grpc::Channel> operator_channel_;
  int n_layers_ = 0;
};

}  // namespace silo::eval

#endif  // SILO_EVAL_LOCAL_FEDERATION_H_
