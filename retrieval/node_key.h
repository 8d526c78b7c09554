// The node key: 32 bytes that seal an institution's document store at rest (DESIGN.md §4).
//
// It comes from a key file or from the environment variable SILO_NODE_KEY. Both hold the key as
// exactly 64 hexadecimal digits (either case); a key file may end in white space (a newline),
// nothing else. Raw 32-byte files are not accepted: one format, readable with `cat`, made with
// `openssl rand -hex 32`. A key file must be readable by its owner only (mode 0600 or 0400):
// group or other permission bits make it PermissionDenied, whatever the key.
//
// Keys travel as crypto::SecretBytes, wiped when destroyed; error messages never contain key
// characters (a bad digit is reported by its position).
//
// Thread-safe (no shared state; LoadNodeKey reads the environment, which must not be modified
// concurrently).
#ifndef SILO_RETRIEVAL_NODE_KEY_H_
#define SILO_RETRIEVAL_NODE_KEY_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::retrieval {

inline constexpr size_t kNodeKeySize = 32;
inline constexpr char kNodeKeyEnvVar[] = "SILO_NODE_KEY";

// The key written as 64 hex digits. InvalidArgument when `hex` has another length or a
// character that is not a hex digit (no white space is allowed here).
absl::StatusOr<crypto::SecretBytes> ParseNodeKeyHex(std::string_view hex);

// The key in the file at `path`. NotFound when it does not exist; PermissionDenied when it
// cannot be read or its mode gives any permission to group or others (the message says to run
// chmod 600); InvalidArgument when it is not a regular file or does not hold 64 hex digits
// followed only by white space.
absl::StatusOr<crypto::SecretBytes> ReadNodeKeyFile(const std::string& path);

// First use: makes a fresh random key and writes it to a new file at `path` (created with
// O_EXCL, mode 0600, 64 lower-case hex digits and a newline, fsynced with its folder), and
// returns it. AlreadyExists when `path` exists (an existing key is never overwritten); NotFound
// when its folder does not exist; PermissionDenied when the folder is not writable; Internal
// when the random generator fails. On failure no file is left behind.
absl::StatusOr<crypto::SecretBytes> GenerateNodeKeyFile(const std::string& path);

// The node key from `key_file` when it is not empty (ReadNodeKeyFile), else from the
// environment variable `env_var` (ParseNodeKeyHex). NotFound when neither is given (the message
// says how to provide one); the codes of ReadNodeKeyFile and ParseNodeKeyHex otherwise.
absl::StatusOr<crypto::SecretBytes> LoadNodeKey(const std::string& key_file,
                                                const char* env_var = kNodeKeyEnvVar);

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_NODE_KEY_H_
