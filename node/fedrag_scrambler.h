// One owner's scramblers in one FedRAG session (DESIGN.md §6), as the owner and the querier
// both hold them: from the session secret of their key exchange, each (layer, KV head, key
// block) has its own Φ (keys), Ψ (values) and Π (rows), drawn from seeds that
// crypto::DeriveScramblerSeeds derives and attention/ expands. The owner turns its K (after
// RoPE) and V into the UploadScrambledKv messages for the compute node; the querier turns its
// query rows into the HeadQuery of each key block and the compute node's partials back into
// plain (m, l, o) to merge with its own. The compute node sees none of this.
//
// Thread-safe: const methods may run concurrently. Each key's scramblers are derived (HKDF, and
// a QR factorization for the dense mixer) and uploaded to the scrambler's CPU backend the first
// time they are used and kept, because the querier needs them again at every layer of every
// step.
#ifndef SILO_NODE_FEDRAG_SCRAMBLER_H_
#define SILO_NODE_FEDRAG_SCRAMBLER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "attention/backend.h"
#include "attention/key_schedule.h"
#include "attention/scrambler.h"
#include "crypto/secret_bytes.h"
#include "silo/v1/common.pb.h"
#include "silo/v1/node.pb.h"

namespace silo::node {

struct FedRagScramblerOptions {
  std::string session_id;  // 16 bytes
  int32_t head_dim = 0;    // the model's; scrambled rows are padded to a power of two
  attention::ScramblerOptions mixer;
  attention::KeyScope key_scope = attention::KeyScope::kSession;
  int32_t block_rows = 0;           // with KeyScope::kBlock
  std::vector<int32_t> chunk_rows;  // the owner's selected chunks, in virtual-position order
};

// The scrambler options of a session from its resolved privacy settings: InvalidArgument for
// an unknown or unresolved key scope or mixer, or block_rows outside [1, 4096] with
// KEY_SCOPE_BLOCK; Unimplemented for decoy rows (not built yet).
absl::StatusOr<FedRagScramblerOptions> ScramblerOptionsOf(const v1::PrivacySettings& privacy,
                                                          std::string session_id, int32_t head_dim,
                                                          std::vector<int32_t> chunk_rows);

// A partial of a key block, unscrambled: [n_rows] m and l, [n_rows, head_dim] o.
struct PlainPartial {
  std::vector<float> m, l, o;
};

// The F32 tensors of a partial on the wire, o of `head_dim` columns, as they are (a plain partial
// from an owner; the compute node's still need Unscramble). InvalidArgument for a malformed one.
absl::StatusOr<PlainPartial> DecodePartial(const v1::AttentionPartial& partial, int32_t head_dim);

class FedRagScrambler {
 public:
  // InvalidArgument for a session id that is not 16 bytes, a head_dim outside [1, 512] or a bad
  // key plan; the errors of the key schedule.
  static absl::StatusOr<FedRagScrambler> Create(const crypto::SecretBytes& session_secret,
                                                FedRagScramblerOptions options);

  const std::vector<attention::KeyBlock>& blocks() const { return blocks_; }
  int32_t padded_dim() const { return padded_dim_; }
  // Rows of each key block, as OpenSessionRequest.owners[].key_rows wants them.
  std::vector<uint32_t> key_rows() const;

  // Owner: K′ = Π·K·Φ and V′ = Π·V·Ψ of every key block of (layer, kv_head) on the wire as
  // `wire_dtype` (F32, F16 or BF16). k and v: [total rows, head_dim] f32, K after RoPE.
  // InvalidArgument for wrong sizes or dtypes.
  absl::StatusOr<std::vector<v1::UploadScrambledKvRequest>> ScrambleKv(uint32_t layer,
                                                                       uint32_t kv_head,
                                                                       std::span<const float> k,
                                                                       std::span<const float> v,
                                                                       v1::DType wire_dtype) const;

  // Querier: q′ = q·Φ^{-T} of key block `key_index` for the owner at `owner_index` of the
  // session. q: [n_rows, head_dim] f32.
  absl::StatusOr<v1::HeadQuery> ScrambleQuery(uint32_t owner_index, uint32_t layer,
                                              uint32_t kv_head, int32_t key_index,
                                              std::span<const float> q) const;

  // The row permutation Π of key block `key_index` of (layer, kv_head): scrambled row i is the
  // block's row order[i]. Owner and querier both know it; the privacy harness (eval/) scores
  // its attacks against it. InvalidArgument for an unknown key block.
  absl::StatusOr<std::vector<int32_t>> RowOrder(uint32_t layer, uint32_t kv_head,
                                                int32_t key_index) const;

  // Querier: o = o′·Ψ⁻¹ of a partial the compute node returned for (layer, kv_head, key).
  // InvalidArgument for a malformed partial.
  absl::StatusOr<PlainPartial> Unscramble(uint32_t layer, uint32_t kv_head,
                                          const v1::AttentionPartial& partial) const;

 private:
  struct Transform;
  struct KeyScramblers;
  // Derived scramblers by (layer, kv_head, key_index), filled on first use, their transforms
  // uploaded to `backend`.
  struct Cache {
    // Declared first, so that the transforms uploaded to it (in `keys`) are released before it.
    std::unique_ptr<attention::AttentionBackend> backend;  // CPU
    std::mutex backend_mutex;                              // a backend serves one thread at a time
    std::mutex mutex;
    std::map<std::tuple<uint32_t, uint32_t, int32_t>, std::shared_ptr<const KeyScramblers>>
        keys;  // guarded by mutex
  };

  FedRagScrambler(crypto::SecretBytes secret, FedRagScramblerOptions options,
                  std::vector<attention::KeyBlock> blocks, int32_t padded_dim,
                  std::unique_ptr<Cache> cache)
      : secret_(std::move(secret)),
        options_(std::move(options)),
        blocks_(std::move(blocks)),
        padded_dim_(padded_dim),
        cache_(std::move(cache)) {}

  // `transform` of n_rows rows of `in` ([n_rows, in_dim]) on the backend.
  absl::StatusOr<std::vector<float>> Apply(const Transform& transform, std::span<const float> in,
                                           int64_t n_rows) const;

  absl::StatusOr<std::shared_ptr<const KeyScramblers>> ScramblersOf(uint32_t layer,
                                                                    uint32_t kv_head,
                                                                    int32_t key_index) const;

  crypto::SecretBytes secret_;
  FedRagScramblerOptions options_;
  std::vector<attention::KeyBlock> blocks_;
  int32_t padded_dim_ = 0;
  std::unique_ptr<Cache> cache_;  // behind a pointer: the scrambler stays movable
};

}  // namespace silo::node

#endif  // SILO_NODE_FEDRAG_SCRAMBLER_H_
