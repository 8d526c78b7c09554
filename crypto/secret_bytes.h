// SecretBytes: an owned buffer of key material (keys, shared secrets, seeds).
//
// The bytes are wiped with OPENSSL_cleanse when the buffer is destroyed or overwritten; a
// moved-from SecretBytes is empty and owns nothing. It cannot be copied, has no operator<< and
// no comparison operators; GoogleTest prints it as "SecretBytes(<n> bytes, redacted)". Read the
// bytes through span() only where they are used, never to log them.
//
// Thread-safety: like a std::vector (const methods may run concurrently).
#ifndef SILO_CRYPTO_SECRET_BYTES_H_
#define SILO_CRYPTO_SECRET_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <span>

#include "absl/status/statusor.h"

namespace silo::crypto {

class SecretBytes {
 public:
  // Empty.
  SecretBytes() = default;
  // `size` zero bytes, to be filled through mutable_span().
  explicit SecretBytes(size_t size);

  // A copy of `bytes`. The caller wipes its own copy if it needs to.
  static SecretBytes FromBytes(std::span<const uint8_t> bytes);
  // `size` bytes from OpenSSL's CSPRNG (RAND_bytes). Internal when the generator fails.
  static absl::StatusOr<SecretBytes> Random(size_t size);

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {bytes_.get(), size_}; }
  std::span<uint8_t> mutable_span() { return {bytes_.get(), size_}; }

  // GoogleTest's printer: the size only.
  friend void PrintTo(const SecretBytes& secret, std::ostream* os);

 private:
  // Wipes and releases the buffer; leaves this empty.
  void Wipe();

  std::unique_ptr<uint8_t[]> bytes_;
  size_t size_ = 0;
};

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_SECRET_BYTES_H_
