#include "eval/faq_questions.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::eval {
namespace {

using ::silo::testing::StatusIs;

constexpr char kFaq[] =
    ":tocdepth: 2\n"
    "\n"
    "===========\n"
    "Example FAQ\n"
    "===========\n"
    "\n"
    "General\n"
    "=======\n"
    "\n"
    "What is a list?\n"
    "---------------\n"
    "\n"
    "A mutable sequence.\n"
    "\n"
    "How do I sort?\n"
    "--------------\n"
    "\n"
    "Call sorted().\n"
    "\n"
    "Details\n"
    "^^^^^^^\n"
    "\n"
    "It is stable.\n"
    "\n"
    "Empty question?\n"
    "---------------\n"
    "\n"
    "Library\n"
    "=======\n"
    "\n"
    "Too short\n"
    "---\n"
    "\n"
    "Is it fast?\n"
    "-----------\n"
    "Yes.";

TEST(FaqQuestions, FindsQuestionsAndTheirAnswers) {
  const std::string text = kFaq;
  const std::vector<FaqQuestion> questions = ParseFaqQuestions("faq.rst.txt", text);
  ASSERT_EQ(questions.size(), 3u);
  EXPECT_EQ(questions[0].question, "What is a list?");
  EXPECT_EQ(
      text.substr(questions[0].answer_begin, questions[0].answer_end - questions[0].answer_begin),
      "\nA mutable sequence.\n\n");
  EXPECT_EQ(questions[1].question, "How do I sort?");
  // The answer ends at the next heading of any level.
  EXPECT_EQ(
      text.substr(questions[1].answer_begin, questions[1].answer_end - questions[1].answer_begin),
      "\nCall sorted().\n\n");
  // "Empty question?" has no answer; "Too short" has an underline shorter than its title.
  EXPECT_EQ(questions[2].question, "Is it fast?");
  EXPECT_EQ(text.substr(questions[2].answer_begin), "Yes.");
  EXPECT_EQ(questions[2].source_path, "faq.rst.txt");
}

TEST(FaqQuestions, LoadsAFolderAndRefusesAnEmptyOne) {
  silo::testing::TempDir dir;
  EXPECT_THAT(LoadFaqQuestions(dir.path().string()).status(),
              StatusIs(absl::StatusCode::kNotFound));
  dir.WriteFile("b.rst.txt", kFaq);
  dir.WriteFile("a.rst.txt", "Q?\n---\n\nA.\n");
  dir.WriteFile("notes.txt", "Ignored?\n--------\n\nYes.\n");
  ASSERT_OK_AND_ASSIGN(const std::vector<FaqQuestion> questions,
                       LoadFaqQuestions(dir.path().string()));
  ASSERT_EQ(questions.size(), 4u);
  EXPECT_EQ(questions[0].question, "Q?");
  EXPECT_EQ(questions[1].question, "What is a list?");
  EXPECT_THAT(LoadFaqQuestions((dir.path() / "missing").string()).status(),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace silo::eval
