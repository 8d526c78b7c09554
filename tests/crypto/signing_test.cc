#include "crypto/signing.h"

#include <cstdint>
#include <string>
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
using ::testing::HasSubstr;

struct Rfc8032Vector {
  const char* name;
  const char* secret_key;
  const char* public_key;
  const char* message;
  const char* signature;
};

// RFC 8032 §7.1, TEST 1 to TEST 3.
constexpr Rfc8032Vector kRfc8032Vectors[] = {
    {"TEST 1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
     "b46bd25bf5f0595bbe24655141438e7a100b"},
    {"TEST 2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f1"
     "1d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"TEST 3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984d"
     "c6594a7c15e9716ed28dc027beceea1ec40a"},
};

// RFC 8410 §10.3: an Ed25519 private key; §10.1: its public key.
constexpr char kRfc8410PrivateKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n"
    "-----END PRIVATE KEY-----\n";
constexpr char kRfc8410PublicKeyPem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n";
constexpr char kRfc8410PublicKey[] =
    "19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1";

// A self-signed certificate for the RFC 8410 key, made with
//   openssl req -x509 -new -key rfc8410.pem -subj /CN=silo-crypto-test -days 36500 -set_serial 1
constexpr char kEd25519CertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBOTCB7KADAgECAgEBMAUGAytlcDAbMRkwFwYDVQQDDBBzaWxvLWNyeXB0by10\n"
    "ZXN0MCAXDTI2MTEyMzE4NDIwOFoYDzIxMjYxMDMwMTg0MjA4WjAbMRkwFwYDVQQD\n"
    "DBBzaWxvLWNyeXB0by10ZXN0MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQ\n"
    "hqowtrbLDFw4rXAxZuGjUzBRMB0GA1UdDgQWBBSijMH4bllg0+A651yWLJeo1Egp\n"
    "PDAfBgNVHSMEGDAWgBSijMH4bllg0+A651yWLJeo1EgpPDAPBgNVHRMBAf8EBTAD\n"
    "AQH/MAUGAytlcANBAEbSgEMYPU4qFUe2L8FXOJO1l04qf5BxO5GyqQ/TsdkAZ6Js\n"
    "Z070/Uid9sEXKyaKWUezVWRPi/lqosc4fVxAggU=\n"
    "-----END CERTIFICATE-----\n";

// A self-signed certificate with a P-256 key (openssl req -x509 with an ecparam key).
constexpr char kP256CertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBhDCCASqgAwIBAgIBAjAKBggqhkjOPQQDAjAgMR4wHAYDVQQDDBVzaWxvLWNy\n"
    "eXB0by10ZXN0LXAyNTYwIBcNMjYxMTIzMTg0MjA4WhgPMjEyNjEwMzAxODQyMDha\n"
    "MCAxHjAcBgNVBAMMFXNpbG8tY3J5cHRvLXRlc3QtcDI1NjBZMBMGByqGSM49AgEG\n"
    "CCqGSM49AwEHA0IABMimM8vqJLd7tvX1CM6QNZf4YYLzmWASkIc94C3yZpk1xJLi\n"
    "R2sFdqrk7n8+ErreJFF2rCCM7/zK9t0uj50aUUyjUzBRMB0GA1UdDgQWBBR0cvZY\n"
    "/i+MfXvAOsLIwOyLLASMUDAfBgNVHSMEGDAWgBR0cvZY/i+MfXvAOsLIwOyLLASM\n"
    "UDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQD1uq87aO9kfOVw\n"
    "gYygK142BDB8X8y6fsgpI2PhJvWCiQIgLhmklgg/F8lglWXX02/BurKt/hBDFWtH\n"
    "lcUddF6yQ94=\n"
    "-----END CERTIFICATE-----\n";

// X25519 keys: right format, wrong algorithm.
constexpr char kX25519PrivateKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEIFBAxMJAowjoqp76WlocGB12zjNymqODwxN2x8QyvVZp\n"
    "-----END PRIVATE KEY-----\n";
constexpr char kX25519PublicKeyPem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VuAyEAM86k7810YIkCNrvs6Jaru+1SnMS/6B0aBHhWuO21ZBg=\n"
    "-----END PUBLIC KEY-----\n";

// An Ed25519 key encrypted with a password (openssl genpkey -aes256).
constexpr char kEncryptedPrivateKeyPem[] =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
    "MIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAjoMJR0D3Rv9QICCAAw\n"
    "DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEGGBIDxvaAP90P5OZa2EgUIEQHIC\n"
    "SGqp73+witnu5csDNcNS2IBsyHWn92ChzJsqO/077cBHg99zyk+J0hVevFoP57rG\n"
    "o7dw/kYYkoIszIyluZs=\n"
    "-----END ENCRYPTED PRIVATE KEY-----\n";

TEST(Ed25519, Rfc8032Vectors) {
  for (const Rfc8032Vector& vector : kRfc8032Vectors) {
    SCOPED_TRACE(vector.name);
    ASSERT_OK_AND_ASSIGN(const SigningKey signing_key,
                         SigningKey::FromPrivateBytes(Hex(vector.secret_key)));
    EXPECT_EQ(ToHex(signing_key.verifying_key().public_key()), vector.public_key);
    const std::vector<uint8_t> message = Hex(vector.message);
    ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> signature, signing_key.Sign(message));
    EXPECT_EQ(ToHex(signature), vector.signature);

    ASSERT_OK_AND_ASSIGN(const VerifyingKey verifying_key,
                         VerifyingKey::FromPublicBytes(Hex(vector.public_key)));
    EXPECT_OK(verifying_key.Verify(message, Hex(vector.signature)));
  }
}

TEST(Ed25519, RejectsAlteredMessagesSignaturesAndKeys) {
  const Rfc8032Vector& vector = kRfc8032Vectors[2];
  ASSERT_OK_AND_ASSIGN(const VerifyingKey key,
                       VerifyingKey::FromPublicBytes(Hex(vector.public_key)));
  const std::vector<uint8_t> message = Hex(vector.message);
  const std::vector<uint8_t> signature = Hex(vector.signature);

  std::vector<uint8_t> altered_message = message;
  altered_message[1] ^= 0x01;
  EXPECT_THAT(key.Verify(altered_message, signature), StatusIs(absl::StatusCode::kUnauthenticated));
  for (const size_t byte : {0, 31, 32, 63}) {
    std::vector<uint8_t> altered_signature = signature;
    altered_signature[byte] ^= 0x80;
    EXPECT_THAT(key.Verify(message, altered_signature),
                StatusIs(absl::StatusCode::kUnauthenticated))
        << "byte " << byte;
  }
  EXPECT_THAT(key.Verify(message, std::vector<uint8_t>(signature.begin(), signature.end() - 1)),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("64 bytes")));
  EXPECT_THAT(key.Verify(message, {}), StatusIs(absl::StatusCode::kUnauthenticated));

  ASSERT_OK_AND_ASSIGN(const VerifyingKey other_key,
                       VerifyingKey::FromPublicBytes(Hex(kRfc8032Vectors[1].public_key)));
  EXPECT_THAT(other_key.Verify(message, signature), StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(Ed25519, GeneratedKeysSignAndVerify) {
  ASSERT_OK_AND_ASSIGN(const SigningKey a, SigningKey::Generate());
  ASSERT_OK_AND_ASSIGN(const SigningKey b, SigningKey::Generate());
  EXPECT_NE(a.verifying_key().public_key(), b.verifying_key().public_key());
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> signature, a.Sign(Bytes("silo")));
  EXPECT_EQ(signature.size(), kEd25519SignatureSize);
  EXPECT_OK(a.verifying_key().Verify(Bytes("silo"), signature));
  EXPECT_THAT(b.verifying_key().Verify(Bytes("silo"), signature),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(Ed25519, ReadsRfc8410PemKeys) {
  ASSERT_OK_AND_ASSIGN(const SigningKey signing_key, SigningKey::FromPem(kRfc8410PrivateKeyPem));
  EXPECT_EQ(ToHex(signing_key.verifying_key().public_key()), kRfc8410PublicKey);
  ASSERT_OK_AND_ASSIGN(const VerifyingKey verifying_key,
                       VerifyingKey::FromPem(kRfc8410PublicKeyPem));
  EXPECT_EQ(ToHex(verifying_key.public_key()), kRfc8410PublicKey);

  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> signature, signing_key.Sign(Bytes("hello")));
  EXPECT_OK(verifying_key.Verify(Bytes("hello"), signature));
}

TEST(Ed25519, ReadsTheKeyOfACertificate) {
  ASSERT_OK_AND_ASSIGN(const VerifyingKey key,
                       VerifyingKey::FromCertificatePem(kEd25519CertificatePem));
  EXPECT_EQ(ToHex(key.public_key()), kRfc8410PublicKey);
}

TEST(Ed25519, RejectsKeysOfOtherAlgorithms) {
  EXPECT_THAT(VerifyingKey::FromCertificatePem(kP256CertificatePem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not Ed25519")));
  EXPECT_THAT(SigningKey::FromPem(kX25519PrivateKeyPem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not Ed25519")));
  EXPECT_THAT(VerifyingKey::FromPem(kX25519PublicKeyPem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not Ed25519")));
}

TEST(Ed25519, RejectsMalformedPem) {
  EXPECT_THAT(SigningKey::FromPem(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SigningKey::FromPem("not a key"), StatusIs(absl::StatusCode::kInvalidArgument));
  // A public key or a certificate where a private key belongs, and the other way round.
  EXPECT_THAT(SigningKey::FromPem(kRfc8410PublicKeyPem),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(VerifyingKey::FromPem(kEd25519CertificatePem),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(VerifyingKey::FromCertificatePem(kRfc8410PublicKeyPem),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::string truncated = kEd25519CertificatePem;
  truncated.resize(truncated.size() / 2);
  EXPECT_THAT(VerifyingKey::FromCertificatePem(truncated),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Encrypted keys are refused without prompting for a password on the terminal.
TEST(Ed25519, RefusesEncryptedPrivateKeys) {
  EXPECT_THAT(SigningKey::FromPem(kEncryptedPrivateKeyPem),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Ed25519, RejectsWrongSizes) {
  EXPECT_THAT(SigningKey::FromPrivateBytes(std::vector<uint8_t>(64)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(VerifyingKey::FromPublicBytes(std::vector<uint8_t>(31)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::crypto
