// "host:port" checks of config files and registrations.
#include "common/net_address.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo {
namespace {

using ::silo::testing::StatusIs;

TEST(CheckHostPort, AcceptsNamesAddressesAndPortsInRange) {
  EXPECT_OK(CheckHostPort("127.0.0.1:7000"));
  EXPECT_OK(CheckHostPort("node_a.silo-test.local:1"));
  EXPECT_OK(CheckHostPort("[::1]:65535"));
  EXPECT_OK(CheckHostPort("localhost:0", /*allow_port_zero=*/true));
}

TEST(CheckHostPort, RejectsMalformedAddresses) {
  for (const std::string& bad : std::vector<std::string>{
           "127.0.0.1", "[]:7000", "host:070000", "host:", ":7000", "host:7a", "host name:7000",
           "::1:7000", "[::1:7000", "", "host:0", "host:65536", std::string(300, 'a') + ":1"}) {
    EXPECT_THAT(CheckHostPort(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  EXPECT_THAT(CheckHostPort("host:65536", /*allow_port_zero=*/true),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo
