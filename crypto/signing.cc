#include "crypto/signing.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <utility>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {
namespace {

// OpenSSL wants a non-null pointer even for an empty message.
constexpr uint8_t kNoBytes[1] = {0};
const uint8_t* DataOrEmpty(std::span<const uint8_t> bytes) {
  return bytes.empty() ? kNoBytes : bytes.data();
}

absl::Status CheckEd25519(const EVP_PKEY* key, std::string_view what) {
  if (EVP_PKEY_is_a(key, "ED25519")) return absl::OkStatus();
  const char* type = EVP_PKEY_get0_type_name(key);
  return absl::InvalidArgumentError(
      StrCat(what, " holds a key of type ", type != nullptr ? type : "unknown", ", not Ed25519"));
}

internal::OpenSslPtr<EVP_PKEY> PrivateKey(const SecretBytes& private_key) {
  return internal::OpenSslPtr<EVP_PKEY>(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, private_key.span().data(), private_key.size()));
}

// The verifying key of any EVP_PKEY holding an Ed25519 key (public or private).
absl::StatusOr<VerifyingKey> FromPublicPkey(const EVP_PKEY* key, std::string_view what) {
  SILO_RETURN_IF_ERROR(CheckEd25519(key, what));
  std::array<uint8_t, kEd25519PublicKeySize> bytes;
  size_t size = bytes.size();
  if (EVP_PKEY_get_raw_public_key(key, bytes.data(), &size) != 1 || size != bytes.size()) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 public key export failed");
  }
  return VerifyingKey::FromPublicBytes(bytes);
}

}  // namespace

absl::StatusOr<VerifyingKey> VerifyingKey::FromPublicBytes(std::span<const uint8_t> public_key) {
  SILO_RETURN_IF_ERROR(
      internal::CheckSize(public_key, kEd25519PublicKeySize, "Ed25519 public key"));
  std::array<uint8_t, kEd25519PublicKeySize> bytes;
  std::copy(public_key.begin(), public_key.end(), bytes.begin());
  return VerifyingKey(bytes);
}

absl::StatusOr<VerifyingKey> VerifyingKey::FromPem(std::string_view pem) {
  SILO_ASSIGN_OR_RETURN(internal::OpenSslPtr<BIO> bio, internal::NewMemoryBio(pem));
  internal::OpenSslPtr<EVP_PKEY> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, internal::NoPassword, nullptr));
  if (key == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument, "not a PEM public key");
  }
  return FromPublicPkey(key.get(), "PEM public key");
}

absl::StatusOr<VerifyingKey> VerifyingKey::FromCertificatePem(std::string_view pem) {
  SILO_ASSIGN_OR_RETURN(internal::OpenSslPtr<BIO> bio, internal::NewMemoryBio(pem));
  internal::OpenSslPtr<X509> certificate(
      PEM_read_bio_X509(bio.get(), nullptr, internal::NoPassword, nullptr));
  if (certificate == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                  "not a PEM X.509 certificate");
  }
  const EVP_PKEY* key = X509_get0_pubkey(certificate.get());
  if (key == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                  "certificate public key cannot be decoded");
  }
  return FromPublicPkey(key, "certificate");
}

absl::Status VerifyingKey::Verify(std::span<const uint8_t> message,
                                  std::span<const uint8_t> signature) const {
  if (signature.size() != kEd25519SignatureSize) {
    return absl::UnauthenticatedError(StrCat("Ed25519 signature must be ", kEd25519SignatureSize,
                                             " bytes, got ", signature.size()));
  }
  internal::OpenSslPtr<EVP_PKEY> key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, public_key_.data(), public_key_.size()));
  internal::OpenSslPtr<EVP_MD_CTX> context(EVP_MD_CTX_new());
  if (key == nullptr || context == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 key import failed");
  }
  // Pure Ed25519 takes no digest: md is null.
  if (EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, key.get()) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 verify setup failed");
  }
  if (EVP_DigestVerify(context.get(), signature.data(), signature.size(), DataOrEmpty(message),
                       message.size()) != 1) {
    internal::ClearOpenSslErrors();
    return absl::UnauthenticatedError("Ed25519 signature verification failed");
  }
  return absl::OkStatus();
}

absl::StatusOr<SigningKey> SigningKey::Generate() {
  SILO_ASSIGN_OR_RETURN(SecretBytes private_key, SecretBytes::Random(kEd25519PrivateKeySize));
  return FromPrivateBytes(private_key.span());
}

absl::StatusOr<SigningKey> SigningKey::FromPrivateBytes(std::span<const uint8_t> private_key) {
  SILO_RETURN_IF_ERROR(
      internal::CheckSize(private_key, kEd25519PrivateKeySize, "Ed25519 private key"));
  SecretBytes secret = SecretBytes::FromBytes(private_key);
  internal::OpenSslPtr<EVP_PKEY> key = PrivateKey(secret);
  if (key == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 private key import failed");
  }
  SILO_ASSIGN_OR_RETURN(VerifyingKey verifying_key, FromPublicPkey(key.get(), "private key"));
  return SigningKey(std::move(secret), verifying_key);
}

absl::StatusOr<SigningKey> SigningKey::FromPem(std::string_view pem) {
  SILO_ASSIGN_OR_RETURN(internal::OpenSslPtr<BIO> bio, internal::NewMemoryBio(pem));
  internal::OpenSslPtr<EVP_PKEY> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, internal::NoPassword, nullptr));
  if (key == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                  "not an unencrypted PEM private key");
  }
  SILO_RETURN_IF_ERROR(CheckEd25519(key.get(), "PEM private key"));
  SecretBytes private_key(kEd25519PrivateKeySize);
  size_t size = private_key.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), private_key.mutable_span().data(), &size) != 1 ||
      size != private_key.size()) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 private key export failed");
  }
  return FromPrivateBytes(private_key.span());
}

absl::StatusOr<std::vector<uint8_t>> SigningKey::Sign(std::span<const uint8_t> message) const {
  internal::OpenSslPtr<EVP_PKEY> key = PrivateKey(private_key_);
  internal::OpenSslPtr<EVP_MD_CTX> context(EVP_MD_CTX_new());
  if (key == nullptr || context == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 key import failed");
  }
  if (EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, key.get()) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 sign setup failed");
  }
  std::vector<uint8_t> signature(kEd25519SignatureSize);
  size_t size = signature.size();
  if (EVP_DigestSign(context.get(), signature.data(), &size, DataOrEmpty(message),
                     message.size()) != 1 ||
      size != signature.size()) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "Ed25519 signing failed");
  }
  return signature;
}

}  // namespace silo::crypto
