#include "crypto/key_exchange.h"

#include <algorithm>
#include <utility>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/hkdf.h"
#include "crypto/internal/encoding.h"

namespace silo::crypto {
namespace {

constexpr std::string_view kTranscriptLabel = "silo/v1 fedrag key exchange";
constexpr std::string_view kSessionSecretLabel = "silo/v1 fedrag session secret";

absl::Status CheckIdentifiers(std::span<const uint8_t> session_id, std::string_view role_label) {
  if (session_id.empty() || session_id.size() > kMaxSessionIdSize) {
    return absl::InvalidArgumentError(
        StrCat("session id must be 1 to ", kMaxSessionIdSize, " bytes, got ", session_id.size()));
  }
  if (role_label.empty() || role_label.size() > kMaxRoleLabelSize) {
    return absl::InvalidArgumentError(
        StrCat("role label must be 1 to ", kMaxRoleLabelSize, " bytes, got ", role_label.size()));
  }
  return absl::OkStatus();
}

// What a half's signature covers; see the file comment.
std::vector<uint8_t> Transcript(std::span<const uint8_t> session_id, std::string_view role_label,
                                std::span<const uint8_t> public_key) {
  std::vector<uint8_t> transcript;
  internal::AppendBytes(transcript, kTranscriptLabel);
  internal::AppendLengthPrefixed(transcript, session_id);
  internal::AppendLengthPrefixed(transcript, role_label);
  internal::AppendBytes(transcript, public_key);
  return transcript;
}

}  // namespace

absl::StatusOr<OwnEphemeral> CreateSignedEphemeral(const SigningKey& signing_key,
                                                   std::span<const uint8_t> session_id,
                                                   std::string_view role_label) {
  SILO_RETURN_IF_ERROR(CheckIdentifiers(session_id, role_label));
  SILO_ASSIGN_OR_RETURN(X25519KeyPair key_pair, X25519KeyPair::Generate());
  SILO_ASSIGN_OR_RETURN(
      std::vector<uint8_t> signature,
      signing_key.Sign(Transcript(session_id, role_label, key_pair.public_key())));
  SignedEphemeral signed_half{key_pair.public_key(), std::move(signature)};
  return OwnEphemeral{std::move(key_pair), std::move(signed_half)};
}

absl::StatusOr<VerifiedPeerEphemeral> VerifyPeerEphemeral(const VerifyingKey& peer_key,
                                                          std::span<const uint8_t> session_id,
                                                          std::string_view peer_role_label,
                                                          const SignedEphemeral& peer_half) {
  SILO_RETURN_IF_ERROR(CheckIdentifiers(session_id, peer_role_label));
  const absl::Status verified = peer_key.Verify(
      Transcript(session_id, peer_role_label, peer_half.public_key), peer_half.signature);
  if (!verified.ok()) {
    return absl::UnauthenticatedError(StrCat("ephemeral key of the ", peer_role_label,
                                             " is not signed by its certificate key ",
                                             "for this session: ", verified.message()));
  }
  return VerifiedPeerEphemeral(peer_half.public_key, session_id);
}

absl::StatusOr<SecretBytes> DeriveSessionSecret(const X25519KeyPair& own,
                                                const VerifiedPeerEphemeral& peer,
                                                std::span<const uint8_t> session_id) {
  if (!std::ranges::equal(session_id, peer.session_id())) {
    return absl::InvalidArgumentError("peer's ephemeral key was verified for another session");
  }
  SILO_ASSIGN_OR_RETURN(const SecretBytes shared, own.SharedSecret(peer.public_key()));
  const auto& [low, high] = std::minmax(own.public_key(), peer.public_key());
  std::vector<uint8_t> info;
  internal::AppendBytes(info, kSessionSecretLabel);
  internal::AppendBytes(info, low);
  internal::AppendBytes(info, high);
  return HkdfSha256(shared.span(), session_id, info, kSha256Size);
}

}  // namespace silo::crypto
