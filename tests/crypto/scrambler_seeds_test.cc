#include "crypto/scrambler_seeds.h"

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

constexpr char kSecret[] = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

struct Inputs {
  std::string secret = kSecret;
  std::string session_id = "session-0001";
  uint32_t layer = 3;
  uint32_t kv_head = 1;
  uint32_t block = 0;
};

ScramblerSeeds Derive(const Inputs& inputs) {
  const SecretBytes secret = SecretBytes::FromBytes(Hex(inputs.secret));
  absl::StatusOr<ScramblerSeeds> seeds = DeriveScramblerSeeds(
      secret, Bytes(inputs.session_id), inputs.layer, inputs.kv_head, inputs.block);
  EXPECT_OK(seeds);
  return seeds.ok() ? *seeds : ScramblerSeeds();
}

TEST(ScramblerSeeds, AreDeterministic) {
  const ScramblerSeeds a = Derive({});
  const ScramblerSeeds b = Derive({});
  EXPECT_EQ(a.phi, b.phi);
  EXPECT_EQ(a.psi, b.psi);
  EXPECT_EQ(a.perm, b.perm);
}

TEST(ScramblerSeeds, TheThreeSeedsDiffer) {
  const ScramblerSeeds seeds = Derive({});
  EXPECT_NE(seeds.phi, seeds.psi);
  EXPECT_NE(seeds.phi, seeds.perm);
  EXPECT_NE(seeds.psi, seeds.perm);
}

TEST(ScramblerSeeds, EveryInputChangesEverySeed) {
  const ScramblerSeeds base = Derive({});
  std::vector<std::pair<std::string, Inputs>> variants;
  Inputs inputs;
  inputs.secret[63] = '3';
  variants.emplace_back("secret", inputs);
  inputs = {};
  inputs.session_id = "session-0002";
  variants.emplace_back("session", inputs);
  inputs = {};
  inputs.layer = 4;
  variants.emplace_back("layer", inputs);
  inputs = {};
  inputs.kv_head = 0;
  variants.emplace_back("kv_head", inputs);
  inputs = {};
  inputs.block = 1;
  variants.emplace_back("block", inputs);
  // Fields are fixed-width or length-prefixed, so moving bytes between them changes the seeds.
  inputs = {};
  inputs.session_id = "session-000";
  variants.emplace_back("shorter session", inputs);
  inputs = {};
  inputs.layer = 1;
  inputs.kv_head = 3;
  variants.emplace_back("layer and kv_head swapped", inputs);

  for (const auto& [name, variant] : variants) {
    SCOPED_TRACE(name);
    const ScramblerSeeds seeds = Derive(variant);
    EXPECT_NE(seeds.phi, base.phi);
    EXPECT_NE(seeds.psi, base.psi);
    EXPECT_NE(seeds.perm, base.perm);
  }
}

// Pins the HKDF info of DESIGN §6: the querier and the owner may run different builds.
TEST(ScramblerSeeds, AreTheDocumentedHkdf) {
  const ScramblerSeeds seeds = Derive({});
  std::vector<uint8_t> context;
  for (const uint8_t byte : Bytes("silo/v1 fedrag scrambler seed")) context.push_back(byte);
  for (const uint8_t byte : Hex("0c000000")) context.push_back(byte);  // |"session-0001"| = 12
  for (const uint8_t byte : Bytes("session-0001")) context.push_back(byte);
  for (const uint8_t byte : Hex("03000000"
                                "01000000"
                                "00000000"))
    context.push_back(byte);
  const std::vector<uint8_t> secret = Hex(kSecret);
  for (const auto& [label, seed] :
       {std::pair{"phi", seeds.phi}, std::pair{"psi", seeds.psi}, std::pair{"perm", seeds.perm}}) {
    SCOPED_TRACE(label);
    std::vector<uint8_t> info = context;
    for (const uint8_t byte : Bytes(label)) info.push_back(byte);
    ASSERT_OK_AND_ASSIGN(const SecretBytes expected, HkdfSha256(secret, {}, info, 32));
    EXPECT_EQ(ToHex(seed), ToHex(expected.span()));
  }
}

TEST(ScramblerSeeds, RejectsEmptySecretsAndBadSessionIds) {
  const SecretBytes secret = SecretBytes::FromBytes(Hex(kSecret));
  EXPECT_THAT(DeriveScramblerSeeds(SecretBytes(), Bytes("s"), 0, 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DeriveScramblerSeeds(secret, {}, 0, 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DeriveScramblerSeeds(secret, std::vector<uint8_t>(257, 1), 0, 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::crypto
