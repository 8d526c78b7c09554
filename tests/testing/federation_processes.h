// What the tests that run a federation as real processes (tests/e2e/) do alike: start a serving
// node and learn its address, wait until the coordinator sees the nodes online, and read a
// streamed query to its end.
//
//   ASSERT_OK_AND_ASSIGN(ServingNode cloud,
//                        StartServingNode(SILO_NODE_BINARY, dir, "cloud", "cloud-1.log", timeout));
//   ASSERT_OK(WaitForOnlineNodes(operator_channel, 2, timeout));
//   const StreamedAnswer answer = StreamQuery(operator_channel, request, absl::Seconds(120));
//
// Part of silo::testing_services (services' build only). Thread-safety: free functions.
#ifndef SILO_TESTS_TESTING_FEDERATION_PROCESSES_H_
#define SILO_TESTS_TESTING_FEDERATION_PROCESSES_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "silo/v1/coordinator.pb.h"
#include "tests/testing/child_process.h"

namespace silo::testing {

struct ServingNode {
  std::unique_ptr<ChildProcess> process;
  std::string address;  // as its "serving <id> on <address>" line names it
};

// `node_binary serve --config <dir>/<id>.yaml`, its output in <dir>/<log>, once it says it
// serves. The errors of ChildProcess::WaitForLine (the process exited, or `timeout` passed).
absl::StatusOr<ServingNode> StartServingNode(const std::string& node_binary,
                                             const std::filesystem::path& dir,
                                             const std::string& id, const std::string& log,
                                             absl::Duration timeout);

// Asks the coordinator (ListNodes over `operator_channel`) until exactly `n` nodes are online;
// DeadlineExceeded after `timeout`.
absl::Status WaitForOnlineNodes(const std::shared_ptr<grpc::Channel>& operator_channel, int n,
                                absl::Duration timeout);

// One QueryService.Query call, read to its end.
struct StreamedAnswer {
  grpc::Status status;
  std::vector<int32_t> tokens;  // the deltas' token ids, in order
  std::string text;             // the deltas' text
  v1::QueryDone done;
  v1::Placement placement;  // from the started message
  absl::Duration elapsed;   // from the call to its end
};

// `on_first_delta`, when set, runs when the first delta with tokens arrives (to break something
// mid-answer, say).
StreamedAnswer StreamQuery(const std::shared_ptr<grpc::Channel>& operator_channel,
                           const v1::QueryRequest& request, absl::Duration timeout,
                           const std::function<void()>& on_first_delta = nullptr);

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_FEDERATION_PROCESSES_H_
