// Text of plain, Markdown and reStructuredText documents for the chunker. Markup is stripped
// only where it is structure rather than text, so that a chunk mostly reads as the source does:
//
//   Plain text: the file as it is (invalid UTF-8 bytes become U+FFFD; see extracted_text.h).
//   Markdown: ATX headings ("## Title ##") keep their text without the hashes; setext headings
//     keep the title line and drop the underline ("===" / "---"); both become headings and
//     paragraphs of their own. Fence lines (``` / ~~~) and thematic breaks are dropped; the code
//     between fences is kept and never read as headings. Inline markup (emphasis, links, `code`)
//     is kept as written.
//   reStructuredText: a section title (a line at column 0 under a blank line, with an
//     underline, optionally an overline, of one repeated punctuation character, as long as the
//     title or at least 4 characters) keeps its text
//     and drops the adornment lines; transitions are dropped. Comments, hyperlink targets
//     (".. _name:"), substitution definitions and the directives that hold no prose (index,
//     toctree, highlight, *author, currentmodule, testsetup, testcleanup, raw, include,
//     literalinclude, image, meta, contents, tabularcolumns) are dropped with their indented
//     bodies. Other directives are kept verbatim, marker included: ".. function:: print(*args)"
//     and ".. versionadded:: 3.2" say what the text below them is about. Inline roles
//     (:func:`print`) are kept as written.
//
// Thread-safe (pure functions). Any bytes are accepted.
#ifndef SILO_RETRIEVAL_INTERNAL_MARKUP_TEXT_H_
#define SILO_RETRIEVAL_INTERNAL_MARKUP_TEXT_H_

#include <string_view>

#include "retrieval/internal/extracted_text.h"

namespace silo::retrieval::internal {

// `original` must outlive the result.
ExtractedText ExtractPlainText(std::string_view original);
ExtractedText ExtractMarkdown(std::string_view original);
ExtractedText ExtractRestructuredText(std::string_view original);

}  // namespace silo::retrieval::internal

#endif  // SILO_RETRIEVAL_INTERNAL_MARKUP_TEXT_H_
