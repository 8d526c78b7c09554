// silo.v1.QueryService of a querier node: the coordinator places a session and forwards the
// user's question here. It answers
//   RETRIEVE  federated retrieval: the global top-k sources and the participants that did not
//             answer;
//   FEDRAG    federated retrieval, then generation over the selected chunks wherever they are
//             (AnswerEngine, FedRagSession), streaming text;
//   LOCAL     generation from the question alone; nothing leaves the node;
//   CENTRALIZED  evaluation only: federated retrieval, then the owners' chunk text gathered
//             here (owners that allow it) and generation over it in plaintext.
//   DRAGON    this node is the device side: its own top-k chunks, the placement's dragon_peer
//             the cloud side with its own (DESIGN.md §7), streaming text.
//
// Thread-safe.
#ifndef SILO_NODE_QUERY_SERVICE_H_
#define SILO_NODE_QUERY_SERVICE_H_

#include "node/answer_engine.h"
#include "node/federated_retrieval.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::node {

// FederatedRetrievalOptions of a QueryRequest (defaults for zero fields). InvalidArgument for
// values out of range.
absl::StatusOr<FederatedRetrievalOptions> RetrievalOptionsOf(const v1::QueryRequest& request);

class QueryService final : public v1::QueryService::Service {
 public:
  // `engine` may be null (a node that only retrieves); it must outlive the service.
  QueryService(Querier querier, AnswerEngine* engine)
      : querier_(std::move(querier)), engine_(engine) {}

  grpc::Status Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                     grpc::ServerWriter<v1::QueryResponse>* writer) override;

 private:
  const Querier querier_;
  AnswerEngine* engine_;
};

}  // namespace silo::node

#endif  // SILO_NODE_QUERY_SERVICE_H_
