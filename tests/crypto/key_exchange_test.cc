#include "crypto/key_exchange.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "crypto/hkdf.h"
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

// RFC 8032 §7.1 TEST 1 and TEST 2 keys, as the querier's and the owner's certificate keys.
constexpr char kQuerierKey[] = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
constexpr char kOwnerKey[] = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

class KeyExchange : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(querier_key_, SigningKey::FromPrivateBytes(Hex(kQuerierKey)));
    ASSERT_OK_AND_ASSIGN(owner_key_, SigningKey::FromPrivateBytes(Hex(kOwnerKey)));
  }

  const std::vector<uint8_t> session_id_ = Hex("00112233445566778899aabbccddeeff");
  absl::StatusOr<SigningKey> querier_key_ = absl::UnknownError("not set");
  absl::StatusOr<SigningKey> owner_key_ = absl::UnknownError("not set");
};

TEST_F(KeyExchange, BothSidesDeriveTheSameSecret) {
  ASSERT_OK_AND_ASSIGN(OwnEphemeral querier,
                       CreateSignedEphemeral(*querier_key_, session_id_, kQuerierRole));
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  EXPECT_EQ(querier.signed_half.public_key, querier.key_pair.public_key());
  EXPECT_EQ(querier.signed_half.signature.size(), kEd25519SignatureSize);

  ASSERT_OK_AND_ASSIGN(
      const VerifiedPeerEphemeral owner_half,
      VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, owner.signed_half));
  ASSERT_OK_AND_ASSIGN(const VerifiedPeerEphemeral querier_half,
                       VerifyPeerEphemeral(querier_key_->verifying_key(), session_id_, kQuerierRole,
                                           querier.signed_half));
  ASSERT_OK_AND_ASSIGN(const SecretBytes at_querier,
                       DeriveSessionSecret(querier.key_pair, owner_half, session_id_));
  ASSERT_OK_AND_ASSIGN(const SecretBytes at_owner,
                       DeriveSessionSecret(owner.key_pair, querier_half, session_id_));
  EXPECT_EQ(at_querier.size(), 32u);
  EXPECT_EQ(ToHex(at_querier.span()), ToHex(at_owner.span()));
}

// Pins the signed transcript: peers on other builds must sign and check the same bytes.
TEST_F(KeyExchange, SignatureCoversTheDocumentedTranscript) {
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  std::vector<uint8_t> transcript;
  for (const uint8_t byte : Bytes("silo/v1 fedrag key exchange")) transcript.push_back(byte);
  for (const uint8_t byte : Hex("10000000")) transcript.push_back(byte);  // |session_id| = 16
  for (const uint8_t byte : session_id_) transcript.push_back(byte);
  for (const uint8_t byte : Hex("05000000")) transcript.push_back(byte);  // |"owner"| = 5
  for (const uint8_t byte : Bytes("owner")) transcript.push_back(byte);
  for (const uint8_t byte : owner.signed_half.public_key) transcript.push_back(byte);
  EXPECT_OK(owner_key_->verifying_key().Verify(transcript, owner.signed_half.signature));
}

// Pins the session secret's derivation.
TEST_F(KeyExchange, SessionSecretIsTheDocumentedHkdf) {
  ASSERT_OK_AND_ASSIGN(OwnEphemeral querier,
                       CreateSignedEphemeral(*querier_key_, session_id_, kQuerierRole));
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  ASSERT_OK_AND_ASSIGN(
      const VerifiedPeerEphemeral owner_half,
      VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, owner.signed_half));
  ASSERT_OK_AND_ASSIGN(const SecretBytes secret,
                       DeriveSessionSecret(querier.key_pair, owner_half, session_id_));

  ASSERT_OK_AND_ASSIGN(const SecretBytes shared,
                       querier.key_pair.SharedSecret(owner.key_pair.public_key()));
  std::vector<uint8_t> info;
  for (const uint8_t byte : Bytes("silo/v1 fedrag session secret")) info.push_back(byte);
  const auto& [low, high] = std::minmax(querier.key_pair.public_key(), owner.key_pair.public_key());
  info.insert(info.end(), low.begin(), low.end());
  info.insert(info.end(), high.begin(), high.end());
  ASSERT_OK_AND_ASSIGN(const SecretBytes expected,
                       HkdfSha256(shared.span(), session_id_, info, 32));
  EXPECT_EQ(ToHex(secret.span()), ToHex(expected.span()));
}

TEST_F(KeyExchange, AHalfCannotBeReplayedIntoAnotherSession) {
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  std::vector<uint8_t> other_session = session_id_;
  other_session.back() ^= 1;
  EXPECT_THAT(VerifyPeerEphemeral(owner_key_->verifying_key(), other_session, kOwnerRole,
                                  owner.signed_half),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // A prefix of the session id is another session too (the length is signed).
  const std::vector<uint8_t> prefix(session_id_.begin(), session_id_.end() - 1);
  EXPECT_THAT(
      VerifyPeerEphemeral(owner_key_->verifying_key(), prefix, kOwnerRole, owner.signed_half),
      StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(KeyExchange, AHalfCannotBePassedOffAsTheOtherRole) {
  // Even with one key for both roles, a querier's half is not an owner's.
  ASSERT_OK_AND_ASSIGN(OwnEphemeral querier,
                       CreateSignedEphemeral(*querier_key_, session_id_, kQuerierRole));
  EXPECT_THAT(VerifyPeerEphemeral(querier_key_->verifying_key(), session_id_, kOwnerRole,
                                  querier.signed_half),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("owner")));
}

TEST_F(KeyExchange, RejectsHalvesNotSignedByThePeer) {
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  // Signed by someone else.
  EXPECT_THAT(VerifyPeerEphemeral(querier_key_->verifying_key(), session_id_, kOwnerRole,
                                  owner.signed_half),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // The public key swapped for the attacker's.
  ASSERT_OK_AND_ASSIGN(const X25519KeyPair attacker, X25519KeyPair::Generate());
  SignedEphemeral swapped = owner.signed_half;
  swapped.public_key = attacker.public_key();
  EXPECT_THAT(VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, swapped),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // An altered, truncated or missing signature.
  SignedEphemeral altered = owner.signed_half;
  altered.signature[10] ^= 4;
  EXPECT_THAT(VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, altered),
              StatusIs(absl::StatusCode::kUnauthenticated));
  SignedEphemeral truncated = owner.signed_half;
  truncated.signature.pop_back();
  EXPECT_THAT(VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, truncated),
              StatusIs(absl::StatusCode::kUnauthenticated));
  SignedEphemeral unsigned_half = owner.signed_half;
  unsigned_half.signature.clear();
  EXPECT_THAT(
      VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, unsigned_half),
      StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(KeyExchange, DerivationChecksTheSessionOfTheVerifiedHalf) {
  ASSERT_OK_AND_ASSIGN(OwnEphemeral querier,
                       CreateSignedEphemeral(*querier_key_, session_id_, kQuerierRole));
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  ASSERT_OK_AND_ASSIGN(
      const VerifiedPeerEphemeral owner_half,
      VerifyPeerEphemeral(owner_key_->verifying_key(), session_id_, kOwnerRole, owner.signed_half));
  EXPECT_THAT(DeriveSessionSecret(querier.key_pair, owner_half, Bytes("another session")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another session")));
}

TEST_F(KeyExchange, RejectsBadIdentifiers) {
  const std::vector<uint8_t> too_long(kMaxSessionIdSize + 1, 7);
  EXPECT_THAT(CreateSignedEphemeral(*owner_key_, {}, kOwnerRole),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CreateSignedEphemeral(*owner_key_, too_long, kOwnerRole),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CreateSignedEphemeral(*owner_key_, session_id_, ""),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CreateSignedEphemeral(*owner_key_, session_id_, std::string(65, 'r')),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(OwnEphemeral owner,
                       CreateSignedEphemeral(*owner_key_, session_id_, kOwnerRole));
  EXPECT_THAT(VerifyPeerEphemeral(owner_key_->verifying_key(), {}, kOwnerRole, owner.signed_half),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::crypto
