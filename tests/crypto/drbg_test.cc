#include "crypto/drbg.h"

#include <cstdint>
#include <span>
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

// NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt.
constexpr char kKey[] = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
constexpr char kInitialCounter[] = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
// Output blocks #1 to #4 (the keystream).
constexpr char kKeystream[] =
    "0bdf7df1591716335e9a8b15c860c502"
    "5a6e699d536119065433863c8f657b94"
    "1bc12c9c01610d5d0d8bd6a3378eca62"
    "2956e1c8693536b1bee99c73a31576b6";
constexpr char kPlaintext[] =
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710";
constexpr char kCiphertext[] =
    "601ec313775789a5b7a7f504bbf3d228"
    "f443e3ca4d62b59aca84e990cacaf5c5"
    "2b0930daa23de94ce87017ba2d84988d"
    "dfc9c58db67aada613c2dd08457941a6";

TEST(AesCtrDrbg, MatchesNistSp800_38aCtrAes256) {
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg drbg, AesCtrDrbg::Create(Hex(kKey), Hex(kInitialCounter)));
  std::vector<uint8_t> keystream(64);
  ASSERT_OK(drbg.Generate(keystream));
  EXPECT_EQ(ToHex(keystream), kKeystream);

  // Keystream XOR plaintext is the specification's ciphertext.
  const std::vector<uint8_t> plaintext = Hex(kPlaintext);
  std::vector<uint8_t> ciphertext(plaintext.size());
  for (size_t i = 0; i < plaintext.size(); ++i) ciphertext[i] = keystream[i] ^ plaintext[i];
  EXPECT_EQ(ToHex(ciphertext), kCiphertext);
}

TEST(AesCtrDrbg, OutputDoesNotDependOnHowItIsSplit) {
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg drbg, AesCtrDrbg::Create(Hex(kKey), Hex(kInitialCounter)));
  std::vector<uint8_t> keystream(64);
  const std::span<uint8_t> all(keystream);
  ASSERT_OK(drbg.Generate(all.subspan(0, 7)));
  ASSERT_OK(drbg.Generate(all.subspan(7, 0)));
  ASSERT_OK(drbg.Generate(all.subspan(7, 25)));
  ASSERT_OK(drbg.Generate(all.subspan(32, 32)));
  EXPECT_EQ(ToHex(keystream), kKeystream);
}

TEST(AesCtrDrbg, NextUint64ReadsTheKeystreamLittleEndian) {
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg drbg, AesCtrDrbg::Create(Hex(kKey), Hex(kInitialCounter)));
  ASSERT_OK_AND_ASSIGN(const uint64_t first, drbg.NextUint64());
  ASSERT_OK_AND_ASSIGN(const uint64_t second, drbg.NextUint64());
  EXPECT_EQ(first, 0x33161759f17ddf0bu);   // keystream bytes 0..7: 0b df 7d f1 59 17 16 33
  EXPECT_EQ(second, 0x02c560c8158b9a5eu);  // bytes 8..15: 5e 9a 8b 15 c8 60 c5 02
}

TEST(AesCtrDrbg, DefaultCounterIsZero) {
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg with_default, AesCtrDrbg::Create(Hex(kKey)));
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg with_zero,
                       AesCtrDrbg::Create(Hex(kKey), std::vector<uint8_t>(16, 0)));
  std::vector<uint8_t> a(100), b(100);
  ASSERT_OK(with_default.Generate(a));
  ASSERT_OK(with_zero.Generate(b));
  EXPECT_EQ(a, b);
  EXPECT_NE(ToHex(a).substr(0, 128), kKeystream);
}

TEST(AesCtrDrbg, DifferentKeysGiveDifferentStreams) {
  std::vector<uint8_t> other_key = Hex(kKey);
  other_key[31] ^= 1;
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg a, AesCtrDrbg::Create(Hex(kKey)));
  ASSERT_OK_AND_ASSIGN(AesCtrDrbg b, AesCtrDrbg::Create(other_key));
  ASSERT_OK_AND_ASSIGN(const uint64_t from_a, a.NextUint64());
  ASSERT_OK_AND_ASSIGN(const uint64_t from_b, b.NextUint64());
  EXPECT_NE(from_a, from_b);
}

TEST(AesCtrDrbg, RejectsWrongSizes) {
  EXPECT_THAT(AesCtrDrbg::Create(std::vector<uint8_t>(16)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(AesCtrDrbg::Create(Hex(kKey), std::vector<uint8_t>(12)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::crypto
