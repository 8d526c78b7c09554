// Document chunker (DESIGN.md §4): cuts plain text, Markdown, reStructuredText and HTML into
// overlapping windows measured in the decoder model's tokens, for retrieval and KV shards.
//
//   SILO_ASSIGN_OR_RETURN(Chunker chunker, Chunker::Create(tokenizer, {.max_tokens = 256}));
//   SILO_ASSIGN_OR_RETURN(std::vector<Chunk> chunks, chunker.ChunkFile(root, path));
//
// Text. Markup is stripped as retrieval/internal/markup_text.h and internal/html_text.h say:
// HTML loses its tags and the contents of <script> and <style>, and its character references
// are decoded; Markdown and reST keep their text, headings included, and lose heading
// adornments, code fences, comments and the directives that hold no prose. A chunk's text is a
// slice of that extracted text, trimmed of whitespace. Bytes that are not valid UTF-8 become
// U+FFFD, so a chunk's text is always valid UTF-8 (it travels in protobuf strings).
//
// Windows. A chunk holds at most max_tokens tokens of the tokenizer (Encode(text, false), no
// BOS). A chunk ends, by preference, at the last paragraph end in the window (a blank line, a
// heading, an HTML block) if that keeps it at least half full; else at the last sentence end
// ('.', '!' or '?' before whitespace, ':' before a line break); else at the last line end; else
// at the last space (a sentence longer than the window); and only inside a word longer than
// the window, at a character boundary. Each chunk but the first starts with the last whole
// words of the previous one, up to overlap_tokens tokens of them, but never with text from
// before a heading that precedes its own text. A word longer than the window gets no overlap.
// The document is tokenized once; counts come from the token offsets, and each chunk is
// encoded once more to check its count exactly (a chunk that comes out too long is cut shorter).
//
// Ids. A document's id is stable across runs and machines: its path relative to the ingest
// root (DocIdFromPath). A chunk's id is "<doc_id>:<chunk_no>", chunk_no counting from 0 in
// document order, so it depends only on the document id and the chunk's number (and which
// text that number holds depends on the document's bytes, the options and the tokenizer).
// (The document store assigns the ids a knowledge base uses; these name chunks outside a store.)
//
// Thread-safe: a Chunker is immutable; ChunkDocument and ChunkFile may run on several threads
// at once. The tokenizer must outlive the chunker.
#ifndef SILO_RETRIEVAL_CHUNKER_H_
#define SILO_RETRIEVAL_CHUNKER_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer.h"

namespace silo::retrieval {

enum class DocumentFormat { kPlainText, kMarkdown, kRestructuredText, kHtml };

// "text", "markdown", "rst", "html".
std::string_view DocumentFormatName(DocumentFormat format);

// The format named by the file extension, case-insensitive: .txt (plain), .md and .markdown,
// .rst and .rst.txt (reST: Sphinx publishes its sources as .rst.txt), .html and .htm.
// InvalidArgument for any other name.
absl::StatusOr<DocumentFormat> DocumentFormatFromPath(std::string_view path);

inline constexpr int32_t kMinMaxTokens = 8;

struct ChunkerOptions {
  // Most tokens in a chunk. At least kMinMaxTokens, so that any one character fits (a 4-byte
  // UTF-8 character may be 4 byte tokens, plus a prefix space some tokenizers add).
  int32_t max_tokens = 256;
  // Tokens of the previous chunk's end that the next chunk repeats, at most; 0 <= overlap_tokens
  // < max_tokens.
  int32_t overlap_tokens = 32;
  // Larger documents are refused (InvalidArgument); > 0.
  int64_t max_document_bytes = int64_t{64} << 20;
};

// InvalidArgument, naming the field, when `options` breaks a rule stated in ChunkerOptions.
absl::Status ValidateChunkerOptions(const ChunkerOptions& options);

struct Chunk {
  std::string id;  // "<doc_id>:<chunk_no>"
  std::string doc_id;
  int32_t chunk_no = 0;
  std::string source_path;  // as given to ChunkDocument / ChunkFile
  // Byte range [begin, end) of the original file (for HTML: of the HTML, tags and references
  // included) that the chunk's text comes from.
  int64_t begin = 0;
  int64_t end = 0;
  // The text of the nearest heading at or before the chunk's start; empty when there is none.
  std::string title;
  std::string text;      // extracted text, valid UTF-8, trimmed
  int32_t n_tokens = 0;  // tokenizer.Encode(text, /*parse_special=*/false).size()
};

// "<doc_id>:<chunk_no>".
std::string MakeChunkId(std::string_view doc_id, int64_t chunk_no);

// A stable document id: `path` relative to `ingest_root`, both normalized lexically (".", ".."
// and repeated separators resolved, no look at the file system), with '/' separators: root
// "/data/docs", path "/data/docs/library/json.rst.txt" -> "library/json.rst.txt". Both must be
// absolute or both relative. InvalidArgument when `path` is not strictly inside `ingest_root`.
absl::StatusOr<std::string> DocIdFromPath(std::string_view ingest_root, std::string_view path);

class Chunker {
 public:
  // InvalidArgument when `options` is invalid (see ValidateChunkerOptions). `tokenizer` must
  // outlive the chunker.
  static absl::StatusOr<Chunker> Create(const engine::Tokenizer& tokenizer,
                                        const ChunkerOptions& options = {});

  // The chunks of one document, in order; none when it holds no text (empty, whitespace, only
  // markup). `text` is the file's bytes, any bytes. The format is `format` when given, else
  // the one `source_path` names. InvalidArgument when `doc_id` is empty, the text is larger
  // than max_document_bytes, or no format is given and the path names none; Internal on a bug
  // (a character that no window can hold).
  absl::StatusOr<std::vector<Chunk>> ChunkDocument(
      std::string_view doc_id, std::string_view source_path, std::string_view text,
      std::optional<DocumentFormat> format = std::nullopt) const;

  // Reads `path` and chunks it with DocIdFromPath(ingest_root, path) as its id and the format
  // its extension names. As ChunkDocument and DocIdFromPath, and NotFound, PermissionDenied or
  // DataLoss when the file cannot be read (InvalidArgument when it is too large).
  absl::StatusOr<std::vector<Chunk>> ChunkFile(const std::string& ingest_root,
                                               const std::string& path) const;

  const ChunkerOptions& options() const { return options_; }

 private:
  Chunker(const engine::Tokenizer* tokenizer, const ChunkerOptions& options)
      : tokenizer_(tokenizer), options_(options) {}

  const engine::Tokenizer* tokenizer_;
  ChunkerOptions options_;
  // The bytes the tokenizer has no token for, which Encode leaves out.
  std::array<bool, 256> dropped_bytes_{};
};

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_CHUNKER_H_
