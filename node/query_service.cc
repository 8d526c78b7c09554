#include "node/query_service.h"

#include "common/strings.h"
#include "node/grpc_status.h"
#include "node/rpc_roles.h"

namespace silo::node {

absl::StatusOr<FederatedRetrievalOptions> RetrievalOptionsOf(const v1::QueryRequest& request) {
  FederatedRetrievalOptions options;
  if (request.top_k() != 0) {
    if (request.top_k() > static_cast<uint32_t>(kMaxQueryTopK)) {
      return absl::InvalidArgumentError(
          StrCat("top_k must be in [1, ", kMaxQueryTopK, "], not ", request.top_k()));
    }
    options.top_k = static_cast<int32_t>(request.top_k());
  }
  switch (request.merge()) {
    case v1::MERGE_RULE_UNSPECIFIED:
    case v1::MERGE_RULE_SCORE:
      options.merge = retrieval::MergeRule::kScore;
      break;
    case v1::MERGE_RULE_RECIPROCAL_RANK:
      options.merge = retrieval::MergeRule::kReciprocalRank;
      break;
    default:
      return absl::InvalidArgumentError(StrCat("unknown merge rule ", request.merge()));
  }
  if (request.owner_timeout_ms() != 0) {
    if (request.owner_timeout_ms() > 60000) {
      return absl::InvalidArgumentError(
          StrCat("owner_timeout_ms must be in [1, 60000], not ", request.owner_timeout_ms()));
    }
    options.owner_timeout = absl::Milliseconds(request.owner_timeout_ms());
  }
  return options;
}

grpc::Status QueryService::Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                                 grpc::ServerWriter<v1::QueryResponse>* writer) {
  const absl::Time start = absl::Now();
  if (auto caller = AuthorizeCall(*context, Server::kNode, "/silo.v1.QueryService/Query");
      !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  const v1::Placement& placement = request->placement();
  if (placement.session().value().size() != 16) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the query carries no placement"};
  }
  if (placement.querier_node_id() != querier_.node_id) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            StrCat("the session was placed on ", placement.querier_node_id(), ", not on ",
                   querier_.node_id)};
  }
  if (placement.mode() != v1::GENERATION_MODE_RETRIEVE) {
    return {grpc::StatusCode::UNIMPLEMENTED,
            StrCat(v1::GenerationMode_Name(placement.mode()),
                   " is not served yet: this node answers GENERATION_MODE_RETRIEVE")};
  }
  absl::StatusOr<FederatedRetrievalOptions> options = RetrievalOptionsOf(*request);
  if (!options.ok()) return ToGrpcStatus(options.status());

  v1::QueryResponse started;
  *started.mutable_started()->mutable_placement() = placement;
  writer->Write(started);
  absl::StatusOr<FederatedRetrievalResult> result =
      RetrieveFederated(querier_, placement, request->question(), *options);
  if (!result.ok()) return ToGrpcStatus(result.status());

  v1::QueryResponse done;
  v1::QueryDone& body = *done.mutable_done();
  for (v1::Source& source : result->sources) *body.add_sources() = std::move(source);
  for (v1::NodeFailure& failure : result->unanswered) *body.add_unanswered() = std::move(failure);
  const int64_t elapsed = absl::ToInt64Nanoseconds(absl::Now() - start);
  body.mutable_stats()->set_retrieval_ns(elapsed);
  body.mutable_stats()->set_total_ns(elapsed);
  writer->Write(done);
  return grpc::Status::OK;
}

}  // namespace silo::node
