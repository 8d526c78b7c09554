// `silo-node serve`: the node as a federation member (DESIGN.md §1, §5, §8). It checks that its
// certificate names the configured id and role, opens its corpus (institution, device), serves
// NodeControlService, RetrievalService, FedRagOwnerService and QueryService (with a corpus; the
// querier answers with an AnswerEngine) or
// ScrambledAttentionService (compute) over mTLS, registers with the
// coordinator (retrying until it answers), sends heartbeats, re-registers when the coordinator
// lost it, and probes its peers at the interval the coordinator asks for, reporting the
// measurements.
//
// Thread-safe: Start, then address() from any thread; Shutdown once.
#ifndef SILO_NODE_NODE_SERVER_H_
#define SILO_NODE_NODE_SERVER_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "crypto/mtls.h"
#include "grpcpp/server.h"
#include "node/answer_engine.h"
#include "node/chunk_handles.h"
#include "node/control_service.h"
#include "node/dragon_service.h"
#include "node/fedrag_owner_service.h"
#include "node/node_config.h"
#include "node/peer_channels.h"
#include "node/query_service.h"
#include "node/retrieval_service.h"
#include "node/scrambled_attention_service.h"
#include "retrieval/knowledge_base.h"

namespace silo::node {

class NodeServer {
 public:
  // InvalidArgument when the config has no serve.listen or TLS files; the errors of
  // LoadTlsMaterial; FailedPrecondition when the certificate names another id or role than the
  // config; the corpus's errors; Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<NodeServer>> Start(const NodeConfig& config);
  ~NodeServer();

  // host:port that peers dial (serve.advertise, or the listen host with the bound port).
  const std::string& address() const { return address_; }

  // Stops the coordinator link and the server (in-flight calls get a short grace period).
  void Shutdown();

 private:
  NodeServer() = default;
  // Registration and heartbeats.
  void CoordinatorLoop();
  // Network probes, on their own thread: a probe round to slow or dead peers takes seconds, and
  // heartbeats waiting behind it would get this node marked offline.
  void ProbeLoop();
  // One registration; false when the coordinator did not answer.
  bool Register(v1::CoordinatorService::Stub& coordinator);
  // One probe round over the nodes the coordinator lists, reported back to it.
  void ProbePeers(v1::CoordinatorService::Stub& coordinator);
  // This node's certificate key for FedRAG key exchanges. InvalidArgument for a key that is not
  // Ed25519.
  absl::StatusOr<KeyExchangeSigner> Signer() const;

  NodeConfig config_;
  crypto::TlsMaterial tls_;
  std::unique_ptr<retrieval::KnowledgeBase> corpus_;
  std::unique_ptr<ChunkHandles> handles_;
  std::unique_ptr<PeerChannels> peers_;
  v1::NodeInfo info_;
  std::string address_;
  std::unique_ptr<ControlService> control_service_;
  std::unique_ptr<RetrievalService> retrieval_service_;
  std::unique_ptr<FedRagOwnerService> owner_service_;
  std::unique_ptr<DragonService> dragon_service_;
  std::unique_ptr<AnswerEngine> answer_engine_;
  std::unique_ptr<QueryService> query_service_;
  std::unique_ptr<ScrambledAttentionService> attention_service_;  // compute nodes
  std::unique_ptr<grpc::Server> server_;

  // Coordinator link state.
  absl::Duration heartbeat_interval_ = absl::Seconds(2);  // owned by CoordinatorLoop
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;                                 // guarded by mutex_
  absl::Duration probe_interval_ = absl::ZeroDuration();  // guarded by mutex_; 0: no probes
  std::thread coordinator_thread_;
  std::thread probe_thread_;
};

// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts afterwards), so
// that WaitForTerminationSignal receives them. Call first thing in main.
void BlockTerminationSignals();
// Waits for SIGINT or SIGTERM; returns its name.
std::string WaitForTerminationSignal();

}  // namespace silo::node

#endif  // SILO_NODE_NODE_SERVER_H_
