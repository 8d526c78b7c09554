#include "crypto/x25519.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/proverr.h>

#include <utility>

#include "common/status_macros.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {
namespace {

absl::Status LowOrderPoint() {
  return absl::InvalidArgumentError(
      "X25519 peer public key is a low-order point (all-zero shared secret)");
}

// True when all 32 bytes of `shared` are zero, in time independent of the bytes.
bool IsAllZero(const SecretBytes& shared) {
  static constexpr uint8_t kZeros[kX25519KeySize] = {};
  return CRYPTO_memcmp(shared.span().data(), kZeros, kX25519KeySize) == 0;
}

}  // namespace

absl::StatusOr<X25519KeyPair> X25519KeyPair::Generate() {
  SILO_ASSIGN_OR_RETURN(SecretBytes private_key, SecretBytes::Random(kX25519KeySize));
  return FromPrivateBytes(private_key.span());
}

absl::StatusOr<X25519KeyPair> X25519KeyPair::FromPrivateBytes(
    std::span<const uint8_t> private_key) {
  SILO_RETURN_IF_ERROR(internal::CheckSize(private_key, kX25519KeySize, "X25519 private key"));
  internal::OpenSslPtr<EVP_PKEY> key(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  if (key == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "X25519 private key import failed");
  }
  std::array<uint8_t, kX25519KeySize> public_key;
  size_t public_size = public_key.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), public_key.data(), &public_size) != 1 ||
      public_size != public_key.size()) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "X25519 public key export failed");
  }
  return X25519KeyPair(SecretBytes::FromBytes(private_key), public_key);
}

absl::StatusOr<SecretBytes> X25519KeyPair::SharedSecret(
    std::span<const uint8_t> peer_public_key) const {
  SILO_RETURN_IF_ERROR(
      internal::CheckSize(peer_public_key, kX25519KeySize, "X25519 peer public key"));
  const std::span<const uint8_t> private_key = private_key_.span();
  internal::OpenSslPtr<EVP_PKEY> own(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  internal::OpenSslPtr<EVP_PKEY> peer(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_X25519, nullptr, peer_public_key.data(), peer_public_key.size()));
  if (own == nullptr || peer == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "X25519 key import failed");
  }
  internal::OpenSslPtr<EVP_PKEY_CTX> context(EVP_PKEY_CTX_new(own.get(), nullptr));
  if (context == nullptr || EVP_PKEY_derive_init(context.get()) != 1 ||
      EVP_PKEY_derive_set_peer(context.get(), peer.get()) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "X25519 setup failed");
  }
  SecretBytes shared(kX25519KeySize);
  size_t shared_size = shared.size();
  if (EVP_PKEY_derive(context.get(), shared.mutable_span().data(), &shared_size) != 1) {
    // OpenSSL refuses an all-zero result (a low-order peer point) with this reason.
    if (internal::LastOpenSslErrorIs(ERR_LIB_PROV, PROV_R_FAILED_DURING_DERIVATION)) {
      internal::ClearOpenSslErrors();
      return LowOrderPoint();
    }
    return internal::OpenSslError(absl::StatusCode::kInternal, "X25519 failed");
  }
  if (shared_size != kX25519KeySize) {
    return absl::InternalError("X25519 returned a shared secret of unexpected size");
  }
  if (IsAllZero(shared)) return LowOrderPoint();  // should OpenSSL ever let one through
  return shared;
}

}  // namespace silo::crypto
