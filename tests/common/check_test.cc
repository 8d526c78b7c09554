#include "common/check.h"

#include "gtest/gtest.h"

namespace silo {
namespace {

TEST(CheckDeathTest, AbortsWithConditionAndMessage) {
  const int n_heads = 9;
  EXPECT_DEATH(SILO_CHECK(n_heads % 2 == 0) << "n_heads=" << n_heads,
               "SILO_CHECK failed: n_heads % 2 == 0: n_heads=9");
}

TEST(CheckDeathTest, CheckOkPrintsTheStatus) {
  EXPECT_DEATH(SILO_CHECK_OK(absl::InternalError("broken invariant")), "broken invariant");
}

TEST(Check, PassesAndEvaluatesOnce) {
  int evaluations = 0;
  SILO_CHECK(++evaluations == 1) << "never printed";
  SILO_CHECK_OK(absl::OkStatus());
  EXPECT_EQ(evaluations, 1);
}

}  // namespace
}  // namespace silo
