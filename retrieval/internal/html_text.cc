#include "retrieval/internal/html_text.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace silo::retrieval::internal {
namespace {

constexpr char32_t kReplacementChar = 0xFFFD;

// ---- Character references ----

// Named references of U+00A0..U+00FF, in code point order (HTML 4's Latin-1 set).
constexpr std::array<std::string_view, 96> kLatin1Names = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",   "uml",
    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",   "deg",    "plusmn",
    "sup2",   "sup3",   "acute",  "micro",  "para",   "middot", "cedil",  "sup1",   "ordm",
    "raquo",  "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",  "Atilde",
    "Auml",   "Aring",  "AElig",  "Ccedil", "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave",
    "Iacute", "Icirc",  "Iuml",   "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde",
    "Ouml",   "times",  "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",
    "szlig",  "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",   "eth",
    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide", "oslash", "ugrave",
    "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};

// Lower-case Greek letters, U+03B1..U+03C9 in order; the capitals (U+0391..U+03A9, no final
// sigma) are the same names capitalized.
constexpr std::array<std::string_view, 25> kGreekNames = {
    "alpha", "beta",   "gamma",   "delta", "epsilon", "zeta",    "eta",  "theta", "iota",
    "kappa", "lambda", "mu",      "nu",    "xi",      "omicron", "pi",   "rho",   "sigmaf",
    "sigma", "tau",    "upsilon", "phi",   "chi",     "psi",     "omega"};

struct NamedReference {
  std::string_view name;
  char32_t code_point;
};

constexpr NamedReference kOtherNames[] = {
    {"amp", '&'},       {"lt", '<'},         {"gt", '>'},        {"quot", '"'},
    {"apos", '\''},     {"ensp", 0x2002},    {"emsp", 0x2003},   {"thinsp", 0x2009},
    {"zwnj", 0x200C},   {"zwj", 0x200D},     {"lrm", 0x200E},    {"rlm", 0x200F},
    {"ndash", 0x2013},  {"mdash", 0x2014},   {"lsquo", 0x2018},  {"rsquo", 0x2019},
    {"sbquo", 0x201A},  {"ldquo", 0x201C},   {"rdquo", 0x201D},  {"bdquo", 0x201E},
    {"dagger", 0x2020}, {"Dagger", 0x2021},  {"bull", 0x2022},   {"hellip", 0x2026},
    {"permil", 0x2030}, {"prime", 0x2032},   {"Prime", 0x2033},  {"lsaquo", 0x2039},
    {"rsaquo", 0x203A}, {"oline", 0x203E},   {"euro", 0x20AC},   {"trade", 0x2122},
    {"larr", 0x2190},   {"uarr", 0x2191},    {"rarr", 0x2192},   {"darr", 0x2193},
    {"harr", 0x2194},   {"lArr", 0x21D0},    {"uArr", 0x21D1},   {"rArr", 0x21D2},
    {"dArr", 0x21D3},   {"hArr", 0x21D4},    {"forall", 0x2200}, {"part", 0x2202},
    {"exist", 0x2203},  {"empty", 0x2205},   {"nabla", 0x2207},  {"isin", 0x2208},
    {"notin", 0x2209},  {"ni", 0x220B},      {"prod", 0x220F},   {"sum", 0x2211},
    {"minus", 0x2212},  {"lowast", 0x2217},  {"radic", 0x221A},  {"prop", 0x221D},
    {"infin", 0x221E},  {"ang", 0x2220},     {"and", 0x2227},    {"or", 0x2228},
    {"cap", 0x2229},    {"cup", 0x222A},     {"int", 0x222B},    {"there4", 0x2234},
    {"sim", 0x223C},    {"cong", 0x2245},    {"asymp", 0x2248},  {"ne", 0x2260},
    {"equiv", 0x2261},  {"le", 0x2264},      {"ge", 0x2265},     {"sub", 0x2282},
    {"sup", 0x2283},    {"nsub", 0x2284},    {"sube", 0x2286},   {"supe", 0x2287},
    {"oplus", 0x2295},  {"otimes", 0x2297},  {"perp", 0x22A5},   {"sdot", 0x22C5},
    {"lceil", 0x2308},  {"rceil", 0x2309},   {"lfloor", 0x230A}, {"rfloor", 0x230B},
    {"lang", 0x27E8},   {"rang", 0x27E9},    {"loz", 0x25CA},    {"spades", 0x2660},
    {"clubs", 0x2663},  {"hearts", 0x2665},  {"diams", 0x2666},  {"fnof", 0x0192},
    {"circ", 0x02C6},   {"tilde", 0x02DC},   {"OElig", 0x0152},  {"oelig", 0x0153},
    {"Scaron", 0x0160}, {"scaron", 0x0161},  {"Yuml", 0x0178},   {"thetasym", 0x03D1},
    {"upsih", 0x03D2},  {"piv", 0x03D6},     {"weierp", 0x2118}, {"image", 0x2111},
    {"real", 0x211C},   {"alefsym", 0x2135}, {"crarr", 0x21B5},  {"frasl", 0x2044},
};

std::optional<char32_t> NamedCodePoint(std::string_view name) {
  for (size_t i = 0; i < kLatin1Names.size(); ++i) {
    if (kLatin1Names[i] == name) return static_cast<char32_t>(0xA0 + i);
  }
  for (size_t i = 0; i < kGreekNames.size(); ++i) {
    if (kGreekNames[i] == name) return static_cast<char32_t>(0x3B1 + i);
    if (kGreekNames[i] != "sigmaf" && name.size() == kGreekNames[i].size() && name[0] >= 'A' &&
        name[0] <= 'Z' && name[0] - 'A' + 'a' == kGreekNames[i][0] &&
        name.substr(1) == kGreekNames[i].substr(1)) {
      return static_cast<char32_t>(0x391 + i);
    }
  }
  for (const NamedReference& reference : kOtherNames) {
    if (reference.name == name) return reference.code_point;
  }
  return std::nullopt;
}

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

struct DecodedReference {
  std::string text;
  int64_t end;  // just past the ';'
};

// The character reference at html[pos] (which is '&'), or nullopt when there is none.
std::optional<DecodedReference> DecodeReference(std::string_view html, int64_t pos) {
  const int64_t size = static_cast<int64_t>(html.size());
  int64_t i = pos + 1;
  char32_t code_point = 0;
  if (i < size && html[i] == '#') {
    ++i;
    const bool hex = i < size && (html[i] == 'x' || html[i] == 'X');
    if (hex) ++i;
    const int64_t digits_begin = i;
    uint64_t value = 0;
    while (i < size && i - digits_begin < 8) {
      const char c = html[i];
      int digit = -1;
      if (IsAsciiDigit(c)) {
        digit = c - '0';
      } else if (hex && AsciiLower(c) >= 'a' && AsciiLower(c) <= 'f') {
        digit = AsciiLower(c) - 'a' + 10;
      }
      if (digit < 0) break;
      value = value * (hex ? 16 : 10) + digit;
      ++i;
    }
    if (i == digits_begin || i >= size || html[i] != ';') return std::nullopt;
    code_point = value == 0 || value > 0x10FFFF ? kReplacementChar : static_cast<char32_t>(value);
  } else {
    const int64_t name_begin = i;
    while (i < size && i - name_begin <= 32 && (IsAsciiAlpha(html[i]) || IsAsciiDigit(html[i]))) {
      ++i;
    }
    if (i == name_begin || i >= size || html[i] != ';') return std::nullopt;
    const std::string_view name = html.substr(name_begin, i - name_begin);
    // A space the reader sees, not U+00A0: the tokenizer and the sentence splitter know it.
    if (name == "nbsp") return DecodedReference{" ", i + 1};
    if (name == "shy") return DecodedReference{"", i + 1};  // an invisible hyphenation hint
    const std::optional<char32_t> named = NamedCodePoint(name);
    if (!named.has_value()) return std::nullopt;
    code_point = *named;
  }
  DecodedReference decoded{"", i + 1};
  AppendUtf8(code_point, decoded.text);  // surrogates become U+FFFD there
  return decoded;
}

// ---- Tags ----

enum class TagKind { kNotATag, kStart, kEnd, kOther };  // kOther: comment, doctype, <?...>

struct Tag {
  TagKind kind = TagKind::kNotATag;
  std::string name;  // lower case; start and end tags only
  int64_t end = 0;   // just past the '>' (or the end of the document)
};

// Just past the first `close` at or after `pos`; the end of html when there is none.
int64_t SkipPast(std::string_view html, int64_t pos, std::string_view close) {
  const size_t found = html.find(close, pos);
  return found == std::string_view::npos ? static_cast<int64_t>(html.size())
                                         : static_cast<int64_t>(found + close.size());
}

// The tag at html[pos] (which is '<').
Tag ParseTag(std::string_view html, int64_t pos) {
  const int64_t size = static_cast<int64_t>(html.size());
  Tag tag;
  if (pos + 1 >= size) return tag;
  const char next = html[pos + 1];
  if (next == '!') {
    tag.kind = TagKind::kOther;
    tag.end = html.substr(pos).starts_with("<!--") ? SkipPast(html, pos + 4, "-->")
                                                   : SkipPast(html, pos + 2, ">");
    return tag;
  }
  if (next == '?') {
    tag.kind = TagKind::kOther;
    tag.end = SkipPast(html, pos + 2, ">");
    return tag;
  }
  int64_t i = pos + 1;
  const bool end_tag = next == '/';
  if (end_tag) ++i;
  if (i >= size || !IsAsciiAlpha(html[i])) {
    if (!end_tag) return tag;    // "a < b": text
    tag.kind = TagKind::kOther;  // "</ x>": a bogus comment to browsers
    tag.end = SkipPast(html, i, ">");
    return tag;
  }
  while (i < size && (IsAsciiAlpha(html[i]) || IsAsciiDigit(html[i]) || html[i] == '-')) {
    tag.name.push_back(AsciiLower(html[i]));
    ++i;
  }
  // Attributes: a '>' inside a quoted value does not end the tag.
  while (i < size && html[i] != '>') {
    if (html[i] == '"' || html[i] == '\'') {
      const size_t close = html.find(html[i], i + 1);
      i = close == std::string_view::npos ? size : static_cast<int64_t>(close) + 1;
    } else {
      ++i;
    }
  }
  tag.kind = end_tag ? TagKind::kEnd : TagKind::kStart;
  tag.end = std::min(i + 1, size);
  return tag;
}

// Just past the end tag "</name ...>" that closes a raw text element (script, style) opened
// before `pos`; the end of the document when there is none.
int64_t SkipRawText(std::string_view html, int64_t pos, std::string_view name) {
  const int64_t size = static_cast<int64_t>(html.size());
  for (size_t lt = html.find("</", pos); lt != std::string_view::npos;
       lt = html.find("</", lt + 2)) {
    const int64_t name_begin = static_cast<int64_t>(lt) + 2;
    if (size - name_begin < static_cast<int64_t>(name.size())) break;
    bool same = true;
    for (size_t k = 0; k < name.size() && same; ++k) {
      same = AsciiLower(html[name_begin + k]) == name[k];
    }
    const int64_t after = name_begin + static_cast<int64_t>(name.size());
    if (same &&
        (after == size || html[after] == '>' || html[after] == '/' || IsAsciiSpace(html[after]))) {
      return SkipPast(html, after, ">");
    }
  }
  return size;
}

enum class Layout { kInline, kWordBreak, kLineBreak, kParagraph };

Layout LayoutOf(std::string_view name) {
  static constexpr std::string_view kParagraphElements[] = {
      "address", "article", "aside", "blockquote", "body",     "caption",    "center", "details",
      "dialog",  "dir",     "div",   "dl",         "fieldset", "figcaption", "figure", "footer",
      "form",    "h1",      "h2",    "h3",         "h4",       "h5",         "h6",     "head",
      "header",  "hgroup",  "hr",    "html",       "legend",   "main",       "menu",   "nav",
      "ol",      "p",       "pre",   "section",    "summary",  "table",      "tbody",  "tfoot",
      "thead",   "title",   "ul",    "noscript",   "listing",  "xmp"};
  static constexpr std::string_view kLineElements[] = {"br", "li", "dt", "dd", "tr", "option"};
  static constexpr std::string_view kWordElements[] = {"td", "th", "img", "input", "button"};
  const auto in = [&](const auto& list) {
    return std::find(std::begin(list), std::end(list), name) != std::end(list);
  };
  if (in(kParagraphElements)) return Layout::kParagraph;
  if (in(kLineElements)) return Layout::kLineBreak;
  if (in(kWordElements)) return Layout::kWordBreak;
  return Layout::kInline;
}

bool IsHeadingElement(std::string_view name) {
  return name == "title" ||
         (name.size() == 2 && name[0] == 'h' && name[1] >= '1' && name[1] <= '6');
}

// Builds the text while walking the HTML: verbatim runs of text are appended lazily, and
// whitespace outside <pre> is held back so that it becomes at most one space, and none at the
// start of a line or before a break.
class HtmlTextBuilder {
 public:
  explicit HtmlTextBuilder(std::string_view html) : out_(html) {}

  // html[pos] is visible text, taken as it is.
  void Text(int64_t pos) {
    if (run_begin_ < 0) {
      EmitPendingSpace();
      run_begin_ = pos;
    }
  }
  // html[begin, end) is whitespace outside <pre>.
  void Space(int64_t begin, int64_t end) {
    Flush(begin);
    if (!pending_space_) space_begin_ = begin;
    pending_space_ = true;
    space_end_ = end;
  }
  // `text` (decoded) stands for html[begin, end).
  void Replacement(std::string_view text, int64_t begin, int64_t end) {
    Flush(begin);
    if (text.empty()) return;
    EmitPendingSpace();
    out_.AppendReplacement(text, begin, end);
  }
  // A tag at html[begin, end) with the given layout.
  void Break(Layout layout, int64_t begin, int64_t end) {
    Flush(begin);
    switch (layout) {
      case Layout::kInline:
        break;
      case Layout::kWordBreak:
        if (!pending_space_) space_begin_ = begin;
        pending_space_ = true;
        space_end_ = end;
        break;
      case Layout::kLineBreak:
        pending_space_ = false;
        if (!out_.text().empty() && out_.text().back() != '\n') {
          out_.AppendReplacement("\n", begin, end);
        }
        break;
      case Layout::kParagraph:
        pending_space_ = false;
        out_.BreakParagraph(begin);
        break;
    }
  }
  // Ends the pending run of text at `pos`.
  void Flush(int64_t pos) {
    if (run_begin_ >= 0) out_.AppendSource(run_begin_, pos);
    run_begin_ = -1;
  }
  ExtractedText& out() { return out_; }

 private:
  void EmitPendingSpace() {
    if (!pending_space_) return;
    pending_space_ = false;
    const std::string& text = out_.text();
    if (text.empty() || IsAsciiSpace(text.back())) return;
    // A single ' ' is kept as source, so that it joins the neighbouring verbatim text.
    if (space_end_ - space_begin_ == 1 && out_.original()[space_begin_] == ' ') {
      out_.AppendSource(space_begin_, space_end_);
    } else {
      out_.AppendReplacement(" ", space_begin_, space_end_);
    }
  }

  ExtractedText out_;
  int64_t run_begin_ = -1;  // start of the text not yet appended; -1 when none
  bool pending_space_ = false;
  int64_t space_begin_ = 0;
  int64_t space_end_ = 0;
};

}  // namespace

ExtractedText ExtractHtml(std::string_view html) {
  HtmlTextBuilder builder(html);
  const int64_t size = static_cast<int64_t>(html.size());
  int pre_depth = 0;
  int64_t heading_begin = -1;  // text offset where the open heading's text starts; -1 if none
  int64_t pos = 0;
  while (pos < size) {
    const char c = html[pos];
    if (c == '<') {
      const Tag tag = ParseTag(html, pos);
      if (tag.kind == TagKind::kNotATag) {
        builder.Text(pos++);
        continue;
      }
      builder.Flush(pos);
      const Layout layout = tag.kind == TagKind::kOther ? Layout::kInline : LayoutOf(tag.name);
      const bool heading = IsHeadingElement(tag.name);
      if (tag.kind == TagKind::kEnd && heading && heading_begin >= 0) {
        builder.out().AddHeading(heading_begin);
        heading_begin = -1;
      }
      builder.Break(layout, pos, tag.end);
      if (tag.kind == TagKind::kStart && heading) {
        heading_begin = static_cast<int64_t>(builder.out().text().size());
      }
      if (tag.name == "pre" || tag.name == "listing" || tag.name == "xmp") {
        if (tag.kind == TagKind::kStart) ++pre_depth;
        if (tag.kind == TagKind::kEnd) pre_depth = std::max(0, pre_depth - 1);
      }
      pos = tag.end;
      const bool self_closing = tag.end >= 2 && html[tag.end - 2] == '/';
      if (tag.kind == TagKind::kStart && !self_closing &&
          (tag.name == "script" || tag.name == "style")) {
        pos = SkipRawText(html, pos, tag.name);
      }
      continue;
    }
    if (c == '&') {
      if (std::optional<DecodedReference> decoded = DecodeReference(html, pos)) {
        builder.Replacement(decoded->text, pos, decoded->end);
        pos = decoded->end;
      } else {
        builder.Text(pos++);
      }
      continue;
    }
    if (IsAsciiSpace(c) && pre_depth == 0) {
      const int64_t begin = pos;
      while (pos < size && IsAsciiSpace(html[pos])) ++pos;
      builder.Space(begin, pos);
      continue;
    }
    builder.Text(pos++);
  }
  builder.Flush(size);
  // A heading left open at the end still names the text after it.
  if (heading_begin >= 0) builder.out().AddHeading(heading_begin);
  return std::move(builder.out());
}

}  // namespace silo::retrieval::internal
