// Every RPC that silo serves, called over real mTLS by every role: the roles in the table of
// node/rpc_roles get past the check, every other role gets PERMISSION_DENIED, and a certificate
// of another CA or no certificate at all does not get a connection. The table covers exactly the
// methods of the services each server registers.
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "coordinator/coordinator_config.h"
#include "coordinator/coordinator_server.h"
#include "crypto/mtls.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "node/chunk_handles.h"
#include "node/control_service.h"
#include "node/dragon_service.h"
#include "node/fedrag_owner_service.h"
#include "node/query_service.h"
#include "node/retrieval_service.h"
#include "node/rpc_roles.h"
#include "node/scrambled_attention_service.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo {
namespace {

using crypto::PeerRole;
using node::Server;

// A client identity per role, all from the federation CA.
const std::vector<std::pair<PeerRole, std::string>>& Clients() {
  static const auto* const clients =
      new std::vector<std::pair<PeerRole, std::string>>{{PeerRole::kInstitution, "inst-b"},
                                                        {PeerRole::kDevice, "dev-a"},
                                                        {PeerRole::kCompute, "comp-a"},
                                                        {PeerRole::kCoordinator, "coord"},
                                                        {PeerRole::kOperator, "op"}};
  return *clients;
}

// Calls `method` with an empty request message (the framing of every RPC kind) and reads what
// comes back; the call's final status.
grpc::Status CallWithEmptyRequest(const std::shared_ptr<grpc::Channel>& channel,
                                  const std::string& method) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue queue;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &queue);
  void* tag = nullptr;
  bool ok = false;
  const auto step = [&](int id) {
    queue.Next(&tag, &ok);
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), id);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (step(1)) {
    grpc::Slice empty("");
    const grpc::ByteBuffer request(&empty, 1);
    call->Write(request, reinterpret_cast<void*>(2));
    if (step(2)) {
      call->WritesDone(reinterpret_cast<void*>(3));
      step(3);
    }
    grpc::ByteBuffer reply;
    do {
      call->Read(&reply, reinterpret_cast<void*>(4));
    } while (step(4));
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  return status;
}

class AuthorizationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ASSERT_OK(testing::MakeDevCertificates(
                  dir_->path() / "ca", {"institution/inst-a", "institution/inst-b", "device/dev-a",
                                        "compute/comp-a", "coordinator/coord", "operator/op"})
                  .status());
    ASSERT_OK(testing::MakeDevCertificates(dir_->path() / "other-ca",
                                           {"operator/op", "coordinator/coord"})
                  .status());
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    // silo-node's services, those of a node with a corpus (here none: the handlers answer
    // FAILED_PRECONDITION past the role check) and those of a compute node, on one server.
    ASSERT_OK_AND_ASSIGN(node_tls_, crypto::LoadTlsMaterial(Files("ca", "inst-a")));
    peers_ = std::make_unique<node::PeerChannels>(node_tls_);
    control_ = std::make_unique<node::ControlService>(*peers_);
    crypto::SecretBytes key(32);
    ASSERT_OK_AND_ASSIGN(node::ChunkHandles handles, node::ChunkHandles::Create(key));
    handles_ = std::make_unique<node::ChunkHandles>(std::move(handles));
    retrieval_ = std::make_unique<node::RetrievalService>(
        nullptr, *handles_, v1::ModelFingerprint(), v1::ModelFingerprint(), false);
    node::Querier querier;  // no corpus: Query refuses past the role check
    querier.node_id = "inst-a";
    querier.peers = peers_.get();
    query_ = std::make_unique<node::QueryService>(querier, nullptr);
    ASSERT_OK_AND_ASSIGN(crypto::SigningKey signing_key, crypto::SigningKey::Generate());
    owner_ = std::make_unique<node::FedRagOwnerService>(
        nullptr, handles_.get(),
        node::KeyExchangeSigner{.key = std::move(signing_key),
                                .certificate_pem = node_tls_.cert_pem,
                                .ca_pem = node_tls_.ca_pem},
        peers_.get(), v1::ModelFingerprint());
    ASSERT_OK_AND_ASSIGN(node_server_,
                         testing::StartDevServer(dir_->path() / "ca", "inst-a",
                                                 {control_.get(), retrieval_.get(), query_.get(),
                                                  owner_.get(), &dragon_, &attention_}));

    coordinator::CoordinatorConfig config;
    config.listen = "127.0.0.1:0";
    config.tls = Files("ca", "coord");
    static int n_states = 0;  // each test case its own coordinator database
    config.state.data_dir = (dir_->path() / ("state-" + std::to_string(++n_states))).string();
    ASSERT_OK_AND_ASSIGN(coordinator_, coordinator::CoordinatorServer::Start(config));
  }

  static crypto::TlsFiles Files(const std::string& ca, const std::string& id) {
    return testing::DevTlsFiles(dir_->path() / ca, id);
  }

  std::shared_ptr<grpc::Channel> Channel(
      Server server, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    return grpc::CreateCustomChannel(
        server == Server::kNode ? node_server_.address : coordinator_->address(), credentials,
        crypto::FederationChannelArguments());
  }

  std::shared_ptr<grpc::ChannelCredentials> ClientCredentials(const std::string& ca,
                                                              const std::string& id) {
    absl::StatusOr<crypto::TlsMaterial> tls = crypto::LoadTlsMaterial(Files(ca, id));
    EXPECT_OK(tls.status());
    return crypto::MakeChannelCredentials(*tls);
  }

  static testing::TempDir* dir_;
  crypto::TlsMaterial node_tls_;
  std::unique_ptr<node::PeerChannels> peers_;
  std::unique_ptr<node::ControlService> control_;
  std::unique_ptr<node::ChunkHandles> handles_;
  std::unique_ptr<node::RetrievalService> retrieval_;
  std::unique_ptr<node::QueryService> query_;
  std::unique_ptr<node::FedRagOwnerService> owner_;
  // No corpus and no decoder: its handlers refuse the empty request before needing them.
  node::DragonService dragon_{nullptr, nullptr, v1::ModelFingerprint()};
  node::ScrambledAttentionService attention_;
  testing::DevServer node_server_;
  std::unique_ptr<coordinator::CoordinatorServer> coordinator_;
};

testing::TempDir* AuthorizationTest::dir_ = nullptr;

TEST_F(AuthorizationTest, EveryRpcAdmitsItsRolesAndDeniesTheOthers) {
  for (const node::RpcRule& rule : node::RpcRules()) {
    const std::set<PeerRole> allowed(rule.allowed.begin(), rule.allowed.end());
    for (const auto& [role, id] : Clients()) {
      SCOPED_TRACE(std::string(node::ServerName(rule.server)) + " " + std::string(rule.method) +
                   " called by " + std::string(crypto::PeerRoleName(role)));
      const grpc::Status status = CallWithEmptyRequest(
          Channel(rule.server, ClientCredentials("ca", id)), std::string(rule.method));
      if (allowed.contains(role)) {
        // Past the role check: the handler may still refuse the empty request.
        EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
        EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
        EXPECT_NE(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
        EXPECT_THAT(status.error_message(), ::testing::Not(::testing::HasSubstr("may not call")));
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
        EXPECT_THAT(status.error_message(), ::testing::HasSubstr("may not call"));
      }
    }
  }
}

TEST_F(AuthorizationTest, ACertificateOfAnotherCaGetsNoConnection) {
  for (const node::RpcRule& rule : node::RpcRules()) {
    SCOPED_TRACE(std::string(rule.method));
    // The other CA's operator and coordinator are allowed somewhere by role; the CA still
    // refuses them.
    for (const std::string id : {"op", "coord"}) {
      const grpc::Status status = CallWithEmptyRequest(
          Channel(rule.server, ClientCredentials("other-ca", id)), std::string(rule.method));
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    }
  }
}

TEST_F(AuthorizationTest, NoClientCertificateGetsNoConnection) {
  absl::StatusOr<std::string> ca = crypto::ReadPemFile(Files("ca", "op").ca_file);
  ASSERT_OK(ca.status());
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = *ca;
  for (const node::RpcRule& rule : node::RpcRules()) {
    SCOPED_TRACE(std::string(rule.method));
    const grpc::Status status = CallWithEmptyRequest(
        Channel(rule.server, grpc::SslCredentials(options)), std::string(rule.method));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }
}

// The table has a rule for each method of every service a server registers, and none for
// anything else.
TEST(RpcRules, CoverExactlyTheServedMethods) {
  const std::vector<std::pair<Server, std::string>> served = {
      {Server::kNode, "silo.v1.NodeControlService"},
      {Server::kNode, "silo.v1.RetrievalService"},
      {Server::kNode, "silo.v1.QueryService"},
      {Server::kNode, "silo.v1.FedRagOwnerService"},
      {Server::kNode, "silo.v1.DragonService"},
      {Server::kNode, "silo.v1.ScrambledAttentionService"},
      {Server::kCoordinator, "silo.v1.CoordinatorService"},
      {Server::kCoordinator, "silo.v1.QueryService"}};
  // Linking the generated code registers the descriptors.
  ASSERT_NE(v1::QueryRequest::descriptor(), nullptr);
  ASSERT_NE(v1::RetrieveRequest::descriptor(), nullptr);
  std::set<std::pair<Server, std::string>> expected;
  for (const auto& [server, name] : served) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      expected.insert({server, "/" + name + "/" + service->method(i)->name()});
    }
  }
  std::set<std::pair<Server, std::string>> listed;
  for (const node::RpcRule& rule : node::RpcRules()) {
    EXPECT_TRUE(listed.insert({rule.server, std::string(rule.method)}).second)
        << "listed twice: " << rule.method;
    EXPECT_FALSE(rule.allowed.empty()) << rule.method;
  }
  EXPECT_EQ(listed, expected);
}

}  // namespace
}  // namespace silo
