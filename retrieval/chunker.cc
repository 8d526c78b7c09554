#include "retrieval/chunker.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <span>
#include <utility>

#include "common/status_macros.h"
#include "common/strings.h"
#include "retrieval/internal/extracted_text.h"
#include "retrieval/internal/html_text.h"
#include "retrieval/internal/markup_text.h"
#include "retrieval/internal/read_file.h"

namespace silo::retrieval {
namespace {

using internal::ExtractedText;
using internal::Heading;
using internal::IsAsciiSpace;

// How good a place to cut a whitespace run is; larger is better.
enum class Strength { kWord, kLine, kSentence, kParagraph };

// A run of whitespace between two words of the extracted text: a chunk may end at
// `end_of_word` (where the run begins) and the next one start at `next_word` (where it ends).
struct Boundary {
  int64_t end_of_word;
  int64_t next_word;
  Strength strength;
};

bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Whether the word that ends just before text[end] ends a sentence: '.', '!' or '?', possibly
// followed by closing quotes or brackets; ':' too when a line break follows (it introduces a
// list or code). A '.' after a single letter ("e.g.", "i.e.", "J. Smith") is taken as an
// abbreviation, and one after a word of 1 to 3 digits as a list number ("2. Unary tests").
// `end` > 0.
bool EndsSentence(std::string_view text, int64_t end, bool line_break_follows) {
  static constexpr std::string_view kClosers[] = {
      "\"", "'", ")", "]", "}", "*", "\xE2\x80\x9D", "\xE2\x80\x99", "\xC2\xBB"};  // ” ’ »
  int64_t i = end;
  for (bool stripped = true; stripped && i > 0;) {
    stripped = false;
    for (std::string_view closer : kClosers) {
      const int64_t n = static_cast<int64_t>(closer.size());
      if (i >= n && text.substr(i - n, n) == closer) {
        i -= n;
        stripped = true;
        break;
      }
    }
  }
  if (i == 0) return false;
  switch (text[i - 1]) {
    case '!':
    case '?':
      return true;
    case ':':
      return line_break_follows;
    case '.': {
      if (i >= 2 && IsAsciiLetter(text[i - 2]) &&
          (i == 2 || text[i - 3] == '.' || IsAsciiSpace(text[i - 3]))) {
        return false;
      }
      int64_t digits = 0;
      while (i - 2 - digits >= 0 && text[i - 2 - digits] >= '0' && text[i - 2 - digits] <= '9') {
        ++digits;
      }
      const bool word_starts = i - 2 - digits < 0 || IsAsciiSpace(text[i - 2 - digits]);
      return !(digits >= 1 && digits <= 3 && word_starts);
    }
    default:
      return false;
  }
}

// The whitespace runs strictly inside text[first, last) (first and last are non-space).
std::vector<Boundary> FindBoundaries(std::string_view text, int64_t first, int64_t last) {
  std::vector<Boundary> boundaries;
  for (int64_t i = first; i < last;) {
    if (!IsAsciiSpace(text[i])) {
      ++i;
      continue;
    }
    const int64_t begin = i;
    int n_newlines = 0;
    while (i < last && IsAsciiSpace(text[i])) n_newlines += text[i++] == '\n';
    Strength strength = Strength::kWord;
    if (n_newlines >= 2) {
      strength = Strength::kParagraph;
    } else if (EndsSentence(text, begin, n_newlines > 0)) {
      strength = Strength::kSentence;
    } else if (n_newlines == 1) {
      strength = Strength::kLine;
    }
    boundaries.push_back({begin, i, strength});
  }
  return boundaries;
}

// Start of the UTF-8 character that holds text[pos]; the text's size when pos is past it.
int64_t CharStart(std::string_view text, int64_t pos) {
  if (pos >= static_cast<int64_t>(text.size())) return static_cast<int64_t>(text.size());
  while (pos > 0 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

// Start of the UTF-8 character after the one that holds text[pos].
int64_t NextCharStart(std::string_view text, int64_t pos) {
  ++pos;
  while (pos < static_cast<int64_t>(text.size()) &&
         (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) {
    ++pos;
  }
  return pos;
}

// Cuts one extracted document into chunks (see the file comment of chunker.h).
class DocumentChunker {
 public:
  // `dropped_bytes`: the bytes that `tokenizer` has no token for (Encode leaves them out).
  DocumentChunker(const engine::Tokenizer& tokenizer, const ChunkerOptions& options,
                  const std::array<bool, 256>& dropped_bytes, const ExtractedText& extracted)
      : tokenizer_(tokenizer),
        options_(options),
        dropped_bytes_(dropped_bytes),
        extracted_(extracted),
        text_(extracted.text()) {}

  absl::StatusOr<std::vector<Chunk>> Run(std::string_view doc_id, std::string_view source_path);

 private:
  // Tokens of the whole text that end at or before `pos`.
  int64_t TokensBefore(int64_t pos) const {
    return std::upper_bound(token_ends_.begin(), token_ends_.end(), pos) - token_ends_.begin();
  }
  // Index of the first boundary whose end_of_word is above `pos`.
  size_t FirstBoundaryEndingAfter(int64_t pos) const {
    return std::upper_bound(boundaries_.begin(), boundaries_.end(), pos,
                            [](int64_t p, const Boundary& b) { return p < b.end_of_word; }) -
           boundaries_.begin();
  }
  // Where the chunk that starts at `start` ends, holding about `budget` tokens or fewer, past
  // `floor` (the previous chunk's end); -1 when only a cut inside a word would reach past floor
  // while the chunk starts before it (with overlap).
  int64_t ChooseEnd(int64_t start, int64_t floor, int64_t budget) const;
  // Where the chunk after the one [start, end) starts: the earliest word of that chunk's tail
  // that fits in overlap_tokens and lies in the same section as the text after `end`.
  int64_t NextStart(int64_t start, int64_t end) const;
  // Text offsets just past each of `ids`, the tokens of the whole text. They tile the text,
  // except that a tokenizer may add a prefix space, or drop a byte it has no token for (SmolLM2
  // has none for a few control characters); the tokens are matched against the text so that
  // such a byte does not shift every later offset.
  absl::StatusOr<std::vector<int64_t>> TokenEnds(std::span<const int32_t> ids) const;
  // The first word at or after `pos`.
  int64_t WordAtOrAfter(int64_t pos) const {
    while (pos < last_ && IsAsciiSpace(text_[pos])) ++pos;
    return pos;
  }

  const engine::Tokenizer& tokenizer_;
  const ChunkerOptions& options_;
  const std::array<bool, 256>& dropped_bytes_;
  const ExtractedText& extracted_;
  std::string_view text_;
  int64_t last_ = 0;                  // end of the last word
  std::vector<int64_t> token_ends_;   // [n_tokens] text offset just past each token
  std::vector<Boundary> boundaries_;  // in text order
};

int64_t DocumentChunker::ChooseEnd(int64_t start, int64_t floor, int64_t budget) const {
  const int64_t limit = TokensBefore(start) + budget;  // tokens, counted from the text's start
  if (TokensBefore(last_) <= limit) return last_;
  // Boundaries past `floor` whose end keeps the chunk within the budget: [lo, hi).
  const size_t lo = FirstBoundaryEndingAfter(std::max(start, floor));
  const size_t hi = std::partition_point(
                        boundaries_.begin() + lo, boundaries_.end(),
                        [&](const Boundary& b) { return TokensBefore(b.end_of_word) <= limit; }) -
                    boundaries_.begin();
  if (hi > lo) {
    // The last paragraph end that keeps the chunk at least half full; else the last sentence
    // end, however early (only a sentence longer than the window is cut inside); else the last
    // line end; else the last space.
    const int64_t half = TokensBefore(start) + (budget + 1) / 2;
    size_t best[4] = {hi - 1, hi, hi, hi};  // indexed by Strength; hi: none
    for (size_t i = hi; i > lo && (best[1] == hi || best[2] == hi || best[3] == hi); --i) {
      const Boundary& b = boundaries_[i - 1];
      const int s = static_cast<int>(b.strength);
      for (int k = 1; k <= s; ++k) {
        if (best[k] != hi) continue;
        if (k == static_cast<int>(Strength::kParagraph) && TokensBefore(b.end_of_word) < half) {
          continue;
        }
        best[k] = i - 1;
      }
    }
    for (int k = 3; k >= 0; --k) {
      if (best[k] != hi) return boundaries_[best[k]].end_of_word;
    }
  }
  // Nothing fits past the overlap: the caller drops the overlap rather than cut a word.
  if (start < floor) return -1;
  // One word longer than the window: cut it after the limit-th token, at a character boundary
  // (and never after whitespace, which a token reaching across a word's end could suggest).
  int64_t end = CharStart(text_, token_ends_[limit - 1]);
  while (end > start + 1 && IsAsciiSpace(text_[end - 1])) --end;
  if (end <= start) end = NextCharStart(text_, start);
  return end;
}

int64_t DocumentChunker::NextStart(int64_t start, int64_t end) const {
  const int64_t next_own = WordAtOrAfter(end);  // `end` itself after a cut inside a word
  if (options_.overlap_tokens == 0) return next_own;
  // The overlap never reaches back across a heading: a section starts with its own text.
  int64_t floor = start + 1;
  if (const Heading* heading = extracted_.HeadingAt(next_own)) {
    floor = std::max(floor, heading->position);
  }
  const int64_t end_tokens = TokensBefore(end);
  // First boundary whose next word lies in [floor, end) with at most overlap_tokens up to end.
  auto it = std::partition_point(boundaries_.begin(), boundaries_.end(), [&](const Boundary& b) {
    return b.next_word < floor || end_tokens - TokensBefore(b.next_word) > options_.overlap_tokens;
  });
  if (it != boundaries_.end() && it->next_word < end) return it->next_word;
  return next_own;
}

absl::StatusOr<std::vector<int64_t>> DocumentChunker::TokenEnds(
    std::span<const int32_t> ids) const {
  std::vector<int64_t> ends;
  ends.reserve(ids.size());
  const int64_t size = static_cast<int64_t>(text_.size());
  // Where the token `bytes` ends if it matches the text from `from` on, dropped bytes skipped
  // (before it or inside it: "}\x04(" can be the one token "}("); -1 if it does not.
  const auto match = [&](int64_t from, std::string_view bytes) -> int64_t {
    for (size_t k = 0; k < bytes.size(); ++from) {
      if (from >= size) return -1;
      if (text_[from] == bytes[k]) {
        ++k;
      } else if (!dropped_bytes_[static_cast<uint8_t>(text_[from])]) {
        return -1;
      }
    }
    return from;
  };
  int64_t pos = 0;
  for (int32_t id : ids) {
    SILO_ASSIGN_OR_RETURN(const std::string_view bytes, tokenizer_.TokenBytes(id));
    int64_t end = match(pos, bytes);
    // The prefix space the tokenizer added is not in the text.
    if (end < 0 && bytes.starts_with(' ')) end = match(pos, bytes.substr(1));
    // Out of step (a tokenizer that changes the text): take the tokens as tiling it.
    if (end < 0) end = pos + static_cast<int64_t>(bytes.size());
    pos = std::min(end, size);
    ends.push_back(pos);
  }
  return ends;
}

absl::StatusOr<std::vector<Chunk>> DocumentChunker::Run(std::string_view doc_id,
                                                        std::string_view source_path) {
  std::vector<Chunk> chunks;
  int64_t first = 0;
  const int64_t size = static_cast<int64_t>(text_.size());
  while (first < size && IsAsciiSpace(text_[first])) ++first;
  last_ = size;
  while (last_ > first && IsAsciiSpace(text_[last_ - 1])) --last_;
  if (first == last_) return chunks;

  // The whole text is tokenized once; each window's count is read off the token offsets.
  const std::vector<int32_t> ids = tokenizer_.Encode(text_, /*parse_special=*/false);
  SILO_ASSIGN_OR_RETURN(token_ends_, TokenEnds(ids));
  boundaries_ = FindBoundaries(text_, first, last_);
  // A cut right after a heading would leave it at the end of a chunk, away from its section:
  // that place is only as good as any space.
  for (const Heading& heading : extracted_.headings()) {
    const size_t i = FirstBoundaryEndingAfter(heading.end - 1);
    if (i < boundaries_.size() && boundaries_[i].end_of_word == heading.end) {
      boundaries_[i].strength = Strength::kWord;
    }
  }

  int64_t start = first;
  int64_t floor = first;  // the previous chunk's end: each chunk must reach past it
  while (true) {
    int64_t budget = options_.max_tokens;
    int64_t end = 0;
    std::string chunk_text;
    std::vector<int32_t> chunk_ids;
    while (true) {
      end = ChooseEnd(start, floor, budget);
      if (end < 0) {
        start = WordAtOrAfter(floor);  // floor itself when the previous cut was inside a word
        budget = options_.max_tokens;
        continue;
      }
      chunk_text.assign(text_.substr(start, end - start));
      chunk_ids = tokenizer_.Encode(chunk_text, /*parse_special=*/false);
      const int64_t excess = static_cast<int64_t>(chunk_ids.size()) - options_.max_tokens;
      if (excess <= 0) break;
      // Alone, the chunk tokenizes a little differently than inside the document (its first
      // word lost the space before it): shrink the budget by the excess and cut again.
      budget -= std::max<int64_t>(excess, 1);
      if (budget < 1 && start < floor) {
        start = WordAtOrAfter(floor);
        budget = options_.max_tokens;
      } else if (budget < 1) {
        return absl::InternalError(StrCat("chunker: no window of ", options_.max_tokens,
                                          " tokens holds the text at byte ", start, " of ",
                                          doc_id));
      }
    }
    Chunk chunk;
    chunk.chunk_no = static_cast<int32_t>(chunks.size());
    chunk.id = MakeChunkId(doc_id, chunk.chunk_no);
    chunk.doc_id = std::string(doc_id);
    chunk.source_path = std::string(source_path);
    chunk.begin = extracted_.SourceBegin(start);
    chunk.end = extracted_.SourceEnd(end - 1);
    // The heading where the chunk's own text starts, after the overlap.
    if (const Heading* heading = extracted_.HeadingAt(std::max(start, WordAtOrAfter(floor)))) {
      chunk.title = heading->title;
    }
    chunk.text = std::move(chunk_text);
    chunk.n_tokens = static_cast<int32_t>(chunk_ids.size());
    chunks.push_back(std::move(chunk));
    if (end >= last_) break;
    start = NextStart(start, end);
    floor = end;
  }
  return chunks;
}

std::string AsciiLowerCase(std::string_view s) {
  std::string lower(s);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower;
}

}  // namespace

std::string_view DocumentFormatName(DocumentFormat format) {
  switch (format) {
    case DocumentFormat::kPlainText:
      return "text";
    case DocumentFormat::kMarkdown:
      return "markdown";
    case DocumentFormat::kRestructuredText:
      return "rst";
    case DocumentFormat::kHtml:
      return "html";
  }
  return "unknown";
}

absl::StatusOr<DocumentFormat> DocumentFormatFromPath(std::string_view path) {
  const std::string lower = AsciiLowerCase(path);
  // Longest suffix first: ".rst.txt" is reST, not plain text.
  static constexpr std::pair<std::string_view, DocumentFormat> kSuffixes[] = {
      {".rst.txt", DocumentFormat::kRestructuredText},
      {".txt", DocumentFormat::kPlainText},
      {".markdown", DocumentFormat::kMarkdown},
      {".md", DocumentFormat::kMarkdown},
      {".rst", DocumentFormat::kRestructuredText},
      {".html", DocumentFormat::kHtml},
      {".htm", DocumentFormat::kHtml},
  };
  for (const auto& [suffix, format] : kSuffixes) {
    // The suffix must follow a file name, not be the whole name or a folder's.
    if (lower.size() > suffix.size() && lower.ends_with(suffix) &&
        lower[lower.size() - suffix.size() - 1] != '/') {
      return format;
    }
  }
  return absl::InvalidArgumentError(
      StrCat("cannot tell the format of '", path,
             "' from its extension (known: .txt, .md, .markdown, .rst, .rst.txt, .html, .htm)"));
}

absl::Status ValidateChunkerOptions(const ChunkerOptions& options) {
  if (options.max_tokens < kMinMaxTokens) {
    return absl::InvalidArgumentError(StrCat("ChunkerOptions.max_tokens is ", options.max_tokens,
                                             "; it must be at least ", kMinMaxTokens));
  }
  if (options.overlap_tokens < 0 || options.overlap_tokens >= options.max_tokens) {
    return absl::InvalidArgumentError(
        StrCat("ChunkerOptions.overlap_tokens is ", options.overlap_tokens,
               "; it must be in [0, max_tokens = ", options.max_tokens, ")"));
  }
  if (options.max_document_bytes <= 0) {
    return absl::InvalidArgumentError(StrCat("ChunkerOptions.max_document_bytes is ",
                                             options.max_document_bytes, "; it must be > 0"));
  }
  return absl::OkStatus();
}

std::string MakeChunkId(std::string_view doc_id, int64_t chunk_no) {
  return StrCat(doc_id, ":", chunk_no);
}

absl::StatusOr<std::string> DocIdFromPath(std::string_view ingest_root, std::string_view path) {
  namespace fs = std::filesystem;
  if (ingest_root.empty() || path.empty()) {
    return absl::InvalidArgumentError("DocIdFromPath: the ingest root and the path must be set");
  }
  const fs::path root = fs::path(ingest_root).lexically_normal();
  const fs::path file = fs::path(path).lexically_normal();
  if (root.is_absolute() != file.is_absolute()) {
    return absl::InvalidArgumentError(StrCat("DocIdFromPath: '", path, "' and the ingest root '",
                                             ingest_root,
                                             "' must be both absolute or both relative"));
  }
  // "a/b/" normalizes to "a/b/" (an empty last element), which lexically_relative does not
  // take as "a/b".
  std::string root_text = root.generic_string();
  while (root_text.size() > 1 && root_text.back() == '/') root_text.pop_back();
  const fs::path relative = file.lexically_relative(fs::path(root_text));
  const std::string id = relative.generic_string();
  if (id.empty() || id == "." || id == ".." || id.starts_with("../") || relative.is_absolute()) {
    return absl::InvalidArgumentError(
        StrCat("DocIdFromPath: '", path, "' is not inside the ingest root '", ingest_root, "'"));
  }
  return id;
}

absl::StatusOr<Chunker> Chunker::Create(const engine::Tokenizer& tokenizer,
                                        const ChunkerOptions& options) {
  SILO_RETURN_IF_ERROR(ValidateChunkerOptions(options));
  Chunker chunker(&tokenizer, options);
  for (int b = 0; b < 256; ++b) {
    const char byte = static_cast<char>(b);
    chunker.dropped_bytes_[b] = tokenizer.Encode(std::string_view(&byte, 1), false).empty();
  }
  return chunker;
}

absl::StatusOr<std::vector<Chunk>> Chunker::ChunkDocument(
    std::string_view doc_id, std::string_view source_path, std::string_view text,
    std::optional<DocumentFormat> format) const {
  if (doc_id.empty()) return absl::InvalidArgumentError("ChunkDocument: empty document id");
  if (static_cast<int64_t>(text.size()) > options_.max_document_bytes) {
    return absl::InvalidArgumentError(StrCat("ChunkDocument: ", source_path, " has ", text.size(),
                                             " bytes, more than the ", options_.max_document_bytes,
                                             " allowed"));
  }
  if (!format.has_value()) {
    SILO_ASSIGN_OR_RETURN(format, DocumentFormatFromPath(source_path));
  }
  const ExtractedText extracted = [&] {
    switch (*format) {
      case DocumentFormat::kMarkdown:
        return internal::ExtractMarkdown(text);
      case DocumentFormat::kRestructuredText:
        return internal::ExtractRestructuredText(text);
      case DocumentFormat::kHtml:
        return internal::ExtractHtml(text);
      case DocumentFormat::kPlainText:
        break;
    }
    return internal::ExtractPlainText(text);
  }();
  return DocumentChunker(*tokenizer_, options_, dropped_bytes_, extracted).Run(doc_id, source_path);
}

absl::StatusOr<std::vector<Chunk>> Chunker::ChunkFile(const std::string& ingest_root,
                                                      const std::string& path) const {
  SILO_ASSIGN_OR_RETURN(const std::string doc_id, DocIdFromPath(ingest_root, path));
  SILO_ASSIGN_OR_RETURN(const DocumentFormat format, DocumentFormatFromPath(path));
  SILO_ASSIGN_OR_RETURN(const std::string text,
                        internal::ReadSmallFile(path, options_.max_document_bytes));
  return ChunkDocument(doc_id, path, text, format);
}

}  // namespace silo::retrieval
