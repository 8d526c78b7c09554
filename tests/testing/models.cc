#include "tests/testing/models.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace silo::testing {
namespace {

absl::StatusOr<std::string> ExistingPath(const std::string& path) {
  if (std::filesystem::exists(path)) return path;
  return absl::NotFoundError(
      absl::StrCat(path, " does not exist: run scripts/fetch-models (make test does)"));
}

}  // namespace

absl::StatusOr<std::string> ModelsDir() {
  const char* dir = std::getenv("SILO_MODELS_DIR");
  if (dir == nullptr || *dir == '\0') {
    return absl::FailedPreconditionError(
        "SILO_MODELS_DIR is not set: run the tests through ctest, or set it to the models/ folder");
  }
  return std::string(dir);
}

absl::StatusOr<std::string> DefaultModelPath() {
  absl::StatusOr<std::string> dir = ModelsDir();
  if (!dir.ok()) return dir.status();
  return ExistingPath(absl::StrCat(*dir, "/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"));
}

absl::StatusOr<std::string> EmbedderDir() {
  absl::StatusOr<std::string> dir = ModelsDir();
  if (!dir.ok()) return dir.status();
  return ExistingPath(absl::StrCat(*dir, "/all-minilm-l6-v2"));
}

}  // namespace silo::testing
