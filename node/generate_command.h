// `silo-node generate`: one question to a local model, answered as a stream of text, with the
// prefill and decode speeds at the end. No retrieval and no network: the engine alone.
#ifndef SILO_NODE_GENERATE_COMMAND_H_
#define SILO_NODE_GENERATE_COMMAND_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "engine/sampler.h"

namespace silo::node {

struct GenerateCommandOptions {
  std::string model_path;
  std::string prompt;
  std::optional<std::string> system;  // replaces the chat template's default system message
  int32_t max_tokens = 256;
  engine::SamplingParams sampling;  // temperature 0: greedy
  int32_t threads = 0;              // 0: every core
};

// Writes the answer to `out` as it is generated (flushing after each piece of text), then a
// newline and `prefill <x> tok/s, decode <y> tok/s`. InvalidArgument for bad options or an
// empty prompt; the errors of loading the model; ResourceExhausted when the prompt and
// max_tokens exceed the model's training context.
absl::Status RunGenerate(const GenerateCommandOptions& options, std::ostream& out);

}  // namespace silo::node

#endif  // SILO_NODE_GENERATE_COMMAND_H_
