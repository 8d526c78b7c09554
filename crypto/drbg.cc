#include "crypto/drbg.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <utility>

#include "common/status_macros.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {

void AesCtrDrbg::ContextFree::operator()(evp_cipher_ctx_st* context) const {
  EVP_CIPHER_CTX_free(context);  // wipes the key schedule
}

AesCtrDrbg::AesCtrDrbg(std::unique_ptr<evp_cipher_ctx_st, ContextFree> context)
    : context_(std::move(context)) {}

AesCtrDrbg::AesCtrDrbg(AesCtrDrbg&&) noexcept = default;
AesCtrDrbg& AesCtrDrbg::operator=(AesCtrDrbg&&) noexcept = default;
AesCtrDrbg::~AesCtrDrbg() = default;

absl::StatusOr<AesCtrDrbg> AesCtrDrbg::Create(std::span<const uint8_t> key,
                                              std::span<const uint8_t> initial_counter) {
  SILO_RETURN_IF_ERROR(internal::CheckSize(key, kKeySize, "AES-CTR DRBG key"));
  std::array<uint8_t, kCounterSize> counter{};
  if (!initial_counter.empty()) {
    SILO_RETURN_IF_ERROR(
        internal::CheckSize(initial_counter, kCounterSize, "AES-CTR DRBG initial counter"));
    std::copy(initial_counter.begin(), initial_counter.end(), counter.begin());
  }
  std::unique_ptr<evp_cipher_ctx_st, ContextFree> context(EVP_CIPHER_CTX_new());
  if (context == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "EVP_CIPHER_CTX_new failed");
  }
  const int initialized =
      EVP_EncryptInit_ex(context.get(), EVP_aes_256_ctr(), nullptr, key.data(), counter.data());
  if (initialized != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "AES-256-CTR setup failed");
  }
  return AesCtrDrbg(std::move(context));
}

absl::Status AesCtrDrbg::Generate(std::span<uint8_t> out) {
  if (context_ == nullptr) return absl::FailedPreconditionError("AesCtrDrbg used after a move");
  // The keystream is the encryption of zeros; OpenSSL keeps the position inside a partial block
  // between calls, so the output does not depend on how it is split.
  std::fill(out.begin(), out.end(), uint8_t{0});
  while (!out.empty()) {
    const int n = static_cast<int>(std::min(out.size(), internal::kMaxOpenSslChunk));
    int written = 0;
    if (EVP_EncryptUpdate(context_.get(), out.data(), &written, out.data(), n) != 1 ||
        written != n) {
      return internal::OpenSslError(absl::StatusCode::kInternal, "AES-256-CTR keystream failed");
    }
    out = out.subspan(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> AesCtrDrbg::NextUint64() {
  std::array<uint8_t, 8> bytes;
  SILO_RETURN_IF_ERROR(Generate(bytes));
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

}  // namespace silo::crypto
