#include "node/query_service.h"

#include <algorithm>

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

absl::StatusOr<AnswerRequest> AnswerRequestOf(const v1::QueryRequest& request) {
  AnswerRequest answer;
  answer.question = request.question();
  answer.placement = request.placement();
  answer.max_tokens = request.max_tokens() == 0 ? 256 : static_cast<int32_t>(request.max_tokens());
  if (request.forced_answer().size() > kMaxQuestionBytes) {
    return absl::InvalidArgumentError("forced_answer must be at most 32 KiB");
  }
  answer.forced_answer = request.forced_answer();
  switch (request.compute_failure()) {
    case v1::FAILURE_POLICY_UNSPECIFIED:
    case v1::FAILURE_POLICY_FAIL:
      break;
    case v1::FAILURE_POLICY_CONTINUE:
      answer.continue_on_compute_failure = true;
      break;
    default:
      return absl::InvalidArgumentError(
          StrCat("unknown compute_failure policy ", request.compute_failure()));
  }
  if (request.max_tokens() > 32768) {
    return absl::InvalidArgumentError("max_tokens must be at most 32768");
  }
  const v1::SamplingParams& sampling = request.sampling();
  answer.sampling.temperature = sampling.temperature();
  answer.sampling.top_p = sampling.top_p() == 0 ? 1.0f : sampling.top_p();
  answer.sampling.top_k = static_cast<int32_t>(std::min<uint32_t>(sampling.top_k(), 1u << 30));
  answer.sampling.seed = sampling.seed();
  switch (request.kv_mode()) {
    case v1::KV_MODE_UNSPECIFIED:
    case v1::KV_MODE_POSITION_INDEPENDENT:
      answer.kv_mode = v1::KV_MODE_POSITION_INDEPENDENT;
      break;
    case v1::KV_MODE_PREFILL:
      answer.kv_mode = v1::KV_MODE_PREFILL;
      break;
    default:
      return absl::InvalidArgumentError(StrCat("unknown kv_mode ", request.kv_mode()));
  }
  switch (request.kv_dtype()) {
    case v1::DTYPE_UNSPECIFIED:
    case v1::DTYPE_F32:
      answer.kv_dtype = v1::DTYPE_F32;
      break;
    case v1::DTYPE_F16:
    case v1::DTYPE_BF16:
      answer.kv_dtype = request.kv_dtype();
      break;
    default:
      return absl::UnimplementedError("K'/V' travel as F32, F16 or BF16");
  }
  answer.dragon_top_k = request.top_k() == 0 ? 4 : static_cast<int32_t>(request.top_k());
  answer.distribution_top_p = request.distribution_top_p() == 0 ? 1 : request.distribution_top_p();
  answer.dragon = request.dragon();
  return answer;
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
  const v1::GenerationMode mode = placement.mode();
  const bool generates = mode == v1::GENERATION_MODE_FEDRAG || mode == v1::GENERATION_MODE_LOCAL ||
                         mode == v1::GENERATION_MODE_CENTRALIZED ||
                         mode == v1::GENERATION_MODE_DRAGON;
  if (mode != v1::GENERATION_MODE_RETRIEVE && !generates) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            StrCat(v1::GenerationMode_Name(mode), " is not a mode this node answers")};
  }
  if (generates && engine_ == nullptr) {
    return {grpc::StatusCode::FAILED_PRECONDITION, "this node runs no decoder"};
  }
  absl::StatusOr<FederatedRetrievalOptions> options = RetrievalOptionsOf(*request);
  if (!options.ok()) return ToGrpcStatus(options.status());
  absl::StatusOr<AnswerRequest> answer = AnswerRequestOf(*request);
  if (!answer.ok()) return ToGrpcStatus(answer.status());
  answer->deadline = absl::FromChrono(context->deadline());

  v1::QueryResponse started;
  *started.mutable_started()->mutable_placement() = placement;
  writer->Write(started);
  v1::QueryResponse done;
  v1::QueryDone& body = *done.mutable_done();
  std::vector<v1::Source> sources;  // in context order
  // DRAGON: each side retrieves from its own corpus when the answer starts.
  if (mode != v1::GENERATION_MODE_LOCAL && mode != v1::GENERATION_MODE_DRAGON) {
    absl::StatusOr<FederatedRetrievalResult> result =
        RetrieveFederated(querier_, placement, request->question(), *options);
    if (!result.ok()) return ToGrpcStatus(result.status());
    for (v1::NodeFailure& failure : result->unanswered) {
      *body.add_unanswered() = std::move(failure);
    }
    sources = std::move(result->sources);
  }
  const int64_t retrieval_ns = absl::ToInt64Nanoseconds(absl::Now() - start);
  if (generates) {
    answer->sources = std::move(sources);
    absl::StatusOr<AnswerResult> result =
        engine_->Answer(*std::move(answer), [&](const v1::TextDelta& delta) {
          if (context->IsCancelled()) return false;
          v1::QueryResponse message;
          *message.mutable_delta() = delta;
          return writer->Write(message);
        });
    if (!result.ok()) return ToGrpcStatus(result.status());
    *body.mutable_stats() = result->stats;
    body.set_stopped_by_eos(result->stopped_by_eos);
    for (v1::NodeFailure& failure : result->failures) *body.add_unanswered() = std::move(failure);
    sources = std::move(result->sources);
    // The engine's clocks start after retrieval.
    body.mutable_stats()->set_ttft_ns(result->stats.ttft_ns() + retrieval_ns);
  }
  for (v1::Source& source : sources) *body.add_sources() = std::move(source);
  body.mutable_stats()->set_retrieval_ns(retrieval_ns);
  body.mutable_stats()->set_total_ns(absl::ToInt64Nanoseconds(absl::Now() - start));
  writer->Write(done);
  return grpc::Status::OK;
}

}  // namespace silo::node
