#include "retrieval/internal/markup_text.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace silo::retrieval::internal {
namespace {

// One line of the original: [begin, end) without its line terminator ("\n" or "\r\n"); `next`
// is where the following line starts.
struct Line {
  int64_t begin;
  int64_t end;
  int64_t next;
};

std::vector<Line> SplitLines(std::string_view text) {
  std::vector<Line> lines;
  int64_t begin = 0;
  const int64_t size = static_cast<int64_t>(text.size());
  while (begin < size) {
    const size_t newline = text.find('\n', begin);
    const int64_t next = newline == std::string_view::npos ? size : newline + 1;
    int64_t end = newline == std::string_view::npos ? size : newline;
    if (end > begin && text[end - 1] == '\r') --end;
    lines.push_back({begin, end, next});
    begin = next;
  }
  return lines;
}

// A line's text and the offsets of its first and last non-blank characters.
class LineView {
 public:
  LineView(std::string_view original, const Line& line)
      : line_(line), text_(original.substr(line.begin, line.end - line.begin)) {
    first_ = 0;
    while (first_ < text_.size() && IsAsciiSpace(text_[first_])) ++first_;
    last_ = text_.size();
    while (last_ > first_ && IsAsciiSpace(text_[last_ - 1])) --last_;
  }

  bool blank() const { return first_ == last_; }
  // Leading spaces and tabs, a tab counting as one.
  size_t indent() const { return first_; }
  std::string_view trimmed() const { return text_.substr(first_, last_ - first_); }
  // Original offsets of trimmed().
  int64_t trimmed_begin() const { return line_.begin + static_cast<int64_t>(first_); }
  int64_t trimmed_end() const { return line_.begin + static_cast<int64_t>(last_); }

 private:
  Line line_;
  std::string_view text_;
  size_t first_;
  size_t last_;
};

// Whether `s` is `min_count` or more of `c` and nothing else.
bool IsRunOf(std::string_view s, char c, size_t min_count) {
  return s.size() >= min_count && s.find_first_not_of(c) == std::string_view::npos;
}

// Appends a heading's text as a paragraph of its own and records it.
void AppendHeading(ExtractedText& out, int64_t begin, int64_t end) {
  out.BreakParagraph(begin);
  const int64_t position = static_cast<int64_t>(out.text().size());
  out.AppendSource(begin, end);
  out.AddHeading(position);
  out.BreakParagraph(end);
}

// ---- Markdown ----

// The fence ("```" or "~~~" and longer) that opens a fenced code block, or empty.
std::string_view OpeningFence(const LineView& line) {
  if (line.indent() > 3) return {};
  const std::string_view t = line.trimmed();
  if (t.empty() || (t[0] != '`' && t[0] != '~')) return {};
  const size_t n = std::min(t.find_first_not_of(t[0]), t.size());
  if (n < 3) return {};
  // A backtick fence's info string holds no backtick (CommonMark).
  if (t[0] == '`' && t.find('`', n) != std::string_view::npos) return {};
  return t.substr(0, n);
}

bool ClosesFence(const LineView& line, std::string_view fence) {
  return line.indent() <= 3 && IsRunOf(line.trimmed(), fence[0], fence.size());
}

bool IsSetextUnderline(const LineView& line) {
  if (line.indent() > 3) return false;
  return IsRunOf(line.trimmed(), '=', 2) || IsRunOf(line.trimmed(), '-', 3);
}

// "***", "- - -", "___" and the like.
bool IsThematicBreak(const LineView& line) {
  if (line.indent() > 3) return false;
  const std::string_view t = line.trimmed();
  if (t.empty() || (t[0] != '-' && t[0] != '*' && t[0] != '_')) return false;
  size_t count = 0;
  for (char c : t) {
    if (c == t[0]) {
      ++count;
    } else if (c != ' ' && c != '\t') {
      return false;
    }
  }
  return count >= 3;
}

// The original range of an ATX heading's text ("## Title ##" -> "Title"); false when the line
// is not an ATX heading.
bool AtxHeadingText(std::string_view original, const LineView& line, int64_t& begin, int64_t& end) {
  if (line.indent() > 3) return false;
  const std::string_view t = line.trimmed();
  const size_t level = std::min(t.find_first_not_of('#'), t.size());
  if (level < 1 || level > 6) return false;
  if (level < t.size() && t[level] != ' ' && t[level] != '\t') return false;
  begin = line.trimmed_begin() + static_cast<int64_t>(level);
  end = line.trimmed_end();
  // An optional closing run of hashes, when a space precedes it.
  int64_t close = end;
  while (close > begin && original[close - 1] == '#') --close;
  if (close == begin || IsAsciiSpace(original[close - 1])) end = close;
  while (begin < end && IsAsciiSpace(original[begin])) ++begin;
  while (end > begin && IsAsciiSpace(original[end - 1])) --end;
  return true;
}

// ---- reStructuredText ----

// Section adornment: 2 or more of one punctuation character that docutils' documentation
// recommends, alone on the line at column 0.
bool IsAdornment(const LineView& line) {
  static constexpr std::string_view kAdornmentChars = "=-`:'\"~^_*+#<>";
  if (line.indent() != 0 || line.blank()) return false;
  const std::string_view t = line.trimmed();
  return kAdornmentChars.find(t[0]) != std::string_view::npos && IsRunOf(t, t[0], 2);
}

// Whether `adornment` can adorn `title`: docutils takes one as long as the title, or at least
// 4 characters long (with a warning), as a title's; "if" over "--" is a section.
bool Adorns(const LineView& adornment, const LineView& title) {
  const size_t length = adornment.trimmed().size();
  return IsAdornment(adornment) && (length >= 4 || length >= title.trimmed().size());
}

// Directives whose arguments and bodies are no prose for a reader.
bool IsDroppedDirective(std::string_view name) {
  static constexpr std::array<std::string_view, 16> kDropped = {
      "index",          "toctree",      "highlight",  "highlightlang",
      "sectionauthor",  "moduleauthor", "codeauthor", "currentmodule",
      "testsetup",      "testcleanup",  "raw",        "include",
      "literalinclude", "image",        "meta",       "contents"};
  // A domain prefix ("py:currentmodule") does not change what the directive is.
  const size_t colon = name.rfind(':');
  if (colon != std::string_view::npos) name.remove_prefix(colon + 1);
  return name == "tabularcolumns" ||
         std::find(kDropped.begin(), kDropped.end(), name) != kDropped.end();
}

enum class ExplicitMarkup { kNone, kKeep, kDrop };

// What to do with the explicit markup block that a line starting with ".." opens.
ExplicitMarkup ClassifyExplicitMarkup(std::string_view trimmed) {
  if (!trimmed.starts_with("..")) return ExplicitMarkup::kNone;
  if (trimmed.size() > 2 && trimmed[2] != ' ' && trimmed[2] != '\t') {
    return ExplicitMarkup::kNone;  // "...", "..foo": text
  }
  std::string_view rest = trimmed.substr(2);
  while (!rest.empty() && (rest[0] == ' ' || rest[0] == '\t')) rest.remove_prefix(1);
  if (rest.starts_with("[")) return ExplicitMarkup::kKeep;  // footnote or citation: prose
  if (rest.starts_with("_") || rest.starts_with("|")) return ExplicitMarkup::kDrop;
  // A directive: a name of letters, digits, '-', '_', '+', '.', ':' right before "::".
  const size_t marker = rest.find("::");
  if (marker == std::string_view::npos || marker == 0) return ExplicitMarkup::kDrop;  // comment
  const std::string_view name = rest.substr(0, marker);
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '+' || c == '.' || c == ':';
    if (!ok) return ExplicitMarkup::kDrop;  // a comment that happens to hold "::"
  }
  return IsDroppedDirective(name) ? ExplicitMarkup::kDrop : ExplicitMarkup::kKeep;
}

}  // namespace

ExtractedText ExtractPlainText(std::string_view original) {
  ExtractedText out(original);
  out.AppendSource(0, static_cast<int64_t>(original.size()));
  return out;
}

ExtractedText ExtractMarkdown(std::string_view original) {
  ExtractedText out(original);
  const std::vector<Line> lines = SplitLines(original);
  std::string_view fence;  // of the open fenced code block; empty outside one
  for (size_t i = 0; i < lines.size(); ++i) {
    const LineView line(original, lines[i]);
    if (!fence.empty()) {
      if (ClosesFence(line, fence)) {
        fence = {};
        out.BreakParagraph(lines[i].begin);
      } else {
        out.AppendSource(lines[i].begin, lines[i].next);
      }
      continue;
    }
    if (fence = OpeningFence(line); !fence.empty()) {
      out.BreakParagraph(lines[i].begin);
      continue;
    }
    int64_t heading_begin = 0;
    int64_t heading_end = 0;
    if (AtxHeadingText(original, line, heading_begin, heading_end)) {
      AppendHeading(out, heading_begin, heading_end);
      continue;
    }
    if (!line.blank() && line.indent() <= 3 && !IsThematicBreak(line) && i + 1 < lines.size() &&
        IsSetextUnderline(LineView(original, lines[i + 1]))) {
      AppendHeading(out, line.trimmed_begin(), line.trimmed_end());
      ++i;  // the underline
      continue;
    }
    if (IsThematicBreak(line)) {
      out.BreakParagraph(lines[i].begin);
      continue;
    }
    if (line.blank() && out.AtParagraphStart()) continue;  // as in reST below
    out.AppendSource(lines[i].begin, lines[i].next);
  }
  return out;
}

ExtractedText ExtractRestructuredText(std::string_view original) {
  ExtractedText out(original);
  const std::vector<Line> lines = SplitLines(original);
  const auto view = [&](size_t i) { return LineView(original, lines[i]); };
  const auto blank_or_edge = [&](size_t i, int step) {
    const int64_t j = static_cast<int64_t>(i) + step;
    return j < 0 || j >= static_cast<int64_t>(lines.size()) || view(j).blank();
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const LineView line = view(i);
    if (line.blank()) {
      // Blank lines after a paragraph break (a dropped block, a heading) would only pile up.
      if (!out.AtParagraphStart()) out.AppendSource(lines[i].begin, lines[i].next);
      continue;
    }
    // Overlined title: adornment, title, the same adornment.
    if (i + 2 < lines.size() && !view(i + 1).blank() && !IsAdornment(view(i + 1)) &&
        Adorns(line, view(i + 1)) && Adorns(view(i + 2), view(i + 1)) &&
        view(i + 2).trimmed()[0] == line.trimmed()[0]) {
      AppendHeading(out, view(i + 1).trimmed_begin(), view(i + 1).trimmed_end());
      i += 2;
      continue;
    }
    // Underlined title.
    if (line.indent() == 0 && !IsAdornment(line) && !line.trimmed().starts_with("..") &&
        blank_or_edge(i, -1) && i + 1 < lines.size() && Adorns(view(i + 1), line)) {
      AppendHeading(out, line.trimmed_begin(), line.trimmed_end());
      ++i;
      continue;
    }
    // Transition: an adornment alone between blank lines.
    if (IsAdornment(line) && line.trimmed().size() >= 4 && blank_or_edge(i, -1) &&
        blank_or_edge(i, +1)) {
      out.BreakParagraph(lines[i].begin);
      continue;
    }
    const ExplicitMarkup markup = ClassifyExplicitMarkup(line.trimmed());
    if (markup == ExplicitMarkup::kDrop) {
      // The block goes on while lines are blank or indented deeper than its marker.
      size_t j = i + 1;
      while (j < lines.size() && (view(j).blank() || view(j).indent() > line.indent())) ++j;
      out.BreakParagraph(lines[i].begin);
      i = j - 1;
      continue;
    }
    if (markup == ExplicitMarkup::kKeep) out.BreakParagraph(lines[i].begin);
    out.AppendSource(lines[i].begin, lines[i].next);
  }
  return out;
}

}  // namespace silo::retrieval::internal
