#include "crypto/sha256.h"

#include <openssl/evp.h>

#include <algorithm>
#include <utility>

#include "crypto/internal/openssl.h"

namespace silo::crypto {

void Sha256::ContextFree::operator()(evp_md_ctx_st* context) const { EVP_MD_CTX_free(context); }

Sha256::Sha256(std::unique_ptr<evp_md_ctx_st, ContextFree> context)
    : context_(std::move(context)) {}
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;
Sha256::~Sha256() = default;

absl::StatusOr<Sha256> Sha256::Create() {
  std::unique_ptr<evp_md_ctx_st, ContextFree> context(EVP_MD_CTX_new());
  if (context == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "EVP_MD_CTX_new failed");
  }
  if (EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "SHA-256 init failed");
  }
  return Sha256(std::move(context));
}

absl::Status Sha256::Update(std::span<const uint8_t> bytes) {
  if (context_ == nullptr) {
    return absl::FailedPreconditionError("SHA-256: Update after Finish");
  }
  while (!bytes.empty()) {
    const size_t piece = std::min(bytes.size(), internal::kMaxOpenSslChunk);
    if (EVP_DigestUpdate(context_.get(), bytes.data(), piece) != 1) {
      return internal::OpenSslError(absl::StatusCode::kInternal, "SHA-256 update failed");
    }
    bytes = bytes.subspan(piece);
  }
  return absl::OkStatus();
}

absl::Status Sha256::Update(std::string_view bytes) {
  return Update(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

absl::StatusOr<Sha256Digest> Sha256::Finish() {
  if (context_ == nullptr) {
    return absl::FailedPreconditionError("SHA-256: Finish called twice");
  }
  Sha256Digest digest;
  unsigned int length = 0;
  const int ok = EVP_DigestFinal_ex(context_.get(), digest.data(), &length);
  context_.reset();
  if (ok != 1 || length != digest.size()) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "SHA-256 final failed");
  }
  return digest;
}

absl::StatusOr<Sha256Digest> Sha256Of(std::span<const uint8_t> bytes) {
  absl::StatusOr<Sha256> hash = Sha256::Create();
  if (!hash.ok()) return hash.status();
  if (absl::Status status = hash->Update(bytes); !status.ok()) return status;
  return hash->Finish();
}

absl::StatusOr<Sha256Digest> Sha256Of(std::string_view bytes) {
  return Sha256Of(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::string DigestHex(const Sha256Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * digest.size());
  for (const uint8_t byte : digest) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 15]);
  }
  return hex;
}

}  // namespace silo::crypto
