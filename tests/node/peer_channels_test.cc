// PeerChannels over real mTLS: one channel per address, and GetConnected reaching a peer that
// restarted on the same address while the channel still backs off from the failed reconnects.
#include "node/peer_channels.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "crypto/mtls.h"
#include "gtest/gtest.h"
#include "silo/v1/node.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

class HealthyNode : public v1::NodeControlService::Service {
 public:
  grpc::Status Health(grpc::ServerContext*, const v1::HealthRequest*,
                      v1::HealthResponse* response) override {
    response->set_serving(true);
    return grpc::Status::OK;
  }
};

class PeerChannelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(silo::testing::MakeDevCertificates(dir_.path(),
                                                 {"institution/server", "institution/client"}));
    ASSERT_OK_AND_ASSIGN(
        client_tls_, crypto::LoadTlsMaterial(silo::testing::DevTlsFiles(dir_.path(), "client")));
    port_ = silo::testing::PickUnusedPort();
    ASSERT_GT(port_, 0);
    address_ = absl::StrCat("127.0.0.1:", port_);
  }

  // A server on address_ (always the same port, as a restarted pod behind one address).
  absl::StatusOr<silo::testing::DevServer> StartServer() {
    return silo::testing::StartDevServer(dir_.path(), "server", {&service_}, {}, port_);
  }

  static grpc::Status Health(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::HealthResponse response;
    return v1::NodeControlService::NewStub(channel)->Health(&context, v1::HealthRequest(),
                                                            &response);
  }

  silo::testing::TempDir dir_;
  crypto::TlsMaterial client_tls_;
  int port_ = 0;
  std::string address_;
  HealthyNode service_;
};

TEST_F(PeerChannelsTest, OneChannelPerAddress) {
  PeerChannels channels(client_tls_);
  EXPECT_EQ(channels.Get(address_), channels.Get(address_));
  EXPECT_NE(channels.Get(address_), channels.Get("127.0.0.1:1"));
}

TEST_F(PeerChannelsTest, GetConnectedWaitsOutTheReconnectBackoffOfARestartedPeer) {
  PeerChannels channels(client_tls_);
  ASSERT_OK_AND_ASSIGN(silo::testing::DevServer server, StartServer());
  ASSERT_TRUE(Health(channels.Get(address_)).ok());

  // The peer goes away; calls fail for long enough that the channel's backoff reaches its
  // maximum (crypto::kMaxReconnectBackoffMs).
  server.server->Shutdown(std::chrono::system_clock::now());
  server.server.reset();
  const absl::Time down_until =
      absl::Now() + absl::Milliseconds(2 * crypto::kMaxReconnectBackoffMs);
  while (absl::Now() < down_until) {
    EXPECT_FALSE(Health(channels.Get(address_)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  // Back on the same address: reached at once, within the wait.
  ASSERT_OK_AND_ASSIGN(server, StartServer());
  const absl::Time start = absl::Now();
  const grpc::Status reached = Health(channels.GetConnected(address_, start + absl::Seconds(10)));
  EXPECT_TRUE(reached.ok()) << reached.error_message();
  EXPECT_LT(absl::Now() - start, kPeerConnectWait + absl::Seconds(1));
}

TEST_F(PeerChannelsTest, GetConnectedToADeadPeerCostsAtMostTheWait) {
  PeerChannels channels(client_tls_);
  const absl::Time start = absl::Now();
  const grpc::Status status =
      Health(channels.GetConnected(address_, start + absl::Milliseconds(500)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));  // 0.5 s wait + the call's failure
}

}  // namespace
}  // namespace silo::node
