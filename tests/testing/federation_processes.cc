#include "tests/testing/federation_processes.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "common/status_macros.h"
#include "common/strings.h"
#include "grpcpp/client_context.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::testing {
namespace {

std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout);
}

}  // namespace

absl::StatusOr<ServingNode> StartServingNode(const std::string& node_binary,
                                             const std::filesystem::path& dir,
                                             const std::string& id, const std::string& log,
                                             absl::Duration timeout) {
  ServingNode node;
  node.process = std::make_unique<ChildProcess>(
      std::vector<std::string>{node_binary, "serve", "--config", (dir / (id + ".yaml")).string()},
      dir / log);
  SILO_ASSIGN_OR_RETURN(const std::string line,
                        node.process->WaitForLine(StrCat("serving ", id, " on"), timeout));
  node.address = line.substr(line.rfind(' ') + 1);
  return node;
}

absl::Status WaitForOnlineNodes(const std::shared_ptr<grpc::Channel>& operator_channel, int n,
                                absl::Duration timeout) {
  const auto stub = v1::CoordinatorService::NewStub(operator_channel);
  const absl::Time deadline = absl::Now() + timeout;
  int online = 0;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(10)));
    v1::ListNodesResponse response;
    if (stub->ListNodes(&context, v1::ListNodesRequest(), &response).ok()) {
      online =
          static_cast<int>(std::count_if(response.nodes().begin(), response.nodes().end(),
                                         [](const v1::NodeStatus& node) { return node.online(); }));
      if (online == n) return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(
      StrCat(online, " nodes online, not ", n, ", after ", absl::FormatDuration(timeout)));
}

StreamedAnswer StreamQuery(const std::shared_ptr<grpc::Channel>& operator_channel,
                           const v1::QueryRequest& request, absl::Duration timeout,
                           const std::function<void()>& on_first_delta) {
  const absl::Time start = absl::Now();
  StreamedAnswer answer;
  const auto stub = v1::QueryService::NewStub(operator_channel);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout));
  auto reader = stub->Query(&context, request);
  v1::QueryResponse message;
  while (reader->Read(&message)) {
    if (message.has_started()) answer.placement = message.started().placement();
    if (message.has_delta()) {
      if (answer.tokens.empty() && message.delta().token_ids_size() > 0 && on_first_delta) {
        on_first_delta();
      }
      answer.tokens.insert(answer.tokens.end(), message.delta().token_ids().begin(),
                           message.delta().token_ids().end());
      answer.text += message.delta().text();
    }
    if (message.has_done()) answer.done = message.done();
  }
  answer.status = reader->Finish();
  answer.elapsed = absl::Now() - start;
  return answer;
}

}  // namespace silo::testing
