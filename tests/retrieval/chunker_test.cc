// Chunker tests with the real byte-level BPE tokenizers of tests/engine/fixtures/tiny_tokenizers
// (GPT-2, Llama-3 and Qwen2 pre-tokenizers; small vocabularies, so a word is several tokens):
// window sizes, overlap, where cuts go, offsets into the original, markup stripping, headings,
// ids, and hostile input.
#include "retrieval/chunker.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

const engine::Tokenizer& TinyTokenizer(const std::string& kind = "gpt2") {
  static auto* tokenizers = new std::map<std::string, engine::Tokenizer>();
  auto it = tokenizers->find(kind);
  if (it == tokenizers->end()) {
    absl::StatusOr<engine::Tokenizer> tokenizer = engine::Tokenizer::FromTokenizerJson(
        std::string(SILO_SOURCE_DIR) + "/tests/engine/fixtures/tiny_tokenizers/" + kind +
        "/tokenizer.json");
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
    if (!tokenizer.ok()) std::abort();
    it = tokenizers->emplace(kind, *std::move(tokenizer)).first;
  }
  return it->second;
}

Chunker MakeChunker(int32_t max_tokens, int32_t overlap_tokens,
                    const engine::Tokenizer& tokenizer = TinyTokenizer()) {
  absl::StatusOr<Chunker> chunker =
      Chunker::Create(tokenizer, {.max_tokens = max_tokens, .overlap_tokens = overlap_tokens});
  EXPECT_TRUE(chunker.ok()) << chunker.status();
  if (!chunker.ok()) std::abort();
  return *std::move(chunker);
}

// Deterministic prose: `n_paragraphs` paragraphs of `n_sentences` sentences of 4 to 11 words.
std::string MakeProse(int n_paragraphs, int n_sentences, uint32_t seed) {
  static const char* kWords[] = {"the",    "model",  "reads", "a",      "chunk",  "of",
                                 "text",   "and",    "index", "silo",   "python", "function",
                                 "return", "value",  "list",  "string", "data",   "query",
                                 "answer", "method", "class", "module", "file",   "token"};
  std::mt19937 rng(seed);
  std::string text;
  for (int p = 0; p < n_paragraphs; ++p) {
    if (p > 0) text += "\n\n";
    for (int s = 0; s < n_sentences; ++s) {
      if (s > 0) text += ' ';
      const int n_words = 4 + static_cast<int>(rng() % 8);
      for (int w = 0; w < n_words; ++w) {
        std::string word = kWords[rng() % std::size(kWords)];
        if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
        if (w > 0) text += ' ';
        text += word;
      }
      text += '.';
    }
  }
  return text;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// Checks what holds for every document: sizes, counts, numbering, ids, offsets in range.
void ExpectWellFormed(const std::vector<Chunk>& chunks, std::string_view original,
                      const engine::Tokenizer& tokenizer, int32_t max_tokens) {
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& chunk = chunks[i];
    SCOPED_TRACE(::testing::Message() << "chunk " << i << ": " << chunk.text);
    EXPECT_EQ(chunk.chunk_no, static_cast<int32_t>(i));
    EXPECT_EQ(chunk.id, MakeChunkId(chunk.doc_id, chunk.chunk_no));
    EXPECT_FALSE(chunk.text.empty());
    EXPECT_FALSE(IsSpace(chunk.text.front()));
    EXPECT_FALSE(IsSpace(chunk.text.back()));
    EXPECT_TRUE(IsValidUtf8(chunk.text));
    const int64_t n_tokens =
        static_cast<int64_t>(tokenizer.Encode(chunk.text, /*parse_special=*/false).size());
    EXPECT_EQ(chunk.n_tokens, n_tokens);
    EXPECT_LE(chunk.n_tokens, max_tokens);
    EXPECT_GE(chunk.begin, 0);
    EXPECT_LT(chunk.begin, chunk.end);
    EXPECT_LE(chunk.end, static_cast<int64_t>(original.size()));
    if (i > 0) {  // chunks advance through the document
      EXPECT_GT(chunk.begin, chunks[i - 1].begin);
      EXPECT_GT(chunk.end, chunks[i - 1].end);
    }
  }
}

// Checks that every non-whitespace byte of a plain text lies in some chunk.
void ExpectCoversPlainText(const std::vector<Chunk>& chunks, std::string_view text) {
  std::vector<bool> covered(text.size(), false);
  for (const Chunk& chunk : chunks) {
    for (int64_t k = chunk.begin; k < chunk.end; ++k) covered[k] = true;
  }
  for (size_t k = 0; k < text.size(); ++k) {
    if (!IsSpace(text[k])) {
      ASSERT_TRUE(covered[k]) << "byte " << k << " is in no chunk";
    }
  }
}

TEST(ChunkerOptionsTest, RejectsBadOptions) {
  EXPECT_OK(ValidateChunkerOptions({}));
  EXPECT_OK(ValidateChunkerOptions({.max_tokens = 8, .overlap_tokens = 7}));
  EXPECT_OK(ValidateChunkerOptions({.max_tokens = 64, .overlap_tokens = 0}));
  EXPECT_THAT(ValidateChunkerOptions({.max_tokens = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens")));
  EXPECT_THAT(ValidateChunkerOptions({.max_tokens = -5, .overlap_tokens = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens")));
  EXPECT_THAT(ValidateChunkerOptions({.max_tokens = kMinMaxTokens - 1, .overlap_tokens = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_tokens")));
  EXPECT_THAT(ValidateChunkerOptions({.max_tokens = 64, .overlap_tokens = 64}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlap_tokens")));
  EXPECT_THAT(ValidateChunkerOptions({.max_tokens = 64, .overlap_tokens = 100}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlap_tokens")));
  EXPECT_THAT(ValidateChunkerOptions({.max_tokens = 64, .overlap_tokens = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlap_tokens")));
  EXPECT_THAT(ValidateChunkerOptions({.max_document_bytes = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_document_bytes")));
  EXPECT_THAT(Chunker::Create(TinyTokenizer(), {.max_tokens = 32, .overlap_tokens = 32}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ChunkerTest, EmptyDocumentsHaveNoChunks) {
  const Chunker chunker = MakeChunker(64, 8);
  for (const auto& [text, format] : std::vector<std::pair<std::string, DocumentFormat>>{
           {"", DocumentFormat::kPlainText},
           {" \n\n\t \r\n", DocumentFormat::kPlainText},
           {"", DocumentFormat::kHtml},
           {"<html><head><style>p { color: red }</style><script>var x = 1;</script></head>"
            "<body> <!-- nothing --> </body></html>",
            DocumentFormat::kHtml},
           {"```\n```\n", DocumentFormat::kMarkdown},
           {".. index:: spam\n\n.. a comment\n   more comment\n",
            DocumentFormat::kRestructuredText},
       }) {
    ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("doc", "", text, format));
    EXPECT_TRUE(chunks.empty()) << "for " << text << ": " << chunks.front().text;
  }
}

TEST(ChunkerTest, BadInputIsInvalidArgument) {
  const Chunker chunker = MakeChunker(64, 8);
  EXPECT_THAT(chunker.ChunkDocument("", "a.txt", "text"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("document id")));
  EXPECT_THAT(chunker.ChunkDocument("doc", "a.pdf", "text"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a.pdf")));
  // An explicit format overrides the extension.
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks,
                       chunker.ChunkDocument("doc", "a.pdf", "<b>bold</b>", DocumentFormat::kHtml));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].text, "bold");
  ASSERT_OK_AND_ASSIGN(const Chunker small,
                       Chunker::Create(TinyTokenizer(), {.max_document_bytes = 10}));
  EXPECT_THAT(small.ChunkDocument("doc", "a.txt", "eleven byte"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("allowed")));
}

TEST(ChunkerTest, WindowsNeverExceedMaxTokens) {
  const std::string text = MakeProse(12, 7, 1);
  for (const std::string kind : {"gpt2", "llama3", "qwen2"}) {
    const engine::Tokenizer& tokenizer = TinyTokenizer(kind);
    for (const auto& [max_tokens, overlap] :
         std::vector<std::pair<int, int>>{{8, 0}, {8, 7}, {16, 4}, {40, 10}, {64, 32}, {256, 32}}) {
      SCOPED_TRACE(::testing::Message() << kind << " max " << max_tokens << " overlap " << overlap);
      const Chunker chunker = MakeChunker(max_tokens, overlap, tokenizer);
      ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks,
                           chunker.ChunkDocument("prose", "prose.txt", text));
      ASSERT_GT(chunks.size(), 1u);
      ExpectWellFormed(chunks, text, tokenizer, max_tokens);
      ExpectCoversPlainText(chunks, text);
      EXPECT_EQ(chunks.front().begin, 0);
      EXPECT_EQ(chunks.back().end, static_cast<int64_t>(text.size()));
    }
  }
}

TEST(ChunkerTest, PlainTextOffsetsAreTheChunkText) {
  const std::string text = "  " + MakeProse(6, 5, 2) + "\n\n";
  const Chunker chunker = MakeChunker(48, 12);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
  ASSERT_GT(chunks.size(), 3u);
  for (const Chunk& chunk : chunks) {
    EXPECT_EQ(text.substr(chunk.begin, chunk.end - chunk.begin), chunk.text);
    EXPECT_EQ(chunk.source_path, "d.txt");
    EXPECT_EQ(chunk.doc_id, "d");
    EXPECT_EQ(chunk.title, "");
  }
  EXPECT_EQ(chunks.front().begin, 2);
}

TEST(ChunkerTest, ConsecutiveChunksOverlap) {
  const std::string text = MakeProse(1, 40, 3);  // one paragraph: cuts at sentences
  const int32_t kOverlap = 12;
  const Chunker chunker = MakeChunker(64, kOverlap);
  const engine::Tokenizer& tokenizer = TinyTokenizer();
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
  ASSERT_GT(chunks.size(), 3u);
  int n_overlapping = 0;
  for (size_t i = 1; i < chunks.size(); ++i) {
    const Chunk& previous = chunks[i - 1];
    const Chunk& chunk = chunks[i];
    if (chunk.begin >= previous.end) continue;
    ++n_overlapping;
    // The shared text ends the previous chunk and starts this one, on a word boundary.
    const std::string shared = text.substr(chunk.begin, previous.end - chunk.begin);
    EXPECT_TRUE(previous.text.ends_with(shared)) << shared;
    EXPECT_TRUE(chunk.text.starts_with(shared)) << shared;
    EXPECT_TRUE(IsSpace(text[chunk.begin - 1])) << "overlap starts inside a word";
    // About overlap_tokens tokens: counted inside the document, its first word may take one
    // more token alone.
    EXPECT_LE(tokenizer.Encode(shared, false).size(), static_cast<size_t>(kOverlap + 2));
  }
  EXPECT_GE(n_overlapping, static_cast<int>(chunks.size()) - 2);

  // Without overlap, chunks abut: only whitespace lies between them.
  const Chunker no_overlap = MakeChunker(64, 0);
  ASSERT_OK_AND_ASSIGN(chunks, no_overlap.ChunkDocument("d", "d.txt", text));
  for (size_t i = 1; i < chunks.size(); ++i) {
    ASSERT_GE(chunks[i].begin, chunks[i - 1].end);
    for (int64_t k = chunks[i - 1].end; k < chunks[i].begin; ++k) EXPECT_TRUE(IsSpace(text[k]));
  }
}

TEST(ChunkerTest, CutsAtParagraphEnds) {
  // Each paragraph alone fits in a window (more than half of it); two do not.
  const Chunker chunker = MakeChunker(96, 0);
  const engine::Tokenizer& tokenizer = TinyTokenizer();
  std::string text;
  std::vector<int64_t> paragraph_ends;
  for (uint32_t seed = 0; paragraph_ends.size() < 8; ++seed) {
    const std::string paragraph = MakeProse(1, 4, 100 + seed);
    const size_t n_tokens = tokenizer.Encode(paragraph, false).size();
    if (n_tokens < 52 || n_tokens > 90) continue;
    if (!text.empty()) text += "\n\n";
    text += paragraph;
    paragraph_ends.push_back(static_cast<int64_t>(text.size()));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
  ASSERT_EQ(chunks.size(), paragraph_ends.size());
  for (size_t i = 0; i < chunks.size(); ++i) EXPECT_EQ(chunks[i].end, paragraph_ends[i]);
}

TEST(ChunkerTest, CutsAtSentenceEndsInsideParagraphs) {
  const std::string text = MakeProse(2, 30, 4);
  const Chunker chunker = MakeChunker(80, 0);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
  ASSERT_GT(chunks.size(), 4u);
  for (const Chunk& chunk : chunks) {
    EXPECT_EQ(chunk.text.back(), '.') << chunk.text;
    EXPECT_TRUE(chunk.begin == 0 || IsSpace(text[chunk.begin - 1])) << chunk.text;
  }
}

TEST(ChunkerTest, LongSentencesAreCutBetweenWords) {
  // No sentence end at all: cuts fall at spaces, never inside a word.
  std::string text;
  for (int i = 0; i < 300; ++i) text += (i % 3 == 0 ? "alpha " : i % 3 == 1 ? "beta " : "gamma ");
  const Chunker chunker = MakeChunker(24, 6);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
  ASSERT_GT(chunks.size(), 10u);
  ExpectWellFormed(chunks, text, TinyTokenizer(), 24);
  ExpectCoversPlainText(chunks, text);
  for (const Chunk& chunk : chunks) {
    EXPECT_TRUE(chunk.begin == 0 || IsSpace(text[chunk.begin - 1])) << chunk.text;
    EXPECT_TRUE(IsSpace(text[chunk.end])) << chunk.text;
  }
}

TEST(ChunkerTest, WordsLongerThanTheWindowAreCutHard) {
  // A 3000-byte "word" with 2-byte characters: cut at character boundaries only.
  std::string blob;
  for (int i = 0; i < 1000; ++i) blob += i % 2 ? "\xC3\xA9" : "x";  // é
  const std::string text = "Before. " + blob + " After.";
  const Chunker chunker = MakeChunker(32, 8);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
  ASSERT_GT(chunks.size(), 10u);
  ExpectWellFormed(chunks, text, TinyTokenizer(), 32);
  ExpectCoversPlainText(chunks, text);
  for (const Chunk& chunk : chunks) {
    EXPECT_EQ(text.substr(chunk.begin, chunk.end - chunk.begin), chunk.text);
  }
  EXPECT_EQ(chunks.front().text, "Before.");
  EXPECT_EQ(chunks.back().text.substr(chunks.back().text.size() - 6), "After.");
}

TEST(ChunkerTest, HtmlIsStripped) {
  const std::string html =
      "<!DOCTYPE html>\n<html><head><title>Fish &amp; Chips</title>\n"
      "<style>body { color: red; }</style>\n"
      "<script type=\"text/javascript\">var s = \"<p>not text</p>\"; if (a < b) {}</SCRIPT>\n"
      "</head><body>\n"
      "<h1 id=\"x\">Intro<a class=\"headerlink\" href=\"#x\">\xC2\xB6</a></h1>\n"
      "<p>Fish &lt;3   chips &#39;n&#x27; peas&nbsp;&mdash; always &eacute;t&eacute;.\n"
      "  It&apos;s <b>bold</b> and <i>it</i>alic, &unknown; &amp stays.</p>\n"
      "<!-- a <p>comment</p> -->\n"
      "<pre>  code\n    indented</pre>\n"
      "<ul><li>one</li><li>two</li></ul>\n"
      "</body></html>\n";
  const Chunker chunker = MakeChunker(256, 0);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.html", html));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].text,
            "Fish & Chips\n\nIntro\xC2\xB6\n\n"
            "Fish <3 chips 'n' peas \xE2\x80\x94 always \xC3\xA9t\xC3\xA9. It's bold and italic, "
            "&unknown; &amp stays.\n\n"
            "  code\n    indented\n\none\ntwo");
  EXPECT_THAT(chunks[0].text, Not(HasSubstr("color")));
  EXPECT_THAT(chunks[0].text, Not(HasSubstr("not text")));
  EXPECT_THAT(chunks[0].text, Not(HasSubstr("comment")));
  // The range runs from the first text to the last, in the HTML.
  EXPECT_EQ(chunks[0].begin, static_cast<int64_t>(html.find("Fish &amp;")));
  EXPECT_EQ(chunks[0].end, static_cast<int64_t>(html.find("two") + 3));
}

TEST(ChunkerTest, HtmlReferencesDecodeSafely) {
  const Chunker chunker = MakeChunker(64, 0);
  ASSERT_OK_AND_ASSIGN(
      std::vector<Chunk> chunks,
      chunker.ChunkDocument("d", "d.htm",
                            "&#0; &#xD800; &#x110000; &#99999999999; &#65;&#x42;&Alpha;&sigmaf;"
                            "&#; &#x; a<b c &lt"));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].text,
            "\xEF\xBF\xBD \xEF\xBF\xBD \xEF\xBF\xBD &#99999999999; AB\xCE\x91\xCF\x82&#; &#x; a");
}

TEST(ChunkerTest, HtmlOffsetsCoverTheSourceOfEachChunk) {
  std::string html = "<html><body>\n";
  const std::string prose = MakeProse(6, 6, 5);
  size_t pos = 0;
  int n = 0;
  while (pos < prose.size()) {
    size_t end = prose.find("\n\n", pos);
    if (end == std::string::npos) end = prose.size();
    std::string paragraph = prose.substr(pos, end - pos);
    // Some markup and references inside the paragraph.
    if (size_t space = paragraph.find(' '); space != std::string::npos) {
      paragraph.replace(space, 1, " <em>&amp;</em>\n   ");
    }
    html += (n % 2 ? "<div><h2>Part " : "<section><h3>Step ") + std::to_string(n) +
            (n % 2 ? "</h2><p>" : "</h3><p class=\"x\">") + paragraph +
            (n % 2 ? "</p></div>\n" : "</p></section>\n");
    pos = end + 2;
    ++n;
  }
  html += "</body></html>";
  const Chunker chunker = MakeChunker(40, 10);
  const Chunker whole = MakeChunker(4096, 0);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.html", html));
  ASSERT_GT(chunks.size(), 6u);
  ExpectWellFormed(chunks, html, TinyTokenizer(), 40);
  for (const Chunk& chunk : chunks) {
    // The HTML of [begin, end), read alone, is the chunk's text: the range holds its source.
    const std::string source = html.substr(chunk.begin, chunk.end - chunk.begin);
    ASSERT_OK_AND_ASSIGN(std::vector<Chunk> again, whole.ChunkDocument("s", "s.html", source));
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].text, chunk.text) << source;
    EXPECT_NE(html[chunk.begin], '<');
    EXPECT_NE(html[chunk.end - 1], '>');
    EXPECT_THAT(chunk.title, ::testing::MatchesRegex("(Part|Step) [0-9]+"));
  }
}

TEST(ChunkerTest, MarkdownHeadingsBecomeTitles) {
  const std::string alpha = MakeProse(2, 6, 6);
  const std::string beta = MakeProse(2, 6, 7);
  const std::string gamma = MakeProse(1, 6, 8);
  const std::string markdown = "# Top Title\n\n" + alpha + "\n\n## Beta part ##\n" + beta +
                               "\n\nGamma part\n==========\n" + gamma +
                               "\n\n```python\n# not a heading\nx = 1\n```\n\n---\n\nTail words.\n";
  const Chunker chunker = MakeChunker(48, 12);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks,
                       chunker.ChunkDocument("d", "README.md", markdown));
  ExpectWellFormed(chunks, markdown, TinyTokenizer(), 48);
  ASSERT_EQ(chunks.front().title, "Top Title");
  EXPECT_TRUE(chunks.front().text.starts_with("Top Title\n\n")) << chunks.front().text;
  std::set<std::string> titles;
  for (const Chunk& chunk : chunks) {
    titles.insert(chunk.title);
    if (chunk.text.find("not a heading") != std::string::npos) continue;
    EXPECT_THAT(chunk.text, Not(HasSubstr("#"))) << "heading hashes kept";
    EXPECT_THAT(chunk.text, Not(HasSubstr("===")));
    EXPECT_THAT(chunk.text, Not(HasSubstr("```")));
    EXPECT_THAT(chunk.text, Not(HasSubstr("---")));
    // Overlap never reaches back across a heading: a chunk holds one section's text, and its
    // title is that section's heading.
    const std::string start = chunk.text.substr(0, 20);
    if (beta.find(start) != std::string::npos || start.starts_with("Beta part")) {
      EXPECT_EQ(chunk.title, "Beta part") << chunk.text;
    }
    if (gamma.find(start) != std::string::npos || start.starts_with("Gamma part")) {
      EXPECT_EQ(chunk.title, "Gamma part") << chunk.text;
    }
  }
  EXPECT_EQ(titles, (std::set<std::string>{"Top Title", "Beta part", "Gamma part"}));
  // The code block stays, and its comment is no heading.
  bool code_seen = false;
  for (const Chunk& chunk : chunks) {
    if (chunk.text.find("# not a heading\nx = 1") != std::string::npos) {
      code_seen = true;
      EXPECT_EQ(chunk.title, "Gamma part");
    }
  }
  EXPECT_TRUE(code_seen);
}

TEST(ChunkerTest, RestructuredTextHeadingsAndMarkup) {
  const std::string rst =
      ".. _json-module:\n"
      "\n"
      "======================\n"
      " JSON encoder\n"
      "======================\n"
      "\n"
      ".. module:: json\n"
      "   :synopsis: Encode and decode the JSON format.\n"
      "\n"
      ".. index:: single: JSON\n"
      "   pair: encoding; JSON\n"
      "\n"
      "Intro text here.\n"
      "\n"
      ".. This is a comment\n"
      "   that goes on.\n"
      "\n"
      "Basic usage\n"
      "-----------\n"
      "\n"
      ".. function:: dumps(obj)\n"
      "\n"
      "   Serialize *obj* to a string.\n"
      "\n"
      "   .. versionadded:: 3.2\n"
      "\n"
      "----\n"
      "\n"
      "Last words [#]_.\n"
      "\n"
      ".. [#] A footnote.\n";
  const Chunker chunker = MakeChunker(256, 0);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks,
                       chunker.ChunkDocument("library/json.rst.txt", "json.rst.txt", rst));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].title, "JSON encoder");
  EXPECT_EQ(chunks[0].text,
            "JSON encoder\n\n"
            ".. module:: json\n"
            "   :synopsis: Encode and decode the JSON format.\n\n"
            "Intro text here.\n\n"
            "Basic usage\n\n"
            ".. function:: dumps(obj)\n\n"
            "   Serialize *obj* to a string.\n\n"
            "   .. versionadded:: 3.2\n\n"
            "Last words [#]_.\n\n"
            ".. [#] A footnote.");
  EXPECT_EQ(chunks[0].begin, static_cast<int64_t>(rst.find("JSON encoder")));
  EXPECT_EQ(chunks[0].end, static_cast<int64_t>(rst.size() - 1));

  // Small windows: the title follows the sections.
  const Chunker small = MakeChunker(16, 4);
  ASSERT_OK_AND_ASSIGN(chunks, small.ChunkDocument("j", "json.rst", rst));
  ASSERT_GT(chunks.size(), 4u);
  ExpectWellFormed(chunks, rst, TinyTokenizer(), 16);
  for (const Chunk& chunk : chunks) {
    const bool after_basic = chunk.begin >= static_cast<int64_t>(rst.find("Basic usage"));
    EXPECT_EQ(chunk.title, after_basic ? "Basic usage" : "JSON encoder") << chunk.text;
  }
}

TEST(ChunkerTest, IdsAreStable) {
  const std::string text = MakeProse(4, 6, 9);
  const Chunker chunker = MakeChunker(48, 8);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> first, chunker.ChunkDocument("a/x.txt", "x.txt", text));
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> second, chunker.ChunkDocument("a/x.txt", "x.txt", text));
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> other, chunker.ChunkDocument("b/x.txt", "x.txt", text));
  ASSERT_GT(first.size(), 2u);
  ASSERT_EQ(first.size(), second.size());
  ASSERT_EQ(first.size(), other.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].id, "a/x.txt:" + std::to_string(i));
    EXPECT_EQ(first[i].id, second[i].id);
    EXPECT_EQ(first[i].text, second[i].text);
    EXPECT_EQ(other[i].id, "b/x.txt:" + std::to_string(i));
  }
}

TEST(ChunkIdTest, MakeChunkId) {
  EXPECT_EQ(MakeChunkId("library/json.rst.txt", 0), "library/json.rst.txt:0");
}

TEST(ChunkIdTest, DocIdFromPath) {
  EXPECT_THAT(DocIdFromPath("/data/docs", "/data/docs/library/json.rst.txt"),
              ::silo::testing::IsOkAndHolds(std::string("library/json.rst.txt")));
  EXPECT_THAT(DocIdFromPath("/data/docs/", "/data/docs//library/./x/../json.rst.txt"),
              ::silo::testing::IsOkAndHolds(std::string("library/json.rst.txt")));
  EXPECT_THAT(DocIdFromPath("docs", "docs/a.md"),
              ::silo::testing::IsOkAndHolds(std::string("a.md")));
  EXPECT_THAT(DocIdFromPath(".", "a.md"), ::silo::testing::IsOkAndHolds(std::string("a.md")));
  EXPECT_THAT(DocIdFromPath("/data/docs", "/data/other/a.md"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not inside")));
  EXPECT_THAT(DocIdFromPath("/data/docs", "/data/docs/../a.md"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DocIdFromPath("/data/docs", "/data/docs"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DocIdFromPath("/data/docs", "/data/docsx/a.md"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DocIdFromPath("/data/docs", "docs/a.md"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
  EXPECT_THAT(DocIdFromPath("", "a.md"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DocumentFormatTest, FromPath) {
  const std::vector<std::pair<std::string, DocumentFormat>> cases = {
      {"a.txt", DocumentFormat::kPlainText},
      {"dir/README.MD", DocumentFormat::kMarkdown},
      {"x.markdown", DocumentFormat::kMarkdown},
      {"library/json.rst", DocumentFormat::kRestructuredText},
      {"_sources/library/json.rst.txt", DocumentFormat::kRestructuredText},
      {"index.html", DocumentFormat::kHtml},
      {"INDEX.HTM", DocumentFormat::kHtml},
  };
  for (const auto& [path, format] : cases) {
    EXPECT_THAT(DocumentFormatFromPath(path), ::silo::testing::IsOkAndHolds(format)) << path;
  }
  for (const std::string path : {"a.pdf", "README", "x.html/", "dir/.md", "", "a.txt.gz"}) {
    EXPECT_THAT(DocumentFormatFromPath(path), StatusIs(absl::StatusCode::kInvalidArgument)) << path;
  }
  EXPECT_EQ(DocumentFormatName(DocumentFormat::kRestructuredText), "rst");
}

TEST(ChunkerTest, InvalidUtf8BecomesReplacementCharacters) {
  const std::string text =
      "Good start. \xFF\xFE bad \xC3 truncated \xED\xA0\x80 surrogate "
      "\xF0\x9F\x98\x80 fine.";
  const Chunker chunker = MakeChunker(256, 0);
  for (DocumentFormat format : {DocumentFormat::kPlainText, DocumentFormat::kMarkdown,
                                DocumentFormat::kRestructuredText, DocumentFormat::kHtml}) {
    ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d", text, format));
    ASSERT_EQ(chunks.size(), 1u);
    EXPECT_EQ(chunks[0].text,
              "Good start. \xEF\xBF\xBD\xEF\xBF\xBD bad \xEF\xBF\xBD truncated "
              "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD surrogate \xF0\x9F\x98\x80 fine.");
    EXPECT_EQ(chunks[0].begin, 0);
    EXPECT_EQ(chunks[0].end, static_cast<int64_t>(text.size()));
  }
}

TEST(ChunkerTest, ArbitraryBytesNeverBreakIt) {
  std::mt19937 rng(42);
  const std::string alphabet = "<>&#;/!-=`:.? \n\tabcxyzpre<script>";
  for (const std::string kind : {"gpt2", "llama3"}) {
    const engine::Tokenizer& tokenizer = TinyTokenizer(kind);
    const Chunker chunker = MakeChunker(12, 5, tokenizer);
    for (int round = 0; round < 300; ++round) {
      std::string text(rng() % 400, '\0');
      for (char& c : text) {
        c = rng() % 3 == 0 ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
      }
      for (DocumentFormat format : {DocumentFormat::kPlainText, DocumentFormat::kMarkdown,
                                    DocumentFormat::kRestructuredText, DocumentFormat::kHtml}) {
        SCOPED_TRACE(::testing::Message()
                     << kind << " round " << round << " format " << DocumentFormatName(format));
        ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks,
                             chunker.ChunkDocument("d", "d", text, format));
        ExpectWellFormed(chunks, text, tokenizer, 12);
      }
    }
  }
}

TEST(ChunkerTest, TokenizersThatDropOrAddBytes) {
  std::ifstream in(
      std::string(SILO_SOURCE_DIR) + "/tests/engine/fixtures/tiny_tokenizers/gpt2/tokenizer.json",
      std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  const std::string json = contents.str();
  // No token for byte 0x04 ("Ą" in GPT-2's byte alphabet): Encode leaves it out, as
  // SmolLM2's tokenizer leaves out a few control characters. Offsets read off the tokens would
  // drift by a byte at each one.
  std::string no_byte_04 = json;
  const size_t key = no_byte_04.find("\"\xC4\x84\":");
  ASSERT_NE(key, std::string::npos);
  no_byte_04.replace(key, 4, "\"<no-byte-04>\"");
  ASSERT_OK_AND_ASSIGN(const engine::Tokenizer dropping,
                       engine::Tokenizer::FromTokenizerJsonText(no_byte_04, ""));
  ASSERT_TRUE(dropping.Encode("\x04", false).empty());
  // A prefix space added to the text: one byte more than the text holds.
  std::string prefix_space = json;
  const size_t flag = prefix_space.find("\"add_prefix_space\":false");
  ASSERT_NE(flag, std::string::npos);
  prefix_space.replace(flag, 24, "\"add_prefix_space\":true");
  ASSERT_OK_AND_ASSIGN(const engine::Tokenizer adding,
                       engine::Tokenizer::FromTokenizerJsonText(prefix_space, ""));
  EXPECT_THAT(adding.Decode(adding.Encode("a", false)),
              ::silo::testing::IsOkAndHolds(std::string(" a")));

  const std::string prose = MakeProse(8, 8, 11);
  std::string text;
  for (size_t i = 0; i < prose.size(); ++i) {
    text += prose[i];
    if (i % 4 == 0) text += '\x04';
  }
  for (const engine::Tokenizer* tokenizer : {&dropping, &adding}) {
    const Chunker chunker = MakeChunker(32, 8, *tokenizer);
    ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkDocument("d", "d.txt", text));
    ASSERT_GT(chunks.size(), 20u);
    ExpectWellFormed(chunks, text, *tokenizer, 32);
    ExpectCoversPlainText(chunks, text);
    // The windows are filled, not cut short by counts gone astray.
    int64_t n_tokens = 0;
    for (const Chunk& chunk : chunks) n_tokens += chunk.n_tokens;
    EXPECT_GT(n_tokens / static_cast<int64_t>(chunks.size()), 20);
  }
}

TEST(ChunkerTest, ChunkFileUsesTheRelativePath) {
  silo::testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "library");
  const std::string path = dir.WriteFile("library/json.rst.txt", "Title\n=====\n\nSome text.\n");
  const Chunker chunker = MakeChunker(64, 8);
  ASSERT_OK_AND_ASSIGN(std::vector<Chunk> chunks, chunker.ChunkFile(dir.path().string(), path));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].doc_id, "library/json.rst.txt");
  EXPECT_EQ(chunks[0].id, "library/json.rst.txt:0");
  EXPECT_EQ(chunks[0].source_path, path);
  EXPECT_EQ(chunks[0].title, "Title");
  EXPECT_EQ(chunks[0].text, "Title\n\nSome text.");
  EXPECT_THAT(chunker.ChunkFile(dir.path().string(), (dir.path() / "missing.txt").string()),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(chunker.ChunkFile("/elsewhere", path), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::retrieval
