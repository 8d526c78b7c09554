#include "crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "common/strings.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {
namespace {

// OpenSSL refuses an octet-string parameter whose data pointer is null, which an empty span may
// have; an empty input points here instead.
constexpr uint8_t kNoBytes[1] = {0};

OSSL_PARAM OctetParam(const char* name, std::span<const uint8_t> bytes) {
  // OpenSSL only reads the parameter; its API is not const-correct.
  void* data = const_cast<uint8_t*>(bytes.empty() ? kNoBytes : bytes.data());
  return OSSL_PARAM_construct_octet_string(name, data, bytes.size());
}

}  // namespace

absl::StatusOr<SecretBytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                                       std::span<const uint8_t> info, size_t length) {
  if (length == 0 || length > kHkdfSha256MaxLength) {
    return absl::InvalidArgumentError(StrCat("HKDF-SHA256 output length must be 1 to ",
                                             kHkdfSha256MaxLength, " bytes, got ", length));
  }
  internal::OpenSslPtr<EVP_KDF> kdf(EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr));
  if (kdf == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "HKDF is not available");
  }
  internal::OpenSslPtr<EVP_KDF_CTX> context(EVP_KDF_CTX_new(kdf.get()));
  if (context == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "EVP_KDF_CTX_new failed");
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  OSSL_PARAM* param = params;
  *param++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  *param++ = OctetParam(OSSL_KDF_PARAM_KEY, ikm);
  // Without a salt OpenSSL uses HashLen zero bytes (RFC 5869 §2.2).
  if (!salt.empty()) *param++ = OctetParam(OSSL_KDF_PARAM_SALT, salt);
  if (!info.empty()) *param++ = OctetParam(OSSL_KDF_PARAM_INFO, info);
  *param = OSSL_PARAM_construct_end();

  SecretBytes okm(length);
  if (EVP_KDF_derive(context.get(), okm.mutable_span().data(), okm.size(), params) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "HKDF-SHA256 failed");
  }
  return okm;
}

}  // namespace silo::crypto
