// Whole-file reads of the small text files of a model folder (vocab.txt, config.json).
// Thread-safe (no shared state).
#ifndef SILO_RETRIEVAL_INTERNAL_READ_FILE_H_
#define SILO_RETRIEVAL_INTERNAL_READ_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace silo::retrieval::internal {

// The bytes of `path`. NotFound when it does not exist, InvalidArgument when it is not a regular
// file or larger than `max_bytes`, PermissionDenied when unreadable, DataLoss when a read fails.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, int64_t max_bytes);

}  // namespace silo::retrieval::internal

#endif  // SILO_RETRIEVAL_INTERNAL_READ_FILE_H_
