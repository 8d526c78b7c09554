// Ed25519 signatures (RFC 8032, pure Ed25519) through OpenSSL: a node signs with the private key
// of its certificate and checks its peers' signatures with the public keys of theirs.
//
// The PEM readers do not check certificate chains or validity dates: mTLS (DESIGN §9) decides
// whom to trust; these classes only hold and use the keys.
//
// Thread-safety: both classes are immutable; const methods may run concurrently. SigningKey is
// move-only (it holds the private key in SecretBytes); VerifyingKey is a copyable value.
#ifndef SILO_CRYPTO_SIGNING_H_
#define SILO_CRYPTO_SIGNING_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::crypto {

inline constexpr size_t kEd25519PrivateKeySize = 32;  // the RFC 8032 seed
inline constexpr size_t kEd25519PublicKeySize = 32;
inline constexpr size_t kEd25519SignatureSize = 64;

class VerifyingKey {
 public:
  // The key of a 32-byte encoded public key. InvalidArgument for another size.
  static absl::StatusOr<VerifyingKey> FromPublicBytes(std::span<const uint8_t> public_key);
  // The key of a "PUBLIC KEY" PEM block (SubjectPublicKeyInfo, RFC 8410). InvalidArgument when
  // `pem` is not one or holds a key other than Ed25519.
  static absl::StatusOr<VerifyingKey> FromPem(std::string_view pem);
  // The subject public key of the first X.509 "CERTIFICATE" PEM block in `pem`. InvalidArgument
  // when there is none or its key is not Ed25519.
  static absl::StatusOr<VerifyingKey> FromCertificatePem(std::string_view pem);

  const std::array<uint8_t, kEd25519PublicKeySize>& public_key() const { return public_key_; }

  // OK when `signature` is a valid Ed25519 signature of `message` under this key;
  // Unauthenticated otherwise (including a signature that is not 64 bytes or a public key that
  // does not decode to a curve point).
  absl::Status Verify(std::span<const uint8_t> message, std::span<const uint8_t> signature) const;

 private:
  explicit VerifyingKey(const std::array<uint8_t, kEd25519PublicKeySize>& public_key)
      : public_key_(public_key) {}

  std::array<uint8_t, kEd25519PublicKeySize> public_key_;
};

class SigningKey {
 public:
  // A fresh key from OpenSSL's CSPRNG. Internal when the generator or OpenSSL fails.
  static absl::StatusOr<SigningKey> Generate();
  // The key of a 32-byte private key (the RFC 8032 seed). InvalidArgument for another size;
  // Internal when OpenSSL fails.
  static absl::StatusOr<SigningKey> FromPrivateBytes(std::span<const uint8_t> private_key);
  // The key of an unencrypted "PRIVATE KEY" PEM block (PKCS #8, RFC 8410). InvalidArgument when
  // `pem` is not one (encrypted keys included) or holds a key other than Ed25519.
  static absl::StatusOr<SigningKey> FromPem(std::string_view pem);

  const VerifyingKey& verifying_key() const { return verifying_key_; }

  // The 64-byte Ed25519 signature of `message` (deterministic). Internal when OpenSSL fails.
  absl::StatusOr<std::vector<uint8_t>> Sign(std::span<const uint8_t> message) const;

 private:
  SigningKey(SecretBytes private_key, VerifyingKey verifying_key)
      : private_key_(std::move(private_key)), verifying_key_(verifying_key) {}

  SecretBytes private_key_;
  VerifyingKey verifying_key_;
};

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_SIGNING_H_
