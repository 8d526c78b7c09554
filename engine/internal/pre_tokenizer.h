// Pre-tokenizers of byte-level BPE tokenizers: split text into the pieces that BPE then encodes
// one by one. Each kind is a hand-written scanner equivalent to the regular expression that
// Hugging Face tokenizers and llama.cpp use for it (no regex library):
//
//   kGpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kSmolLm  every \p{N} alone (Digits(individual_digits)), then kGpt2 on the rest
//   kLlama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   kQwen2   as kLlama3 with \p{N} instead of \p{N}{1,3}
//
// Input may be any bytes: a byte that does not start a valid UTF-8 sequence counts as one code
// point of no class (neither letter, number nor whitespace).
//
// Thread-safe: pure functions.
#ifndef SILO_ENGINE_INTERNAL_PRE_TOKENIZER_H_
#define SILO_ENGINE_INTERNAL_PRE_TOKENIZER_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace silo::engine::internal {

enum class PreTokenizerKind { kGpt2, kSmolLm, kLlama3, kQwen2 };

// The regular expression of kGpt2, kLlama3 and kQwen2 as Hugging Face's tokenizer.json writes
// it (in a Split pre-tokenizer, or implied by ByteLevel with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The kind of a GGUF "tokenizer.ggml.pre" name (llama.cpp's names: "gpt-2", "smollm",
// "starcoder", "llama-bpe", "llama3", "qwen2", ...). InvalidArgument for any other name.
absl::StatusOr<PreTokenizerKind> PreTokenizerKindFromGgufName(std::string_view name);

// One code point decoded from UTF-8.
struct DecodedCodepoint {
  uint32_t codepoint;  // kInvalidCodepoint for a byte that starts no valid sequence
  size_t length;       // bytes: 1 to 4 (1 for an invalid byte)
};
inline constexpr uint32_t kInvalidCodepoint = 0xFFFFFFFF;

// Decodes the code point of `text` that starts at byte `pos` (< text.size()). Overlong forms,
// surrogates and values past U+10FFFF are invalid.
DecodedCodepoint DecodeCodepoint(std::string_view text, size_t pos);

// Splits `text` into consecutive non-empty pieces whose concatenation is `text`.
std::vector<std::string_view> PreTokenize(PreTokenizerKind kind, std::string_view text);

}  // namespace silo::engine::internal

#endif  // SILO_ENGINE_INTERNAL_PRE_TOKENIZER_H_
