// silo.v1.DragonService, the cloud side of DRAGON (DESIGN.md §7): Decode runs the cloud's side of
// a session over one bidirectional stream. The device's first message starts the session: the
// cloud checks its parameters and model fingerprint, retrieves its own top-k chunks (the question
// is disclosed to the cloud in this mode) and answers `started`; every message after it carries
// a Draft, Verdict or AggregatorHandoff. A session lives as long as its stream.
//
// Thread-safety: gRPC calls it from many threads; decoding uses the node's decoder through
// AnswerEngine (one answer at a time).
#ifndef SILO_NODE_DRAGON_SERVICE_H_
#define SILO_NODE_DRAGON_SERVICE_H_

#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "node/answer_engine.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

// A session's streams' f32 KV cache at most (RESOURCE_EXHAUSTED beyond), counting per chunk
// stream its tokens, kDragonPromptRows for the prompt around it and max_tokens.
inline constexpr int64_t kMaxDragonCacheBytes = int64_t{4} << 30;
inline constexpr int64_t kDragonPromptRows = 8192 + 64;  // a 32 KiB question and the template
// How long the cloud waits, once done, for the device to half-close before cutting the call.
inline constexpr absl::Duration kDragonHalfCloseWait = absl::Seconds(10);

class DragonService final : public v1::DragonService::Service {
 public:
  // `corpus` and `engine` must outlive the service.
  DragonService(const retrieval::KnowledgeBase* corpus, AnswerEngine* engine,
                v1::ModelFingerprint model)
      : corpus_(corpus), engine_(engine), model_(std::move(model)) {}

  grpc::Status Decode(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) override;

 private:
  // The cloud's chunks for a session the device starts (its protocol options already checked):
  // InvalidArgument for a malformed request, FailedPrecondition for another model,
  // ResourceExhausted for a session whose KV cache would not fit, the errors of retrieval.
  absl::StatusOr<std::vector<retrieval::SearchHit>> Admit(
      const v1::StartSessionRequest& request) const;

  const retrieval::KnowledgeBase* corpus_;
  AnswerEngine* engine_;
  const v1::ModelFingerprint model_;
};

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_SERVICE_H_
