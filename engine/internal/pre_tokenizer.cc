#include "engine/internal/pre_tokenizer.h"

#include <array>
#include <string>

#include "absl/status/status.h"
#include "common/strings.h"
#include "engine/internal/unicode_tables.h"

namespace silo::engine::internal {
namespace {

// A scanner over `text` that classifies code points the way the patterns do.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  size_t size() const { return text_.size(); }
  // Byte length of the code point at `pos`.
  size_t Length(size_t pos) const { return DecodeCodepoint(text_, pos).length; }
  // Class mask of the code point at `pos` (0 past the end and for invalid bytes).
  uint8_t Class(size_t pos) const {
    if (pos >= text_.size()) return 0;
    const auto byte = static_cast<unsigned char>(text_[pos]);
    if (byte < 0x80) return kAsciiClass[byte];
    const DecodedCodepoint c = DecodeCodepoint(text_, pos);
    return c.codepoint == kInvalidCodepoint ? 0 : Classify(c.codepoint);
  }
  bool Is(size_t pos, uint8_t mask) const { return (Class(pos) & mask) != 0; }
  bool IsOther(size_t pos) const { return pos < text_.size() && Class(pos) == 0; }
  char At(size_t pos) const { return pos < text_.size() ? text_[pos] : '\0'; }

  // End of the run of code points from `pos` whose class has a bit of `mask`.
  size_t SkipWhile(size_t pos, uint8_t mask) const {
    while (pos < text_.size() && Is(pos, mask)) pos += Length(pos);
    return pos;
  }
  // End of the run of code points from `pos` of no class (not letter, number nor whitespace).
  size_t SkipOther(size_t pos) const {
    while (IsOther(pos)) pos += Length(pos);
    return pos;
  }

  // Matches 's|'t|'re|'ve|'m|'ll|'d at `pos`; returns the end, or `pos` when none matches.
  size_t Contraction(size_t pos, bool ignore_case) const {
    if (At(pos) != '\'') return pos;
    auto lower = [&](size_t p) {
      const char c = At(p);
      return ignore_case && c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    };
    const char a = lower(pos + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
    const char b = lower(pos + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
    return pos;
  }

  // \s+(?!\S)|\s+ at `pos` (a whitespace code point): the whole run when it ends the text or
  // is one code point long, otherwise the run less its last code point.
  size_t WhitespaceRun(size_t pos) const {
    size_t last = pos;
    size_t end = pos;
    while (end < text_.size() && Is(end, kWhitespace)) {
      last = end;
      end += Length(end);
    }
    if (end == text_.size() || last == pos) return end;
    return last;
  }

 private:
  static constexpr auto kAsciiClass = [] {
    std::array<uint8_t, 128> table{};
    for (int c = 0; c < 128; ++c) {
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) table[c] = kLetter;
      if (c >= '0' && c <= '9') table[c] = kNumber;
      if (c == ' ' || (c >= 0x09 && c <= 0x0D)) table[c] = kWhitespace;
    }
    return table;
  }();

  std::string_view text_;
};

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t NextGpt2(const Scanner& s, size_t pos) {
  if (size_t end = s.Contraction(pos, /*ignore_case=*/false); end != pos) return end;
  const size_t k = s.At(pos) == ' ' ? pos + 1 : pos;
  if (s.Is(k, kLetter)) return s.SkipWhile(k, kLetter);
  if (s.Is(k, kNumber)) return s.SkipWhile(k, kNumber);
  if (s.IsOther(k)) return s.SkipOther(k);
  return s.WhitespaceRun(pos);  // `pos` is whitespace here
}

// Llama-3 (max_digits 3) and Qwen2 (max_digits 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t NextLlama3(const Scanner& s, size_t pos, int max_digits) {
  if (size_t end = s.Contraction(pos, /*ignore_case=*/true); end != pos) return end;
  if (s.Is(pos, kLetter)) return s.SkipWhile(pos, kLetter);
  const char c = s.At(pos);
  if (c != '\r' && c != '\n' && !s.Is(pos, kNumber)) {
    const size_t next = pos + s.Length(pos);
    if (s.Is(next, kLetter)) return s.SkipWhile(next, kLetter);
  }
  if (s.Is(pos, kNumber)) {
    size_t end = pos;
    for (int i = 0; i < max_digits && s.Is(end, kNumber); ++i) end += s.Length(end);
    return end;
  }
  const size_t k = c == ' ' ? pos + 1 : pos;
  if (s.IsOther(k)) {
    size_t end = s.SkipOther(k);
    while (s.At(end) == '\r' || s.At(end) == '\n') ++end;
    return end;
  }
  // Whitespace from here. \s*[\r\n]+ ends after the run's last \r or \n, if it has one.
  size_t end = pos;
  size_t after_newline = pos;
  while (end < s.size() && s.Is(end, kWhitespace)) {
    if (s.At(end) == '\r' || s.At(end) == '\n') after_newline = end + 1;
    end += s.Length(end);
  }
  if (after_newline != pos) return after_newline;
  return s.WhitespaceRun(pos);
}

void SplitGpt2(std::string_view text, std::vector<std::string_view>* pieces) {
  const Scanner s(text);
  for (size_t pos = 0; pos < text.size();) {
    size_t end = NextGpt2(s, pos);
    if (end <= pos) end = pos + s.Length(pos);  // cannot happen; keeps the loop finite
    pieces->push_back(text.substr(pos, end - pos));
    pos = end;
  }
}

}  // namespace

DecodedCodepoint DecodeCodepoint(std::string_view text, size_t pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  const size_t left = text.size() - pos;
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return {b0, 1};
  size_t n;
  uint32_t cp;
  uint32_t min;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {kInvalidCodepoint, 1};
  }
  if (left < n) return {kInvalidCodepoint, 1};
  for (size_t i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return {kInvalidCodepoint, 1};
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {kInvalidCodepoint, 1};
  return {cp, n};
}

absl::StatusOr<PreTokenizerKind> PreTokenizerKindFromGgufName(std::string_view name) {
  // llama.cpp's names (src/llama-vocab.cpp) whose expressions equal one of ours.
  for (std::string_view n : {"gpt-2", "gpt2", "phi-2", "roberta-bpe", "jina-es", "jina-de"}) {
    if (name == n) return PreTokenizerKind::kGpt2;
  }
  for (std::string_view n : {"smollm", "starcoder", "refact", "codeshell", "command-r"}) {
    if (name == n) return PreTokenizerKind::kSmolLm;
  }
  for (std::string_view n : {"llama3", "llama-v3", "llama-bpe", "smaug-bpe"}) {
    if (name == n) return PreTokenizerKind::kLlama3;
  }
  for (std::string_view n : {"qwen2", "deepseek-r1-qwen"}) {
    if (name == n) return PreTokenizerKind::kQwen2;
  }
  return absl::InvalidArgumentError(
      StrCat("unsupported pre-tokenizer \"", name,
             "\" (tokenizer.ggml.pre): supported are gpt-2, smollm, llama-bpe and qwen2 kinds"));
}

std::vector<std::string_view> PreTokenize(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::string_view> pieces;
  pieces.reserve(text.size() / 4 + 1);
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      SplitGpt2(text, &pieces);
      break;
    case PreTokenizerKind::kSmolLm: {
      // Every number code point alone; the runs between them through GPT-2's expression.
      const Scanner s(text);
      size_t start = 0;
      for (size_t pos = 0; pos < text.size();) {
        const size_t length = s.Length(pos);
        if (s.Is(pos, kNumber)) {
          SplitGpt2(text.substr(start, pos - start), &pieces);
          pieces.push_back(text.substr(pos, length));
          start = pos + length;
        }
        pos += length;
      }
      SplitGpt2(text.substr(start), &pieces);
      break;
    }
    case PreTokenizerKind::kLlama3:
    case PreTokenizerKind::kQwen2: {
      const int max_digits = kind == PreTokenizerKind::kLlama3 ? 3 : 1;
      const Scanner s(text);
      for (size_t pos = 0; pos < text.size();) {
        size_t end = NextLlama3(s, pos, max_digits);
        if (end <= pos) end = pos + s.Length(pos);
        pieces.push_back(text.substr(pos, end - pos));
        pos = end;
      }
      break;
    }
  }
  return pieces;
}

}  // namespace silo::engine::internal
