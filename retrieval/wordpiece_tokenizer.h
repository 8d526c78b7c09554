// BERT's WordPiece tokenizer, as Hugging Face's BertTokenizer (fast) does it:
//
//   1. Special tokens written literally in the text ("[CLS]", "[SEP]", "[PAD]", "[MASK]",
//      "[UNK]", case-sensitive) are taken as those tokens.
//   2. Normalization, character by character: text cleanup (control characters, NUL and U+FFFD
//      removed, whitespace made ' '), spaces around CJK ideographs, accent stripping (NFD, then
//      nonspacing marks removed), lower-casing.
//   3. Words: split on whitespace, every punctuation character a word of its own.
//   4. Each word greedily, longest match first, into vocabulary pieces ("##" marks a piece that
//      continues a word); a word longer than max_chars_per_word characters or with no full cover
//      becomes [UNK].
//
// The Unicode facts (which characters are controls, punctuation, CJK; accent stripping; lower
// case) come from tables generated from the reference implementation itself
// (internal/make_bert_unicode_data.py). One deviation: NFD's canonical reordering of combining
// marks is not done; it only matters for sequences of two spacing marks with nonzero combining
// classes. Invalid UTF-8 is decoded byte by byte as U+FFFD (which cleanup then removes), so any
// byte string is accepted.
//
// Thread-safe after construction: immutable.
#ifndef SILO_RETRIEVAL_WORDPIECE_TOKENIZER_H_
#define SILO_RETRIEVAL_WORDPIECE_TOKENIZER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace silo::retrieval {

struct WordPieceOptions {
  bool clean_text = true;              // remove control characters, make whitespace ' '
  bool tokenize_chinese_chars = true;  // each CJK ideograph a word of its own
  bool strip_accents = true;           // Hugging Face: strip_accents, or lower_case when null
  bool lower_case = true;
  int max_chars_per_word = 100;  // longer words become [UNK]
};

class WordPieceTokenizer {
 public:
  // Files larger than this are rejected (a 250k-token vocabulary is about 3 MB).
  static constexpr int64_t kMaxVocabBytes = 64 << 20;

  // One token per line, line i is id i (vocab.txt). A token listed twice keeps its last id, as
  // in the reference. InvalidArgument when [UNK], [CLS], [SEP] or [PAD] is missing or the
  // vocabulary is empty or too large; NotFound when the file does not exist.
  static absl::StatusOr<WordPieceTokenizer> FromVocabFile(const std::string& path,
                                                          const WordPieceOptions& options = {});
  // The same from the tokens themselves (id = index).
  static absl::StatusOr<WordPieceTokenizer> FromVocab(std::vector<std::string> tokens,
                                                      const WordPieceOptions& options = {});
  // A model folder: vocab.txt, with the options of tokenizer_config.json when it exists
  // (do_lower_case, strip_accents, tokenize_chinese_chars). InvalidArgument when that file is
  // malformed; otherwise as FromVocabFile.
  static absl::StatusOr<WordPieceTokenizer> FromModelDir(const std::string& dir);

  // Word pieces of `text`, without [CLS] / [SEP]; at most `max_pieces` (the rest of the text is
  // not looked at). Never fails: any byte string is a valid input.
  std::vector<int32_t> Tokenize(std::string_view text, int64_t max_pieces = INT64_MAX) const;
  // [CLS] pieces [SEP], truncated to `max_tokens` ids in all (the first max_tokens - 2 pieces);
  // max_tokens below 2 counts as 2.
  std::vector<int32_t> Encode(std::string_view text, int64_t max_tokens) const;
  // The words of steps 1-3 (normalized UTF-8), special tokens included as written. For tests.
  std::vector<std::string> BasicTokenize(std::string_view text) const;

  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  // The token of `id`; precondition: 0 <= id < vocab_size().
  const std::string& token(int32_t id) const { return tokens_[id]; }
  int32_t unk_id() const { return unk_id_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t pad_id() const { return pad_id_; }
  const WordPieceOptions& options() const { return options_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct SpecialToken {
    std::string text;
    int32_t id;
  };

  WordPieceTokenizer() = default;

  // Calls on_word(word, special_id) for each word of steps 1-3 (special_id -1 for an ordinary
  // word), in order, until it returns false.
  void ForEachWord(std::string_view text,
                   const std::function<bool(std::string_view, int32_t)>& on_word) const;
  // Appends the pieces of one normalized word (step 4).
  void AppendPieces(std::string_view word, std::vector<int32_t>& ids) const;

  WordPieceOptions options_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids_;
  std::vector<SpecialToken> special_tokens_;
  int32_t unk_id_ = 0;
  int32_t cls_id_ = 0;
  int32_t sep_id_ = 0;
  int32_t pad_id_ = 0;
};

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_WORDPIECE_TOKENIZER_H_
