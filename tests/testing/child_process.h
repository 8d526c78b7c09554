// A process started by a test (silo-node serve, silo-coordinator), its stdout and stderr going
// to a log file that the test can wait on:
//
//   ChildProcess node({binary, "serve", "--config", path}, dir / "node.log");
//   ASSERT_OK_AND_ASSIGN(std::string line, node.WaitForLine("serving ", absl::Seconds(60)));
//
// The destructor kills a process that is still running (SIGKILL) and reaps it.
// Thread-compatible.
#ifndef SILO_TESTS_TESTING_CHILD_PROCESS_H_
#define SILO_TESTS_TESTING_CHILD_PROCESS_H_

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace silo::testing {

class ChildProcess {
 public:
  // Starts args[0] with `args`, appending its output to `log`. Check running() or the first
  // WaitForLine for failure to start.
  ChildProcess(const std::vector<std::string>& args, std::filesystem::path log);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // The first line of the log that starts with `prefix`. DeadlineExceeded after `timeout`;
  // FailedPrecondition when the process exits first (the message holds the log's tail).
  absl::StatusOr<std::string> WaitForLine(std::string_view prefix, absl::Duration timeout);

  // Sends `signal`; then Wait() reaps it. Its exit status (or 128 + signal number).
  void Signal(int signal);
  absl::StatusOr<int> Wait(absl::Duration timeout);

  bool running();
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;  // set once reaped
  std::filesystem::path log_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released), for a
// process that must keep its address across restarts. -1 when no socket could be bound.
int PickUnusedPort();

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_CHILD_PROCESS_H_
