// The development questions of retrieval (issue: retrieval/): the Python FAQ's question headings
// (`faq/*.rst.txt` of the Python documentation's reST sources) with the byte range of each
// answer, the text between the question's heading and the next heading.
//
// A question is a reST section title underlined with '-' (the FAQ's question level; '=' marks
// its categories and document titles). Thread-safe (pure functions).
#ifndef SILO_EVAL_FAQ_QUESTIONS_H_
#define SILO_EVAL_FAQ_QUESTIONS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace silo::eval {

struct FaqQuestion {
  std::string question;      // the heading's text
  std::string source_path;   // the FAQ file
  int64_t answer_begin = 0;  // [answer_begin, answer_end) of the file: the answer's bytes
  int64_t answer_end = 0;
};

// The questions of one FAQ file's text, in order; questions whose answer is empty are left out.
std::vector<FaqQuestion> ParseFaqQuestions(std::string_view source_path, std::string_view text);

// The questions of every *.rst.txt file in `faq_dir`, files in name order. NotFound when the
// folder does not exist or holds no questions; PermissionDenied when a file cannot be read.
absl::StatusOr<std::vector<FaqQuestion>> LoadFaqQuestions(const std::string& faq_dir);

// The text of a question's answer, read from its file. NotFound when the file cannot be read,
// DataLoss when it changed since it was parsed.
absl::StatusOr<std::string> LoadAnswerText(const FaqQuestion& question);

}  // namespace silo::eval

#endif  // SILO_EVAL_FAQ_QUESTIONS_H_
