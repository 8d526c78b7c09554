#include "crypto/aead.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {
namespace {

absl::Status CheckKeyAndNonce(const SecretBytes& key, std::span<const uint8_t> nonce) {
  SILO_RETURN_IF_ERROR(internal::CheckSize(key.span(), kAes256GcmKeySize, "AES-256-GCM key"));
  return internal::CheckSize(nonce, kAes256GcmNonceSize, "AES-256-GCM nonce");
}

// A context set up for AES-256-GCM with a 12-byte nonce, encrypting or decrypting.
absl::StatusOr<internal::OpenSslPtr<EVP_CIPHER_CTX>> NewGcmContext(const SecretBytes& key,
                                                                   std::span<const uint8_t> nonce,
                                                                   bool encrypt) {
  internal::OpenSslPtr<EVP_CIPHER_CTX> context(EVP_CIPHER_CTX_new());
  if (context == nullptr ||
      EVP_CipherInit_ex(context.get(), EVP_aes_256_gcm(), nullptr, key.span().data(), nonce.data(),
                        encrypt ? 1 : 0) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM setup failed");
  }
  return context;
}

// Feeds `aad` (out == nullptr) or en/decrypts `in` into `out`, in pieces OpenSSL's int lengths
// can take. GCM is a stream mode: each piece produces exactly its own length.
absl::Status Update(EVP_CIPHER_CTX* context, std::span<const uint8_t> in, uint8_t* out) {
  while (!in.empty()) {
    const int n = static_cast<int>(std::min(in.size(), internal::kMaxOpenSslChunk));
    int written = 0;
    if (EVP_CipherUpdate(context, out, &written, in.data(), n) != 1 ||
        (out != nullptr && written != n)) {
      return internal::OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM update failed");
    }
    in = in.subspan(n);
    if (out != nullptr) out += n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> Seal(const SecretBytes& key, std::span<const uint8_t> nonce,
                                          std::span<const uint8_t> plaintext,
                                          std::span<const uint8_t> aad) {
  SILO_RETURN_IF_ERROR(CheckKeyAndNonce(key, nonce));
  SILO_ASSIGN_OR_RETURN(internal::OpenSslPtr<EVP_CIPHER_CTX> context,
                        NewGcmContext(key, nonce, /*encrypt=*/true));
  std::vector<uint8_t> sealed(plaintext.size() + kAes256GcmTagSize);
  SILO_RETURN_IF_ERROR(Update(context.get(), aad, nullptr));
  SILO_RETURN_IF_ERROR(Update(context.get(), plaintext, sealed.data()));
  int final_size = 0;
  if (EVP_EncryptFinal_ex(context.get(), sealed.data() + plaintext.size(), &final_size) != 1 ||
      final_size != 0 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG, kAes256GcmTagSize,
                          sealed.data() + plaintext.size()) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM seal failed");
  }
  return sealed;
}

absl::StatusOr<std::vector<uint8_t>> Open(const SecretBytes& key, std::span<const uint8_t> nonce,
                                          std::span<const uint8_t> sealed,
                                          std::span<const uint8_t> aad) {
  SILO_RETURN_IF_ERROR(CheckKeyAndNonce(key, nonce));
  if (sealed.size() < kAes256GcmTagSize) {
    return absl::InvalidArgumentError(StrCat("AES-256-GCM input of ", sealed.size(),
                                             " bytes is shorter than the ", kAes256GcmTagSize,
                                             "-byte tag"));
  }
  const std::span<const uint8_t> ciphertext = sealed.first(sealed.size() - kAes256GcmTagSize);
  const std::span<const uint8_t> tag = sealed.last(kAes256GcmTagSize);
  SILO_ASSIGN_OR_RETURN(internal::OpenSslPtr<EVP_CIPHER_CTX> context,
                        NewGcmContext(key, nonce, /*encrypt=*/false));
  std::vector<uint8_t> plaintext(ciphertext.size());
  SILO_RETURN_IF_ERROR(Update(context.get(), aad, nullptr));
  SILO_RETURN_IF_ERROR(Update(context.get(), ciphertext, plaintext.data()));
  // OpenSSL only reads the expected tag; its API is not const-correct.
  if (EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, kAes256GcmTagSize,
                          const_cast<uint8_t*>(tag.data())) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "AES-256-GCM tag setup failed");
  }
  int final_size = 0;
  if (EVP_DecryptFinal_ex(context.get(), plaintext.data() + plaintext.size(), &final_size) != 1) {
    internal::ClearOpenSslErrors();  // the unauthenticated plaintext is dropped
    return absl::DataLossError("AES-256-GCM authentication failed");
  }
  return plaintext;
}

absl::StatusOr<std::vector<uint8_t>> SealWithRandomNonce(const SecretBytes& key,
                                                         std::span<const uint8_t> plaintext,
                                                         std::span<const uint8_t> aad) {
  std::array<uint8_t, kAes256GcmNonceSize> nonce;
  SILO_RETURN_IF_ERROR(internal::RandomBytes(nonce));
  SILO_ASSIGN_OR_RETURN(std::vector<uint8_t> sealed, Seal(key, nonce, plaintext, aad));
  sealed.insert(sealed.begin(), nonce.begin(), nonce.end());
  return sealed;
}

absl::StatusOr<std::vector<uint8_t>> OpenWithNonce(const SecretBytes& key,
                                                   std::span<const uint8_t> sealed,
                                                   std::span<const uint8_t> aad) {
  if (sealed.size() < kAes256GcmNonceSize + kAes256GcmTagSize) {
    return absl::InvalidArgumentError(
        StrCat("AES-256-GCM input of ", sealed.size(), " bytes is shorter than the ",
               kAes256GcmNonceSize, "-byte nonce and the ", kAes256GcmTagSize, "-byte tag"));
  }
  return Open(key, sealed.first(kAes256GcmNonceSize), sealed.subspan(kAes256GcmNonceSize), aad);
}

}  // namespace silo::crypto
