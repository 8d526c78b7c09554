// Adapter between OpenSSL and crypto/: owning handles for OpenSSL objects, the one place where
// the OpenSSL error queue becomes an absl::Status, and size checks shared by the primitives.
// Private to crypto/.
//
// Messages built here carry OpenSSL's library and reason strings only, never the per-error data
// strings (which can echo input) and never key material.
//
// Thread-safe: OpenSSL's error queue is per thread, and the handles are plain unique_ptrs.
#ifndef SILO_CRYPTO_INTERNAL_OPENSSL_H_
#define SILO_CRYPTO_INTERNAL_OPENSSL_H_

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace silo::crypto::internal {

// Frees any OpenSSL object that crypto/ owns.
struct OpenSslFree {
  void operator()(BIO* bio) const { BIO_free_all(bio); }
  void operator()(EVP_CIPHER_CTX* context) const { EVP_CIPHER_CTX_free(context); }
  void operator()(EVP_KDF* kdf) const { EVP_KDF_free(kdf); }
  void operator()(EVP_KDF_CTX* context) const { EVP_KDF_CTX_free(context); }
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  void operator()(EVP_PKEY_CTX* context) const { EVP_PKEY_CTX_free(context); }
  void operator()(X509* certificate) const { X509_free(certificate); }
};
template <typename T>
using OpenSslPtr = std::unique_ptr<T, OpenSslFree>;

// Largest length handed to one OpenSSL call that takes an `int` length; longer inputs are
// processed in pieces.
inline constexpr size_t kMaxOpenSslChunk = size_t{1} << 30;

// Drains this thread's OpenSSL error queue into a Status of `code` whose message is `what`
// followed by OpenSSL's reasons, oldest first.
absl::Status OpenSslError(absl::StatusCode code, std::string_view what);

// Discards this thread's OpenSSL error queue, after a failure that is reported otherwise.
void ClearOpenSslErrors();

// Returns true when the most recent error on this thread's queue is (library, reason). Leaves
// the queue as it is.
bool LastOpenSslErrorIs(int library, int reason);

// InvalidArgument naming `what` when `bytes` is not exactly `expected` bytes long.
absl::Status CheckSize(std::span<const uint8_t> bytes, size_t expected, std::string_view what);

// Fills `out` from OpenSSL's CSPRNG. Internal when it fails.
absl::Status RandomBytes(std::span<uint8_t> out);

// A read-only memory BIO over `text`, which must outlive it. InvalidArgument when `text` is
// empty or larger than 1 GiB; Internal when OpenSSL fails.
absl::StatusOr<OpenSslPtr<BIO>> NewMemoryBio(std::string_view text);

// PEM password callback that refuses to prompt: encrypted PEM keys are not supported.
int NoPassword(char* buffer, int size, int rwflag, void* user_data);

}  // namespace silo::crypto::internal

#endif  // SILO_CRYPTO_INTERNAL_OPENSSL_H_
