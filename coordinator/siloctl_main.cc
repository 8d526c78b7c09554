// siloctl: the operator's client of a silo federation (coordinator/siloctl_commands.h).
//   siloctl --config siloctl.yaml nodes [--probe]
//   siloctl --config siloctl.yaml query [--mode retrieve|fedrag|dragon|local|centralized] [-k 8]
//           [--merge
//   score|rrf]
//           [--max-tokens 128] [--kv-mode shard|prefill] [--kv-dtype f32|f16|bf16]
//           [--key-scope session|chunk|block] [--block-rows N] [--mixer sphps|dense]
//           [--protect-layers N] [--protect-mode skip|owner] [--continue-on-compute-failure]
//           [--distribution-top-p P] [--lookahead N] [--aggregator-policy
//           scheduled|fixed|alternate]
//           [--alternate-every N] "question"
//   siloctl --config siloctl.yaml sessions [--limit 20]
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "coordinator/siloctl_commands.h"

// CLI11 throws only for a malformed command definition (a bug); parse errors are handled by
// CLI11_PARSE.
int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape)
  CLI::App app{"siloctl: the operator's client of a silo federation"};
  app.require_subcommand(1);
  std::string config_path;
  app.add_option("--config", config_path, "siloctl.yaml: coordinator address and certificate")
      ->required();

  silo::coordinator::NodesCommandOptions nodes;
  CLI::App* nodes_command =
      app.add_subcommand("nodes", "Nodes, roles, state and the RTT/throughput matrix");
  nodes_command->add_flag("--probe", nodes.probe, "Measure the network now before printing");

  silo::coordinator::QueryCommandOptions query;
  CLI::App* query_command = app.add_subcommand("query", "Ask the federation a question");
  query_command
      ->add_option("--mode", query.mode,
                   "retrieve (sources only), fedrag (answer over every owner's chunks, which "
                   "stay with their owners), dragon (the querier and a cloud node each decode "
                   "over their own chunks and exchange only tokens and distributions), local "
                   "(the question alone) or centralized (evaluation only: owners that allow it "
                   "hand over their chunks' text)")
      ->capture_default_str();
  query_command->add_option("--querier", query.querier,
                            "Node that embeds the question (default: the coordinator's pick)");
  query_command->add_option("-k,--top-k", query.top_k, "Sources kept after the global merge")
      ->capture_default_str();
  query_command->add_option("--merge", query.merge, "score, or rrf (reciprocal rank fusion)")
      ->capture_default_str();
  query_command
      ->add_option("--owner-timeout-ms", query.owner_timeout_ms, "Deadline of each owner's answer")
      ->capture_default_str();
  query_command->add_option("--max-tokens", query.max_tokens, "Tokens to generate at most")
      ->capture_default_str();
  query_command
      ->add_option("--kv-mode", query.kv_mode,
                   "shard (owners rotate stored KV) or prefill (owners prefill anew)")
      ->capture_default_str();
  query_command->add_option("--kv-dtype", query.kv_dtype, "f32, f16 or bf16: K'/V' on the wire")
      ->capture_default_str();
  query_command->add_option("--key-scope", query.key_scope,
                            "session, chunk or block (default: the federation's)");
  query_command->add_option("--block-rows", query.block_rows, "Rows per key with block scope");
  query_command->add_option("--mixer", query.mixer, "sphps or dense (default: the federation's)");
  query_command->add_option(
      "--protect-layers", query.protect_layers,
      "First layers whose attention over remote chunks is not delegated (0: none; "
      "default: the federation's)");
  query_command->add_option("--protect-mode", query.protect_mode,
                            "skip (protected layers do not attend remote chunks) or owner (each "
                            "owner attends its own chunks there and sees those query rows); "
                            "default: the federation's");
  query_command->add_flag("--continue-on-compute-failure", query.continue_on_compute_failure,
                          "If the compute node fails mid-answer, finish without the remote "
                          "chunks (default: end with its status)");
  query_command->add_option("--distribution-top-p", query.distribution_top_p,
                            "DRAGON: top-p mass of the distributions on the wire (1: full)");
  query_command->add_option("--lookahead", query.lookahead,
                            "DRAGON: tokens decoded ahead of the last final one (0: synchronous; "
                            "default 16)");
  query_command->add_option("--aggregator-policy", query.aggregator_policy,
                            "DRAGON: scheduled (the aggregator follows the network), fixed, or "
                            "alternate (moves every --alternate-every tokens)");
  query_command->add_option("--alternate-every", query.alternate_every,
                            "DRAGON: tokens between moves with --aggregator-policy alternate");
  query_command->add_option("question", query.question, "The question")->required();

  int32_t limit = 20;
  CLI::App* sessions_command = app.add_subcommand("sessions", "The session log, newest first");
  sessions_command->add_option("--limit", limit, "Most sessions to list")->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<silo::coordinator::SiloctlConfig> config =
      silo::coordinator::LoadSiloctlConfig(config_path);
  absl::Status status = config.status();
  if (status.ok()) {
    if (nodes_command->parsed()) {
      status = silo::coordinator::RunNodes(*config, nodes, std::cout);
    } else if (query_command->parsed()) {
      status = silo::coordinator::RunQuery(*config, query, std::cout);
    } else if (sessions_command->parsed()) {
      status = silo::coordinator::RunSessions(*config, limit, std::cout);
    }
  }
  if (!status.ok()) {
    std::cerr << "siloctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
              << "\n";
    return 1;
  }
  return 0;
}
