// X25519 Diffie-Hellman (RFC 7748) through OpenSSL.
//
// A key pair holds its private key in SecretBytes (wiped on destruction). The shared secret is
// the raw X25519 output: feed it to HKDF (DeriveSessionSecret), never use it as a key directly.
//
// Thread-safety: an X25519KeyPair is immutable; its const methods may run concurrently.
// Move-only.
#ifndef SILO_CRYPTO_X25519_H_
#define SILO_CRYPTO_X25519_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::crypto {

inline constexpr size_t kX25519KeySize = 32;

class X25519KeyPair {
 public:
  // A fresh key pair from OpenSSL's CSPRNG. Internal when the generator or OpenSSL fails.
  static absl::StatusOr<X25519KeyPair> Generate();
  // The key pair of a 32-byte private scalar (clamped as RFC 7748 §5 says); for known-answer
  // tests. InvalidArgument for another size; Internal when OpenSSL fails.
  static absl::StatusOr<X25519KeyPair> FromPrivateBytes(std::span<const uint8_t> private_key);

  // The public u-coordinate, little-endian, 32 bytes.
  const std::array<uint8_t, kX25519KeySize>& public_key() const { return public_key_; }

  // X25519(private key, peer_public_key): 32 bytes. InvalidArgument when `peer_public_key` is
  // not 32 bytes or is a low-order point (the result would be all zero, RFC 7748 §6.1);
  // Internal when OpenSSL fails otherwise.
  absl::StatusOr<SecretBytes> SharedSecret(std::span<const uint8_t> peer_public_key) const;

 private:
  X25519KeyPair(SecretBytes private_key, const std::array<uint8_t, kX25519KeySize>& public_key)
      : private_key_(std::move(private_key)), public_key_(public_key) {}

  SecretBytes private_key_;
  std::array<uint8_t, kX25519KeySize> public_key_;
};

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_X25519_H_
