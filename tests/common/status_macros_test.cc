#include "common/status_macros.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo {
namespace {

using ::silo::testing::StatusIs;
using ::testing::HasSubstr;

absl::Status FailIfNegative(int value, int* calls) {
  ++*calls;
  if (value < 0) return absl::InvalidArgumentError("negative");
  return absl::OkStatus();
}

absl::Status Twice(int value, int* calls, bool* reached_end) {
  SILO_RETURN_IF_ERROR(FailIfNegative(value, calls));
  SILO_RETURN_IF_ERROR(FailIfNegative(value, calls));
  *reached_end = true;
  return absl::OkStatus();
}

TEST(ReturnIfError, ContinuesOnOkAndEvaluatesOnce) {
  int calls = 0;
  bool reached_end = false;
  EXPECT_OK(Twice(1, &calls, &reached_end));
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(reached_end);
}

TEST(ReturnIfError, ReturnsTheOriginalError) {
  int calls = 0;
  bool reached_end = false;
  EXPECT_THAT(Twice(-1, &calls, &reached_end),
              StatusIs(absl::StatusCode::kInvalidArgument, "negative"));
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(reached_end);
}

absl::StatusOr<std::unique_ptr<int>> MakeValue(int value) {
  if (value == 0) return absl::NotFoundError("zero");
  return std::make_unique<int>(value);
}

absl::StatusOr<int> AddMoveOnly(int a, int b) {
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<int> x, MakeValue(a));
  std::unique_ptr<int> y;
  SILO_ASSIGN_OR_RETURN(y, MakeValue(b));  // existing variable
  return *x + *y;
}

TEST(AssignOrReturn, MovesValuesIntoDeclarationsAndVariables) {
  ASSERT_OK_AND_ASSIGN(const int sum, AddMoveOnly(2, 3));
  EXPECT_EQ(sum, 5);
}

TEST(AssignOrReturn, PropagatesTheCodeAndMessage) {
  EXPECT_THAT(AddMoveOnly(2, 0), StatusIs(absl::StatusCode::kNotFound, HasSubstr("zero")));
  EXPECT_THAT(AddMoveOnly(0, 2), StatusIs(absl::StatusCode::kNotFound, "zero"));
}

TEST(StatusIsMatcher, RejectsAnotherCodeOrMessage) {
  const absl::Status status = absl::DataLossError("checksum mismatch");
  EXPECT_THAT(status, ::testing::Not(StatusIs(absl::StatusCode::kInternal, "checksum mismatch")));
  EXPECT_THAT(status, ::testing::Not(StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size"))));
}

}  // namespace
}  // namespace silo
