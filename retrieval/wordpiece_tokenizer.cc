#include "retrieval/wordpiece_tokenizer.h"

#include <algorithm>
#include <string>
#include <utility>

#include "common/json.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "retrieval/internal/bert_unicode_data.h"
#include "retrieval/internal/read_file.h"

namespace silo::retrieval {
namespace {

using internal::CharMapping;

constexpr char32_t kReplacementChar = 0xFFFD;
constexpr int64_t kMaxVocabTokens = 1 << 24;
constexpr int64_t kMaxConfigBytes = 1 << 20;

// Decodes the code point at text[pos] and advances pos past it. A byte that does not start a
// well-formed sequence (truncated, overlong, surrogate, above U+10FFFF) is U+FFFD on its own.
char32_t DecodeUtf8(std::string_view text, size_t& pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) {
    ++pos;
    return b0;
  }
  int length = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    length = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    length = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    length = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    ++pos;
    return kReplacementChar;
  }
  if (text.size() - pos < static_cast<size_t>(length)) {
    ++pos;
    return kReplacementChar;
  }
  for (int i = 1; i < length; ++i) {
    const uint8_t b = byte(pos + i);
    if ((b & 0xC0) != 0x80) {
      ++pos;
      return kReplacementChar;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++pos;
    return kReplacementChar;
  }
  pos += length;
  return cp;
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint8_t FlagsOf(char32_t cp) {
  const internal::CharFlagsRun* begin = internal::kCharFlagsRuns;
  const internal::CharFlagsRun* end = begin + internal::kCharFlagsRunsSize;
  const auto* run = std::upper_bound(
      begin, end, cp, [](char32_t c, const internal::CharFlagsRun& r) { return c < r.first; });
  return (run - 1)->flags;  // the first run starts at 0
}

// The mapping of `cp` in a generated table, or nullptr when the table leaves it unchanged.
const CharMapping* FindMapping(const CharMapping* table, int size, char32_t cp) {
  const CharMapping* end = table + size;
  const CharMapping* it = std::lower_bound(
      table, end, cp, [](const CharMapping& m, char32_t c) { return m.code_point < c; });
  return it != end && it->code_point == cp ? it : nullptr;
}

constexpr char32_t kHangulFirst = 0xAC00;
constexpr char32_t kHangulLast = 0xD7A3;

// Parses tokenizer_config.json's options.
absl::StatusOr<WordPieceOptions> OptionsFromConfig(std::string_view text) {
  SILO_ASSIGN_OR_RETURN(const JsonValue config, ParseJson(text));
  if (!config.is_object()) return absl::InvalidArgumentError("tokenizer config is not an object");
  WordPieceOptions options;
  if (const JsonValue* v = config.Find("do_lower_case"); v != nullptr && !v->is_null()) {
    SILO_ASSIGN_OR_RETURN(options.lower_case, v->AsBool());
  }
  options.strip_accents = options.lower_case;
  if (const JsonValue* v = config.Find("strip_accents"); v != nullptr && !v->is_null()) {
    SILO_ASSIGN_OR_RETURN(options.strip_accents, v->AsBool());
  }
  if (const JsonValue* v = config.Find("tokenize_chinese_chars"); v != nullptr && !v->is_null()) {
    SILO_ASSIGN_OR_RETURN(options.tokenize_chinese_chars, v->AsBool());
  }
  return options;
}

}  // namespace

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromVocab(std::vector<std::string> tokens,
                                                                 const WordPieceOptions& options) {
  if (tokens.empty()) return absl::InvalidArgumentError("empty WordPiece vocabulary");
  if (static_cast<int64_t>(tokens.size()) > kMaxVocabTokens) {
    return absl::InvalidArgumentError(
        StrCat("WordPiece vocabulary of ", tokens.size(), " tokens, more than ", kMaxVocabTokens));
  }
  if (options.max_chars_per_word < 1) {
    return absl::InvalidArgumentError("max_chars_per_word must be positive");
  }
  WordPieceTokenizer tokenizer;
  tokenizer.options_ = options;
  tokenizer.tokens_ = std::move(tokens);
  tokenizer.ids_.reserve(tokenizer.tokens_.size());
  for (size_t i = 0; i < tokenizer.tokens_.size(); ++i) {
    tokenizer.ids_.insert_or_assign(tokenizer.tokens_[i], static_cast<int32_t>(i));
  }
  const auto find = [&](std::string_view token) -> absl::StatusOr<int32_t> {
    const auto it = tokenizer.ids_.find(token);
    if (it == tokenizer.ids_.end()) {
      return absl::InvalidArgumentError(StrCat("WordPiece vocabulary has no ", token));
    }
    return it->second;
  };
  SILO_ASSIGN_OR_RETURN(tokenizer.unk_id_, find("[UNK]"));
  SILO_ASSIGN_OR_RETURN(tokenizer.cls_id_, find("[CLS]"));
  SILO_ASSIGN_OR_RETURN(tokenizer.sep_id_, find("[SEP]"));
  SILO_ASSIGN_OR_RETURN(tokenizer.pad_id_, find("[PAD]"));
  for (const std::string_view special : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    if (const auto it = tokenizer.ids_.find(special); it != tokenizer.ids_.end()) {
      tokenizer.special_tokens_.push_back({std::string(special), it->second});
    }
  }
  return tokenizer;
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromVocabFile(
    const std::string& path, const WordPieceOptions& options) {
  SILO_ASSIGN_OR_RETURN(const std::string text, internal::ReadSmallFile(path, kMaxVocabBytes));
  std::vector<std::string> tokens;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    tokens.emplace_back(line);
    begin = end + 1;
  }
  absl::StatusOr<WordPieceTokenizer> tokenizer = FromVocab(std::move(tokens), options);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromModelDir(const std::string& dir) {
  WordPieceOptions options;
  const std::string config_path = StrCat(dir, "/tokenizer_config.json");
  absl::StatusOr<std::string> config = internal::ReadSmallFile(config_path, kMaxConfigBytes);
  if (config.ok()) {
    absl::StatusOr<WordPieceOptions> parsed = OptionsFromConfig(*config);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(StrCat(config_path, ": ", parsed.status().message()));
    }
    options = *parsed;
  } else if (!absl::IsNotFound(config.status())) {
    return config.status();
  }
  return FromVocabFile(StrCat(dir, "/vocab.txt"), options);
}

void WordPieceTokenizer::ForEachWord(
    std::string_view text, const std::function<bool(std::string_view, int32_t)>& on_word) const {
  std::string word;  // the word being built, normalized UTF-8
  std::string punctuation;
  const auto flush = [&]() {
    if (word.empty()) return true;
    const bool go_on = on_word(word, -1);
    word.clear();
    return go_on;
  };
  // Step 3 on one normalized character.
  const auto split = [&](char32_t cp) {
    const uint8_t flags = FlagsOf(cp);
    if (flags & internal::kFlagWhitespace) return flush();
    if (flags & internal::kFlagPunctuation) {
      if (!flush()) return false;
      punctuation.clear();
      AppendUtf8(cp, punctuation);
      return on_word(punctuation, -1);
    }
    AppendUtf8(cp, word);
    return true;
  };
  const auto lower = [&](char32_t cp) {
    if (!options_.lower_case) return split(cp);
    if (cp < 0x80) return split(cp >= 'A' && cp <= 'Z' ? cp + ('a' - 'A') : cp);
    const CharMapping* m = FindMapping(internal::kLowercase, internal::kLowercaseSize, cp);
    if (m == nullptr) return split(cp);
    for (int i = 0; i < m->size; ++i) {
      if (!split(internal::kLowercasePool[m->offset + i])) return false;
    }
    return true;
  };
  const auto strip = [&](char32_t cp) {
    if (!options_.strip_accents || cp < 0x80) return lower(cp);
    if (cp >= kHangulFirst && cp <= kHangulLast) {  // Unicode's algorithmic decomposition
      const char32_t s = cp - kHangulFirst;
      const char32_t t = s % 28;
      if (!lower(0x1100 + s / 588) || !lower(0x1161 + (s % 588) / 28)) return false;
      return t == 0 || lower(0x11A7 + t);
    }
    const CharMapping* m = FindMapping(internal::kStripAccents, internal::kStripAccentsSize, cp);
    if (m == nullptr) return lower(cp);
    for (int i = 0; i < m->size; ++i) {
      if (!lower(internal::kStripAccentsPool[m->offset + i])) return false;
    }
    return true;
  };

  size_t pos = 0;
  while (pos < text.size()) {
    if (text[pos] == '[') {  // step 1: the longest special token written here
      const SpecialToken* special = nullptr;
      for (const SpecialToken& s : special_tokens_) {
        if (text.substr(pos).starts_with(s.text) &&
            (special == nullptr || s.text.size() > special->text.size())) {
          special = &s;
        }
      }
      if (special != nullptr) {
        if (!flush() || !on_word(special->text, special->id)) return;
        pos += special->text.size();
        continue;
      }
    }
    char32_t cp = DecodeUtf8(text, pos);
    const uint8_t flags = FlagsOf(cp);
    if (options_.clean_text) {
      if (flags & internal::kFlagControl) continue;
      if (flags & internal::kFlagWhitespace) cp = ' ';
    }
    bool go_on;
    if (options_.tokenize_chinese_chars && (flags & internal::kFlagChinese)) {
      go_on = strip(' ') && strip(cp) && strip(' ');
    } else {
      go_on = strip(cp);
    }
    if (!go_on) return;
  }
  flush();
}

void WordPieceTokenizer::AppendPieces(std::string_view word, std::vector<int32_t>& ids) const {
  std::vector<size_t> bounds;  // byte offset of each character, then word.size()
  for (size_t pos = 0; pos < word.size();) {
    bounds.push_back(pos);
    DecodeUtf8(word, pos);
    if (static_cast<int64_t>(bounds.size()) > options_.max_chars_per_word) {
      ids.push_back(unk_id_);
      return;
    }
  }
  bounds.push_back(word.size());
  const size_t n_chars = bounds.size() - 1;
  const size_t first_piece = ids.size();
  std::string candidate;
  size_t start = 0;
  while (start < n_chars) {
    size_t end = n_chars;
    int32_t id = -1;
    for (; end > start; --end) {
      candidate.assign(start > 0 ? "##" : "");
      candidate.append(word.substr(bounds[start], bounds[end] - bounds[start]));
      if (const auto it = ids_.find(candidate); it != ids_.end()) {
        id = it->second;
        break;
      }
    }
    if (id < 0) {  // no cover: the whole word is unknown
      ids.resize(first_piece);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(id);
    start = end;
  }
}

std::vector<int32_t> WordPieceTokenizer::Tokenize(std::string_view text, int64_t max_pieces) const {
  std::vector<int32_t> ids;
  if (max_pieces <= 0) return ids;
  ForEachWord(text, [&](std::string_view word, int32_t special_id) {
    if (special_id >= 0) {
      ids.push_back(special_id);
    } else {
      AppendPieces(word, ids);
    }
    if (static_cast<int64_t>(ids.size()) >= max_pieces) {
      ids.resize(max_pieces);
      return false;
    }
    return true;
  });
  return ids;
}

std::vector<int32_t> WordPieceTokenizer::Encode(std::string_view text, int64_t max_tokens) const {
  const int64_t max_pieces = std::max<int64_t>(max_tokens, 2) - 2;
  std::vector<int32_t> ids = {cls_id_};
  if (max_pieces > 0) {
    const std::vector<int32_t> pieces = Tokenize(text, max_pieces);
    ids.insert(ids.end(), pieces.begin(), pieces.end());
  }
  ids.push_back(sep_id_);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::BasicTokenize(std::string_view text) const {
  std::vector<std::string> words;
  ForEachWord(text, [&](std::string_view word, int32_t) {
    words.emplace_back(word);
    return true;
  });
  return words;
}

}  // namespace silo::retrieval
