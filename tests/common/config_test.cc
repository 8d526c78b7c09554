#include "common/config.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr std::string_view kNodeYaml = R"(role: institution
listen_address: 127.0.0.1:7000
workers: 4
max_bytes: 17179869184
ratio: 0.25
verbose: false
peers: [a, b]
tls:
  cert_file: node.pem
  key_file: node.key
owners:
  - name: hospital-a
    weight: 2
  - name: bank-b
)";

TEST(Config, ReadsTypedValuesFromAFile) {
  TempDir dir;
  const std::string path = dir.WriteFile("node.yaml", kNodeYaml);
  ASSERT_OK_AND_ASSIGN(const ConfigNode root, ConfigNode::LoadFile(path));
  ASSERT_OK_AND_ASSIGN(const std::string role,
                       root.GetEnum("role", {"institution", "device", "compute"}));
  EXPECT_EQ(role, "institution");
  ASSERT_OK_AND_ASSIGN(const std::string address, root.Get<std::string>("listen_address"));
  EXPECT_EQ(address, "127.0.0.1:7000");
  ASSERT_OK_AND_ASSIGN(const int32_t workers, root.Get<int32_t>("workers"));
  EXPECT_EQ(workers, 4);
  ASSERT_OK_AND_ASSIGN(const uint64_t max_bytes, root.Get<uint64_t>("max_bytes"));
  EXPECT_EQ(max_bytes, 17179869184u);
  ASSERT_OK_AND_ASSIGN(const double ratio, root.Get<double>("ratio"));
  EXPECT_DOUBLE_EQ(ratio, 0.25);
  ASSERT_OK_AND_ASSIGN(const bool verbose, root.Get<bool>("verbose"));
  EXPECT_FALSE(verbose);
  ASSERT_OK_AND_ASSIGN(const auto peers, root.Get<std::vector<std::string>>("peers"));
  EXPECT_THAT(peers, ElementsAre("a", "b"));
  ASSERT_OK_AND_ASSIGN(const int64_t timeout, root.GetOr<int64_t>("timeout_ms", 1500));
  EXPECT_EQ(timeout, 1500);

  ASSERT_OK_AND_ASSIGN(const ConfigNode tls, root.Child("tls"));
  EXPECT_EQ(tls.path(), "tls");
  ASSERT_OK_AND_ASSIGN(const std::string cert, tls.Get<std::string>("cert_file"));
  EXPECT_EQ(cert, "node.pem");
  ASSERT_OK(tls.Get<std::string>("key_file"));

  ASSERT_OK_AND_ASSIGN(const std::vector<ConfigNode> owners, root.ChildList("owners"));
  ASSERT_EQ(owners.size(), 2u);
  ASSERT_OK_AND_ASSIGN(const std::string second, owners[1].Get<std::string>("name"));
  EXPECT_EQ(second, "bank-b");
  ASSERT_OK(owners[0].Get<std::string>("name"));
  ASSERT_OK_AND_ASSIGN(const uint32_t weight, owners[0].GetOr<uint32_t>("weight", 1));
  EXPECT_EQ(weight, 2u);
  ASSERT_OK_AND_ASSIGN(const uint32_t default_weight, owners[1].GetOr<uint32_t>("weight", 1));
  EXPECT_EQ(default_weight, 1u);

  EXPECT_OK(root.CheckAllKeysUsed());
}

TEST(Config, ErrorsNameTheFileKeyLineAndExpectation) {
  ASSERT_OK_AND_ASSIGN(const ConfigNode root, ConfigNode::Parse(kNodeYaml, "node.yaml"));
  EXPECT_THAT(root.Get<int32_t>("listen_address"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "node.yaml:2:17: key 'listen_address': expected a 32-bit integer, got "
                       "'127.0.0.1:7000'"));
  ASSERT_OK_AND_ASSIGN(const ConfigNode tls, root.Child("tls"));
  EXPECT_THAT(tls.Get<std::string>("ca_file"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "node.yaml: key 'tls.ca_file' is required (expected a string)"));
  EXPECT_THAT(root.Get<std::string>("peers"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("node.yaml:7:"), HasSubstr("'peers'"),
                             HasSubstr("expected a string, got a sequence"))));
  EXPECT_THAT(
      root.GetEnum("role", {"device", "compute"}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("key 'role': expected one of device, compute, got 'institution'")));
  EXPECT_THAT(root.Child("workers"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected a mapping")));
}

TEST(Config, RejectsOutOfRangeAndMalformedNumbers) {
  ASSERT_OK_AND_ASSIGN(const ConfigNode root,
                       ConfigNode::Parse("big: 4294967296\nneg: -1\nfrac: 1.5\nflag: yes\n", "x"));
  EXPECT_THAT(root.Get<int32_t>("big"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected a 32-bit integer")));
  ASSERT_OK_AND_ASSIGN(const int64_t big, root.Get<int64_t>("big"));
  EXPECT_EQ(big, 4294967296);
  EXPECT_THAT(root.Get<uint32_t>("neg"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-negative")));
  EXPECT_THAT(root.Get<int64_t>("frac"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(root.Get<bool>("flag"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("true or false")));
}

TEST(Config, UnknownKeysAreErrorsAtAnyDepth) {
  ASSERT_OK_AND_ASSIGN(const ConfigNode root,
                       ConfigNode::Parse("port: 1\ntls:\n  cert: a\n  kee: b\n", "n.yaml"));
  ASSERT_OK(root.Get<int32_t>("port"));
  ASSERT_OK_AND_ASSIGN(const ConfigNode tls, root.Child("tls"));
  ASSERT_OK(tls.Get<std::string>("cert"));
  EXPECT_THAT(root.CheckAllKeysUsed(),
              StatusIs(absl::StatusCode::kInvalidArgument, "n.yaml:4:3: unknown key 'tls.kee'"));
}

TEST(Config, OptionalChildIsEmptyWhenAbsentOrNull) {
  ASSERT_OK_AND_ASSIGN(const ConfigNode root,
                       ConfigNode::Parse("a:\n  x: 3\nb: ~\nc: 5\n", "o.yaml"));
  ASSERT_OK_AND_ASSIGN(const ConfigNode a, root.ChildOrEmpty("a"));
  EXPECT_EQ(a.GetOr<int32_t>("x", 1).value_or(0), 3);
  ASSERT_OK_AND_ASSIGN(const ConfigNode b, root.ChildOrEmpty("b"));
  EXPECT_EQ(b.GetOr<int32_t>("x", 1).value_or(0), 1);
  ASSERT_OK_AND_ASSIGN(const ConfigNode missing, root.ChildOrEmpty("missing"));
  EXPECT_EQ(missing.GetOr<int32_t>("x", 2).value_or(0), 2);
  EXPECT_THAT(root.ChildOrEmpty("c").status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(root.CheckAllKeysUsed());
}

TEST(Config, RejectsDuplicateKeysSyntaxErrorsAndNonMappings) {
  ASSERT_OK_AND_ASSIGN(const ConfigNode root, ConfigNode::Parse("a: 1\na: 2\n", "d.yaml"));
  EXPECT_THAT(root.Get<int32_t>("a"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("appears more than once")));
  EXPECT_THAT(ConfigNode::Parse("a: [1, 2\n", "s.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("s.yaml:2:1: YAML syntax")));
  EXPECT_THAT(ConfigNode::Parse("- 1\n- 2\n", "l.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "l.yaml: expected a mapping at the top level, got a sequence"));
  EXPECT_THAT(ConfigNode::Parse("", "e.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got null")));
}

TEST(Config, AFailedChildListStaysFailed) {
  ASSERT_OK_AND_ASSIGN(const ConfigNode root, ConfigNode::Parse("peers: [{a: 1}, 5]\n", "p.yaml"));
  EXPECT_THAT(root.ChildList("peers"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("peers[1]")));
  EXPECT_THAT(root.ChildList("peers"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Config, MissingAndOversizedFiles) {
  TempDir dir;
  EXPECT_THAT(ConfigNode::LoadFile((dir.path() / "absent.yaml").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.yaml")));
  const std::string big =
      dir.WriteFile("big.yaml", std::string(ConfigNode::kMaxFileBytes + 1, '#'));
  EXPECT_THAT(ConfigNode::LoadFile(big),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("larger than")));
}

}  // namespace
}  // namespace silo
