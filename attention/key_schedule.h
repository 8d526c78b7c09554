// Which scrambler key covers which of an owner's rows: the `key_scope` privacy knob of
// DESIGN.md §6. An owner's rows (per layer and KV head) are its selected chunks, concatenated.
//
//   session: one key for all rows (the FedRAG paper's setting);
//   chunk:   one key per chunk;
//   block:   one key per run of at most block_rows rows of a chunk. With block_rows <= head_dim
//            the compute node sees no linear relation among keys of one key; the price is one
//            scrambled query per block per step.
//
// Each key has its own Φ, Ψ and Π (seeds derived with the key index as `block`, crypto/); the
// compute node returns one partial per key block, which only the querier can unscramble.
#ifndef SILO_ATTENTION_KEY_SCHEDULE_H_
#define SILO_ATTENTION_KEY_SCHEDULE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace silo::attention {

enum class KeyScope { kSession, kChunk, kBlock };

struct KeyBlock {
  int32_t key_index;  // 0, 1, ... in row order
  int32_t row_begin;  // in the concatenation of the owner's chunks
  int32_t n_rows;
};

// InvalidArgument for a negative chunk length or block_rows < 1 with KeyScope::kBlock.
// Empty chunks get no block; no rows at all gives no blocks.
absl::StatusOr<std::vector<KeyBlock>> PlanKeyBlocks(std::span<const int32_t> chunk_rows,
                                                    KeyScope scope, int32_t block_rows);

}  // namespace silo::attention

#endif  // SILO_ATTENTION_KEY_SCHEDULE_H_
