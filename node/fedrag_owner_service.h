// silo.v1.FedRagOwnerService of an institution (DESIGN.md §6, owner side). For a session its
// querier runs, in order: ExchangeKeys (signed X25519; both sides derive the session secret),
// SelectChunks (which of this owner's handles sit where in the virtual context), then
// PrepareSession: the owner loads each selected chunk's KV (the stored shard, or a fresh
// prefill), rotates K by RoPE to the assigned positions, scrambles K and V of every delegated
// (layer, KV head) with the session's Φ, Ψ and Π, and streams them to the compute node, one
// (layer, KV head) in memory at a time. The secret is dropped once the upload is done.
//
// protect_mode OWNER: the layers below protect_layers are not uploaded. PrepareSession keeps
// their plain K (after RoPE) and V for the session instead, and the querier's OwnerAttend stream
// sends its plain query rows of those layers; the owner answers each with its partial attention
// (m, l, o) over its own selected chunks. The owner thereby sees the querier's query rows of
// those layers (a documented leak to the owner, DESIGN.md §6). Plain K and V rows still never
// leave this process, only attention outputs over all of them. The kept KV is dropped when the
// OwnerAttend stream ends, or after session_ttl without one.
//
// Before it uploads, the owner checks that the compute node's certificate names a compute node
// and the one the querier named: K′/V′ sent to the querier itself would be readable by it.
//
// Thread-safe: sessions are kept under one lock; PrepareSession and OwnerAttend compute outside
// it.
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
  int32_t max_sessions = 256;  // from ExchangeKeys to the upload, or to the end of OwnerAttend
  // From ExchangeKeys to PrepareSession, and (protect_mode OWNER) from PrepareSession to the
  // OwnerAttend stream.
  absl::Duration session_ttl = absl::Minutes(10);
  absl::Duration upload_deadline = absl::Minutes(5);
  // Plain K and V that protect_mode OWNER sessions keep for OwnerAttend, all sessions together.
  int64_t max_owner_kv_bytes = int64_t{1} << 30;
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
  // another model, already prepared), INVALID_ARGUMENT (settings), UNIMPLEMENTED (I8, decoy
  // rows), RESOURCE_EXHAUSTED (protect_mode OWNER: the KV to keep exceeds max_owner_kv_bytes),
  // and the compute node's status of the upload.
  grpc::Status PrepareSession(grpc::ServerContext* context,
                              const v1::PrepareSessionRequest* request,
                              v1::PrepareSessionResponse* response) override;
  // Caller: the session's querier, after PrepareSession with protect_mode OWNER. The first
  // message binds the stream to its session: INVALID_ARGUMENT (malformed id), NOT_FOUND,
  // PERMISSION_DENIED (another querier), FAILED_PRECONDITION (not prepared for OwnerAttend, or
  // already bound to a stream). Each message, one per (step, layer), strictly increasing, with
  // layer < protect_layers and one HeadQuery per KV head in order (owner_index and key_index 0,
  // plain q [n_rows, head_dim] F32, finite, n_rows ≤ 4096), is answered in order with one
  // partial per KV head over the session's chunks; INVALID_ARGUMENT ends the stream otherwise.
  // The session ends with its stream.
  grpc::Status OwnerAttend(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::OwnerAttendResponse, v1::OwnerAttendRequest>* stream) override;

 private:
  struct SelectedChunk {
    std::string chunk_id;
    int64_t virtual_start = 0;
    int32_t n_tokens = 0;
  };
  // Plain K (after RoPE to the assigned positions) and V of the protected layers, rows of every
  // selected chunk in virtual-position order; read-only once built.
  struct OwnerKv {
    int32_t n_layers = 0;  // protect_layers
    int32_t n_kv_heads = 0;
    int32_t head_dim = 0;
    int64_t n_rows = 0;       // tokens of the selected chunks
    std::vector<float> k, v;  // [n_layers][n_kv_heads][n_rows, head_dim] each
  };
  enum class State { kSetup, kPreparing, kPrepared };
  struct Session {
    crypto::PeerIdentity querier;
    crypto::SecretBytes secret;         // empty once prepared
    std::vector<SelectedChunk> chunks;  // by virtual_start
    absl::Time expires;
    State state = State::kSetup;
    int64_t owner_kv_bytes = 0;               // reserved in owner_kv_bytes_ from PrepareSession on
    std::shared_ptr<const OwnerKv> owner_kv;  // kPrepared (protect_mode OWNER) only
    bool attending = false;                   // an OwnerAttend stream is bound
  };
  using Sessions = std::map<std::string, Session>;

  // The session `id` of `caller`, under mutex_.
  grpc::Status FindSession(const std::string& id, const crypto::PeerIdentity& caller,
                           Session** session);
  // Under mutex_: erases a session and releases its reserved KV bytes.
  Sessions::iterator EraseSession(Sessions::iterator it);
  // Under mutex_; a session being prepared or attended is not idle.
  void DropExpired(absl::Time now);

  retrieval::KnowledgeBase* corpus_;
  const ChunkHandles* handles_;
  const KeyExchangeSigner signer_;
  PeerChannels* peers_;
  const v1::ModelFingerprint model_;
  const FedRagOwnerLimits limits_;
  const std::optional<engine::Rope> rope_;  // with a corpus
  std::mutex mutex_;
  Sessions sessions_;           // guarded by mutex_
  int64_t owner_kv_bytes_ = 0;  // reserved by sessions_, guarded by mutex_
};

}  // namespace silo::node

#endif  // SILO_NODE_FEDRAG_OWNER_SERVICE_H_
