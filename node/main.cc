// silo-node: the node binary. Subcommands:
//   generate  answer one prompt with a local model (no retrieval, no network)
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "node/generate_command.h"

int main(int argc, char** argv) {
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

  CLI11_PARSE(app, argc, argv);

  if (generate_command->parsed()) {
    const absl::Status status = silo::node::RunGenerate(generate, std::cout);
    if (!status.ok()) {
      std::cerr << "silo-node generate: " << status.message() << "\n";
      return 1;
    }
  }
  return 0;
}
