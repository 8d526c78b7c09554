#include "tests/testing/dev_certs.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <system_error>

#include "common/strings.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/server_builder.h"

#ifndef SILO_SOURCE_DIR
#error "SILO_SOURCE_DIR must name the repository root (tests/testing/CMakeLists.txt sets it)"
#endif

namespace silo::testing {
namespace {

std::string ErrnoText(int error) { return std::generic_category().message(error); }

}  // namespace

std::filesystem::path MakeDevCaScript() {
  return std::filesystem::path(SILO_SOURCE_DIR) / "deploy" / "certs" / "make-dev-ca";
}

absl::StatusOr<CommandResult> RunMakeDevCa(const std::vector<std::string>& args) {
  const std::string script = MakeDevCaScript().string();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(script.c_str()));
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  // stdout and stderr of the child both go into one pipe, read here until the child closes it.
  std::array<int, 2> pipe_fds;
  if (::pipe2(pipe_fds.data(), O_CLOEXEC) != 0) {
    return absl::InternalError(StrCat("pipe2: ", ErrnoText(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  pid_t pid = 0;
  const int spawn_error =
      ::posix_spawn(&pid, script.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawn_error != 0) {
    ::close(pipe_fds[0]);
    return absl::InternalError(StrCat("cannot run ", script, ": ", ErrnoText(spawn_error)));
  }

  CommandResult result;
  std::array<char, 4096> buffer;
  while (true) {
    const ssize_t n = ::read(pipe_fds[0], buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buffer.data(), static_cast<size_t>(n));
  }
  ::close(pipe_fds[0]);

  int wait_status = 0;
  while (::waitpid(pid, &wait_status, 0) < 0) {
    if (errno != EINTR) return absl::InternalError(StrCat("waitpid: ", ErrnoText(errno)));
  }
  if (!WIFEXITED(wait_status)) {
    return absl::InternalError(StrCat(script, " did not exit normally (wait status ", wait_status,
                                      "); output:\n", result.output));
  }
  result.exit_code = WEXITSTATUS(wait_status);
  return result;
}

absl::StatusOr<std::filesystem::path> MakeDevCertificates(
    const std::filesystem::path& dir, const std::vector<std::string>& role_ids) {
  std::vector<std::string> args = {dir.string()};
  args.insert(args.end(), role_ids.begin(), role_ids.end());
  absl::StatusOr<CommandResult> result = RunMakeDevCa(args);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(StrCat("make-dev-ca exited with status ", result->exit_code,
                                      "; output:\n", result->output));
  }
  return dir;
}

crypto::TlsFiles DevTlsFiles(const std::filesystem::path& dir, std::string_view id) {
  const std::string name(id);
  return crypto::TlsFiles{
      .ca_file = (dir / "ca.pem").string(),
      .cert_file = (dir / (name + ".pem")).string(),
      .key_file = (dir / (name + ".key")).string(),
  };
}

absl::StatusOr<DevServer> StartDevServer(
    const std::filesystem::path& dir, std::string_view id,
    const std::vector<grpc::Service*>& services,
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors,
    int port) {
  absl::StatusOr<crypto::TlsMaterial> tls = crypto::LoadTlsMaterial(DevTlsFiles(dir, id));
  if (!tls.ok()) return tls.status();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(StrCat("127.0.0.1:", port), crypto::MakeServerCredentials(*tls), &port);
  crypto::ApplyFederationServerLimits(builder);
  for (grpc::Service* service : services) builder.RegisterService(service);
  if (!interceptors.empty()) builder.experimental().SetInterceptorCreators(std::move(interceptors));
  DevServer started;
  started.server = builder.BuildAndStart();
  if (started.server == nullptr || port == 0) {
    return absl::InternalError("cannot start a test server on 127.0.0.1");
  }
  started.address = StrCat("127.0.0.1:", port);
  return started;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> DevChannel(const std::filesystem::path& dir,
                                                          std::string_view id,
                                                          const std::string& address) {
  absl::StatusOr<crypto::TlsMaterial> tls = crypto::LoadTlsMaterial(DevTlsFiles(dir, id));
  if (!tls.ok()) return tls.status();
  return grpc::CreateCustomChannel(address, crypto::MakeChannelCredentials(*tls),
                                   crypto::FederationChannelArguments());
}

}  // namespace silo::testing
