// Hex helpers for the crypto tests, so that known-answer vectors read as in the RFCs.
#ifndef SILO_TESTS_CRYPTO_HEX_H_
#define SILO_TESTS_CRYPTO_HEX_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace silo::crypto::testing {

// The bytes of `hex` (two lower- or upper-case digits per byte). A malformed string fails the
// test and gives no bytes.
inline std::vector<uint8_t> Hex(std::string_view hex) {
  const auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> bytes;
  if (hex.size() % 2 != 0) {
    ADD_FAILURE() << "odd number of hex digits: " << hex;
    return {};
  }
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int high = digit(hex[i]);
    const int low = digit(hex[i + 1]);
    if (high < 0 || low < 0) {
      ADD_FAILURE() << "not a hex string: " << hex;
      return {};
    }
    bytes.push_back(static_cast<uint8_t>(high * 16 + low));
  }
  return bytes;
}

// Lower-case hex of `bytes`.
inline std::string ToHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (const uint8_t byte : bytes) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 15]);
  }
  return hex;
}

// The bytes of `text`, for messages and labels.
inline std::span<const uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

}  // namespace silo::crypto::testing

#endif  // SILO_TESTS_CRYPTO_HEX_H_
