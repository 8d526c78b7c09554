// Signed ephemeral X25519 halves (DESIGN §6, Keys). Per session, the querier and an owner each
// create an ephemeral X25519 key pair, sign its public half with their certificate's Ed25519
// key, send the signed half, verify the peer's against the peer's certificate, and derive a
// 32-byte session secret, from which DeriveScramblerSeeds derives the scrambler seeds.
//
//   SILO_ASSIGN_OR_RETURN(OwnEphemeral own,
//                         CreateSignedEphemeral(signing_key, session_id, kQuerierRole));
//   ... send own.signed_half, receive the owner's half ...
//   SILO_ASSIGN_OR_RETURN(VerifiedPeerEphemeral peer,
//                         VerifyPeerEphemeral(owner_key, session_id, kOwnerRole, owner_half));
//   SILO_ASSIGN_OR_RETURN(SecretBytes secret,
//                         DeriveSessionSecret(own.key_pair, peer, session_id));
//
// The signature covers the transcript
//   "silo/v1 fedrag key exchange" || u32le(|session_id|) || session_id
//                                 || u32le(|role|) || role || public_key (32 bytes),
// so a signed half cannot be replayed into another session or passed off as the other role's.
// Only VerifyPeerEphemeral makes a VerifiedPeerEphemeral, so DeriveSessionSecret cannot be
// given a half whose signature was not checked.
//
// Thread-safe: pure functions over immutable values.
#ifndef SILO_CRYPTO_KEY_EXCHANGE_H_
#define SILO_CRYPTO_KEY_EXCHANGE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "crypto/signing.h"
#include "crypto/x25519.h"

namespace silo::crypto {

// Role labels of the two sides of a FedRAG key exchange.
inline constexpr std::string_view kQuerierRole = "querier";
inline constexpr std::string_view kOwnerRole = "owner";

// Bounds on the identifiers that enter transcripts and HKDF labels.
inline constexpr size_t kMaxSessionIdSize = 256;
inline constexpr size_t kMaxRoleLabelSize = 64;

// The half of the exchange that travels to the peer.
struct SignedEphemeral {
  std::array<uint8_t, kX25519KeySize> public_key;
  std::vector<uint8_t> signature;  // Ed25519 over the transcript, 64 bytes
};

// This node's half: the key pair is secret, stays on this node and is dropped once the session
// secret is derived.
struct OwnEphemeral {
  X25519KeyPair key_pair;
  SignedEphemeral signed_half;
};

// A peer's half whose signature VerifyPeerEphemeral has checked for `session_id()`.
class VerifiedPeerEphemeral {
 public:
  const std::array<uint8_t, kX25519KeySize>& public_key() const { return public_key_; }
  std::span<const uint8_t> session_id() const { return session_id_; }

 private:
  friend absl::StatusOr<VerifiedPeerEphemeral> VerifyPeerEphemeral(
      const VerifyingKey& peer_key, std::span<const uint8_t> session_id,
      std::string_view peer_role_label, const SignedEphemeral& peer_half);

  VerifiedPeerEphemeral(const std::array<uint8_t, kX25519KeySize>& public_key,
                        std::span<const uint8_t> session_id)
      : public_key_(public_key), session_id_(session_id.begin(), session_id.end()) {}

  std::array<uint8_t, kX25519KeySize> public_key_;
  std::vector<uint8_t> session_id_;
};

// A fresh ephemeral key pair and its public half signed by `signing_key` for `session_id` in the
// role `role_label` (kQuerierRole or kOwnerRole). InvalidArgument when `session_id` is empty or
// longer than kMaxSessionIdSize, or `role_label` is empty or longer than kMaxRoleLabelSize;
// Internal when the generator or OpenSSL fails.
absl::StatusOr<OwnEphemeral> CreateSignedEphemeral(const SigningKey& signing_key,
                                                   std::span<const uint8_t> session_id,
                                                   std::string_view role_label);

// Checks that `peer_half` was signed by `peer_key` (from the peer's certificate) for
// `session_id` in the role `peer_role_label`. Unauthenticated when the signature does not
// verify; InvalidArgument for the same bad arguments as CreateSignedEphemeral.
absl::StatusOr<VerifiedPeerEphemeral> VerifyPeerEphemeral(const VerifyingKey& peer_key,
                                                          std::span<const uint8_t> session_id,
                                                          std::string_view peer_role_label,
                                                          const SignedEphemeral& peer_half);

// The 32-byte session secret both sides compute:
//   HKDF-SHA256(ikm = X25519(own, peer), salt = session_id,
//               info = "silo/v1 fedrag session secret" || lower public key || higher public key)
// where the two public keys are ordered bytewise, so both sides agree. InvalidArgument when
// `session_id` is not the one `peer` was verified for, or the peer's key is a low-order point;
// Internal when OpenSSL fails.
absl::StatusOr<SecretBytes> DeriveSessionSecret(const X25519KeyPair& own,
                                                const VerifiedPeerEphemeral& peer,
                                                std::span<const uint8_t> session_id);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_KEY_EXCHANGE_H_
