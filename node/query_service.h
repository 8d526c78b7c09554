// silo.v1.QueryService of a querier node: the coordinator places a session and forwards the
// user's question here. Today it answers GENERATION_MODE_RETRIEVE (federated retrieval: the
// global top-k sources and the participants that did not answer); the generation modes arrive
// with the FedRAG and DRAGON protocols.
//
// Thread-safe.
#ifndef SILO_NODE_QUERY_SERVICE_H_
#define SILO_NODE_QUERY_SERVICE_H_

#include "node/federated_retrieval.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::node {

// FederatedRetrievalOptions of a QueryRequest (defaults for zero fields). InvalidArgument for
// values out of range.
absl::StatusOr<FederatedRetrievalOptions> RetrievalOptionsOf(const v1::QueryRequest& request);

class QueryService final : public v1::QueryService::Service {
 public:
  explicit QueryService(Querier querier) : querier_(std::move(querier)) {}

  grpc::Status Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                     grpc::ServerWriter<v1::QueryResponse>* writer) override;

 private:
  const Querier querier_;
};

}  // namespace silo::node

#endif  // SILO_NODE_QUERY_SERVICE_H_
