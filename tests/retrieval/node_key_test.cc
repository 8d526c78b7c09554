// The node key: hex parsing, key files (mode 0600 enforced, malformed contents rejected without
// echoing them), generation of a new key file and the environment fallback.
#include "retrieval/node_key.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKeyHex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::vector<uint8_t> KeyBytes() {
  std::vector<uint8_t> bytes(32);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i);
  return bytes;
}

std::vector<uint8_t> Bytes(const crypto::SecretBytes& key) {
  return std::vector<uint8_t>(key.span().begin(), key.span().end());
}

std::string WriteKeyFile(const TempDir& dir, const std::string& contents, mode_t mode) {
  std::string path = dir.WriteFile("node.key", contents);
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  return path;
}

mode_t ModeOf(const std::string& path) {
  struct stat info;
  EXPECT_EQ(::stat(path.c_str(), &info), 0);
  return info.st_mode & 07777;
}

TEST(ParseNodeKeyHexTest, ParsesLowerAndUpperCase) {
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes key, ParseNodeKeyHex(kKeyHex));
  EXPECT_THAT(Bytes(key), ElementsAreArray(KeyBytes()));
  std::string upper = kKeyHex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes upper_key, ParseNodeKeyHex(upper));
  EXPECT_THAT(Bytes(upper_key), ElementsAreArray(KeyBytes()));
}

TEST(ParseNodeKeyHexTest, RejectsWrongLengthAndNonHexWithoutEchoingTheKey) {
  const std::string hex = kKeyHex;
  EXPECT_THAT(ParseNodeKeyHex(hex.substr(0, 63)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("found 63")));
  EXPECT_THAT(ParseNodeKeyHex(hex + "0"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseNodeKeyHex(""), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string bad = hex;
  bad[10] = 'g';
  EXPECT_THAT(ParseNodeKeyHex(bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("character 11"), Not(HasSubstr("0a0b0c")))));
  // Raw bytes are not a key format, and white space is only tolerated in files.
  EXPECT_THAT(ParseNodeKeyHex(hex.substr(0, 62) + " 0"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ReadNodeKeyFileTest, ReadsOwnerOnlyFileWithTrailingNewline) {
  TempDir dir;
  const std::string path = WriteKeyFile(dir, std::string(kKeyHex) + "\n", 0600);
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes key, ReadNodeKeyFile(path));
  EXPECT_THAT(Bytes(key), ElementsAreArray(KeyBytes()));
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  EXPECT_OK(ReadNodeKeyFile(path));
}

TEST(ReadNodeKeyFileTest, GroupOrOtherPermissionIsPermissionDenied) {
  TempDir dir;
  for (mode_t mode : {0644, 0640, 0604, 0610, 0601}) {
    const std::string path = WriteKeyFile(dir, kKeyHex, mode);
    EXPECT_THAT(ReadNodeKeyFile(path),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("chmod 600")))
        << "mode " << std::oct << mode;
  }
  const std::string path = WriteKeyFile(dir, kKeyHex, 0644);
  EXPECT_THAT(ReadNodeKeyFile(path),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       ::testing::AllOf(HasSubstr("mode 0644"), Not(HasSubstr("0a0b0c")))));
}

TEST(ReadNodeKeyFileTest, MalformedContentsAreInvalidArgument) {
  TempDir dir;
  std::string bad = kKeyHex;
  bad[0] = 'z';
  EXPECT_THAT(ReadNodeKeyFile(WriteKeyFile(dir, bad, 0600)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("not a hex digit"), Not(HasSubstr("0a0b0c")))));
  EXPECT_THAT(ReadNodeKeyFile(WriteKeyFile(dir, std::string(kKeyHex) + "\nextra", 0600)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ReadNodeKeyFile(WriteKeyFile(dir, std::string(32, 'k'), 0600)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ReadNodeKeyFile(WriteKeyFile(dir, "", 0600)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ReadNodeKeyFile(WriteKeyFile(dir, std::string(4096, '0'), 0600)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ReadNodeKeyFileTest, MissingFileIsNotFoundAndFolderIsInvalidArgument) {
  TempDir dir;
  EXPECT_THAT(ReadNodeKeyFile((dir.path() / "absent.key").string()),
              StatusIs(absl::StatusCode::kNotFound));
  const std::filesystem::path folder = dir.path() / "folder";
  std::filesystem::create_directory(folder);
  std::filesystem::permissions(folder, std::filesystem::perms::owner_all);
  EXPECT_THAT(ReadNodeKeyFile(folder.string()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GenerateNodeKeyFileTest, WritesAnOwnerOnlyFileThatReadsBack) {
  TempDir dir;
  const std::string path = (dir.path() / "node.key").string();
  const mode_t old_umask = ::umask(0);  // the mode must not depend on the umask
  absl::StatusOr<crypto::SecretBytes> key = GenerateNodeKeyFile(path);
  ::umask(old_umask);
  ASSERT_OK(key);
  EXPECT_EQ(key->size(), kNodeKeySize);
  EXPECT_EQ(ModeOf(path), 0600u);
  EXPECT_EQ(std::filesystem::file_size(path), 65u);
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes read, ReadNodeKeyFile(path));
  EXPECT_EQ(Bytes(read), Bytes(*key));

  // A second key is different; an existing file is never overwritten.
  const std::string other_path = (dir.path() / "other.key").string();
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes other, GenerateNodeKeyFile(other_path));
  EXPECT_NE(Bytes(other), Bytes(*key));
  EXPECT_THAT(GenerateNodeKeyFile(path), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes unchanged, ReadNodeKeyFile(path));
  EXPECT_EQ(Bytes(unchanged), Bytes(*key));
}

TEST(GenerateNodeKeyFileTest, MissingFolderIsNotFound) {
  TempDir dir;
  const std::filesystem::path path = dir.path() / "absent" / "node.key";
  EXPECT_THAT(GenerateNodeKeyFile(path.string()), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(LoadNodeKeyTest, KeyFileFirstThenEnvironment) {
  constexpr char kVar[] = "SILO_NODE_KEY_FOR_NODE_KEY_TEST";
  TempDir dir;
  ::unsetenv(kVar);
  EXPECT_THAT(LoadNodeKey("", kVar), StatusIs(absl::StatusCode::kNotFound, HasSubstr(kVar)));

  ASSERT_EQ(::setenv(kVar, kKeyHex, 1), 0);
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes from_env, LoadNodeKey("", kVar));
  EXPECT_THAT(Bytes(from_env), ElementsAreArray(KeyBytes()));

  // A key file given explicitly wins over the environment.
  const std::string path = (dir.path() / "node.key").string();
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes generated, GenerateNodeKeyFile(path));
  ASSERT_OK_AND_ASSIGN(crypto::SecretBytes from_file, LoadNodeKey(path, kVar));
  EXPECT_EQ(Bytes(from_file), Bytes(generated));

  ASSERT_EQ(::setenv(kVar, "not-a-key", 1), 0);
  EXPECT_THAT(LoadNodeKey("", kVar),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr(kVar), Not(HasSubstr("not-a-key")))));
  ::unsetenv(kVar);
}

}  // namespace
}  // namespace silo::retrieval
