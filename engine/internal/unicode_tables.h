// Unicode classes used by the pre-tokenizers' hand-written scanners: letters (\p{L}), numbers
// (\p{N}) and whitespace (\s, the White_Space property). The ranges are generated from Python's
// unicodedata by make_unicode_tables.py into unicode_tables.cc; Classify() looks a code point up.
//
// Thread-safe: the tables are constant; Classify's lazily built BMP table is initialized once.
#ifndef SILO_ENGINE_INTERNAL_UNICODE_TABLES_H_
#define SILO_ENGINE_INTERNAL_UNICODE_TABLES_H_

#include <cstdint>
#include <span>
#include <string_view>

namespace silo::engine::internal {

// Bits of a code point's class mask.
inline constexpr uint8_t kLetter = 1;      // general category L*
inline constexpr uint8_t kNumber = 2;      // general category N*
inline constexpr uint8_t kWhitespace = 4;  // White_Space

struct CodepointRange {
  uint32_t first;
  uint32_t last;  // inclusive
  uint8_t flags;  // kLetter | kNumber | kWhitespace
};

// Sorted, disjoint ranges of every code point with a non-zero mask (generated).
std::span<const CodepointRange> CodepointRanges();
// The Unicode version of the generated tables, e.g. "14.0.0".
std::string_view UnicodeTablesVersion();

// The class mask of `codepoint` (0 for anything outside the tables, including values past
// U+10FFFF).
uint8_t Classify(uint32_t codepoint);

}  // namespace silo::engine::internal

#endif  // SILO_ENGINE_INTERNAL_UNICODE_TABLES_H_
