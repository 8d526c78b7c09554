// The bytes of a KV shard as the document store keeps them (the store seals them; this is the
// plaintext layout):
//
//   "SKV1"  magic
//   int32   n_layers, n_kv_heads, n_tokens, head_dim   (little-endian)
//   uint16  k[n_layers * n_kv_heads * n_tokens * head_dim]   f16, engine::KvShard's order
//   uint16  v[same]
//
// Thread-safe (pure functions).
#ifndef SILO_RETRIEVAL_KV_SHARD_CODEC_H_
#define SILO_RETRIEVAL_KV_SHARD_CODEC_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/model_config.h"

namespace silo::retrieval {

// Precondition: the shard's buffers match its shape (engine::ValidateKvShard).
std::vector<uint8_t> EncodeKvShard(const engine::KvShard& shard);

// The shard in `bytes`, checked against the model that will use it. DataLoss when the bytes are
// not a shard (magic, truncation, sizes that disagree); InvalidArgument when the shape is not
// the model's or a value is not finite (engine::ValidateKvShard).
absl::StatusOr<engine::KvShard> DecodeKvShard(std::span<const uint8_t> bytes,
                                              const engine::ModelConfig& config);

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_KV_SHARD_CODEC_H_
