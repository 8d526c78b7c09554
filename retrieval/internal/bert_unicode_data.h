// Per-character Unicode facts of BERT's basic tokenization, generated from the reference
// implementation (Hugging Face tokenizers) by make_bert_unicode_data.py into
// bert_unicode_data.cc. Thread-safe: constant tables.
#ifndef SILO_RETRIEVAL_INTERNAL_BERT_UNICODE_DATA_H_
#define SILO_RETRIEVAL_INTERNAL_BERT_UNICODE_DATA_H_

#include <cstdint>

namespace silo::retrieval::internal {

inline constexpr uint8_t kFlagControl = 1;      // removed by text cleanup
inline constexpr uint8_t kFlagWhitespace = 2;   // separates words
inline constexpr uint8_t kFlagPunctuation = 4;  // a word of its own
inline constexpr uint8_t kFlagChinese = 8;      // CJK ideograph: a word of its own

// Code point `first` and those after it up to the next run's `first` have `flags`. Sorted; the
// first run starts at 0.
struct CharFlagsRun {
  char32_t first;
  uint8_t flags;
};
extern const CharFlagsRun kCharFlagsRuns[];
extern const int kCharFlagsRunsSize;

// `code_point` maps to pool[offset, offset + size) (size 0: removed). Sorted by code point.
struct CharMapping {
  char32_t code_point;
  uint16_t offset;
  uint8_t size;
};
// NFD with nonspacing marks removed, for every code point it changes except Hangul syllables
// (decomposed algorithmically).
extern const char32_t kStripAccentsPool[];
extern const CharMapping kStripAccents[];
extern const int kStripAccentsSize;
// Full lowercase mapping (Rust's char::to_lowercase) of every code point it changes.
extern const char32_t kLowercasePool[];
extern const CharMapping kLowercase[];
extern const int kLowercaseSize;

}  // namespace silo::retrieval::internal

#endif  // SILO_RETRIEVAL_INTERNAL_BERT_UNICODE_DATA_H_
