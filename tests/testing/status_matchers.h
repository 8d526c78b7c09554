// GoogleTest helpers for absl::Status and absl::StatusOr:
//
//   ASSERT_OK(store.Put(key, value));
//   EXPECT_OK(status);
//   ASSERT_OK_AND_ASSIGN(GgufFile file, GgufFile::Open(path));
//   EXPECT_THAT(Parse(bytes), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
//   EXPECT_THAT(Open(path), StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(value.AsInt(), IsOkAndHolds(576));
#ifndef SILO_TESTS_TESTING_STATUS_MATCHERS_H_
#define SILO_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace silo::testing {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// Matches a Status or StatusOr whose code equals `code` and whose message matches `message`.
MATCHER_P2(StatusIs, code, message,
           ::testing::DescribeMatcher<std::string>(::testing::MatcherCast<std::string>(message),
                                                   negation)) {
  const absl::Status& status = ::silo::testing::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(::testing::MatcherCast<std::string>(message),
                                       std::string(status.message()), result_listener);
}

// Matches an OK StatusOr whose value matches `matcher`.
MATCHER_P(IsOkAndHolds, matcher, "") {
  if (!arg.ok()) {
    *result_listener << "whose status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

// Matches a Status or StatusOr whose code equals `code`, whatever its message.
inline auto StatusIs(absl::StatusCode code) { return StatusIs(code, ::testing::_); }

}  // namespace silo::testing

#define SILO_TESTING_CONCAT_INNER_(a, b) a##b
#define SILO_TESTING_CONCAT_(a, b) SILO_TESTING_CONCAT_INNER_(a, b)

#define EXPECT_OK(expr) EXPECT_EQ(::silo::testing::GetStatus(expr), ::absl::OkStatus())
#define ASSERT_OK(expr) ASSERT_EQ(::silo::testing::GetStatus(expr), ::absl::OkStatus())

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(SILO_TESTING_CONCAT_(silo_test_statusor_, __LINE__), lhs, rexpr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  ASSERT_OK(statusor);                                   \
  lhs = *std::move(statusor)

#endif  // SILO_TESTS_TESTING_STATUS_MATCHERS_H_
