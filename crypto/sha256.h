// SHA-256 through OpenSSL's EVP_Digest: content hashes of ingested files (unchanged files are
// skipped) and the model fingerprint stored with KV shards (DESIGN.md §4). Not for secrets'
// derivation: that is HKDF (hkdf.h).
//
// Thread-compatible: a Sha256 object is used by one thread at a time.
#ifndef SILO_CRYPTO_SHA256_H_
#define SILO_CRYPTO_SHA256_H_

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace silo::crypto {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hashing of data that arrives in pieces (a large file).
class Sha256 {
 public:
  // Internal when OpenSSL cannot set up the digest.
  static absl::StatusOr<Sha256> Create();

  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  ~Sha256();

  // Internal when OpenSSL fails; FailedPrecondition after Finish.
  absl::Status Update(std::span<const uint8_t> bytes);
  absl::Status Update(std::string_view bytes);
  // The digest of everything given to Update. The object cannot be updated afterwards.
  absl::StatusOr<Sha256Digest> Finish();

 private:
  struct ContextFree {
    void operator()(evp_md_ctx_st* context) const;
  };
  explicit Sha256(std::unique_ptr<evp_md_ctx_st, ContextFree> context);

  std::unique_ptr<evp_md_ctx_st, ContextFree> context_;
};

// SHA-256 of `bytes` in one call.
absl::StatusOr<Sha256Digest> Sha256Of(std::span<const uint8_t> bytes);
absl::StatusOr<Sha256Digest> Sha256Of(std::string_view bytes);
// Lower-case hex of a digest (64 characters).
std::string DigestHex(const Sha256Digest& digest);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_SHA256_H_
