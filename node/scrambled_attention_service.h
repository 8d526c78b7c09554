// silo.v1.ScrambledAttentionService of a compute node (DESIGN.md §6): it holds the scrambled
// K′/V′ that owners upload for a session, in memory only, and answers the querier's scrambled
// queries with partial attention (m, l, o′) per (owner, KV head, key). It never sees a seed, a
// plain query or plain KV; what it could still infer is the privacy harness's to measure.
//
// A session is opened by its querier, which names the owners allowed to upload and the layout;
// each owner uploads every (delegated layer, KV head, key) once; then the querier's Attend
// stream sends one message per (step, layer), strictly increasing. Every message is checked
// (shapes, dtypes, NaN/Inf, ranges, sizes, who calls) before use. A session ends with
// CloseSession or when it has been idle for its TTL.
//
// Thread-safe: sessions are independent; each has its own lock and attention backend.
#ifndef SILO_NODE_SCRAMBLED_ATTENTION_SERVICE_H_
#define SILO_NODE_SCRAMBLED_ATTENTION_SERVICE_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

struct ScrambledAttentionLimits {
  int64_t max_session_kv_bytes = int64_t{4} << 30;  // K′ and V′ of one session
  int64_t max_total_kv_bytes = int64_t{16} << 30;   // of every open session together
  absl::Duration default_ttl = absl::Minutes(5);
  absl::Duration max_ttl = absl::Hours(1);
};

class ScrambledAttentionService final : public v1::ScrambledAttentionService::Service {
 public:
  explicit ScrambledAttentionService(ScrambledAttentionLimits limits = {});
  ~ScrambledAttentionService() override;  // stops the expiry thread, drops every session

  // Caller: the session's querier (institution or device). INVALID_ARGUMENT for a bad layout,
  // ALREADY_EXISTS for an open session id, RESOURCE_EXHAUSTED when its K′/V′ would not fit.
  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override;
  // Caller: an owner named at OpenSession. NOT_FOUND for an unknown session, PERMISSION_DENIED
  // for another node, INVALID_ARGUMENT for a bad or repeated (layer, kv_head, key) or tensor.
  grpc::Status UploadScrambledKv(grpc::ServerContext* context,
                                 grpc::ServerReader<v1::UploadScrambledKvRequest>* reader,
                                 v1::UploadScrambledKvResponse* response) override;
  // Caller: the session's querier. FAILED_PRECONDITION until every upload is complete;
  // INVALID_ARGUMENT for a (step, layer) that does not increase or a bad query.
  grpc::Status Attend(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::AttendResponse, v1::AttendRequest>* stream) override;
  // Caller: the session's querier. NOT_FOUND for an unknown session.
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override;

  // Sessions open now (for Health and tests).
  int32_t n_sessions() const;

 private:
  struct Session;

  // The open session `id`; INVALID_ARGUMENT for a malformed id, NOT_FOUND for none.
  grpc::Status FindSession(const std::string& id, std::shared_ptr<Session>* session) const;
  void DropExpired();

  const ScrambledAttentionLimits limits_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;  // guarded by mutex_
  int64_t total_kv_bytes_ = 0;                                // reserved, guarded by mutex_
  bool stopping_ = false;                                     // guarded by mutex_
  std::condition_variable wake_;
  std::thread expiry_thread_;
};

}  // namespace silo::node

#endif  // SILO_NODE_SCRAMBLED_ATTENTION_SERVICE_H_
