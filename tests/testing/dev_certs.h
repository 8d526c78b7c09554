// Federation certificates for tests, made by the real deploy/certs/make-dev-ca, and in-process
// mTLS servers and channels that use them:
//
//   silo::testing::TempDir dir;
//   ASSERT_OK(MakeDevCertificates(dir.path(), {"institution/inst-a", "compute/c1"}));
//   ASSERT_OK_AND_ASSIGN(crypto::TlsMaterial tls,
//                        crypto::LoadTlsMaterial(DevTlsFiles(dir.path(), "inst-a")));
//
// Part of silo::testing_services (services' build only: it links silo::crypto and so gRPC).
// Thread-safety: free functions; each run of the script is its own process, so runs into
// different directories may overlap.
#ifndef SILO_TESTS_TESTING_DEV_CERTS_H_
#define SILO_TESTS_TESTING_DEV_CERTS_H_

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/mtls.h"
#include "grpcpp/channel.h"
#include "grpcpp/server.h"
#include "grpcpp/support/server_interceptor.h"

namespace silo::testing {

// deploy/certs/make-dev-ca of the source tree this test was built from.
std::filesystem::path MakeDevCaScript();

// How a command ended.
struct CommandResult {
  int exit_code = 0;   // the exit status, 0 to 255
  std::string output;  // what it wrote to stdout and stderr, interleaved
};

// Runs `MakeDevCaScript() args...` and waits for it. Internal when it cannot be started or is
// killed by a signal; any exit status is a result.
absl::StatusOr<CommandResult> RunMakeDevCa(const std::vector<std::string>& args);

// Runs `make-dev-ca <dir> <role_ids>...` (each "<role>/<id>"): dir/ca.pem, ca.key and
// dir/<id>.pem, <id>.key for every id. Returns `dir`. Internal, with the script's output, when
// it fails.
absl::StatusOr<std::filesystem::path> MakeDevCertificates(const std::filesystem::path& dir,
                                                          const std::vector<std::string>& role_ids);

// The TLS files make-dev-ca wrote for `id` into `dir` (dir/ca.pem, dir/<id>.pem, dir/<id>.key).
crypto::TlsFiles DevTlsFiles(const std::filesystem::path& dir, std::string_view id);

// A gRPC server on 127.0.0.1 (`port`, or a free one for 0) with the mTLS credentials of the
// make-dev-ca identity `id` in `dir`, serving `services` (which outlive it) within the federation's
// message limits.
struct DevServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // "127.0.0.1:<port>"
};
// `interceptors` (optional) see every call, e.g. to record what a server sends and receives.
absl::StatusOr<DevServer> StartDevServer(
    const std::filesystem::path& dir, std::string_view id,
    const std::vector<grpc::Service*>& services,
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors = {},
    int port = 0);

// A channel to `address` as the make-dev-ca identity `id` in `dir`, with the federation's
// channel arguments.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DevChannel(const std::filesystem::path& dir,
                                                          std::string_view id,
                                                          const std::string& address);

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_DEV_CERTS_H_
