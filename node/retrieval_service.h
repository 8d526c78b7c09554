// silo.v1.RetrievalService of institution and device nodes (DESIGN.md §5): the k best chunks of
// this node's corpus for a querier's embedding, as opaque handles with scores and token counts.
// Chunk text never leaves; title and source path only when the owner's config allows citations.
//
// Thread-safe (KnowledgeBase::SearchByEmbedding may run concurrently).
#ifndef SILO_NODE_RETRIEVAL_SERVICE_H_
#define SILO_NODE_RETRIEVAL_SERVICE_H_

#include "node/chunk_handles.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

inline constexpr uint32_t kMaxRetrieveTopK = 256;

// Checks a query embedding on the wire: [dim] F32, little-endian, finite, unit length (within
// 1e-3). InvalidArgument naming what is wrong; the values on success.
absl::StatusOr<std::vector<float>> DecodeQueryEmbedding(const v1::Tensor& tensor, int32_t dim);

// The wire form of a unit embedding.
v1::Tensor EncodeQueryEmbedding(std::span<const float> embedding);

class RetrievalService final : public v1::RetrievalService::Service {
 public:
  // `corpus` is null on a node without one (every Retrieve is then FAILED_PRECONDITION).
  // `plaintext_baseline`: whether ExportChunkText answers (evaluation only).
  RetrievalService(const retrieval::KnowledgeBase* corpus, const ChunkHandles& handles,
                   v1::ModelFingerprint model, v1::ModelFingerprint embedder, bool citations,
                   bool plaintext_baseline = false);

  grpc::Status Retrieve(grpc::ServerContext* context, const v1::RetrieveRequest* request,
                        v1::RetrieveResponse* response) override;
  grpc::Status ExportChunkText(grpc::ServerContext* context,
                               const v1::ExportChunkTextRequest* request,
                               v1::ExportChunkTextResponse* response) override;

 private:
  const retrieval::KnowledgeBase* corpus_;
  const ChunkHandles& handles_;
  const v1::ModelFingerprint model_;
  const v1::ModelFingerprint embedder_;
  const bool citations_;
  const bool plaintext_baseline_;
};

}  // namespace silo::node

#endif  // SILO_NODE_RETRIEVAL_SERVICE_H_
