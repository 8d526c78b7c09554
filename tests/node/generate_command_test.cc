#include "node/generate_command.h"

#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"

namespace silo::node {
namespace {

using ::silo::testing::StatusIs;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

GenerateCommandOptions DefaultModelOptions() {
  GenerateCommandOptions options;
  absl::StatusOr<std::string> path = silo::testing::DefaultModelPath();
  EXPECT_TRUE(path.ok()) << path.status();
  options.model_path = path.value_or("");
  options.threads = 2;
  return options;
}

TEST(GenerateCommandTest, AnswersTheCapitalOfFranceGreedily) {
  GenerateCommandOptions options = DefaultModelOptions();
  options.prompt = "What is the capital of France?";
  options.max_tokens = 32;
  std::ostringstream out;
  ASSERT_OK(RunGenerate(options, out));
  EXPECT_THAT(out.str(), HasSubstr("Paris"));
  // The speeds are the last line, after the answer.
  EXPECT_THAT(out.str(),
              ContainsRegex("\nprefill [0-9]+\\.[0-9] tok/s, decode [0-9]+\\.[0-9] tok/s\n$"));
  EXPECT_THAT(out.str(), Not(HasSubstr("<|im_end|>")));
}

TEST(GenerateCommandTest, SamplingIsReproducibleWithASeed) {
  GenerateCommandOptions options = DefaultModelOptions();
  options.prompt = "Write one sentence about the sea.";
  options.max_tokens = 16;
  options.sampling = {
      .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .repetition_penalty = 1.1f, .seed = 7};
  std::ostringstream first, second;
  ASSERT_OK(RunGenerate(options, first));
  ASSERT_OK(RunGenerate(options, second));
  auto answer = [](const std::string& text) { return text.substr(0, text.rfind("\nprefill")); };
  EXPECT_EQ(answer(first.str()), answer(second.str()));
  EXPECT_FALSE(answer(first.str()).empty());
}

TEST(GenerateCommandTest, RejectsBadOptionsWithoutLoadingAnything) {
  GenerateCommandOptions options = DefaultModelOptions();
  options.prompt = "";
  std::ostringstream out;
  EXPECT_THAT(RunGenerate(options, out), StatusIs(absl::StatusCode::kInvalidArgument));
  options.prompt = "hello";
  options.max_tokens = 0;
  EXPECT_THAT(RunGenerate(options, out), StatusIs(absl::StatusCode::kInvalidArgument));
  options.max_tokens = 8;
  options.sampling.top_p = 1.5f;
  EXPECT_THAT(RunGenerate(options, out), StatusIs(absl::StatusCode::kInvalidArgument));
  options.sampling.top_p = 1;
  options.max_tokens = 1'000'000;
  EXPECT_THAT(RunGenerate(options, out), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(out.str(), "");
}

TEST(GenerateCommandTest, MissingModelIsNotFound) {
  GenerateCommandOptions options;
  options.model_path = "/nonexistent/model.gguf";
  options.prompt = "hello";
  std::ostringstream out;
  EXPECT_THAT(RunGenerate(options, out), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace silo::node
