// Text of an HTML document for the chunker, read as a browser would show it, without a DOM:
//
//   - Tags and comments are removed; the contents of <script> and <style> are dropped.
//   - Character references are decoded: named ones of a built-in table (&amp; &lt; &gt; &quot;
//     &apos; &nbsp; typography, arrows, Greek letters, math), decimal (&#39;) and hexadecimal
//     (&#x27;). &nbsp; becomes a plain space and &shy; nothing. A reference needs its ';'; an
//     unknown or malformed one stays as written. A numeric reference to 0, a surrogate or a value
//     above U+10FFFF becomes U+FFFD.
//   - Outside <pre>, runs of whitespace become one space. Block elements (p, div, h1-h6,
//     section, table, pre, ...) end paragraphs; br, li, dt, dd and tr end lines; td and th
//     separate words.
//   - h1-h6 and <title> are headings.
//
// Offsets of the result map into the HTML: a decoded reference stands for the whole reference,
// a collapsed space for the whitespace run it replaced. Malformed markup never fails: a '<' that
// starts no tag is text, an unterminated tag or comment runs to the end of the document.
//
// Thread-safe (pure function). Any bytes are accepted.
#ifndef SILO_RETRIEVAL_INTERNAL_HTML_TEXT_H_
#define SILO_RETRIEVAL_INTERNAL_HTML_TEXT_H_

#include <string_view>

#include "retrieval/internal/extracted_text.h"

namespace silo::retrieval::internal {

// `html` must outlive the result.
ExtractedText ExtractHtml(std::string_view html);

}  // namespace silo::retrieval::internal

#endif  // SILO_RETRIEVAL_INTERNAL_HTML_TEXT_H_
