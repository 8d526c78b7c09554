// silo-coordinator: membership, network matrix, placement, session log and the query API of a
// federation (DESIGN.md §8). Serves until SIGINT or SIGTERM.
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "coordinator/coordinator_config.h"
#include "coordinator/coordinator_server.h"
#include "node/node_server.h"

// CLI11 throws only for a malformed command definition (a bug); parse errors are handled by
// CLI11_PARSE.
int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape)
  CLI::App app{"silo-coordinator: membership, network matrix, placement and queries"};
  std::string config_path;
  app.add_option("--config", config_path, "The coordinator's coordinator.yaml")->required();
  CLI11_PARSE(app, argc, argv);

  // Before any thread starts, so that only WaitForTerminationSignal receives them.
  silo::node::BlockTerminationSignals();
  absl::StatusOr<silo::coordinator::CoordinatorConfig> config =
      silo::coordinator::LoadCoordinatorConfig(config_path);
  if (!config.ok()) {
    std::cerr << "silo-coordinator: " << config.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<silo::coordinator::CoordinatorServer>> server =
      silo::coordinator::CoordinatorServer::Start(*config);
  if (!server.ok()) {
    std::cerr << "silo-coordinator: " << server.status().message() << "\n";
    return 1;
  }
  // Scripts and tests wait for this line.
  std::cout << "serving coordinator on " << (*server)->address() << std::endl;
  const std::string signal = silo::node::WaitForTerminationSignal();
  std::cout << signal << ": shutting down the coordinator" << std::endl;
  (*server)->Shutdown();
  return 0;
}
