#include "crypto/x25519.h"

#include <array>
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
using ::testing::HasSubstr;

// X25519(scalar, u) through the public API: the key pair of `scalar` with `u` as the peer.
std::string ScalarMult(const std::vector<uint8_t>& scalar, const std::vector<uint8_t>& u) {
  absl::StatusOr<X25519KeyPair> key_pair = X25519KeyPair::FromPrivateBytes(scalar);
  if (!key_pair.ok()) return key_pair.status().ToString();
  absl::StatusOr<SecretBytes> result = key_pair->SharedSecret(u);
  if (!result.ok()) return result.status().ToString();
  return ToHex(result->span());
}

// RFC 7748 §5.2, the two scalar-multiplication vectors. The second u has its top bit set,
// which X25519 ignores.
TEST(X25519, Rfc7748ScalarMultiplication) {
  EXPECT_EQ(ScalarMult(Hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                       Hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
  EXPECT_EQ(ScalarMult(Hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                       Hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")),
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
}

// RFC 7748 §5.2, iterated: k = u = 9; k, u = X25519(k, u), k; after 1 and 1,000 iterations.
TEST(X25519, Rfc7748Iterated) {
  std::vector<uint8_t> k(32, 0);
  k[0] = 9;
  std::vector<uint8_t> u = k;
  for (int iteration = 1; iteration <= 1000; ++iteration) {
    const std::string next = ScalarMult(k, u);
    u = k;
    k = Hex(next);
    ASSERT_EQ(k.size(), 32u) << next;
    if (iteration == 1) {
      EXPECT_EQ(ToHex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
    }
  }
  EXPECT_EQ(ToHex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
}

// RFC 7748 §6.1: Alice's and Bob's key pairs and their shared secret.
TEST(X25519, Rfc7748DiffieHellman) {
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair alice,
                       X25519KeyPair::FromPrivateBytes(Hex(
                           "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")));
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair bob,
                       X25519KeyPair::FromPrivateBytes(Hex(
                           "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")));
  EXPECT_EQ(ToHex(alice.public_key()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(ToHex(bob.public_key()),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  constexpr char kShared[] = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  ASSERT_OK_AND_ASSIGN(const SecretBytes alice_shared, alice.SharedSecret(bob.public_key()));
  ASSERT_OK_AND_ASSIGN(const SecretBytes bob_shared, bob.SharedSecret(alice.public_key()));
  EXPECT_EQ(ToHex(alice_shared.span()), kShared);
  EXPECT_EQ(ToHex(bob_shared.span()), kShared);
}

TEST(X25519, GeneratedPairsAgree) {
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair a, X25519KeyPair::Generate());
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair b, X25519KeyPair::Generate());
  EXPECT_NE(a.public_key(), b.public_key());
  ASSERT_OK_AND_ASSIGN(const SecretBytes ab, a.SharedSecret(b.public_key()));
  ASSERT_OK_AND_ASSIGN(const SecretBytes ba, b.SharedSecret(a.public_key()));
  EXPECT_EQ(ToHex(ab.span()), ToHex(ba.span()));
}

// Points of small order give an all-zero shared secret (RFC 7748 §6.1): u = 0, u = 1 and a
// point of order 8.
TEST(X25519, RejectsLowOrderPoints) {
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair key_pair, X25519KeyPair::Generate());
  std::vector<uint8_t> one(32, 0);
  one[0] = 1;
  for (const std::vector<uint8_t>& point :
       {std::vector<uint8_t>(32, 0), one,
        Hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")}) {
    EXPECT_THAT(key_pair.SharedSecret(point),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("low-order")))
        << ToHex(point);
  }
}

TEST(X25519, RejectsWrongSizes) {
  EXPECT_THAT(X25519KeyPair::FromPrivateBytes(std::vector<uint8_t>(31)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair key_pair, X25519KeyPair::Generate());
  EXPECT_THAT(key_pair.SharedSecret(std::vector<uint8_t>(33, 5)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::crypto
