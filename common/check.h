// SILO_CHECK: aborts the process when a programmer's invariant does not hold.
//
//   SILO_CHECK(n_heads % n_kv_heads == 0) << "n_heads=" << n_heads;
//   SILO_CHECK_OK(status);
//
// Only for bugs in our own code. Never for what a peer, a file, a user or a device sent: those
// are absl::Status errors. Thread-safe; the message goes to stderr before abort().
#ifndef SILO_COMMON_CHECK_H_
#define SILO_COMMON_CHECK_H_

#include <sstream>

#include "absl/status/status.h"

namespace silo::internal_check {

// Collects the streamed message and aborts in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  [[noreturn]] ~CheckFailure();

  std::ostream& stream() { return message_; }

 private:
  const char* file_;
  int line_;
  const char* condition_;
  std::ostringstream message_;
};

}  // namespace silo::internal_check

#define SILO_CHECK(condition) \
  while (!(condition))        \
  [[unlikely]] ::silo::internal_check::CheckFailure(__FILE__, __LINE__, #condition).stream()

#define SILO_CHECK_OK(expr)                                                         \
  for (const ::absl::Status silo_check_status_ = (expr); !silo_check_status_.ok();) \
  ::silo::internal_check::CheckFailure(__FILE__, __LINE__, #expr " is OK").stream() \
      << silo_check_status_ << " "

#endif  // SILO_COMMON_CHECK_H_
