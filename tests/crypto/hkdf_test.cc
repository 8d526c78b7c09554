#include "crypto/hkdf.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/crypto/hex.h"
#include "tests/testing/status_matchers.h"

namespace silo::crypto {
namespace {

using ::silo::crypto::testing::Hex;
using ::silo::crypto::testing::ToHex;
using ::silo::testing::StatusIs;

std::vector<uint8_t> Range(int first, int last) {  // first..last inclusive
  std::vector<uint8_t> bytes;
  for (int i = first; i <= last; ++i) bytes.push_back(static_cast<uint8_t>(i));
  return bytes;
}

// RFC 5869 A.1: basic test case with SHA-256.
TEST(HkdfSha256, Rfc5869TestCase1) {
  const std::vector<uint8_t> ikm = Hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  const std::vector<uint8_t> salt = Hex("000102030405060708090a0b0c");
  const std::vector<uint8_t> info = Hex("f0f1f2f3f4f5f6f7f8f9");
  ASSERT_OK_AND_ASSIGN(const SecretBytes okm, HkdfSha256(ikm, salt, info, 42));
  EXPECT_EQ(ToHex(okm.span()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
            "34007208d5b887185865");
}

// RFC 5869 A.2: longer inputs and outputs.
TEST(HkdfSha256, Rfc5869TestCase2) {
  ASSERT_OK_AND_ASSIGN(const SecretBytes okm,
                       HkdfSha256(Range(0x00, 0x4f), Range(0x60, 0xaf), Range(0xb0, 0xff), 82));
  EXPECT_EQ(ToHex(okm.span()),
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
            "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
            "cc30c58179ec3e87c14c01d5c1f3434f1d87");
}

// RFC 5869 A.3: zero-length salt and info.
TEST(HkdfSha256, Rfc5869TestCase3) {
  const std::vector<uint8_t> ikm = Hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  ASSERT_OK_AND_ASSIGN(const SecretBytes okm, HkdfSha256(ikm, {}, {}, 42));
  EXPECT_EQ(ToHex(okm.span()),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
            "9d201395faa4b61a96c8");
}

TEST(HkdfSha256, AnEmptySaltIsHashLenZeros) {
  const std::vector<uint8_t> ikm = Hex("0b0b0b0b");
  ASSERT_OK_AND_ASSIGN(const SecretBytes no_salt, HkdfSha256(ikm, {}, {}, 32));
  ASSERT_OK_AND_ASSIGN(const SecretBytes zero_salt,
                       HkdfSha256(ikm, std::vector<uint8_t>(32, 0), {}, 32));
  EXPECT_EQ(ToHex(no_salt.span()), ToHex(zero_salt.span()));
}

TEST(HkdfSha256, AcceptsEmptyInputKeyMaterial) {
  ASSERT_OK_AND_ASSIGN(const SecretBytes okm, HkdfSha256({}, {}, {}, 32));
  EXPECT_EQ(okm.size(), 32u);
}

TEST(HkdfSha256, BoundsTheOutputLength) {
  const std::vector<uint8_t> ikm = Hex("0b0b0b0b");
  ASSERT_OK_AND_ASSIGN(const SecretBytes longest, HkdfSha256(ikm, {}, {}, kHkdfSha256MaxLength));
  EXPECT_EQ(longest.size(), 255u * 32u);
  EXPECT_THAT(HkdfSha256(ikm, {}, {}, kHkdfSha256MaxLength + 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(HkdfSha256(ikm, {}, {}, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::crypto
