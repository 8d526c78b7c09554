#include "node/federated_retrieval.h"

#include <chrono>
#include <cmath>
#include <thread>

#include "common/status_macros.h"
#include "common/strings.h"
#include "grpcpp/client_context.h"
#include "node/grpc_status.h"
#include "node/retrieval_service.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {
namespace {

// One participant's answer, or why there is none.
struct OwnerAnswer {
  std::string node_id;
  absl::Status status;
  std::vector<v1::ScoredChunk> chunks;
};

OwnerAnswer AskOwner(const Querier& querier, const v1::NodeRef& owner,
                     const v1::RetrieveRequest& request, absl::Duration timeout) {
  OwnerAnswer answer{.node_id = owner.node_id(), .status = absl::OkStatus(), .chunks = {}};
  const absl::Time deadline = absl::Now() + timeout;
  const std::unique_ptr<v1::RetrievalService::Stub> stub =
      v1::RetrievalService::NewStub(querier.peers->GetConnected(owner.address(), deadline));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  v1::RetrieveResponse response;
  answer.status = FromGrpcStatus(stub->Retrieve(&context, request, &response));
  if (!answer.status.ok()) return answer;
  if (response.chunks_size() > static_cast<int>(request.top_k())) {
    answer.status = absl::InvalidArgumentError("answered more chunks than asked for");
    return answer;
  }
  for (int i = 0; i < response.chunks_size(); ++i) {
    const v1::ScoredChunk& chunk = response.chunks(i);
    if (!std::isfinite(chunk.score()) || chunk.handle().empty() || chunk.handle().size() > 64 ||
        (i > 0 && chunk.score() > response.chunks(i - 1).score())) {
      answer.status = absl::InvalidArgumentError("answered malformed or unordered chunks");
      return answer;
    }
  }
  answer.chunks.assign(response.chunks().begin(), response.chunks().end());
  return answer;
}

absl::StatusOr<OwnerAnswer> SearchOwnCorpus(const Querier& querier, std::span<const float> values,
                                            int32_t top_k, std::string_view session_id) {
  OwnerAnswer answer{.node_id = querier.node_id, .status = absl::OkStatus(), .chunks = {}};
  const int64_t n_chunks = querier.corpus->index().size();
  if (n_chunks == 0) return answer;
  SILO_ASSIGN_OR_RETURN(const std::vector<retrieval::SearchHit> hits,
                        querier.corpus->SearchByEmbedding(
                            values, static_cast<int>(std::min<int64_t>(top_k, n_chunks))));
  for (const retrieval::SearchHit& hit : hits) {
    v1::ScoredChunk& chunk = answer.chunks.emplace_back();
    SILO_ASSIGN_OR_RETURN(*chunk.mutable_handle(),
                          querier.handles->Seal(session_id, hit.vector_id));
    chunk.set_score(hit.score);
    chunk.set_n_tokens(static_cast<uint32_t>(hit.n_tokens));
    if (querier.citations) {
      chunk.mutable_citation()->set_title(hit.title);
      chunk.mutable_citation()->set_source_path(hit.source_path);
    }
  }
  return answer;
}

}  // namespace

absl::StatusOr<FederatedRetrievalResult> RetrieveFederated(
    const Querier& querier, const v1::Placement& placement, std::string_view question,
    const FederatedRetrievalOptions& options) {
  if (question.empty() || question.size() > kMaxQuestionBytes) {
    return absl::InvalidArgumentError(
        StrCat("the question must be 1 to ", kMaxQuestionBytes, " bytes"));
  }
  if (options.top_k < 1 || options.top_k > kMaxQueryTopK) {
    return absl::InvalidArgumentError(
        StrCat("top_k must be in [1, ", kMaxQueryTopK, "], not ", options.top_k));
  }
  if (options.owner_timeout <= absl::ZeroDuration() || options.owner_timeout > absl::Minutes(1)) {
    return absl::InvalidArgumentError("the owner timeout must be in (0, 60 s]");
  }
  if (querier.corpus == nullptr) {
    return absl::FailedPreconditionError("the querier holds no embedder to embed the question");
  }
  SILO_ASSIGN_OR_RETURN(const std::vector<float> values, querier.corpus->EmbedQuestion(question));
  v1::RetrieveRequest request;
  *request.mutable_session() = placement.session();
  *request.mutable_embedding() = EncodeQueryEmbedding(values);
  *request.mutable_embedder() = querier.embedder;
  request.set_top_k(static_cast<uint32_t>(options.top_k));

  // One thread per participant: each blocks on its own deadline, so a slow owner costs its
  // deadline once, not once per owner.
  std::vector<OwnerAnswer> answers(static_cast<size_t>(placement.participants_size()));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(placement.participants_size()));
  for (int i = 0; i < placement.participants_size(); ++i) {
    threads.emplace_back([&, i] {
      answers[static_cast<size_t>(i)] =
          AskOwner(querier, placement.participants(i), request, options.owner_timeout);
    });
  }
  absl::StatusOr<OwnerAnswer> own =
      SearchOwnCorpus(querier, values, options.top_k, placement.session().value());
  for (std::thread& thread : threads) thread.join();
  SILO_RETURN_IF_ERROR(own.status());
  answers.push_back(*std::move(own));

  FederatedRetrievalResult result;
  for (const v1::NodeRef& offline : placement.offline()) {
    v1::NodeFailure& failure = result.unanswered.emplace_back();
    failure.set_node_id(offline.node_id());
    failure.set_code(static_cast<int32_t>(absl::StatusCode::kUnavailable));
    failure.set_message("offline (missed its heartbeats at placement); not asked");
  }
  std::vector<std::vector<float>> scores;
  std::vector<const OwnerAnswer*> answered;
  for (const OwnerAnswer& answer : answers) {
    if (!answer.status.ok()) {
      v1::NodeFailure& failure = result.unanswered.emplace_back();
      failure.set_node_id(answer.node_id);
      failure.set_code(static_cast<int32_t>(answer.status.code()));
      failure.set_message(StrCat(answer.status.message()));
      continue;
    }
    std::vector<float>& list = scores.emplace_back();
    for (const v1::ScoredChunk& chunk : answer.chunks) list.push_back(chunk.score());
    result.n_candidates += static_cast<int64_t>(list.size());
    answered.push_back(&answer);
  }
  SILO_ASSIGN_OR_RETURN(const std::vector<retrieval::MergedHit> merged,
                        retrieval::MergeRankedLists(scores, options.top_k, options.merge));
  for (const retrieval::MergedHit& hit : merged) {
    const OwnerAnswer& owner = *answered[static_cast<size_t>(hit.list)];
    const v1::ScoredChunk& chunk = owner.chunks[static_cast<size_t>(hit.rank)];
    v1::Source& source = result.sources.emplace_back();
    source.set_owner_node_id(owner.node_id);
    source.set_handle(chunk.handle());
    source.set_score(chunk.score());
    source.set_n_tokens(chunk.n_tokens());
    if (chunk.has_citation()) *source.mutable_citation() = chunk.citation();
  }
  return result;
}

}  // namespace silo::node
