// silo-node: the node binary. Subcommands:
//   generate  answer one prompt with a local model (no retrieval, no network)
//   ingest    add files and folders to the node's knowledge base
//   search    the best chunks of the node's knowledge base for a question
//   serve     join the federation: serve retrieval, probes and queries over mTLS until
//             SIGINT/SIGTERM
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "node/generate_command.h"
#include "node/knowledge_commands.h"
#include "node/node_config.h"
#include "node/node_server.h"

namespace {

// Serves until SIGINT or SIGTERM. Prints "serving <node_id> on <address>" once the port is
// bound (scripts and tests wait for that line).
absl::Status RunServe(const std::string& config_path) {
  // Before any thread starts, so that only WaitForTerminationSignal receives them.
  silo::node::BlockTerminationSignals();
  absl::StatusOr<silo::node::NodeConfig> config = silo::node::LoadNodeConfig(config_path);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<silo::node::NodeServer>> server =
      silo::node::NodeServer::Start(*config);
  if (!server.ok()) return server.status();
  std::cout << "serving " << config->node_id << " on " << (*server)->address() << std::endl;
  const std::string signal = silo::node::WaitForTerminationSignal();
  std::cout << signal << ": shutting down " << config->node_id << std::endl;
  (*server)->Shutdown();
  return absl::OkStatus();
}

}  // namespace

// CLI11 throws only for a malformed command definition (a bug); parse errors are handled by
// CLI11_PARSE.
int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape)
  CLI::App app{"silo-node: a silo institution, device or compute node"};
  app.require_subcommand(1);

  silo::node::GenerateCommandOptions generate;
  CLI::App* generate_command =
      app.add_subcommand("generate", "Answer one prompt with a local model, streaming the text");
  generate_command->add_option("--model", generate.model_path, "A .gguf file or a model folder")
      ->required();
  generate_command->add_option("--prompt", generate.prompt, "The user's message")->required();
  generate_command->add_option("--system", generate.system,
                               "System message (default: the chat template's own)");
  generate_command->add_option("--max-tokens", generate.max_tokens, "Most tokens to generate")
      ->capture_default_str();
  bool greedy_flag = false;  // greedy is the default; the flag only documents and excludes
  CLI::Option* greedy = generate_command->add_flag(
      "--greedy", greedy_flag, "Always take the most likely token (the default)");
  generate_command
      ->add_option("--temperature", generate.sampling.temperature,
                   "Sample with this temperature (> 0) instead of greedy decoding")
      ->excludes(greedy);
  generate_command
      ->add_option("--top-p", generate.sampling.top_p, "Nucleus sampling threshold in (0, 1]")
      ->excludes(greedy);
  generate_command
      ->add_option("--top-k", generate.sampling.top_k, "Sample among the k most likely; 0: all")
      ->excludes(greedy);
  generate_command->add_option("--repetition-penalty", generate.sampling.repetition_penalty,
                               "> 1 discourages repeating tokens; 1 is off");
  generate_command->add_option("--seed", generate.sampling.seed, "Seed of the sampler")
      ->capture_default_str();
  generate_command->add_option("--threads", generate.threads, "Worker threads; 0: every core")
      ->capture_default_str();

  silo::node::IngestCommandOptions ingest;
  CLI::App* ingest_command = app.add_subcommand(
      "ingest", "Add files and folders (text, Markdown, reST, HTML) to the knowledge base");
  ingest_command->add_option("--config", ingest.config_path, "The node's node.yaml")->required();
  ingest_command->add_option("paths", ingest.paths, "Files and folders")->required();

  silo::node::SearchCommandOptions search;
  CLI::App* search_command =
      app.add_subcommand("search", "Print the knowledge base's best chunks for a question");
  search_command->add_option("--config", search.config_path, "The node's node.yaml")->required();
  search_command->add_option("question", search.question, "The question")->required();
  search_command->add_option("-k", search.k, "How many chunks")->capture_default_str();

  std::string serve_config;
  CLI::App* serve_command = app.add_subcommand(
      "serve", "Serve retrieval, probes and queries over mTLS until SIGINT or SIGTERM");
  serve_command->add_option("--config", serve_config, "The node's node.yaml")->required();

  CLI11_PARSE(app, argc, argv);

  absl::Status status;
  if (generate_command->parsed()) {
    status = silo::node::RunGenerate(generate, std::cout);
  } else if (ingest_command->parsed()) {
    ingest.progress_bar = isatty(fileno(stderr)) != 0;
    status = silo::node::RunIngest(ingest, std::cout, std::cerr);
  } else if (search_command->parsed()) {
    status = silo::node::RunSearch(search, std::cout);
  } else if (serve_command->parsed()) {
    status = RunServe(serve_config);
  }
  if (!status.ok()) {
    std::cerr << "silo-node " << app.get_subcommands().front()->get_name() << ": "
              << status.message() << "\n";
    return 1;
  }
  return 0;
}
