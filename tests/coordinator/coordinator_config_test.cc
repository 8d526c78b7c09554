// coordinator.yaml: a full file, the defaults, relative and absolute paths, every range check,
// malformed listen addresses, missing and unknown keys.
#include "coordinator/coordinator_config.h"

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"
#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::coordinator {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kFullConfig[] = R"(
listen: 127.0.0.1:7000
data_dir: coordinator-data
tls: {ca: certs/ca.pem, cert: certs/coordinator.pem, key: certs/coordinator.key}
heartbeat_interval_ms: 2500
missed_heartbeats: 4
probe_interval_ms: 60000
ewma_alpha: 0.25
session_log_limit: 500
)";

constexpr char kMinimalConfig[] = R"(
listen: coordinator.example.org:7443
data_dir: /var/lib/silo/coordinator
tls:
  ca: /etc/silo/ca.pem
  cert: ../certs/coordinator.pem
  key: ./coordinator.key
)";

TEST(CoordinatorConfigTest, LoadsEveryKeyAndResolvesPathsAgainstTheFilesFolder) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "etc");
  const std::string path = dir.WriteFile("etc/coordinator.yaml", kFullConfig);
  ASSERT_OK_AND_ASSIGN(const CoordinatorConfig config, LoadCoordinatorConfig(path));
  const std::filesystem::path base = dir.path() / "etc";
  EXPECT_EQ(config.listen, "127.0.0.1:7000");
  EXPECT_EQ(config.state.data_dir, (base / "coordinator-data").string());
  EXPECT_EQ(config.tls.ca_file, (base / "certs/ca.pem").string());
  EXPECT_EQ(config.tls.cert_file, (base / "certs/coordinator.pem").string());
  EXPECT_EQ(config.tls.key_file, (base / "certs/coordinator.key").string());
  EXPECT_EQ(config.state.heartbeat_interval, absl::Milliseconds(2500));
  EXPECT_EQ(config.state.missed_heartbeats, 4);
  EXPECT_EQ(config.probe_interval, absl::Seconds(60));
  EXPECT_DOUBLE_EQ(config.state.ewma_alpha, 0.25);
  EXPECT_EQ(config.state.session_log_limit, 500);
}

TEST(CoordinatorConfigTest, OptionalKeysTakeTheirDefaultsAndAbsolutePathsStay) {
  TempDir dir;
  const std::string path = dir.WriteFile("coordinator.yaml", kMinimalConfig);
  ASSERT_OK_AND_ASSIGN(const CoordinatorConfig config, LoadCoordinatorConfig(path));
  EXPECT_EQ(config.listen, "coordinator.example.org:7443");
  EXPECT_EQ(config.state.data_dir, "/var/lib/silo/coordinator");
  EXPECT_EQ(config.tls.ca_file, "/etc/silo/ca.pem");
  EXPECT_EQ(config.tls.cert_file, (dir.path().parent_path() / "certs/coordinator.pem").string());
  EXPECT_EQ(config.tls.key_file, (dir.path() / "coordinator.key").string());
  EXPECT_EQ(config.state.heartbeat_interval, absl::Seconds(2));
  EXPECT_EQ(config.state.missed_heartbeats, 3);
  EXPECT_EQ(config.probe_interval, absl::Seconds(30));
  EXPECT_DOUBLE_EQ(config.state.ewma_alpha, 0.3);
  EXPECT_EQ(config.state.session_log_limit, 10000);
}

TEST(CoordinatorConfigTest, ProbeIntervalZeroMeansNever) {
  TempDir dir;
  const std::string path =
      dir.WriteFile("c.yaml", absl::StrReplaceAll(kFullConfig, {{"60000", "0"}}));
  ASSERT_OK_AND_ASSIGN(const CoordinatorConfig config, LoadCoordinatorConfig(path));
  EXPECT_EQ(config.probe_interval, absl::ZeroDuration());
}

TEST(CoordinatorConfigTest, RangeBoundsAreAccepted) {
  TempDir dir;
  const std::string low = dir.WriteFile("low.yaml", StrCat(kMinimalConfig, R"(
heartbeat_interval_ms: 100
missed_heartbeats: 1
probe_interval_ms: 1000
ewma_alpha: 1
session_log_limit: 1
)"));
  ASSERT_OK_AND_ASSIGN(const CoordinatorConfig config, LoadCoordinatorConfig(low));
  EXPECT_EQ(config.state.heartbeat_interval, absl::Milliseconds(100));
  EXPECT_EQ(config.state.missed_heartbeats, 1);
  EXPECT_EQ(config.probe_interval, absl::Seconds(1));
  EXPECT_DOUBLE_EQ(config.state.ewma_alpha, 1.0);
  EXPECT_EQ(config.state.session_log_limit, 1);
  const std::string high = dir.WriteFile("high.yaml", StrCat(kMinimalConfig, R"(
heartbeat_interval_ms: 600000
missed_heartbeats: 100
probe_interval_ms: 86400000
session_log_limit: 10000000
)"));
  EXPECT_OK(LoadCoordinatorConfig(high));
}

struct BadValue {
  std::string line;  // appended to the minimal config
  std::string key;   // named in the error
};

class CoordinatorConfigRangeTest : public ::testing::TestWithParam<BadValue> {};

TEST_P(CoordinatorConfigRangeTest, OutOfRangeValueNamesFileAndKey) {
  TempDir dir;
  const std::string path =
      dir.WriteFile("coordinator.yaml", StrCat(kMinimalConfig, GetParam().line));
  EXPECT_THAT(LoadCoordinatorConfig(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr(StrCat("'", GetParam().key, "'")))));
}

INSTANTIATE_TEST_SUITE_P(
    EveryKey, CoordinatorConfigRangeTest,
    ::testing::Values(BadValue{"heartbeat_interval_ms: 99", "heartbeat_interval_ms"},
                      BadValue{"heartbeat_interval_ms: 600001", "heartbeat_interval_ms"},
                      BadValue{"heartbeat_interval_ms: -5", "heartbeat_interval_ms"},
                      BadValue{"heartbeat_interval_ms: fast", "heartbeat_interval_ms"},
                      BadValue{"missed_heartbeats: 0", "missed_heartbeats"},
                      BadValue{"missed_heartbeats: 101", "missed_heartbeats"},
                      BadValue{"probe_interval_ms: 999", "probe_interval_ms"},
                      BadValue{"probe_interval_ms: 1", "probe_interval_ms"},
                      BadValue{"probe_interval_ms: -1000", "probe_interval_ms"},
                      BadValue{"probe_interval_ms: 86400001", "probe_interval_ms"},
                      BadValue{"ewma_alpha: 0", "ewma_alpha"},
                      BadValue{"ewma_alpha: -0.1", "ewma_alpha"},
                      BadValue{"ewma_alpha: 1.01", "ewma_alpha"},
                      BadValue{"ewma_alpha: nan", "ewma_alpha"},
                      BadValue{"session_log_limit: 0", "session_log_limit"},
                      BadValue{"session_log_limit: 10000001", "session_log_limit"}));

class CoordinatorConfigListenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CoordinatorConfigListenTest, MalformedListenAddressIsRejected) {
  TempDir dir;
  const std::string config = absl::StrReplaceAll(
      kFullConfig, {{"listen: 127.0.0.1:7000", StrCat("listen: \"", GetParam(), "\"")}});
  const std::string path = dir.WriteFile("coordinator.yaml", config);
  EXPECT_THAT(LoadCoordinatorConfig(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                                    AllOf(HasSubstr(path), HasSubstr("'listen'"))));
}

INSTANTIATE_TEST_SUITE_P(Addresses, CoordinatorConfigListenTest,
                         ::testing::Values("127.0.0.1", "127.0.0.1:-1", "127.0.0.1:65536", ":7000",
                                           "host:70a", "host name:7000", "::1:7000", "[::1:7000",
                                           ""));

TEST(CoordinatorConfigTest, BracketedIpv6ListenAddressIsAccepted) {
  TempDir dir;
  const std::string path = dir.WriteFile(
      "c.yaml", absl::StrReplaceAll(kFullConfig, {{"127.0.0.1:7000", "\"[::1]:7000\""}}));
  ASSERT_OK_AND_ASSIGN(const CoordinatorConfig config, LoadCoordinatorConfig(path));
  EXPECT_EQ(config.listen, "[::1]:7000");
}

TEST(CoordinatorConfigTest, UnknownKeysAreRejected) {
  TempDir dir;
  const std::string top = dir.WriteFile("top.yaml", StrCat(kFullConfig, "heartbeat_ms: 100\n"));
  EXPECT_THAT(LoadCoordinatorConfig(top),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("top.yaml"), HasSubstr("unknown key 'heartbeat_ms'"))));
  const std::string nested = dir.WriteFile(
      "nested.yaml", absl::StrReplaceAll(kFullConfig, {{"key: certs", "crl: x, key: certs"}}));
  EXPECT_THAT(LoadCoordinatorConfig(nested),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key 'tls.crl'")));
}

TEST(CoordinatorConfigTest, MissingRequiredKeysAreRejected) {
  TempDir dir;
  const std::string no_key = dir.WriteFile(
      "no_key.yaml", absl::StrReplaceAll(kFullConfig, {{", key: certs/coordinator.key", ""}}));
  EXPECT_THAT(LoadCoordinatorConfig(no_key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'tls.key' is required")));
  const std::string no_dir = dir.WriteFile(
      "no_dir.yaml", absl::StrReplaceAll(kFullConfig, {{"data_dir: coordinator-data\n", ""}}));
  EXPECT_THAT(LoadCoordinatorConfig(no_dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'data_dir' is required")));
  const std::string empty_dir = dir.WriteFile(
      "empty_dir.yaml",
      absl::StrReplaceAll(kFullConfig, {{"data_dir: coordinator-data", "data_dir: \"\""}}));
  EXPECT_THAT(LoadCoordinatorConfig(empty_dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'data_dir'")));
}

TEST(CoordinatorConfigTest, MissingFileIsNotFound) {
  TempDir dir;
  EXPECT_THAT(LoadCoordinatorConfig((dir.path() / "absent.yaml").string()),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace silo::coordinator
