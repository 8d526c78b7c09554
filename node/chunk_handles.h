// Opaque chunk handles (DESIGN.md §5). Retrieve answers with handles instead of chunk ids: the
// chunk's index id sealed with AES-256-GCM under a key derived from the node key, with the
// session id as associated data. A handle says nothing about the chunk (a fresh random nonce
// makes two handles of one chunk differ), and only its owner can open it, in the session it was
// made for.
//
// Thread-safe (immutable after Create).
#ifndef SILO_NODE_CHUNK_HANDLES_H_
#define SILO_NODE_CHUNK_HANDLES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::node {

// nonce (12) + vector id (8) + tag (16).
inline constexpr size_t kChunkHandleSize = 36;

class ChunkHandles {
 public:
  // Derives the handle key from the node key (HKDF-SHA256, its own label). Errors of HkdfSha256.
  static absl::StatusOr<ChunkHandles> Create(const crypto::SecretBytes& node_key);

  // kChunkHandleSize bytes. Internal when the random generator or the cipher fails.
  absl::StatusOr<std::string> Seal(std::string_view session_id, int64_t vector_id) const;

  // The vector id inside `handle`. InvalidArgument for a handle of the wrong size;
  // PermissionDenied for one this node did not make for `session_id`.
  absl::StatusOr<int64_t> Open(std::string_view session_id, std::string_view handle) const;

 private:
  explicit ChunkHandles(crypto::SecretBytes key) : key_(std::move(key)) {}

  crypto::SecretBytes key_;
};

}  // namespace silo::node

#endif  // SILO_NODE_CHUNK_HANDLES_H_
