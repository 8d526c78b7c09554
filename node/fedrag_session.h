// The querier's side of a FedRAG session (DESIGN.md §6): it sets the session up and then serves
// the model as an AttentionHook.
//
// Setup, for the owners whose chunks were selected (all in parallel where they can be):
//   1. ExchangeKeys with each owner (signed X25519): one secret per owner, known to nobody else.
//   2. SelectChunks: each owner learns where its chunks sit in the virtual context.
//   3. OpenSession on the compute node with the layout (rows per key of every owner); the
//      compute node's certificate must name the placed compute node.
//   4. PrepareSession: each owner rotates, scrambles and uploads its K'/V' to the compute node
//      (protect_mode OWNER: of the delegated layers; it keeps the plain KV of the others).
//   5. One long-lived Attend stream to the compute node, and (protect_mode OWNER) one
//      OwnerAttend stream to each owner.
// Then at every delegated layer of every forward step, AddPartials scrambles the query rows of
// every (owner, KV head, key) with that owner's Φ^{-T} (rows permuted afresh), sends them in one
// AttendRequest, and unscrambles the answers into plain partials for the engine to merge with
// its own. Layers below protect_layers are not delegated: with protect_mode SKIP they get no
// partials (chunks are not attended there); with OWNER the plain query rows (permuted afresh)
// go to every owner at once, and each owner's partial over its own chunks comes back, so the
// result stays exact but each owner sees those query rows. Close ends the streams and the
// session on the compute node (its TTL does it otherwise). If an exchange fails after setup,
// the step fails, or (continue_on_failure) the remote chunks are left out from then on and
// failure() says why.
//
// Thread-safety: one thread drives a session (the forward pass); Open runs owners in parallel.
#ifndef SILO_NODE_FEDRAG_SESSION_H_
#define SILO_NODE_FEDRAG_SESSION_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model_config.h"
#include "engine/transformer.h"
#include "node/fedrag_key_exchange.h"
#include "node/fedrag_scrambler.h"
#include "node/peer_channels.h"
#include "silo/v1/coordinator.pb.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo::node {

// One owner's chunks in the virtual context, in position order.
struct FedRagOwnerChunks {
  v1::NodeRef owner;
  std::vector<v1::ChunkSelection> selections;  // handle and virtual_start
  std::vector<int32_t> n_tokens;               // of each selection
};

struct FedRagSessionOptions {
  v1::Placement placement;                // session id, compute node, resolved privacy settings
  std::vector<FedRagOwnerChunks> owners;  // 1..64, each with at least one chunk
  v1::ModelFingerprint model;             // the querier's decoder; owners must hold the same
  v1::KvMode kv_mode = v1::KV_MODE_POSITION_INDEPENDENT;
  v1::DType kv_dtype = v1::DTYPE_F32;  // K'/V' on the wire: F32, F16 or BF16
  absl::Time deadline;                 // of the whole session (setup and every step)
  // After setup, a failed exchange ends the answer (false) or leaves the remote chunks out of
  // every later step (true; failure() says why).
  bool continue_on_failure = false;
};

// What the session cost, for QueryStats.
struct FedRagSessionStats {
  int64_t setup_ns = 0;
  int64_t upload_bytes = 0;    // K'/V' the owners sent to the compute node
  int64_t bytes_sent = 0;      // by the querier: key exchange, layout, queries
  int64_t bytes_received = 0;  // by the querier: key exchange, partials
  int64_t n_exchanges = 0;     // Attend round trips
  int64_t exchange_ns = 0;     // spent in them (scrambling included)
  int64_t n_owner_exchanges =
      0;  // protect_mode OWNER: OwnerAttend round trips (all owners at once)
  int64_t owner_exchange_ns = 0;  // spent in them
};

class FedRagSession final : public engine::AttentionHook {
 public:
  // Sets the session up (steps 1–5 above). InvalidArgument for bad options; the first failing
  // peer's status, its message naming the peer (Unavailable, DeadlineExceeded, PermissionDenied
  // when the compute node's certificate is not the placed node's, ...). On failure the compute
  // node's session is closed again.
  static absl::StatusOr<std::unique_ptr<FedRagSession>> Open(FedRagSessionOptions options,
                                                             const engine::ModelConfig& config,
                                                             const KeyExchangeSigner& signer,
                                                             PeerChannels& peers);
  ~FedRagSession() override;  // Close, if not done

  absl::Status AddPartials(int32_t layer, std::span<const float> q,
                           std::span<const int32_t> positions,
                           engine::AttentionPartials& partials) override;

  // Ends the Attend and OwnerAttend streams and drops the session on the compute node.
  absl::Status Close();

  // OK, or why the remote chunks were left out (continue_on_failure).
  const absl::Status& failure() const { return failure_; }

  const FedRagSessionStats& stats() const { return stats_; }

 private:
  struct Owner {
    FedRagScrambler scrambler;
    // protect_mode OWNER: the stream of the protected layers.
    std::unique_ptr<grpc::ClientContext> attend_context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::OwnerAttendRequest, v1::OwnerAttendResponse>>
        attend;
  };
  // One KV head's query rows in a fresh random order: rows [n_rows, head_dim] f32, row i being
  // plain row order[i] = (token order[i] / group, head kv_head · group + order[i] % group).
  struct HeadRows {
    std::vector<int32_t> order;
    std::vector<float> rows;
  };

  FedRagSession(FedRagSessionOptions options, const engine::ModelConfig& config,
                PeerChannels& peers);
  // Whether any layer goes to the compute node (protect_layers < n_layers); when none does, the
  // session never opens one there.
  bool delegates() const { return first_layer_ < n_layers_; }
  // One layer's round trip with the compute node.
  absl::Status Exchange(int32_t layer, std::span<const float> q,
                        engine::AttentionPartials& partials);
  // One protected layer's round trip with every owner (protect_mode OWNER).
  absl::Status OwnerExchange(int32_t layer, std::span<const float> q,
                             engine::AttentionPartials& partials);
  // q: [n_tokens, n_heads, head_dim].
  HeadRows GatherHeadRows(std::span<const float> q, int32_t kv_head);
  // partials sized for n_parts partials of n_tokens tokens, zeroed.
  void ResetPartials(int32_t n_parts, int64_t n_tokens, engine::AttentionPartials& partials) const;
  // Writes `plain`, the partial of `head`'s rows, into part `part` of `partials`.
  absl::Status ScatterHeadRows(const PlainPartial& plain, const HeadRows& head, int32_t kv_head,
                               size_t part, int64_t n_tokens,
                               engine::AttentionPartials& partials) const;

  FedRagSessionOptions options_;
  int32_t n_heads_, n_kv_heads_, head_dim_, first_layer_, n_layers_;
  bool owners_attend_;  // protect_mode OWNER with protect_layers > 0
  std::shared_ptr<grpc::Channel> compute_channel_;
  std::vector<Owner> owners_;
  std::unique_ptr<grpc::ClientContext> attend_context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AttendRequest, v1::AttendResponse>> attend_;
  uint32_t step_ = 0;
  int32_t last_layer_ = -1;
  bool closed_ = false;          // no more exchanges
  bool compute_closed_ = false;  // CloseSession was sent
  std::mt19937_64 row_shuffle_;  // seeded from the CSPRNG; permutes query rows per message
  FedRagSessionStats stats_;
  absl::Status failure_;
};

}  // namespace silo::node

#endif  // SILO_NODE_FEDRAG_SESSION_H_
