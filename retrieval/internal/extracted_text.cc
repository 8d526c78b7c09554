#include "retrieval/internal/extracted_text.h"

#include <algorithm>
#include <iterator>

namespace silo::retrieval::internal {
namespace {

constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kPilcrowUtf8 = "\xC2\xB6";          // U+00B6

// Line feeds in the whitespace that ends `text`, counting up to 2.
int TrailingLineFeeds(std::string_view text) {
  int n = 0;
  for (size_t i = text.size(); i > 0 && IsAsciiSpace(text[i - 1]) && n < 2; --i) {
    if (text[i - 1] == '\n') ++n;
  }
  return n;
}

// Length of the well-formed UTF-8 sequence at text[pos] (1 to 4), or 0 when the byte there does
// not start one (stray continuation, overlong form, surrogate, above U+10FFFF, truncated).
// Precondition: pos < text.size().
int Utf8SequenceLength(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) return 1;
  int length = 0;
  // The second byte's range is narrower after E0 (overlong), ED (surrogates), F0 (overlong)
  // and F4 (above U+10FFFF), as the Unicode standard's table of well-formed sequences says.
  uint8_t second_min = 0x80;
  uint8_t second_max = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) second_min = 0xA0;
    if (b0 == 0xED) second_max = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) second_min = 0x90;
    if (b0 == 0xF4) second_max = 0x8F;
  } else {
    return 0;
  }
  if (text.size() - pos < static_cast<size_t>(length)) return 0;
  if (byte(pos + 1) < second_min || byte(pos + 1) > second_max) return 0;
  for (int i = 2; i < length; ++i) {
    if ((byte(pos + i) & 0xC0) != 0x80) return 0;
  }
  return length;
}

}  // namespace

void AppendUtf8(char32_t code_point, std::string& out) {
  if (code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    out.append(kReplacementUtf8);
  } else if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

void ExtractedText::AddSpan(int64_t source_begin, int64_t source_end, bool verbatim) {
  // Consecutive verbatim pieces of the original are one span: most documents are then a
  // handful of spans, and the look-ups stay cheap.
  if (verbatim && !spans_.empty() && spans_.back().verbatim &&
      spans_.back().source_end == source_begin) {
    spans_.back().source_end = source_end;
    return;
  }
  spans_.push_back({static_cast<int64_t>(text_.size()), source_begin, source_end, verbatim});
}

void ExtractedText::AppendSource(int64_t begin, int64_t end) {
  int64_t run_begin = begin;  // start of the valid bytes not yet appended
  int64_t pos = begin;
  const auto flush = [&] {
    if (pos > run_begin) {
      AddSpan(run_begin, pos, /*verbatim=*/true);
      text_.append(original_.substr(run_begin, pos - run_begin));
    }
  };
  while (pos < end) {
    if (static_cast<uint8_t>(original_[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int length = Utf8SequenceLength(original_.substr(0, end), pos);
    if (length > 0) {
      pos += length;
      continue;
    }
    flush();
    AddSpan(pos, pos + 1, /*verbatim=*/false);
    text_.append(kReplacementUtf8);
    ++pos;
    run_begin = pos;
  }
  flush();
}

void ExtractedText::AppendReplacement(std::string_view text, int64_t begin, int64_t end) {
  if (text.empty()) return;
  AddSpan(begin, end, /*verbatim=*/false);
  text_.append(text);
}

bool ExtractedText::AtParagraphStart() const {
  return text_.empty() || TrailingLineFeeds(text_) >= 2;
}

void ExtractedText::BreakParagraph(int64_t source_pos) {
  if (text_.empty()) return;
  // Trailing spaces or tabs before the break are left alone: the chunker trims chunks, and a
  // paragraph boundary only needs two line feeds inside the whitespace run.
  const int n_newlines = TrailingLineFeeds(text_);
  if (n_newlines < 2) AppendReplacement(n_newlines == 0 ? "\n\n" : "\n", source_pos, source_pos);
}

void ExtractedText::AddHeading(int64_t begin) {
  std::string title;
  bool pending_space = false;
  for (size_t i = begin; i < text_.size(); ++i) {
    const char c = text_[i];
    if (IsAsciiSpace(c)) {
      pending_space = !title.empty();
      continue;
    }
    if (pending_space) title.push_back(' ');
    pending_space = false;
    title.push_back(c);
  }
  if (title.ends_with(kPilcrowUtf8)) {
    title.resize(title.size() - kPilcrowUtf8.size());
    while (!title.empty() && title.back() == ' ') title.pop_back();
  }
  if (title.empty()) return;
  int64_t end = static_cast<int64_t>(text_.size());
  while (end > begin && IsAsciiSpace(text_[end - 1])) --end;
  headings_.push_back({begin, end, std::move(title)});
}

const ExtractedText::Span& ExtractedText::SpanAt(int64_t pos) const {
  auto it = std::upper_bound(spans_.begin(), spans_.end(), pos,
                             [](int64_t p, const Span& span) { return p < span.text_begin; });
  return *std::prev(it);
}

int64_t ExtractedText::SourceBegin(int64_t pos) const {
  const Span& span = SpanAt(pos);
  return span.verbatim ? span.source_begin + (pos - span.text_begin) : span.source_begin;
}

int64_t ExtractedText::SourceEnd(int64_t pos) const {
  const Span& span = SpanAt(pos);
  return span.verbatim ? span.source_begin + (pos - span.text_begin) + 1 : span.source_end;
}

const Heading* ExtractedText::HeadingAt(int64_t pos) const {
  auto it =
      std::upper_bound(headings_.begin(), headings_.end(), pos,
                       [](int64_t p, const Heading& heading) { return p < heading.position; });
  if (it == headings_.begin()) return nullptr;
  return &*std::prev(it);
}

}  // namespace silo::retrieval::internal
