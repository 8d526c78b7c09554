// Byte-level BPE tokenizer (GPT-2 style, as in SmolLM2, Llama-3 and Qwen2), built from a GGUF
// file's metadata or from a Hugging Face tokenizer.json.
//
//   SILO_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromGguf(gguf));
//   std::vector<int32_t> ids = tokenizer.Encode("<|im_start|>user\nHi<|im_end|>\n",
//                                               /*parse_special=*/true);
//   SILO_ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(ids));
//
// Encoding: added tokens are matched in the raw text first (longest match wins): user-defined
// ones always, special (control) ones only when `parse_special`; they are never split. The text
// between them is cut by the model's pre-tokenizer (GPT-2, SmolLM, Llama-3 or Qwen2 kind; see
// internal/pre_tokenizer.h), each piece's bytes are mapped to GPT-2's byte alphabet, and BPE
// applies the ranked merges (lowest rank first, leftmost on ties, as Hugging Face does). No BOS
// is added: callers prepend bos_id() when add_bos() says so.
//
// Any bytes can be encoded, invalid UTF-8 included. Decode returns the exact bytes
// (Decode(Encode(s, false)) == s) when the vocabulary has a token for each of the 256 byte
// symbols; a vocabulary without some (SmolLM2 lacks 0x04, 0x06, 0x13, 0x14, 0x16 and 0x1d) loses
// those bytes in Encode, as Hugging Face tokenizers do for a BPE model without an unknown token.
// StreamingDecoder turns ids into valid UTF-8 as they are generated.
//
// Malformed metadata (unknown model or pre-tokenizer, wrong array types, empty or non-dense
// vocabulary, merges naming unknown tokens, ids out of range) is InvalidArgument, never a crash.
//
// Thread-safe: a Tokenizer is immutable after construction. A StreamingDecoder is not
// thread-safe (one per generated stream).
#ifndef SILO_ENGINE_TOKENIZER_H_
#define SILO_ENGINE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf_file.h"
#include "engine/internal/pre_tokenizer.h"

namespace silo::engine {

// Token types, numbered as GGUF's tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens: <|im_start|>, <|eot_id|>, ...
  kUserDefined = 4,  // added tokens that are not special
  kUnused = 5,
  kByte = 6,
};

class Tokenizer {
 public:
  // Hashes std::string and std::string_view alike (heterogeneous look-up).
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  // From GGUF metadata: tokenizer.ggml.model must be "gpt2"; tokenizer.ggml.tokens (strings),
  // .merges (strings "a b"), .token_type (integers, optional), .pre (optional: GPT-2 when
  // absent), .bos/.eos/.eot/.padding_token_id, .add_bos_token and tokenizer.chat_template
  // (optional). InvalidArgument when any of them is malformed or unsupported.
  static absl::StatusOr<Tokenizer> FromGguf(const GgufFile& file);

  // From a Hugging Face tokenizer.json: model.type "BPE" (vocab, merges as "a b" or ["a", "b"]),
  // added_tokens (with their "special" flag), pre_tokenizer ByteLevel(use_regex) or a Sequence of
  // [Digits(individual_digits), ByteLevel] or [Split(known pattern), ByteLevel]. The normalizer
  // must be null or NFC (NFC is not applied: input is expected in NFC already). If a
  // tokenizer_config.json lies beside it, its bos_token, eos_token, add_bos_token and
  // chat_template are read too. NotFound / PermissionDenied when the file cannot be read,
  // InvalidArgument when it is malformed or unsupported.
  static absl::StatusOr<Tokenizer> FromTokenizerJson(const std::string& path);
  // The same from the contents of tokenizer.json (and optionally tokenizer_config.json; empty
  // when there is none).
  static absl::StatusOr<Tokenizer> FromTokenizerJsonText(std::string_view tokenizer_json,
                                                         std::string_view tokenizer_config_json);

  // Token ids of `text` (any bytes). See the file comment for `parse_special`.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special) const;

  // The bytes of `ids` concatenated (special tokens as their text). InvalidArgument when an id
  // is outside [0, vocab_size()).
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const;
  // The bytes of one token. InvalidArgument when `id` is out of range.
  absl::StatusOr<std::string_view> TokenBytes(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> padding_id() const { return padding_id_; }
  // Whether the model expects bos_id() before a prompt.
  bool add_bos() const { return add_bos_; }
  // The id of a token given its text as stored in the vocabulary (byte-level alphabet for normal
  // tokens, "Ġhello"; plain text for added ones, "<|im_end|>"); nullopt when there is none.
  std::optional<int32_t> TokenId(std::string_view piece) const;
  TokenType token_type(int32_t id) const { return types_[id]; }  // precondition: id in range
  // True for the tokens that end a generation: eos, eot, and special tokens such as <|im_end|>,
  // <|eot_id|>, <|endoftext|>, <|end_of_text|>, <|eom_id|>. False for ids out of range.
  bool IsEndOfGeneration(int32_t id) const;
  // The model's Jinja chat template (empty when it has none).
  const std::string& chat_template() const { return chat_template_; }
  internal::PreTokenizerKind pre_tokenizer() const { return pre_tokenizer_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct AddedToken {
    std::string text;
    int32_t id;
    bool special;
  };

  Tokenizer() = default;
  // Builds the derived tables once pieces_, types_ and merges are set. InvalidArgument when the
  // merges or ids are inconsistent.
  absl::Status Finish(const std::vector<std::pair<std::string, std::string>>& merges);
  // Ids of the pieces already encoded during one Encode call.
  using WordCache =
      std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;

  // Appends the BPE ids of one pre-tokenized piece.
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // Appends the ids of text that holds no added token.
  void EncodeOrdinary(std::string_view text, WordCache* cache, std::vector<int32_t>* ids) const;

  std::vector<std::string> pieces_;  // [vocab_size] token text as stored in the file
  std::vector<TokenType> types_;     // [vocab_size]
  std::vector<std::string> bytes_;   // [vocab_size] decoded bytes of each token
  PieceMap piece_to_id_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_ids_{};         // id of each single byte's token, or -1
  std::vector<AddedToken> added_;               // longest first
  std::array<std::vector<size_t>, 256> added_by_first_byte_;  // indices into added_
  std::vector<bool> end_of_generation_;                       // [vocab_size]
  internal::PreTokenizerKind pre_tokenizer_ = internal::PreTokenizerKind::kGpt2;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;  // a piece found whole in the vocabulary is one token
  bool add_bos_ = false;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> eot_id_;
  std::optional<int32_t> padding_id_;
  std::string chat_template_;
};

// Turns generated ids into UTF-8 text piece by piece, never emitting half a character: bytes of
// an incomplete sequence are held until it completes. A byte that cannot belong to a valid
// sequence is emitted as U+FFFD at once; an incomplete sequence left at Flush() becomes U+FFFD.
// Not thread-safe; the tokenizer must outlive the decoder.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}

  // The complete UTF-8 text that `id` finishes (may be empty). InvalidArgument when `id` is out
  // of range (nothing is consumed then).
  absl::StatusOr<std::string> Push(int32_t id);
  // Whatever is held, with U+FFFD for each incomplete sequence; the decoder is empty after.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;  // bytes not yet emitted
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_TOKENIZER_H_
