#include "crypto/sha256.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::crypto {
namespace {

using ::silo::testing::StatusIs;

// FIPS 180-2 appendix B examples.
TEST(Sha256, KnownAnswers) {
  ASSERT_OK_AND_ASSIGN(Sha256Digest empty, Sha256Of(std::string_view()));
  EXPECT_EQ(DigestHex(empty), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  ASSERT_OK_AND_ASSIGN(Sha256Digest abc, Sha256Of(std::string_view("abc")));
  EXPECT_EQ(DigestHex(abc), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ASSERT_OK_AND_ASSIGN(
      Sha256Digest two_blocks,
      Sha256Of(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")));
  EXPECT_EQ(DigestHex(two_blocks),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, PiecesHashLikeTheWhole) {
  const std::string million(1'000'000, 'a');
  ASSERT_OK_AND_ASSIGN(Sha256 hash, Sha256::Create());
  for (size_t i = 0; i < million.size(); i += 4097) {
    ASSERT_OK(hash.Update(std::string_view(million).substr(i, 4097)));
  }
  ASSERT_OK_AND_ASSIGN(Sha256Digest digest, hash.Finish());
  EXPECT_EQ(DigestHex(digest), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, NoUpdateAfterFinish) {
  ASSERT_OK_AND_ASSIGN(Sha256 hash, Sha256::Create());
  ASSERT_OK(hash.Finish().status());
  EXPECT_THAT(hash.Update(std::string_view("x")), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(hash.Finish().status(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace silo::crypto
