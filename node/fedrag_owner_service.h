// silo.v1.FedRagOwnerService of an institution (DESIGN.md §6, owner side). For a session its
// querier runs, in order: ExchangeKeys (signed X25519; both sides derive the session secret),
// SelectChunks (which of this owner's handles sit where in the virtual context), then
// PrepareSession: the owner loads each selected chunk's KV (the stored shard, or a fresh
// prefill), rotates K by RoPE to the assigned positions, scrambles K and V of every delegated
// (layer, KV head) with the session's Φ, Ψ and Π, and streams them to the compute node, one
// (layer, KV head) in memory at a time. Plain KV and the secret never leave this process; the
// secret is dropped once the upload is done.
//
// Before it uploads, the owner checks that the compute node's certificate names a compute node
// and the one the querier named: K′/V′ sent to the querier itself would be readable by it.
//
// Thread-safe: sessions are kept under one lock; PrepareSession runs outside it.
#ifndef SILO_NODE_FEDRAG_OWNER_SERVICE_H_
#define SILO_NODE_FEDRAG_OWNER_SERVICE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "crypto/certificate.h"
#include "crypto/secret_bytes.h"
#include "engine/rope.h"
#include "node/chunk_handles.h"
#include "node/fedrag_key_exchange.h"
#include "node/peer_channels.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

struct FedRagOwnerLimits {
  int32_t max_sessions = 256;                      // sessions between ExchangeKeys and the upload
  absl::Duration session_ttl = absl::Minutes(10);  // from ExchangeKeys to PrepareSession
  absl::Duration upload_deadline = absl::Minutes(5);
};

class FedRagOwnerService final : public v1::FedRagOwnerService::Service {
 public:
  // `corpus`, `handles` and `peers` must outlive the service; `corpus` may be null (a node
  // without one answers FAILED_PRECONDITION past the role check). `model`: this owner's decoder
  // fingerprint, as it registered it.
  FedRagOwnerService(retrieval::KnowledgeBase* corpus, const ChunkHandles* handles,
                     KeyExchangeSigner signer, PeerChannels* peers, v1::ModelFingerprint model,
                     FedRagOwnerLimits limits = {});

  // Caller: the querier (institution or device). INVALID_ARGUMENT (malformed), ALREADY_EXISTS
  // (keys of this session were exchanged), RESOURCE_EXHAUSTED (too many sessions), and the
  // codes of AnswerKeyExchange.
  grpc::Status ExchangeKeys(grpc::ServerContext* context, const v1::ExchangeKeysRequest* request,
                            v1::ExchangeKeysResponse* response) override;
  // Caller: the session's querier. NOT_FOUND (no key exchange), PERMISSION_DENIED (another
  // querier), INVALID_ARGUMENT (a handle not of this session, > 256 selections, negative or
  // overlapping positions), FAILED_PRECONDITION (already prepared).
  grpc::Status SelectChunks(grpc::ServerContext* context, const v1::SelectChunksRequest* request,
                            v1::SelectChunksResponse* response) override;
  // Caller: the session's querier. NOT_FOUND, PERMISSION_DENIED (another querier; a compute
  // node whose certificate is not the named compute node's), FAILED_PRECONDITION (no selection,
  // another model), INVALID_ARGUMENT (settings), UNIMPLEMENTED (protect_mode OWNER, I8),
  // and the compute node's status of the upload.
  grpc::Status PrepareSession(grpc::ServerContext* context,
                              const v1::PrepareSessionRequest* request,
                              v1::PrepareSessionResponse* response) override;
  // protect_mode OWNER comes with the privacy harness; UNIMPLEMENTED until then.
  grpc::Status OwnerAttend(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::OwnerAttendResponse, v1::OwnerAttendRequest>* stream) override;

 private:
  struct SelectedChunk {
    std::string chunk_id;
    int64_t virtual_start = 0;
    int32_t n_tokens = 0;
  };
  struct Session {
    crypto::PeerIdentity querier;
    crypto::SecretBytes secret;
    std::vector<SelectedChunk> chunks;  // by virtual_start
    absl::Time expires;
    bool preparing = false;
  };

  // The session `id` of `caller`, under mutex_.
  grpc::Status FindSession(const std::string& id, const crypto::PeerIdentity& caller,
                           Session** session);
  void DropExpired(absl::Time now);

  retrieval::KnowledgeBase* corpus_;
  const ChunkHandles* handles_;
  const KeyExchangeSigner signer_;
  PeerChannels* peers_;
  const v1::ModelFingerprint model_;
  const FedRagOwnerLimits limits_;
  const std::optional<engine::Rope> rope_;  // with a corpus
  std::mutex mutex_;
  std::map<std::string, Session> sessions_;  // guarded by mutex_
};

}  // namespace silo::node

#endif  // SILO_NODE_FEDRAG_OWNER_SERVICE_H_
