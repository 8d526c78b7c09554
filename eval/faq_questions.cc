#include "eval/faq_questions.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace silo::eval {
namespace {

struct Line {
  int64_t begin;  // of the line in the text
  int64_t end;    // past the line's last character (its '\n' excluded)
  std::string_view text;
};

std::vector<Line> SplitLines(std::string_view text) {
  std::vector<Line> lines;
  int64_t begin = 0;
  while (begin < static_cast<int64_t>(text.size())) {
    const size_t newline = text.find('\n', begin);
    const int64_t end = newline == std::string_view::npos ? static_cast<int64_t>(text.size())
                                                          : static_cast<int64_t>(newline);
    lines.push_back({begin, end, text.substr(begin, end - begin)});
    begin = end + 1;
  }
  return lines;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// A reST adornment line: one punctuation character repeated (at least 3 times).
char Adornment(std::string_view line) {
  line = Trim(line);
  if (line.size() < 3) return 0;
  const char c = line[0];
  if (std::string_view("=-~^\"'`#*+.:_").find(c) == std::string_view::npos) return 0;
  return std::all_of(line.begin(), line.end(), [c](char x) { return x == c; }) ? c : 0;
}

}  // namespace

std::vector<FaqQuestion> ParseFaqQuestions(std::string_view source_path, std::string_view text) {
  const std::vector<Line> lines = SplitLines(text);
  // Section titles: a non-blank line followed by an adornment at least as long; an overline
  // (the line before is the same adornment) is allowed and ignored.
  struct Title {
    size_t line;  // the title's line
    char adornment;
  };
  std::vector<Title> titles;
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    const std::string_view title = Trim(lines[i].text);
    const char adornment = Adornment(lines[i + 1].text);
    if (title.empty() || adornment == 0 || Adornment(title) != 0) continue;
    if (Trim(lines[i + 1].text).size() < title.size()) continue;
    titles.push_back({i, adornment});
  }
  std::vector<FaqQuestion> questions;
  for (size_t t = 0; t < titles.size(); ++t) {
    if (titles[t].adornment != '-') continue;
    const size_t body_line = titles[t].line + 2;
    if (body_line >= lines.size()) continue;
    // The answer runs to the next title (or its overline) or the end of the text.
    int64_t end = static_cast<int64_t>(text.size());
    if (t + 1 < titles.size()) {
      size_t next = titles[t + 1].line;
      if (next > 0 && Adornment(lines[next - 1].text) != 0) --next;
      end = lines[next].begin;
    }
    const int64_t begin = lines[body_line].begin;
    if (Trim(text.substr(begin, end - begin)).find_first_not_of("\n\r\t ") ==
        std::string_view::npos) {
      continue;
    }
    questions.push_back({.question = std::string(Trim(lines[titles[t].line].text)),
                         .source_path = std::string(source_path),
                         .answer_begin = begin,
                         .answer_end = end});
  }
  return questions;
}

absl::StatusOr<std::vector<FaqQuestion>> LoadFaqQuestions(const std::string& faq_dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(faq_dir, error)) {
    return absl::NotFoundError(StrCat(faq_dir, ": no such folder"));
  }
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(faq_dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 8 && name.substr(name.size() - 8) == ".rst.txt") {
      files.push_back(fs::weakly_canonical(entry.path(), error));
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<FaqQuestion> questions;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return absl::PermissionDeniedError(StrCat(file.string(), ": cannot be read"));
    std::stringstream text;
    text << in.rdbuf();
    for (FaqQuestion& q : ParseFaqQuestions(file.string(), text.str())) {
      questions.push_back(std::move(q));
    }
  }
  if (questions.empty()) return absl::NotFoundError(StrCat(faq_dir, ": no FAQ questions"));
  return questions;
}

absl::StatusOr<std::string> LoadAnswerText(const FaqQuestion& question) {
  std::ifstream file(question.source_path, std::ios::binary);
  if (!file) return absl::NotFoundError(StrCat("cannot read ", question.source_path));
  std::stringstream text;
  text << file.rdbuf();
  const std::string all = text.str();
  if (question.answer_end > static_cast<int64_t>(all.size()) ||
      question.answer_begin >= question.answer_end) {
    return absl::DataLossError(StrCat(question.source_path, " changed since it was parsed"));
  }
  return all.substr(static_cast<size_t>(question.answer_begin),
                    static_cast<size_t>(question.answer_end - question.answer_begin));
}

}  // namespace silo::eval
