#include "engine/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

using internal::PreTokenizerKind;

// GPT-2's map of bytes to printable code points: bytes that are printable Latin-1 map to
// themselves, the others to U+0100 onwards in byte order.
struct ByteAlphabet {
  std::array<std::string, 256> utf8;           // byte -> its code point in UTF-8
  std::unordered_map<uint32_t, uint8_t> byte;  // code point -> byte
};

const ByteAlphabet& GetByteAlphabet() {
  static const ByteAlphabet* const kAlphabet = [] {
    auto* alphabet = new ByteAlphabet;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
      // Every code point here is below U+0800: one or two bytes of UTF-8.
      std::string& s = alphabet->utf8[b];
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      alphabet->byte[cp] = static_cast<uint8_t>(b);
    }
    return alphabet;
  }();
  return *kAlphabet;
}

// The bytes a byte-level token stands for: each code point mapped back through the alphabet;
// one outside it (not produced by byte-level BPE) is kept as its own UTF-8.
std::string ByteLevelDecode(std::string_view piece) {
  const ByteAlphabet& alphabet = GetByteAlphabet();
  std::string out;
  out.reserve(piece.size());
  for (size_t pos = 0; pos < piece.size();) {
    const internal::DecodedCodepoint c = internal::DecodeCodepoint(piece, pos);
    auto it = c.codepoint == internal::kInvalidCodepoint ? alphabet.byte.end()
                                                         : alphabet.byte.find(c.codepoint);
    if (it != alphabet.byte.end()) {
      out.push_back(static_cast<char>(it->second));
    } else {
      out.append(piece.substr(pos, c.length));
    }
    pos += c.length;
  }
  return out;
}

bool IsEndOfGenerationText(std::string_view text) {
  for (std::string_view t : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>",
                             "<|end_of_text|>", "<end_of_turn>", "<|end|>"}) {
    if (text == t) return true;
  }
  return false;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    return absl::NotFoundError(StrCat(path, " does not exist"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(StrCat("cannot open ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(StrCat("cannot read ", path));
  return std::move(contents).str();
}

// Optional GGUF id: absent is nullopt; present must lie in [0, vocab_size).
absl::StatusOr<std::optional<int32_t>> OptionalGgufId(const GgufFile& file, std::string_view key,
                                                      int32_t vocab_size) {
  if (file.metadata().find(key) == file.metadata().end()) return std::optional<int32_t>();
  SILO_ASSIGN_OR_RETURN(const int64_t id, file.GetInt64(key));
  // Some converters write -1 (as uint32 0xFFFFFFFF or int32 -1) for "none".
  if (id == -1 || id == 0xFFFFFFFF) return std::optional<int32_t>();
  if (id < 0 || id >= vocab_size) {
    return absl::InvalidArgumentError(
        StrCat(key, " = ", id, " is outside the vocabulary of ", vocab_size, " tokens"));
  }
  return std::optional<int32_t>(static_cast<int32_t>(id));
}

absl::StatusOr<const GgufArray*> GgufArrayOf(const GgufFile& file, std::string_view key,
                                             GgufValueType element_type) {
  SILO_ASSIGN_OR_RETURN(const GgufArray* array, file.GetArray(key));
  if (array->element_type != element_type) {
    return absl::InvalidArgumentError(StrCat(key, " has elements of type ",
                                             static_cast<uint32_t>(array->element_type),
                                             ", expected ", static_cast<uint32_t>(element_type)));
  }
  return array;
}

// A merge "a b" split at its space (byte-level pieces hold no space).
absl::StatusOr<std::pair<std::string, std::string>> SplitMerge(std::string_view merge) {
  const size_t space = merge.find(' ', 1);
  if (space == std::string_view::npos || space + 1 >= merge.size()) {
    return absl::InvalidArgumentError(StrCat("merge \"", merge, "\" is not two tokens"));
  }
  return std::make_pair(std::string(merge.substr(0, space)), std::string(merge.substr(space + 1)));
}

// The kind of a tokenizer.json pre_tokenizer; sets *add_prefix_space from its ByteLevel.
absl::StatusOr<PreTokenizerKind> PreTokenizerFromJson(const JsonValue& pre,
                                                      bool* add_prefix_space) {
  auto unsupported = [&](std::string_view why) {
    return absl::InvalidArgumentError(StrCat("unsupported tokenizer.json pre_tokenizer: ", why));
  };
  SILO_ASSIGN_OR_RETURN(const std::string_view type, pre.GetString("type"));
  auto byte_level = [&](const JsonValue& v, bool want_regex) -> absl::Status {
    SILO_ASSIGN_OR_RETURN(const std::string_view t, v.GetString("type"));
    if (t != "ByteLevel") return unsupported(StrCat("expected ByteLevel, found ", t));
    const JsonValue* use_regex = v.Find("use_regex");
    bool regex = true;
    if (use_regex != nullptr) {
      SILO_ASSIGN_OR_RETURN(regex, use_regex->AsBool());
    }
    if (regex != want_regex) {
      return unsupported(StrCat("ByteLevel with use_regex ", regex ? "true" : "false", " here"));
    }
    if (const JsonValue* prefix = v.Find("add_prefix_space"); prefix != nullptr) {
      SILO_ASSIGN_OR_RETURN(*add_prefix_space, prefix->AsBool());
    }
    return absl::OkStatus();
  };
  if (type == "ByteLevel") {
    SILO_RETURN_IF_ERROR(byte_level(pre, /*want_regex=*/true));
    return PreTokenizerKind::kGpt2;
  }
  if (type != "Sequence") return unsupported(StrCat("type ", type));
  SILO_ASSIGN_OR_RETURN(const JsonValue* list_value, pre.Get("pretokenizers"));
  SILO_ASSIGN_OR_RETURN(const JsonValue::Array* list, list_value->AsArray());
  if (list->size() == 1) {
    SILO_RETURN_IF_ERROR(byte_level((*list)[0], /*want_regex=*/true));
    return PreTokenizerKind::kGpt2;
  }
  if (list->size() != 2) return unsupported(StrCat("a Sequence of ", list->size()));
  const JsonValue& first = (*list)[0];
  SILO_ASSIGN_OR_RETURN(const std::string_view first_type, first.GetString("type"));
  if (first_type == "Digits") {
    SILO_ASSIGN_OR_RETURN(const bool individual, first.GetBool("individual_digits"));
    if (!individual) return unsupported("Digits without individual_digits");
    SILO_RETURN_IF_ERROR(byte_level((*list)[1], /*want_regex=*/true));
    return PreTokenizerKind::kSmolLm;
  }
  if (first_type == "Split") {
    SILO_ASSIGN_OR_RETURN(const JsonValue* pattern, first.Get("pattern"));
    SILO_ASSIGN_OR_RETURN(const std::string_view regex, pattern->GetString("Regex"));
    SILO_ASSIGN_OR_RETURN(const std::string_view behavior, first.GetString("behavior"));
    if (behavior != "Isolated") return unsupported(StrCat("Split behavior ", behavior));
    if (const JsonValue* invert = first.Find("invert"); invert != nullptr) {
      SILO_ASSIGN_OR_RETURN(const bool inverted, invert->AsBool());
      if (inverted) return unsupported("inverted Split");
    }
    PreTokenizerKind kind;
    if (regex == internal::kGpt2Pattern) {
      kind = PreTokenizerKind::kGpt2;
    } else if (regex == internal::kLlama3Pattern) {
      kind = PreTokenizerKind::kLlama3;
    } else if (regex == internal::kQwen2Pattern) {
      kind = PreTokenizerKind::kQwen2;
    } else {
      return unsupported(StrCat("Split pattern ", regex));
    }
    SILO_RETURN_IF_ERROR(byte_level((*list)[1], /*want_regex=*/false));
    return kind;
  }
  return unsupported(StrCat("Sequence starting with ", first_type));
}

// A token named in tokenizer_config.json: a string or {"content": string}.
absl::StatusOr<std::optional<std::string>> ConfigToken(const JsonValue& config,
                                                       std::string_view key) {
  const JsonValue* value = config.Find(key);
  if (value == nullptr || value->is_null()) return std::optional<std::string>();
  if (value->is_object()) {
    SILO_ASSIGN_OR_RETURN(const std::string_view content, value->GetString("content"));
    return std::optional<std::string>(std::string(content));
  }
  SILO_ASSIGN_OR_RETURN(const std::string_view text, value->AsString());
  return std::optional<std::string>(std::string(text));
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromGguf(const GgufFile& file) {
  SILO_ASSIGN_OR_RETURN(const std::string_view model, file.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return absl::InvalidArgumentError(
        StrCat("unsupported tokenizer.ggml.model \"", model, "\": only byte-level BPE (gpt2)"));
  }
  Tokenizer t;
  if (file.metadata().contains("tokenizer.ggml.pre")) {
    SILO_ASSIGN_OR_RETURN(const std::string_view pre, file.GetString("tokenizer.ggml.pre"));
    SILO_ASSIGN_OR_RETURN(t.pre_tokenizer_, internal::PreTokenizerKindFromGgufName(pre));
  }
  // llama.cpp takes a piece that is a whole token as is for Llama-3's tokenizer.
  t.ignore_merges_ = t.pre_tokenizer_ == PreTokenizerKind::kLlama3;

  SILO_ASSIGN_OR_RETURN(const GgufArray* tokens,
                        GgufArrayOf(file, "tokenizer.ggml.tokens", GgufValueType::kString));
  if (tokens->values.empty() || tokens->values.size() > (1u << 24)) {
    return absl::InvalidArgumentError(
        StrCat("tokenizer.ggml.tokens has ", tokens->values.size(), " tokens"));
  }
  const size_t n = tokens->values.size();
  t.pieces_.reserve(n);
  for (const GgufValue& v : tokens->values) t.pieces_.push_back(std::get<std::string>(v));
  t.types_.assign(n, TokenType::kNormal);
  if (file.metadata().contains("tokenizer.ggml.token_type")) {
    SILO_ASSIGN_OR_RETURN(const GgufArray* types, file.GetArray("tokenizer.ggml.token_type"));
    if (types->values.size() != n) {
      return absl::InvalidArgumentError(StrCat(
          "tokenizer.ggml.token_type has ", types->values.size(), " entries for ", n, " tokens"));
    }
    for (size_t i = 0; i < n; ++i) {
      const GgufValue& v = types->values[i];
      int64_t type;
      if (const auto* i32 = std::get_if<int32_t>(&v)) {
        type = *i32;
      } else if (const auto* u32 = std::get_if<uint32_t>(&v)) {
        type = *u32;
      } else {
        return absl::InvalidArgumentError("tokenizer.ggml.token_type is not an integer array");
      }
      if (type < 1 || type > 6) {
        return absl::InvalidArgumentError(StrCat("token ", i, " has unknown type ", type));
      }
      t.types_[i] = static_cast<TokenType>(type);
    }
  }

  std::vector<std::pair<std::string, std::string>> merges;
  if (file.metadata().contains("tokenizer.ggml.merges")) {
    SILO_ASSIGN_OR_RETURN(const GgufArray* array,
                          GgufArrayOf(file, "tokenizer.ggml.merges", GgufValueType::kString));
    merges.reserve(array->values.size());
    for (const GgufValue& v : array->values) {
      SILO_ASSIGN_OR_RETURN(auto merge, SplitMerge(std::get<std::string>(v)));
      merges.push_back(std::move(merge));
    }
  }

  const auto vocab_size = static_cast<int32_t>(n);
  SILO_ASSIGN_OR_RETURN(t.bos_id_, OptionalGgufId(file, "tokenizer.ggml.bos_token_id", vocab_size));
  SILO_ASSIGN_OR_RETURN(t.eos_id_, OptionalGgufId(file, "tokenizer.ggml.eos_token_id", vocab_size));
  SILO_ASSIGN_OR_RETURN(t.eot_id_, OptionalGgufId(file, "tokenizer.ggml.eot_token_id", vocab_size));
  SILO_ASSIGN_OR_RETURN(t.padding_id_,
                        OptionalGgufId(file, "tokenizer.ggml.padding_token_id", vocab_size));
  if (file.metadata().contains("tokenizer.ggml.add_bos_token")) {
    SILO_ASSIGN_OR_RETURN(t.add_bos_, file.GetBool("tokenizer.ggml.add_bos_token"));
  }
  if (file.metadata().contains("tokenizer.chat_template")) {
    SILO_ASSIGN_OR_RETURN(const std::string_view chat_template,
                          file.GetString("tokenizer.chat_template"));
    t.chat_template_ = std::string(chat_template);
  }
  SILO_RETURN_IF_ERROR(t.Finish(merges));
  return t;
}

absl::StatusOr<Tokenizer> Tokenizer::FromTokenizerJson(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::string config;
  std::error_code error;
  if (std::filesystem::exists(config_path, error)) {
    SILO_ASSIGN_OR_RETURN(config, ReadFile(config_path.string()));
  }
  absl::StatusOr<Tokenizer> tokenizer = FromTokenizerJsonText(text, config);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<Tokenizer> Tokenizer::FromTokenizerJsonText(std::string_view tokenizer_json,
                                                           std::string_view tokenizer_config_json) {
  SILO_ASSIGN_OR_RETURN(const JsonValue root, ParseJson(tokenizer_json));
  SILO_ASSIGN_OR_RETURN(const JsonValue* model, root.Get("model"));
  SILO_ASSIGN_OR_RETURN(const std::string_view model_type, model->GetString("type"));
  if (model_type != "BPE") {
    return absl::InvalidArgumentError(
        StrCat("unsupported tokenizer.json model type \"", model_type, "\": only BPE"));
  }
  if (const JsonValue* fallback = model->Find("byte_fallback"); fallback != nullptr) {
    SILO_ASSIGN_OR_RETURN(const bool byte_fallback, fallback->AsBool());
    if (byte_fallback) {
      return absl::InvalidArgumentError("unsupported BPE with byte_fallback (not byte-level)");
    }
  }
  if (const JsonValue* prefix = model->Find("continuing_subword_prefix");
      prefix != nullptr && !prefix->is_null()) {
    SILO_ASSIGN_OR_RETURN(const std::string_view p, prefix->AsString());
    if (!p.empty()) return absl::InvalidArgumentError("unsupported continuing_subword_prefix");
  }
  if (const JsonValue* suffix = model->Find("end_of_word_suffix");
      suffix != nullptr && !suffix->is_null()) {
    SILO_ASSIGN_OR_RETURN(const std::string_view s, suffix->AsString());
    if (!s.empty()) return absl::InvalidArgumentError("unsupported end_of_word_suffix");
  }
  Tokenizer t;
  if (const JsonValue* ignore = model->Find("ignore_merges"); ignore != nullptr) {
    SILO_ASSIGN_OR_RETURN(t.ignore_merges_, ignore->AsBool());
  }
  if (const JsonValue* normalizer = root.Find("normalizer");
      normalizer != nullptr && !normalizer->is_null()) {
    SILO_ASSIGN_OR_RETURN(const std::string_view type, normalizer->GetString("type"));
    if (type != "NFC") {
      return absl::InvalidArgumentError(StrCat("unsupported tokenizer.json normalizer ", type));
    }
  }
  SILO_ASSIGN_OR_RETURN(const JsonValue* pre, root.Get("pre_tokenizer"));
  if (pre->is_null()) {
    return absl::InvalidArgumentError("tokenizer.json has no pre_tokenizer (need ByteLevel)");
  }
  SILO_ASSIGN_OR_RETURN(t.pre_tokenizer_, PreTokenizerFromJson(*pre, &t.add_prefix_space_));

  // Ids from the vocabulary and the added tokens; together they must be 0..n-1.
  SILO_ASSIGN_OR_RETURN(const JsonValue* vocab_value, model->Get("vocab"));
  SILO_ASSIGN_OR_RETURN(const JsonValue::Object* vocab, vocab_value->AsObject());
  const JsonValue* added_value = root.Find("added_tokens");
  const JsonValue::Array* added = nullptr;
  if (added_value != nullptr && !added_value->is_null()) {
    SILO_ASSIGN_OR_RETURN(added, added_value->AsArray());
  }
  const size_t n_entries = vocab->size() + (added == nullptr ? 0 : added->size());
  if (vocab->empty() || n_entries > (1u << 24)) {
    return absl::InvalidArgumentError(
        StrCat("tokenizer.json vocab has ", vocab->size(), " tokens"));
  }
  std::vector<std::optional<std::string>> pieces(n_entries);
  std::vector<TokenType> types(n_entries, TokenType::kNormal);
  auto place = [&](int64_t id, std::string_view piece, TokenType type) -> absl::Status {
    if (id < 0 || id >= static_cast<int64_t>(n_entries)) {
      return absl::InvalidArgumentError(
          StrCat("token \"", piece, "\" has id ", id, ", outside [0, ", n_entries, ")"));
    }
    pieces[id] = std::string(piece);
    types[id] = type;
    return absl::OkStatus();
  };
  for (const auto& [piece, id_value] : *vocab) {
    SILO_ASSIGN_OR_RETURN(const int64_t id, id_value.AsInt());
    SILO_RETURN_IF_ERROR(place(id, piece, TokenType::kNormal));
  }
  if (added != nullptr) {
    for (const JsonValue& token : *added) {
      SILO_ASSIGN_OR_RETURN(const int64_t id, token.GetInt("id"));
      SILO_ASSIGN_OR_RETURN(const std::string_view content, token.GetString("content"));
      bool special = false;
      if (const JsonValue* s = token.Find("special"); s != nullptr) {
        SILO_ASSIGN_OR_RETURN(special, s->AsBool());
      }
      SILO_RETURN_IF_ERROR(
          place(id, content, special ? TokenType::kControl : TokenType::kUserDefined));
    }
  }
  size_t n = 0;
  while (n < n_entries && pieces[n].has_value()) ++n;
  for (size_t i = n; i < n_entries; ++i) {
    if (pieces[i].has_value()) {
      return absl::InvalidArgumentError(
          StrCat("tokenizer.json token ids are not dense: ", n, " is missing, ", i, " is used"));
    }
  }
  t.pieces_.reserve(n);
  for (size_t i = 0; i < n; ++i) t.pieces_.push_back(std::move(*pieces[i]));
  types.resize(n);
  t.types_ = std::move(types);

  std::vector<std::pair<std::string, std::string>> merges;
  if (const JsonValue* merges_value = model->Find("merges"); merges_value != nullptr) {
    SILO_ASSIGN_OR_RETURN(const JsonValue::Array* list, merges_value->AsArray());
    merges.reserve(list->size());
    for (const JsonValue& merge : *list) {
      if (merge.is_string()) {
        SILO_ASSIGN_OR_RETURN(auto pair, SplitMerge(*merge.AsString()));
        merges.push_back(std::move(pair));
        continue;
      }
      SILO_ASSIGN_OR_RETURN(const JsonValue::Array* pair, merge.AsArray());
      if (pair->size() != 2) {
        return absl::InvalidArgumentError("a tokenizer.json merge is not a pair of tokens");
      }
      SILO_ASSIGN_OR_RETURN(const std::string_view a, (*pair)[0].AsString());
      SILO_ASSIGN_OR_RETURN(const std::string_view b, (*pair)[1].AsString());
      merges.emplace_back(std::string(a), std::string(b));
    }
  }

  if (!tokenizer_config_json.empty()) {
    SILO_ASSIGN_OR_RETURN(const JsonValue config, ParseJson(tokenizer_config_json));
    auto id_of = [&](std::string_view key) -> absl::StatusOr<std::optional<int32_t>> {
      SILO_ASSIGN_OR_RETURN(const std::optional<std::string> text, ConfigToken(config, key));
      if (!text.has_value()) return std::optional<int32_t>();
      for (size_t i = 0; i < t.pieces_.size(); ++i) {
        if (t.pieces_[i] == *text) return std::optional<int32_t>(static_cast<int32_t>(i));
      }
      return absl::InvalidArgumentError(
          StrCat("tokenizer_config.json ", key, " \"", *text, "\" is not a token"));
    };
    SILO_ASSIGN_OR_RETURN(t.bos_id_, id_of("bos_token"));
    SILO_ASSIGN_OR_RETURN(t.eos_id_, id_of("eos_token"));
    SILO_ASSIGN_OR_RETURN(t.padding_id_, id_of("pad_token"));
    if (const JsonValue* add_bos = config.Find("add_bos_token"); add_bos != nullptr) {
      SILO_ASSIGN_OR_RETURN(t.add_bos_, add_bos->AsBool());
    }
    if (const JsonValue* chat = config.Find("chat_template");
        chat != nullptr && chat->is_string()) {
      t.chat_template_ = std::string(*chat->AsString());
    }
  }
  SILO_RETURN_IF_ERROR(t.Finish(merges));
  return t;
}

absl::Status Tokenizer::Finish(const std::vector<std::pair<std::string, std::string>>& merges) {
  const size_t n = pieces_.size();
  piece_to_id_.reserve(n);
  bytes_.resize(n);
  end_of_generation_.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    piece_to_id_[pieces_[i]] = static_cast<int32_t>(i);  // the last of duplicates wins
    const bool added = types_[i] == TokenType::kControl || types_[i] == TokenType::kUserDefined;
    bytes_[i] = added ? pieces_[i] : ByteLevelDecode(pieces_[i]);
    if (added && !pieces_[i].empty()) {
      added_.push_back({pieces_[i], static_cast<int32_t>(i), types_[i] == TokenType::kControl});
    }
    if (types_[i] == TokenType::kControl && IsEndOfGenerationText(pieces_[i])) {
      end_of_generation_[i] = true;
    }
  }
  for (const std::optional<int32_t>& id : {eos_id_, eot_id_}) {
    if (id.has_value()) end_of_generation_[*id] = true;
  }
  std::stable_sort(added_.begin(), added_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.text.size() > b.text.size();
  });
  for (size_t i = 0; i < added_.size(); ++i) {
    added_by_first_byte_[static_cast<unsigned char>(added_[i].text[0])].push_back(i);
  }
  const ByteAlphabet& alphabet = GetByteAlphabet();
  for (int b = 0; b < 256; ++b) {
    auto it = piece_to_id_.find(alphabet.utf8[b]);
    byte_ids_[b] = it == piece_to_id_.end() ? -1 : it->second;
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto left = piece_to_id_.find(a);
    auto right = piece_to_id_.find(b);
    if (left == piece_to_id_.end() || right == piece_to_id_.end()) {
      return absl::InvalidArgumentError(
          StrCat("merge ", rank, " \"", a, " ", b, "\" names a token not in the vocabulary"));
    }
    auto result = piece_to_id_.find(StrCat(a, b));
    if (result == piece_to_id_.end()) {
      return absl::InvalidArgumentError(
          StrCat("merge ", rank, " \"", a, " ", b, "\" makes a token not in the vocabulary"));
    }
    const uint64_t key =
        (static_cast<uint64_t>(left->second) << 32) | static_cast<uint32_t>(right->second);
    merges_.try_emplace(key, Merge{static_cast<int32_t>(rank), result->second});
  }
  return absl::OkStatus();
}

void Tokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  const ByteAlphabet& alphabet = GetByteAlphabet();
  if (ignore_merges_) {
    std::string mapped;
    for (unsigned char b : word) mapped += alphabet.utf8[b];
    if (auto it = piece_to_id_.find(mapped); it != piece_to_id_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols in a doubly linked list over the word's bytes; a merge keeps the left one.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (unsigned char b : word) {
    if (byte_ids_[b] < 0) continue;  // a byte the vocabulary lacks cannot be encoded
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({byte_ids_[b], index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  // Candidate merges, lowest rank first, then leftmost (Hugging Face's order).
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t left_id;
    int32_t right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const uint64_t key =
        (static_cast<uint64_t>(symbols[left].id) << 32) | static_cast<uint32_t>(symbols[right].id);
    if (auto it = merges_.find(key); it != merges_.end()) {
      queue.push({it->second.rank, left, symbols[left].id, symbols[right].id});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    // Stale when either side was merged away or changed since the candidate was pushed.
    if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;
    const uint64_t key =
        (static_cast<uint64_t>(c.left_id) << 32) | static_cast<uint32_t>(c.right_id);
    left.id = merges_.find(key)->second.result;
    const int32_t removed = left.next;
    left.next = symbols[removed].next;
    if (left.next >= 0) symbols[left.next].prev = c.left;
    symbols[removed].id = -1;
    push(left.prev);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

void Tokenizer::EncodeOrdinary(std::string_view text, WordCache* cache,
                               std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  std::string prefixed;
  if (add_prefix_space_ && text[0] != ' ') {
    prefixed = StrCat(" ", text);
    text = prefixed;
  }
  for (std::string_view word : internal::PreTokenize(pre_tokenizer_, text)) {
    auto it = cache->find(word);
    if (it == cache->end()) {
      std::vector<int32_t> word_ids;
      EncodeWord(word, &word_ids);
      it = cache->emplace(std::string(word), std::move(word_ids)).first;
    }
    ids->insert(ids->end(), it->second.begin(), it->second.end());
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  WordCache cache;
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const AddedToken* match = nullptr;
    for (size_t index : added_by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const AddedToken& token = added_[index];
      if ((parse_special || !token.special) &&
          text.compare(pos, token.text.size(), token.text) == 0) {
        match = &token;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    EncodeOrdinary(text.substr(start, pos - start), &cache, &ids);
    ids.push_back(match->id);
    pos += match->text.size();
    start = pos;
  }
  EncodeOrdinary(text.substr(start), &cache, &ids);
  return ids;
}

absl::StatusOr<std::string_view> Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    return absl::InvalidArgumentError(
        StrCat("token id ", id, " is outside the vocabulary of ", vocab_size(), " tokens"));
  }
  return static_cast<std::string_view>(bytes_[id]);
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    SILO_ASSIGN_OR_RETURN(const std::string_view bytes, TokenBytes(id));
    out.append(bytes);
  }
  return out;
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view piece) const {
  auto it = piece_to_id_.find(piece);
  if (it == piece_to_id_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && id < vocab_size() && end_of_generation_[id];
}

namespace {

// Length of the UTF-8 sequence that `lead` starts (0 when it cannot start one), and the range
// of its second byte (narrower than 80..BF after E0, ED, F0 and F4).
struct Utf8Lead {
  size_t length;
  unsigned char second_min;
  unsigned char second_max;
};
Utf8Lead LeadOf(unsigned char lead) {
  if (lead < 0x80) return {1, 0, 0};
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Moves the valid UTF-8 at the front of `*pending` to `*out`, replacing each invalid sequence
// (maximal subpart) with U+FFFD. An incomplete sequence at the end stays in `*pending`, unless
// `flush`, when it becomes U+FFFD too.
void DrainUtf8(std::string* pending, bool flush, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(pending->data());
  const size_t size = pending->size();
  size_t pos = 0;
  while (pos < size) {
    const Utf8Lead lead = LeadOf(p[pos]);
    if (lead.length == 0) {
      out->append(kReplacement);
      ++pos;
      continue;
    }
    // Count the bytes that continue the sequence validly.
    size_t valid = 1;
    while (valid < lead.length && pos + valid < size) {
      const unsigned char c = p[pos + valid];
      const bool ok =
          valid == 1 ? (c >= lead.second_min && c <= lead.second_max) : (c >= 0x80 && c <= 0xBF);
      if (!ok) break;
      ++valid;
    }
    if (valid == lead.length) {
      out->append(pending->data() + pos, valid);
      pos += valid;
    } else if (pos + valid == size && !flush) {
      break;  // incomplete so far: wait for more bytes
    } else {
      out->append(kReplacement);
      pos += valid;
    }
  }
  pending->erase(0, pos);
}

}  // namespace

absl::StatusOr<std::string> StreamingDecoder::Push(int32_t id) {
  SILO_ASSIGN_OR_RETURN(const std::string_view bytes, tokenizer_->TokenBytes(id));
  pending_.append(bytes);
  std::string out;
  DrainUtf8(&pending_, /*flush=*/false, &out);
  return out;
}

std::string StreamingDecoder::Flush() {
  std::string out;
  DrainUtf8(&pending_, /*flush=*/true, &out);
  return out;
}

}  // namespace silo::engine
