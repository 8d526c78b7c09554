// AES-256-GCM authenticated encryption with associated data, through OpenSSL's EVP_CIPHER.
//
// Seal returns ciphertext || tag (16 bytes); SealWithRandomNonce returns
// nonce (12 bytes) || ciphertext || tag. A nonce must never repeat under one key: with random
// nonces, seal at most 2^32 messages per key (NIST SP 800-38D §8.3). The associated data is
// authenticated, not encrypted.
//
// Errors never contain key, nonce, plaintext or ciphertext bytes.
//
// Thread-safe (pure functions).
#ifndef SILO_CRYPTO_AEAD_H_
#define SILO_CRYPTO_AEAD_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::crypto {

inline constexpr size_t kAes256GcmKeySize = 32;
inline constexpr size_t kAes256GcmNonceSize = 12;
inline constexpr size_t kAes256GcmTagSize = 16;

// Encrypts `plaintext` and authenticates it with `aad`: ciphertext || tag,
// plaintext.size() + 16 bytes. InvalidArgument when `key` is not 32 bytes or `nonce` not 12;
// Internal when OpenSSL fails.
absl::StatusOr<std::vector<uint8_t>> Seal(const SecretBytes& key, std::span<const uint8_t> nonce,
                                          std::span<const uint8_t> plaintext,
                                          std::span<const uint8_t> aad);

// Checks and decrypts `sealed` (ciphertext || tag) made by Seal with the same key, nonce and
// `aad`. DataLoss when authentication fails (wrong key, nonce or aad, or altered bytes);
// InvalidArgument when `key` is not 32 bytes, `nonce` not 12 or `sealed` shorter than the tag;
// Internal when OpenSSL fails.
absl::StatusOr<std::vector<uint8_t>> Open(const SecretBytes& key, std::span<const uint8_t> nonce,
                                          std::span<const uint8_t> sealed,
                                          std::span<const uint8_t> aad);

// Seal under a fresh random nonce: nonce || ciphertext || tag. Errors as Seal, and Internal when
// the random generator fails.
absl::StatusOr<std::vector<uint8_t>> SealWithRandomNonce(const SecretBytes& key,
                                                         std::span<const uint8_t> plaintext,
                                                         std::span<const uint8_t> aad);

// Open of nonce || ciphertext || tag as SealWithRandomNonce makes it. Errors as Open
// (InvalidArgument when `sealed` is shorter than nonce and tag).
absl::StatusOr<std::vector<uint8_t>> OpenWithNonce(const SecretBytes& key,
                                                   std::span<const uint8_t> sealed,
                                                   std::span<const uint8_t> aad);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_AEAD_H_
