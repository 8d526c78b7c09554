#include "crypto/aead.h"

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/crypto/hex.h"
#include "tests/testing/status_matchers.h"

namespace silo::crypto {
namespace {

using ::silo::crypto::testing::Bytes;
using ::silo::crypto::testing::Hex;
using ::silo::crypto::testing::ToHex;
using ::silo::testing::StatusIs;

struct GcmVector {
  const char* name;
  const char* key;
  const char* nonce;
  const char* plaintext;
  const char* aad;
  const char* ciphertext;
  const char* tag;
};

// McGrew and Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 13 to 16 (the
// AES-256 ones with 96-bit IVs), as NIST's GCM validation takes them.
constexpr char kZeroKey[] = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr char kKey[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
constexpr char kNonce[] = "cafebabefacedbaddecaf888";
constexpr GcmVector kGcmVectors[] = {
    {"Test Case 13", kZeroKey, "000000000000000000000000", "", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"Test Case 14", kZeroKey, "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"Test Case 15", kKey, kNonce,
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"Test Case 16", kKey, kNonce,
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};
const GcmVector& kCase16 = kGcmVectors[3];

SecretBytes Key(const char* hex) { return SecretBytes::FromBytes(Hex(hex)); }

TEST(AesGcm, McGrewViegaTestCases13To16) {
  for (const GcmVector& vector : kGcmVectors) {
    SCOPED_TRACE(vector.name);
    const SecretBytes key = Key(vector.key);
    ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> sealed,
                         Seal(key, Hex(vector.nonce), Hex(vector.plaintext), Hex(vector.aad)));
    EXPECT_EQ(ToHex(sealed), std::string(vector.ciphertext) + vector.tag);
    ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> opened,
                         Open(key, Hex(vector.nonce), sealed, Hex(vector.aad)));
    EXPECT_EQ(ToHex(opened), vector.plaintext);
  }
}

// Every single-bit change of the sealed bytes, the associated data, the nonce or the key is
// caught.
TEST(AesGcm, TamperingIsDataLoss) {
  const SecretBytes key = Key(kCase16.key);
  const std::vector<uint8_t> nonce = Hex(kCase16.nonce);
  const std::vector<uint8_t> aad = Hex(kCase16.aad);
  const std::vector<uint8_t> sealed = Hex(std::string(kCase16.ciphertext) + kCase16.tag);
  ASSERT_OK(Open(key, nonce, sealed, aad));

  for (size_t bit = 0; bit < 8 * sealed.size(); ++bit) {
    std::vector<uint8_t> altered = sealed;
    altered[bit / 8] ^= static_cast<uint8_t>(1 << (bit % 8));
    EXPECT_THAT(Open(key, nonce, altered, aad), StatusIs(absl::StatusCode::kDataLoss))
        << (bit / 8 < sealed.size() - kAes256GcmTagSize ? "ciphertext" : "tag") << " bit " << bit;
  }
  for (size_t bit = 0; bit < 8 * aad.size(); ++bit) {
    std::vector<uint8_t> altered = aad;
    altered[bit / 8] ^= static_cast<uint8_t>(1 << (bit % 8));
    EXPECT_THAT(Open(key, nonce, sealed, altered), StatusIs(absl::StatusCode::kDataLoss))
        << "aad bit " << bit;
  }
  EXPECT_THAT(Open(key, nonce, sealed, {}), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<uint8_t> other_nonce = nonce;
  other_nonce[11] ^= 1;
  EXPECT_THAT(Open(key, other_nonce, sealed, aad), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<uint8_t> other_key = Hex(kCase16.key);
  other_key[0] ^= 1;
  EXPECT_THAT(Open(SecretBytes::FromBytes(other_key), nonce, sealed, aad),
              StatusIs(absl::StatusCode::kDataLoss));
  // Truncated and extended inputs.
  EXPECT_THAT(Open(key, nonce, std::span(sealed).first(sealed.size() - 1), aad),
              StatusIs(absl::StatusCode::kDataLoss));
  std::vector<uint8_t> extended = sealed;
  extended.push_back(0);
  EXPECT_THAT(Open(key, nonce, extended, aad), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(AesGcm, RejectsWrongSizes) {
  const SecretBytes key = Key(kKey);
  const std::vector<uint8_t> nonce = Hex(kNonce);
  EXPECT_THAT(
      Seal(SecretBytes::FromBytes(Hex("000102030405060708090a0b0c0d0e0f")), nonce, Bytes("x"), {}),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Seal(key, Hex("cafebabefacedbad"), Bytes("x"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Open(key, nonce, std::vector<uint8_t>(15), {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Open(SecretBytes(), nonce, std::vector<uint8_t>(16), {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(OpenWithNonce(key, std::vector<uint8_t>(27), {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(AesGcm, RandomNonceRoundTrip) {
  const SecretBytes key = Key(kKey);
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> a,
                       SealWithRandomNonce(key, Bytes("attention partials"), Bytes("aad")));
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> b,
                       SealWithRandomNonce(key, Bytes("attention partials"), Bytes("aad")));
  EXPECT_EQ(a.size(), kAes256GcmNonceSize + 18 + kAes256GcmTagSize);
  EXPECT_NE(ToHex(std::span(a).first(kAes256GcmNonceSize)),
            ToHex(std::span(b).first(kAes256GcmNonceSize)));
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> opened, OpenWithNonce(key, a, Bytes("aad")));
  EXPECT_EQ(std::string(opened.begin(), opened.end()), "attention partials");

  // The nonce is bound like the rest.
  std::vector<uint8_t> altered = a;
  altered[0] ^= 1;
  EXPECT_THAT(OpenWithNonce(key, altered, Bytes("aad")), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(OpenWithNonce(key, a, Bytes("AAD")), StatusIs(absl::StatusCode::kDataLoss));

  // Nothing to encrypt is fine too.
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> empty, SealWithRandomNonce(key, {}, {}));
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> nothing, OpenWithNonce(key, empty, {}));
  EXPECT_TRUE(nothing.empty());
}

// True when `message` contains any 4 consecutive bytes of `key`, raw or as hex in either case.
bool MentionsKeyBytes(std::string_view message, std::span<const uint8_t> key) {
  std::string upper_message(message);
  for (char& c : upper_message) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (size_t i = 0; i + 4 <= key.size(); ++i) {
    const std::span<const uint8_t> window = key.subspan(i, 4);
    std::string hex = ToHex(window);
    for (char& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const std::string raw(window.begin(), window.end());
    if (upper_message.find(hex) != std::string::npos) return true;
    if (message.find(raw) != std::string_view::npos) return true;
  }
  return false;
}

TEST(AesGcm, ErrorsNeverContainKeyBytes) {
  // A key whose every 4-byte window is distinctive.
  std::vector<uint8_t> key_bytes(32);
  for (size_t i = 0; i < key_bytes.size(); ++i) key_bytes[i] = static_cast<uint8_t>(0x41 + i);
  const SecretBytes key = SecretBytes::FromBytes(key_bytes);
  const std::vector<uint8_t> nonce = Hex(kNonce);
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> sealed,
                       Seal(key, nonce, Bytes("secret plaintext"), Bytes("aad")));
  ASSERT_EQ(sealed.size(), 16u + kAes256GcmTagSize);
  std::vector<uint8_t> bad_tag = sealed;
  bad_tag[31] ^= 1;
  std::vector<uint8_t> bad_ciphertext = sealed;
  bad_ciphertext[0] ^= 1;

  std::vector<absl::Status> failures = {
      Open(key, nonce, bad_tag, Bytes("aad")).status(),
      Open(key, nonce, bad_ciphertext, Bytes("aad")).status(),
      Open(key, nonce, sealed, Bytes("other")).status(),
      Open(key, nonce, std::span(sealed).first(5), Bytes("aad")).status(),
      Open(key, std::span(nonce).first(8), sealed, Bytes("aad")).status(),
      Open(SecretBytes::FromBytes(std::span(key_bytes).first(31)), nonce, sealed, Bytes("aad"))
          .status(),
      OpenWithNonce(key, sealed, Bytes("aad")).status(),
      OpenWithNonce(key, std::span(sealed).first(20), Bytes("aad")).status(),
  };
  for (const absl::Status& status : failures) {
    EXPECT_FALSE(status.ok());
    const std::string message(status.message());
    EXPECT_FALSE(MentionsKeyBytes(message, key_bytes)) << status;
    EXPECT_FALSE(MentionsKeyBytes(status.ToString(), key_bytes)) << status;
    EXPECT_EQ(message.find("secret plaintext"), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace silo::crypto
