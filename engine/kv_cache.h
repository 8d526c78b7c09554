// The KV cache of the decoder: for every sequence and layer, the keys (after RoPE) and values of
// the tokens it has seen, with each token's position.
//
// Sequences can share a prefix: Fork makes a sequence that sees the first rows of its parent
// without copying them and grows on its own (DRAGON decodes one stream per document after a
// common prompt). Truncate rolls a sequence back (DRAGON's rejected drafts). A chunk's pre-RoPE
// K and V leave and enter as a KvShard (DESIGN.md §4).
//
// Thread-safety: none; one thread (the one running the forward pass) uses a cache at a time.
#ifndef SILO_ENGINE_KV_CACHE_H_
#define SILO_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/attention_args.h"
#include "engine/model_config.h"
#include "engine/rope.h"

namespace silo::engine {

using SequenceId = int32_t;

// A chunk's K before RoPE and V for every layer, computed by prefilling the chunk alone at
// positions 0..n_tokens-1. f16, [n_layers][n_kv_heads][n_tokens][head_dim] each.
struct KvShard {
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  int32_t n_tokens = 0;
  int32_t head_dim = 0;
  std::vector<uint16_t> k;
  std::vector<uint16_t> v;

  // Index of element (layer, kv_head, token, 0) in k and v.
  int64_t Offset(int32_t layer, int32_t kv_head, int32_t token) const {
    return ((static_cast<int64_t>(layer) * n_kv_heads + kv_head) * n_tokens + token) * head_dim;
  }
};

// InvalidArgument when the shard's shape disagrees with the model, its buffers have the wrong
// size, or a value is not finite.
absl::Status ValidateKvShard(const KvShard& shard, const ModelConfig& config);

class KvCache {
 public:
  // Rows a sequence sees at one layer, in order: its ancestors' shared rows, then its own.
  struct Segment {
    const void* k;             // [n_rows, n_kv_heads, head_dim], dtype()
    const void* v;             // [n_rows, n_kv_heads, head_dim], dtype()
    const int32_t* positions;  // [n_rows]
    int64_t n_rows;
  };

  // `max_tokens` bounds the rows held by all sequences together (ResourceExhausted beyond).
  KvCache(const ModelConfig& config, attention::KvDType dtype, int64_t max_tokens);

  attention::KvDType dtype() const { return dtype_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t used_tokens() const { return used_tokens_; }

  SequenceId NewSequence();
  // A sequence that sees the first `prefix_length` rows of `parent` (all of them when absent)
  // and grows on its own. NotFound for an unknown parent; InvalidArgument when prefix_length
  // exceeds the parent's length.
  absl::StatusOr<SequenceId> Fork(SequenceId parent, std::optional<int64_t> prefix_length = {});
  // Drops every row from `length` on. NotFound, InvalidArgument (length beyond the end), or
  // FailedPrecondition when a forked sequence still sees a row that would go.
  absl::Status Truncate(SequenceId sequence, int64_t length);
  // NotFound, or FailedPrecondition while forked sequences share its rows.
  absl::Status Free(SequenceId sequence);

  absl::StatusOr<int64_t> Length(SequenceId sequence) const;
  bool Contains(SequenceId sequence) const { return sequences_.contains(sequence); }
  // Position of the last row, or nullopt for an empty sequence. NotFound.
  absl::StatusOr<std::optional<int32_t>> LastPosition(SequenceId sequence) const;

  // Appends n rows with these positions to every layer of `sequence`; their K and V are written
  // layer by layer with WriteRows. Returns the index of the first new row. NotFound;
  // ResourceExhausted when the cache is full.
  absl::StatusOr<int64_t> AppendRows(SequenceId sequence, std::span<const int32_t> positions);
  // Writes rows [first_row, first_row + n_rows) of `layer` from f32 k and v
  // [n_rows, n_kv_heads, head_dim]. Preconditions: the rows were appended and are the
  // sequence's own (not shared).
  void WriteRows(SequenceId sequence, int32_t layer, int64_t first_row, int64_t n_rows,
                 const float* k, const float* v);
  // Appends a chunk's shard at `positions` [shard.n_tokens]: K is rotated by RoPE to them.
  // InvalidArgument (shape, positions), NotFound, ResourceExhausted.
  absl::Status AppendShard(SequenceId sequence, const KvShard& shard,
                           std::span<const int32_t> positions, const Rope& rope);

  // The rows `sequence` sees at `layer`, oldest first. Precondition: Contains(sequence). Valid
  // until the next AppendRows / Truncate / Free.
  std::vector<Segment> Segments(SequenceId sequence, int32_t layer) const;

 private:
  struct Sequence {
    std::optional<SequenceId> parent;
    int64_t parent_rows = 0;                 // rows of the parent chain this sequence sees
    std::vector<int32_t> positions;          // own rows
    std::vector<std::vector<uint8_t>> k, v;  // per layer: own rows, dtype bytes
    int32_t n_children = 0;
  };

  int64_t RowBytes() const;
  // Rows of `sequence` (own) that children see.
  int64_t SharedOwnRows(SequenceId sequence) const;

  int32_t n_layers_;
  int32_t n_kv_heads_;
  int32_t head_dim_;
  attention::KvDType dtype_;
  int64_t max_tokens_;
  int64_t used_tokens_ = 0;
  SequenceId next_id_ = 0;
  std::map<SequenceId, Sequence> sequences_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_KV_CACHE_H_
