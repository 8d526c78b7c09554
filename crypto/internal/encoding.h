// Unambiguous byte strings for signatures and HKDF labels: fixed-width little-endian integers
// and length-prefixed fields. Private to crypto/. Thread-safe (pure functions).
#ifndef SILO_CRYPTO_INTERNAL_ENCODING_H_
#define SILO_CRYPTO_INTERNAL_ENCODING_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace silo::crypto::internal {

// Appends `value` as 4 little-endian bytes.
inline void AppendUint32(std::vector<uint8_t>& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// Appends `bytes` as is.
inline void AppendBytes(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  const size_t offset = out.size();
  out.resize(offset + bytes.size());
  if (!bytes.empty()) std::memcpy(out.data() + offset, bytes.data(), bytes.size());
}
inline void AppendBytes(std::vector<uint8_t>& out, std::string_view text) {
  AppendBytes(out, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Appends the length of `bytes` (4 bytes, little-endian) and then `bytes`. Precondition:
// bytes.size() < 2^32 (callers bound their inputs far below).
inline void AppendLengthPrefixed(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  AppendUint32(out, static_cast<uint32_t>(bytes.size()));
  AppendBytes(out, bytes);
}
inline void AppendLengthPrefixed(std::vector<uint8_t>& out, std::string_view text) {
  AppendUint32(out, static_cast<uint32_t>(text.size()));
  AppendBytes(out, text);
}

}  // namespace silo::crypto::internal

#endif  // SILO_CRYPTO_INTERNAL_ENCODING_H_
