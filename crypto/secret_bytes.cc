#include "crypto/secret_bytes.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <ostream>
#include <utility>

#include "common/status_macros.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {

SecretBytes::SecretBytes(size_t size)
    : bytes_(size == 0 ? nullptr : new uint8_t[size]()), size_(size) {}

SecretBytes SecretBytes::FromBytes(std::span<const uint8_t> bytes) {
  SecretBytes secret(bytes.size());
  if (!bytes.empty()) std::copy(bytes.begin(), bytes.end(), secret.bytes_.get());
  return secret;
}

absl::StatusOr<SecretBytes> SecretBytes::Random(size_t size) {
  SecretBytes secret(size);
  SILO_RETURN_IF_ERROR(internal::RandomBytes(secret.mutable_span()));
  return secret;
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : bytes_(std::move(other.bytes_)), size_(std::exchange(other.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Wipe();
    bytes_ = std::move(other.bytes_);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SecretBytes::~SecretBytes() { Wipe(); }

void SecretBytes::Wipe() {
  if (bytes_ != nullptr) OPENSSL_cleanse(bytes_.get(), size_);
  bytes_.reset();
  size_ = 0;
}

void PrintTo(const SecretBytes& secret, std::ostream* os) {
  *os << "SecretBytes(" << secret.size() << " bytes, redacted)";
}

}  // namespace silo::crypto
