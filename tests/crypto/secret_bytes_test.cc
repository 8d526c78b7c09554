#include "crypto/secret_bytes.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::crypto {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Not;

TEST(SecretBytes, FromBytesCopiesTheBytes) {
  std::vector<uint8_t> bytes = {1, 2, 3};
  const SecretBytes secret = SecretBytes::FromBytes(bytes);
  bytes[0] = 9;
  EXPECT_EQ(secret.size(), 3u);
  EXPECT_FALSE(secret.empty());
  EXPECT_THAT(secret.span(), ElementsAre(1, 2, 3));
}

TEST(SecretBytes, SizedConstructorGivesZeros) {
  SecretBytes secret(4);
  EXPECT_THAT(secret.span(), ElementsAre(0, 0, 0, 0));
  secret.mutable_span()[2] = 7;
  EXPECT_THAT(secret.span(), ElementsAre(0, 0, 7, 0));
  EXPECT_TRUE(SecretBytes().empty());
  EXPECT_TRUE(SecretBytes(0).span().empty());
}

TEST(SecretBytes, MoveLeavesTheSourceEmpty) {
  SecretBytes source = SecretBytes::FromBytes(std::vector<uint8_t>{4, 5});
  SecretBytes moved(std::move(source));
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): the documented state
  EXPECT_THAT(moved.span(), ElementsAre(4, 5));

  SecretBytes assigned = SecretBytes::FromBytes(std::vector<uint8_t>{6});
  assigned = std::move(moved);
  EXPECT_TRUE(moved.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_THAT(assigned.span(), ElementsAre(4, 5));
}

TEST(SecretBytes, RandomGivesFreshBytes) {
  ASSERT_OK_AND_ASSIGN(const SecretBytes a, SecretBytes::Random(32));
  ASSERT_OK_AND_ASSIGN(const SecretBytes b, SecretBytes::Random(32));
  EXPECT_EQ(a.size(), 32u);
  EXPECT_THAT(a.span(), Not(ElementsAreArray(b.span())));
  ASSERT_OK_AND_ASSIGN(const SecretBytes none, SecretBytes::Random(0));
  EXPECT_TRUE(none.empty());
}

TEST(SecretBytes, GoogleTestPrintsOnlyTheSize) {
  const SecretBytes secret = SecretBytes::FromBytes(std::vector<uint8_t>{0xab, 0xcd});
  const std::string printed = ::testing::PrintToString(secret);
  EXPECT_EQ(printed, "SecretBytes(2 bytes, redacted)");
}

}  // namespace
}  // namespace silo::crypto
