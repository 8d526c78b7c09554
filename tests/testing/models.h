// Where the models fetched by scripts/fetch-models are. Tests that use real weights fail (they do
// not skip) when the models are missing: `make test` fetches them first.
#ifndef SILO_TESTS_TESTING_MODELS_H_
#define SILO_TESTS_TESTING_MODELS_H_

#include <string>

#include "absl/status/statusor.h"

namespace silo::testing {

// $SILO_MODELS_DIR (set by ctest to the repository's models/). FailedPrecondition when unset.
absl::StatusOr<std::string> ModelsDir();
// The default decoder, SmolLM2-135M-Instruct Q4_1 GGUF. NotFound when it was not fetched.
absl::StatusOr<std::string> DefaultModelPath();
// Folder of the sentence embedder all-MiniLM-L6-v2 (model.safetensors, config.json, vocab.txt).
absl::StatusOr<std::string> EmbedderDir();

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_MODELS_H_
