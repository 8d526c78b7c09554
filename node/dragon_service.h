// silo.v1.DragonService, the cloud side of DRAGON (DESIGN.md §7). StartSession checks the
// device's parameters and model fingerprint and retrieves the cloud's own top-k chunks (the
// question is disclosed to the cloud in this mode); Decode then runs the cloud's side of the
// protocol over one bidirectional stream: the device's first message names the session, every
// message after it carries a Draft, Verdict or AggregatorHandoff. A session is decoded once, by
// the node that started it, within kDragonSessionTtl.
//
// Thread-safety: gRPC calls it from many threads; sessions are kept under a lock, and decoding
// uses the node's decoder through AnswerEngine (one answer at a time).
#ifndef SILO_NODE_DRAGON_SERVICE_H_
#define SILO_NODE_DRAGON_SERVICE_H_

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "crypto/certificate.h"
#include "node/answer_engine.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

inline constexpr absl::Duration kDragonSessionTtl = absl::Minutes(2);
inline constexpr size_t kMaxPendingDragonSessions = 64;
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

  grpc::Status StartSession(grpc::ServerContext* context, const v1::StartSessionRequest* request,
                            v1::StartSessionResponse* response) override;
  grpc::Status Decode(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) override;

 private:
  struct Pending {
    v1::StartSessionRequest request;
    std::vector<retrieval::SearchHit> hits;
    crypto::PeerIdentity device;
    absl::Time started;
  };

  const retrieval::KnowledgeBase* corpus_;
  AnswerEngine* engine_;
  const v1::ModelFingerprint model_;
  std::mutex mutex_;
  std::map<std::string, Pending> pending_;  // by session id
};

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_SERVICE_H_
