#include "crypto/mtls.h"

#include <grpc/grpc.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "silo/v1/node.grpc.pb.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::crypto {
namespace {

using ::silo::testing::DevTlsFiles;
using ::silo::testing::IsOkAndHolds;
using ::silo::testing::MakeDevCertificates;
using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr auto kDeadline = std::chrono::seconds(2);

grpc::Status ToGrpcStatus(const absl::Status& status) {
  const std::string message(status.message());
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

// Test-only NodeControlService: Health answers with the caller's identity; Probe echoes.
class IdentityEchoService final : public silo::v1::NodeControlService::Service {
 public:
  grpc::Status Health(grpc::ServerContext* context, const silo::v1::HealthRequest* /*request*/,
                      silo::v1::HealthResponse* response) override {
    absl::StatusOr<PeerIdentity> caller = CallerIdentity(*context);
    if (!caller.ok()) return ToGrpcStatus(caller.status());
    response->mutable_node()->set_node_id(caller->node_id);
    response->mutable_node()->set_cert_identity(SpiffeId(*caller));
    response->set_serving(true);
    return grpc::Status::OK;
  }

  grpc::Status Probe(grpc::ServerContext* context, const silo::v1::ProbeRequest* request,
                     silo::v1::ProbeResponse* response) override {
    if (absl::Status caller = CallerIdentity(*context).status(); !caller.ok()) {
      return ToGrpcStatus(caller);
    }
    response->set_payload(request->payload());
    return grpc::Status::OK;
  }
};

// A server on 127.0.0.1 with a free port.
struct TestServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;

  ~TestServer() {
    if (server != nullptr) server->Shutdown(std::chrono::system_clock::now() + kDeadline);
  }
};

std::unique_ptr<TestServer> StartServer(std::shared_ptr<grpc::ServerCredentials> credentials,
                                        grpc::Service* service) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port);
  builder.RegisterService(service);
  ApplyFederationServerLimits(builder);
  auto server = std::make_unique<TestServer>();
  server->server = builder.BuildAndStart();
  if (server->server == nullptr || port == 0) {
    ADD_FAILURE() << "cannot start a gRPC server on 127.0.0.1";
    return nullptr;
  }
  server->address = "127.0.0.1:" + std::to_string(port);
  return server;
}

// Calls Health with a 2 s deadline.
grpc::Status CallHealth(const std::string& address,
                        const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                        silo::v1::HealthResponse* response) {
  auto stub = silo::v1::NodeControlService::NewStub(
      grpc::CreateCustomChannel(address, credentials, FederationChannelArguments()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kDeadline);
  return stub->Health(&context, silo::v1::HealthRequest(), response);
}

class MtlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(MakeDevCertificates(federation_.path(),
                                  {"institution/inst-a", "compute/c1", "coordinator/coord"}));
    ASSERT_OK(MakeDevCertificates(other_.path(), {"compute/intruder"}));
    ASSERT_OK_AND_ASSIGN(server_tls_, LoadTlsMaterial(DevTlsFiles(federation_.path(), "inst-a")));
    server_ = StartServer(MakeServerCredentials(server_tls_), &service_);
    ASSERT_NE(server_, nullptr);
  }

  TlsMaterial Load(const std::filesystem::path& dir, std::string_view id) {
    absl::StatusOr<TlsMaterial> material = LoadTlsMaterial(DevTlsFiles(dir, id));
    EXPECT_OK(material);
    return material.ok() ? *std::move(material) : TlsMaterial();
  }

  TempDir federation_;
  TempDir other_;  // another federation, of another CA
  TlsMaterial server_tls_;
  IdentityEchoService service_;
  std::unique_ptr<TestServer> server_;
};

TEST_F(MtlsTest, LoadTlsMaterialReadsTheOwnIdentity) {
  EXPECT_EQ(server_tls_.identity, (PeerIdentity{PeerRole::kInstitution, "inst-a"}));
  EXPECT_THAT(server_tls_.ca_pem, HasSubstr("-----BEGIN CERTIFICATE-----"));
  EXPECT_THAT(server_tls_.cert_pem, HasSubstr("-----BEGIN CERTIFICATE-----"));
  EXPECT_FALSE(server_tls_.key_pem.empty());
}

TEST_F(MtlsTest, ClientOfTheSameCaGetsThroughAndIsIdentified) {
  for (const auto& [id, spiffe_id] : {std::pair{"c1", "spiffe://silo/compute/c1"},
                                      std::pair{"coord", "spiffe://silo/coordinator/coord"},
                                      std::pair{"inst-a", "spiffe://silo/institution/inst-a"}}) {
    SCOPED_TRACE(id);
    const TlsMaterial client = Load(federation_.path(), id);
    silo::v1::HealthResponse response;
    const grpc::Status status =
        CallHealth(server_->address, MakeChannelCredentials(client), &response);
    ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
    EXPECT_EQ(response.node().node_id(), id);
    EXPECT_EQ(response.node().cert_identity(), spiffe_id);
    EXPECT_TRUE(response.serving());
  }
}

TEST_F(MtlsTest, ClientOfAnotherCaIsRejected) {
  const TlsMaterial intruder = Load(other_.path(), "intruder");
  silo::v1::HealthResponse response;
  const grpc::Status status =
      CallHealth(server_->address, MakeChannelCredentials(intruder), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(MtlsTest, ClientCertificateOfAnotherCaIsRejectedByTheServer) {
  // The client trusts the server (it pins the federation CA), but its own certificate is of
  // another CA: the server refuses it.
  const TlsMaterial intruder = Load(other_.path(), "intruder");
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = server_tls_.ca_pem;
  options.pem_cert_chain = intruder.cert_pem;
  options.pem_private_key = std::string(
      reinterpret_cast<const char*>(intruder.key_pem.span().data()), intruder.key_pem.size());
  silo::v1::HealthResponse response;
  const grpc::Status status =
      CallHealth(server_->address, grpc::SslCredentials(options), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(MtlsTest, ClientWithoutCertificateIsRejected) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = server_tls_.ca_pem;
  silo::v1::HealthResponse response;
  const grpc::Status status =
      CallHealth(server_->address, grpc::SslCredentials(options), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(MtlsTest, ClientThatDoesNotPinTheCaDoesNotTrustTheServer) {
  // No pem_root_certs: gRPC's default roots, which do not hold the federation CA.
  const TlsMaterial client = Load(federation_.path(), "c1");
  grpc::SslCredentialsOptions options;
  options.pem_cert_chain = client.cert_pem;
  options.pem_private_key = std::string(reinterpret_cast<const char*>(client.key_pem.span().data()),
                                        client.key_pem.size());
  silo::v1::HealthResponse response;
  const grpc::Status status =
      CallHealth(server_->address, grpc::SslCredentials(options), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(MtlsTest, FederationLimitsCarryMessagesLargerThanGrpcsDefault) {
  // gRPC's default receive limit is 4 MiB; 8 MiB each way needs the federation limits on both
  // ends.
  const TlsMaterial client = Load(federation_.path(), "c1");
  auto stub = silo::v1::NodeControlService::NewStub(grpc::CreateCustomChannel(
      server_->address, MakeChannelCredentials(client), FederationChannelArguments()));
  silo::v1::ProbeRequest request;
  request.set_payload(std::string(size_t{8} << 20, 'x'));
  silo::v1::ProbeResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kDeadline);
  const grpc::Status status = stub->Probe(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(response.payload().size(), request.payload().size());
}

TEST(FederationChannelArgumentsTest, SetsTheMessageLimits) {
  const grpc::ChannelArguments arguments = FederationChannelArguments();
  grpc_channel_args args;  // points into `arguments`
  arguments.SetChannelArgs(&args);
  int n_found = 0;
  for (size_t i = 0; i < args.num_args; ++i) {
    const std::string key = args.args[i].key;
    if (key == GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH || key == GRPC_ARG_MAX_SEND_MESSAGE_LENGTH) {
      ASSERT_EQ(args.args[i].type, GRPC_ARG_INTEGER);
      EXPECT_EQ(args.args[i].value.integer, 134217728) << key;
      ++n_found;
    }
  }
  EXPECT_EQ(n_found, 2);
}

TEST(CallerIdentityTest, InsecureCallerIsUnauthenticated) {
  IdentityEchoService service;
  std::unique_ptr<TestServer> server = StartServer(grpc::InsecureServerCredentials(), &service);
  ASSERT_NE(server, nullptr);
  silo::v1::HealthResponse response;
  const grpc::Status status =
      CallHealth(server->address, grpc::InsecureChannelCredentials(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
}

TEST(LoadTlsMaterialTest, NamesTheFileAtFault) {
  TempDir dir;
  TempDir other;
  ASSERT_OK(MakeDevCertificates(dir.path(), {"institution/inst-a", "compute/c1"}));
  ASSERT_OK(MakeDevCertificates(other.path(), {"compute/c1"}));

  TlsFiles missing = DevTlsFiles(dir.path(), "inst-a");
  missing.key_file = (dir.path() / "missing.key").string();
  EXPECT_THAT(LoadTlsMaterial(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.key")));

  TlsFiles wrong_key = DevTlsFiles(dir.path(), "inst-a");
  wrong_key.key_file = DevTlsFiles(dir.path(), "c1").key_file;
  EXPECT_THAT(LoadTlsMaterial(wrong_key),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("private key"), HasSubstr(wrong_key.key_file))));

  TlsFiles wrong_ca = DevTlsFiles(dir.path(), "inst-a");
  wrong_ca.ca_file = DevTlsFiles(other.path(), "c1").ca_file;
  EXPECT_THAT(LoadTlsMaterial(wrong_ca),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("does not verify"), HasSubstr(wrong_ca.ca_file))));

  EXPECT_THAT(LoadTlsMaterial(DevTlsFiles(dir.path(), "c1")),
              IsOkAndHolds(::testing::Field(&TlsMaterial::identity,
                                            PeerIdentity{PeerRole::kCompute, "c1"})));
}

}  // namespace
}  // namespace silo::crypto
