#include "node/retrieval_service.h"

#include <cmath>
#include <cstring>

#include "common/strings.h"
#include "node/grpc_status.h"
#include "node/rpc_roles.h"

namespace silo::node {
namespace {

constexpr size_t kSessionIdSize = 16;

}  // namespace

absl::StatusOr<std::vector<float>> DecodeQueryEmbedding(const v1::Tensor& tensor, int32_t dim) {
  if (tensor.dtype() != v1::DTYPE_F32) {
    return absl::InvalidArgumentError("the embedding must be DTYPE_F32");
  }
  if (tensor.shape_size() != 1 || tensor.shape(0) != dim) {
    return absl::InvalidArgumentError(StrCat("the embedding must have shape [", dim, "]"));
  }
  if (tensor.data().size() != static_cast<size_t>(dim) * sizeof(float)) {
    return absl::InvalidArgumentError(
        StrCat("the embedding's data must be ", dim * 4, " bytes, not ", tensor.data().size()));
  }
  if (tensor.row_scales_size() != 0) {
    return absl::InvalidArgumentError("row_scales are only for DTYPE_I8");
  }
  std::vector<float> values(static_cast<size_t>(dim));
  std::memcpy(values.data(), tensor.data().data(), tensor.data().size());  // little-endian host
  double norm2 = 0;
  for (const float value : values) {
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError("the embedding holds NaN or Inf");
    }
    norm2 += static_cast<double>(value) * value;
  }
  if (std::abs(std::sqrt(norm2) - 1.0) > 1e-3) {
    return absl::InvalidArgumentError(
        StrCat("the embedding must have unit length, not ", std::sqrt(norm2)));
  }
  return values;
}

v1::Tensor EncodeQueryEmbedding(std::span<const float> embedding) {
  v1::Tensor tensor;
  tensor.set_dtype(v1::DTYPE_F32);
  tensor.add_shape(static_cast<int64_t>(embedding.size()));
  tensor.set_data(std::string(reinterpret_cast<const char*>(embedding.data()),
                              embedding.size() * sizeof(float)));
  return tensor;
}

RetrievalService::RetrievalService(const retrieval::KnowledgeBase* corpus,
                                   const ChunkHandles& handles, v1::ModelFingerprint model,
                                   v1::ModelFingerprint embedder, bool citations,
                                   bool plaintext_baseline)
    : corpus_(corpus),
      handles_(handles),
      model_(std::move(model)),
      embedder_(std::move(embedder)),
      citations_(citations),
      plaintext_baseline_(plaintext_baseline) {}

grpc::Status RetrievalService::ExportChunkText(grpc::ServerContext* context,
                                               const v1::ExportChunkTextRequest* request,
                                               v1::ExportChunkTextResponse* response) {
  if (auto caller =
          AuthorizeCall(*context, Server::kNode, "/silo.v1.RetrievalService/ExportChunkText");
      !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  if (corpus_ == nullptr) {
    return {grpc::StatusCode::FAILED_PRECONDITION, "this node holds no corpus"};
  }
  if (!plaintext_baseline_) {
    return {grpc::StatusCode::PERMISSION_DENIED,
            "this owner keeps its chunk text (serve.plaintext_baseline is off)"};
  }
  if (request->handles_size() < 1 || request->handles_size() > 256) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "ask for 1 to 256 chunks"};
  }
  for (const std::string& handle : request->handles()) {
    absl::StatusOr<int64_t> vector_id = handles_.Open(request->session().value(), handle);
    if (!vector_id.ok()) {
      const std::string message(vector_id.status().message());
      return {grpc::StatusCode::INVALID_ARGUMENT, message};
    }
    absl::StatusOr<retrieval::ChunkRecord> chunk = corpus_->store().GetChunkByVectorId(*vector_id);
    if (!chunk.ok()) return ToGrpcStatus(chunk.status());
    response->add_texts(std::move(chunk->text));
  }
  return grpc::Status::OK;
}

grpc::Status RetrievalService::Retrieve(grpc::ServerContext* context,
                                        const v1::RetrieveRequest* request,
                                        v1::RetrieveResponse* response) {
  if (auto caller = AuthorizeCall(*context, Server::kNode, "/silo.v1.RetrievalService/Retrieve");
      !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  if (request->session().value().size() != kSessionIdSize) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            StrCat("the session id must be ", kSessionIdSize, " bytes")};
  }
  if (request->top_k() < 1 || request->top_k() > kMaxRetrieveTopK) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            StrCat("top_k must be in [1, ", kMaxRetrieveTopK, "], not ", request->top_k())};
  }
  if (request->embedder().sha256().empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the embedder's fingerprint is missing"};
  }
  if (corpus_ == nullptr) {
    return {grpc::StatusCode::FAILED_PRECONDITION, "this node holds no corpus"};
  }
  if (request->embedder().sha256() != embedder_.sha256()) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            StrCat("the query was embedded with ", request->embedder().name(),
                   ", another embedder than this node's ", embedder_.name())};
  }
  absl::StatusOr<std::vector<float>> embedding =
      DecodeQueryEmbedding(request->embedding(), corpus_->embedding_dim());
  if (!embedding.ok()) return ToGrpcStatus(embedding.status());

  const int64_t n_chunks = corpus_->index().size();
  response->set_n_chunks(static_cast<uint64_t>(n_chunks));
  *response->mutable_model() = model_;
  if (n_chunks == 0) return grpc::Status::OK;
  absl::StatusOr<std::vector<retrieval::SearchHit>> hits = corpus_->SearchByEmbedding(
      *embedding, static_cast<int>(std::min<int64_t>(request->top_k(), n_chunks)));
  if (!hits.ok()) return ToGrpcStatus(hits.status());
  for (const retrieval::SearchHit& hit : *hits) {
    absl::StatusOr<std::string> handle = handles_.Seal(request->session().value(), hit.vector_id);
    if (!handle.ok()) return ToGrpcStatus(handle.status());
    v1::ScoredChunk& chunk = *response->add_chunks();
    chunk.set_handle(*std::move(handle));
    chunk.set_score(hit.score);
    chunk.set_n_tokens(static_cast<uint32_t>(hit.n_tokens));
    if (citations_) {
      chunk.mutable_citation()->set_title(hit.title);
      chunk.mutable_citation()->set_source_path(hit.source_path);
    }
  }
  return grpc::Status::OK;
}

}  // namespace silo::node
