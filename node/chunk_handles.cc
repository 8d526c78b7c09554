#include "node/chunk_handles.h"

#include <span>
#include <vector>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/aead.h"
#include "crypto/hkdf.h"

namespace silo::node {
namespace {

constexpr std::string_view kHandleKeyLabel = "silo/v1 chunk handle key";
constexpr std::string_view kHandleAadLabel = "silo/v1 chunk handle";

std::span<const uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

}  // namespace

absl::StatusOr<ChunkHandles> ChunkHandles::Create(const crypto::SecretBytes& node_key) {
  SILO_ASSIGN_OR_RETURN(crypto::SecretBytes key,
                        crypto::HkdfSha256(node_key.span(), {}, Bytes(kHandleKeyLabel), 32));
  return ChunkHandles(std::move(key));
}

absl::StatusOr<std::string> ChunkHandles::Seal(std::string_view session_id,
                                               int64_t vector_id) const {
  std::vector<uint8_t> plain(8);
  for (size_t i = 0; i < plain.size(); ++i) {
    plain[i] = static_cast<uint8_t>(static_cast<uint64_t>(vector_id) >> (8 * i));
  }
  const std::string aad = StrCat(kHandleAadLabel, session_id);
  SILO_ASSIGN_OR_RETURN(const std::vector<uint8_t> sealed,
                        crypto::SealWithRandomNonce(key_, plain, Bytes(aad)));
  return std::string(sealed.begin(), sealed.end());
}

absl::StatusOr<int64_t> ChunkHandles::Open(std::string_view session_id,
                                           std::string_view handle) const {
  if (handle.size() != kChunkHandleSize) {
    return absl::InvalidArgumentError(
        StrCat("a chunk handle has ", kChunkHandleSize, " bytes, not ", handle.size()));
  }
  const std::string aad = StrCat(kHandleAadLabel, session_id);
  absl::StatusOr<std::vector<uint8_t>> plain =
      crypto::OpenWithNonce(key_, Bytes(handle), Bytes(aad));
  if (!plain.ok() || plain->size() != 8) {
    return absl::PermissionDeniedError(
        "the chunk handle was not made by this node for this session");
  }
  uint64_t id = 0;
  for (size_t i = 0; i < 8; ++i) id |= static_cast<uint64_t>((*plain)[i]) << (8 * i);
  return static_cast<int64_t>(id);
}

}  // namespace silo::node
