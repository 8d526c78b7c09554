#include "retrieval/model_fingerprint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/sha256.h"

namespace silo::retrieval {
namespace {

namespace fs = std::filesystem;

bool IsModelFile(const std::string& name) {
  const auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".safetensors") || ends_with(".safetensors.index.json") ||
         name == "config.json" || name == "tokenizer.json" || name == "tokenizer_config.json" ||
         name == "vocab.txt";
}

absl::Status HashFile(const fs::path& path, crypto::Sha256& hash) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(StrCat(path.string(), ": cannot be read"));
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    SILO_RETURN_IF_ERROR(
        hash.Update(std::string_view(buffer.data(), static_cast<size_t>(in.gcount()))));
  }
  if (in.bad()) return absl::DataLossError(StrCat(path.string(), ": read failed"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ModelFingerprint(const std::string& path) {
  std::error_code error;
  const fs::path model(path);
  if (!fs::exists(model, error)) return absl::NotFoundError(StrCat(path, ": no such model"));
  SILO_ASSIGN_OR_RETURN(crypto::Sha256 hash, crypto::Sha256::Create());
  if (!fs::is_directory(model, error)) {
    SILO_RETURN_IF_ERROR(HashFile(model, hash));
  } else {
    std::vector<fs::path> files;
    for (const fs::directory_entry& entry : fs::directory_iterator(model, error)) {
      if (entry.is_regular_file(error) && IsModelFile(entry.path().filename().string())) {
        files.push_back(entry.path());
      }
    }
    if (error) return absl::PermissionDeniedError(StrCat(path, ": ", error.message()));
    if (files.empty()) {
      return absl::NotFoundError(StrCat(path, ": no safetensors, config or tokenizer files"));
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      SILO_RETURN_IF_ERROR(
          hash.Update(StrCat(file.filename().string(), "\n", fs::file_size(file, error), "\n")));
      SILO_RETURN_IF_ERROR(HashFile(file, hash));
    }
  }
  SILO_ASSIGN_OR_RETURN(const crypto::Sha256Digest digest, hash.Finish());
  return StrCat("sha256:", crypto::DigestHex(digest));
}

}  // namespace silo::retrieval
