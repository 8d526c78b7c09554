// The identity of a decoder model as KV shards depend on it (DESIGN.md §4): SHA-256 over the
// bytes of its weights and tokenizer. A shard computed under one fingerprint is never used
// under another.
//
// Thread-safe (no shared state).
#ifndef SILO_RETRIEVAL_MODEL_FINGERPRINT_H_
#define SILO_RETRIEVAL_MODEL_FINGERPRINT_H_

#include <string>

#include "absl/status/statusor.h"

namespace silo::retrieval {

// "sha256:<64 hex digits>" of the model at `path`, as engine::Model::Open takes it: a .gguf file
// (weights and tokenizer in one file) is hashed whole; for a Hugging Face checkpoint, the
// folder's *.safetensors, *.safetensors.index.json, config.json, tokenizer.json,
// tokenizer_config.json and vocab.txt (a BERT embedder's) are hashed in name order, each
// preceded by its name and size. NotFound when the path does not exist or a folder holds none of
// those files; PermissionDenied or DataLoss when a file cannot be read.
absl::StatusOr<std::string> ModelFingerprint(const std::string& path);

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_MODEL_FINGERPRINT_H_
