// The text the chunker reads out of a document (markup stripped, entities decoded), with a map
// from each of its bytes back to the bytes of the original file, so that a chunk can name the
// range of the file it came from. The extractors (markup_text.h, html_text.h) build it.
//
// The text is always valid UTF-8: a byte of the original that is not part of a well-formed
// UTF-8 sequence becomes U+FFFD (mapped back to that one byte). Paragraphs are separated by a
// blank line ("\n\n"), which the chunker takes as its strongest boundary.
//
// Thread-compatible: built by one thread, then read-only.
#ifndef SILO_RETRIEVAL_INTERNAL_EXTRACTED_TEXT_H_
#define SILO_RETRIEVAL_INTERNAL_EXTRACTED_TEXT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace silo::retrieval::internal {

// A section heading met in the document.
struct Heading {
  int64_t position = 0;  // byte offset in the extracted text where the heading starts
  int64_t end = 0;       // byte offset just past its text (trailing whitespace excluded)
  std::string title;     // the heading's text, whitespace collapsed to single spaces
};

class ExtractedText {
 public:
  // `original` must outlive this object.
  explicit ExtractedText(std::string_view original) : original_(original) {}

  // Appends original[begin, end) as it is, but with U+FFFD for each byte that is not valid
  // UTF-8. Precondition: 0 <= begin <= end <= original.size().
  void AppendSource(int64_t begin, int64_t end);
  // Appends `text` (valid UTF-8) standing for original[begin, end): a decoded entity, collapsed
  // whitespace, a line break that a tag implies.
  void AppendReplacement(std::string_view text, int64_t begin, int64_t end);
  // Ends the paragraph: appends line breaks, standing for no byte at `source_pos`, until the
  // text ends with a blank line. Nothing at the start of the text.
  void BreakParagraph(int64_t source_pos);
  // Records text()[begin, end of text) as a heading starting at `begin`. Its title is that text
  // with whitespace collapsed and trimmed, and without a trailing pilcrow (the permalink anchor
  // Sphinx puts after each heading); an empty title is not recorded. Headings are expected in
  // increasing `begin` order.
  void AddHeading(int64_t begin);

  // Whether the text is empty or ends with a blank line (two line feeds, maybe spaces between).
  bool AtParagraphStart() const;

  const std::string& text() const { return text_; }
  std::string_view original() const { return original_; }
  const std::vector<Heading>& headings() const { return headings_; }

  // The original offset where the source of text()[pos] begins. Precondition: 0 <= pos < size.
  int64_t SourceBegin(int64_t pos) const;
  // The original offset just past the source of text()[pos]. Precondition: 0 <= pos < size.
  int64_t SourceEnd(int64_t pos) const;
  // The last heading at or before `pos`; nullptr when there is none.
  const Heading* HeadingAt(int64_t pos) const;

 private:
  // text_[text_begin, next span's text_begin) comes from original[source_begin, source_end):
  // byte for byte when `verbatim`, as a whole otherwise.
  struct Span {
    int64_t text_begin;
    int64_t source_begin;
    int64_t source_end;
    bool verbatim;
  };

  void AddSpan(int64_t source_begin, int64_t source_end, bool verbatim);
  const Span& SpanAt(int64_t pos) const;

  std::string_view original_;
  std::string text_;
  std::vector<Span> spans_;  // sorted by text_begin; the first starts at 0
  std::vector<Heading> headings_;
};

// Appends the UTF-8 form of `code_point` (U+FFFD for a surrogate or a value above U+10FFFF).
void AppendUtf8(char32_t code_point, std::string& out);

// Whether `c` is ASCII whitespace (space, \t, \n, \v, \f, \r).
inline bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

}  // namespace silo::retrieval::internal

#endif  // SILO_RETRIEVAL_INTERNAL_EXTRACTED_TEXT_H_
