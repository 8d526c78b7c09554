#include "common/logging.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo {
namespace {

using ::silo::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

TEST(Logging, ParsesLevelsAndFormats) {
  ASSERT_OK_AND_ASSIGN(const LogLevel level, ParseLogLevel("warning"));
  EXPECT_EQ(level, LogLevel::kWarning);
  ASSERT_OK_AND_ASSIGN(const LogFormat format, ParseLogFormat("json"));
  EXPECT_EQ(format, LogFormat::kJson);
  EXPECT_THAT(ParseLogLevel("verbose"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("debug, info")));
  EXPECT_THAT(ParseLogFormat("xml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("xml")));
}

TEST(Logging, TextLine) {
  const std::string line = FormatLogLine(LogFormat::kText, LogLevel::kWarning,
                                         "/src/silo/node/server.cc", 42, "peer slow");
  EXPECT_THAT(line, MatchesRegex(R"(20[0-9-]+T[0-9:.]+Z W server\.cc:42\] peer slow)"));
}

TEST(Logging, JsonLineEscapesTheMessage) {
  const std::string line =
      FormatLogLine(LogFormat::kJson, LogLevel::kInfo, "a/b.cc", 7, "say \"hi\"\\\n\x01");
  EXPECT_THAT(line, HasSubstr(R"("level":"info","src":"b.cc:7","msg":"say \"hi\"\\\n\u0001"})"));
  EXPECT_THAT(line, MatchesRegex(R"(\{"ts":"[0-9T:.Z-]+",.*\})"));
}

TEST(Logging, FiltersByLevelWithoutFormatting) {
  SetLogLevel(LogLevel::kWarning);
  int formatted = 0;
  auto count = [&formatted] { return ++formatted; };
  ::testing::internal::CaptureStderr();
  SILO_LOG(Info) << "hidden " << count();
  SILO_LOG(Error) << "shown " << count();
  const std::string output = ::testing::internal::GetCapturedStderr();
  SetLogLevel(LogLevel::kInfo);
  EXPECT_EQ(formatted, 1);
  EXPECT_THAT(output, HasSubstr("] shown 1\n"));
  EXPECT_THAT(output, ::testing::Not(HasSubstr("hidden")));
}

TEST(Logging, WritesJsonLinesWhenAsked) {
  SetLogFormat(LogFormat::kJson);
  ::testing::internal::CaptureStderr();
  SILO_LOG(Warning) << "disk " << 93 << "% full";
  const std::string output = ::testing::internal::GetCapturedStderr();
  SetLogFormat(LogFormat::kText);
  EXPECT_THAT(output, HasSubstr(R"("level":"warning")"));
  EXPECT_THAT(output, HasSubstr(R"("msg":"disk 93% full"})"
                                "\n"));
}

}  // namespace
}  // namespace silo
