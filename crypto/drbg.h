// AesCtrDrbg: the deterministic random bit generator of DESIGN §6 for uses inside crypto/.
//
// The output is the AES-256-CTR keystream of a 32-byte key, starting at a 16-byte initial
// counter block (zero by default) that is incremented as one 128-bit big-endian integer per block
// (NIST SP 800-38A, §6.5 and F.5.5). The same key and counter give the same bytes on every
// machine, however the output is split across calls. The key comes from HKDF
// (DeriveScramblerSeeds or HkdfSha256) and must not be reused for another purpose.
//
// attention/ does not link OpenSSL and has its own generator, fed with the seeds that
// DeriveScramblerSeeds returns; this class serves crypto/ and the services that link it.
//
// Thread-safety: not thread-safe; one generator per thread. Move-only.
#ifndef SILO_CRYPTO_DRBG_H_
#define SILO_CRYPTO_DRBG_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct evp_cipher_ctx_st;  // OpenSSL's EVP_CIPHER_CTX, kept out of this header

namespace silo::crypto {

class AesCtrDrbg {
 public:
  static constexpr size_t kKeySize = 32;
  static constexpr size_t kCounterSize = 16;

  // A generator keyed by `key` (32 bytes) starting at `initial_counter` (16 bytes; empty means
  // all zero). InvalidArgument for other sizes; Internal when OpenSSL fails. The key is copied
  // into OpenSSL's key schedule, which is wiped when the generator is destroyed.
  static absl::StatusOr<AesCtrDrbg> Create(std::span<const uint8_t> key,
                                           std::span<const uint8_t> initial_counter = {});

  AesCtrDrbg(AesCtrDrbg&&) noexcept;
  AesCtrDrbg& operator=(AesCtrDrbg&&) noexcept;
  ~AesCtrDrbg();

  // Fills `out` with the next out.size() keystream bytes. Internal when OpenSSL fails;
  // FailedPrecondition on a moved-from generator.
  absl::Status Generate(std::span<uint8_t> out);
  // The next 8 keystream bytes read as a little-endian integer. Errors as Generate.
  absl::StatusOr<uint64_t> NextUint64();

 private:
  struct ContextFree {
    void operator()(evp_cipher_ctx_st* context) const;
  };

  explicit AesCtrDrbg(std::unique_ptr<evp_cipher_ctx_st, ContextFree> context);

  std::unique_ptr<evp_cipher_ctx_st, ContextFree> context_;
};

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_DRBG_H_
