// HKDF with SHA-256 (RFC 5869), through OpenSSL's EVP_KDF "HKDF".
//
// Thread-safe (a pure function).
#ifndef SILO_CRYPTO_HKDF_H_
#define SILO_CRYPTO_HKDF_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::crypto {

inline constexpr size_t kSha256Size = 32;
// RFC 5869 §2.3: L <= 255 * HashLen.
inline constexpr size_t kHkdfSha256MaxLength = 255 * kSha256Size;

// HKDF-Extract(salt, ikm) then HKDF-Expand(prk, info, length): `length` bytes of output keying
// material. An empty `salt` stands for 32 zero bytes, as in the RFC; `ikm` and `info` may be
// empty. InvalidArgument when `length` is 0 or more than kHkdfSha256MaxLength (8160); Internal
// when OpenSSL fails.
absl::StatusOr<SecretBytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                                       std::span<const uint8_t> info, size_t length);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_HKDF_H_
