// Early-return helpers for absl::Status and absl::StatusOr.
//
//   SILO_RETURN_IF_ERROR(WriteShard(shard));
//   SILO_ASSIGN_OR_RETURN(GgufFile file, GgufFile::Open(path));
//   SILO_ASSIGN_OR_RETURN(auto [k, v], SplitKv(shard));   // not supported: bind a name first
//
// Both evaluate their argument exactly once. The returned status is the original one, unchanged,
// so the most specific canonical code travels up. Thread-safe: they are expressions.
#ifndef SILO_COMMON_STATUS_MACROS_H_
#define SILO_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define SILO_RETURN_IF_ERROR(expr)                      \
  do {                                                  \
    ::absl::Status silo_status_macro_status_ = (expr);  \
    if (!silo_status_macro_status_.ok()) [[unlikely]] { \
      return silo_status_macro_status_;                 \
    }                                                   \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status when not OK, otherwise moves the
// value into `lhs`, which may be a declaration (`auto x`, `const Foo& f` is not allowed) or an
// existing variable.
#define SILO_ASSIGN_OR_RETURN(lhs, rexpr) \
  SILO_ASSIGN_OR_RETURN_IMPL_(SILO_STATUS_MACROS_CONCAT_(silo_statusor_, __LINE__), lhs, rexpr)

#define SILO_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) [[unlikely]] {                      \
    return std::move(statusor).status();                  \
  }                                                       \
  lhs = *std::move(statusor)

#define SILO_STATUS_MACROS_CONCAT_INNER_(a, b) a##b
#define SILO_STATUS_MACROS_CONCAT_(a, b) SILO_STATUS_MACROS_CONCAT_INNER_(a, b)

#endif  // SILO_COMMON_STATUS_MACROS_H_
