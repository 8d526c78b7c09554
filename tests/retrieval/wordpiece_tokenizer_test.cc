// WordPiece tokenizer on a small vocabulary: basic tokenization rules, greedy longest match,
// truncation, hostile inputs and bad vocabulary files. The exact agreement with Hugging Face on
// the real vocabulary is checked by embedder_test.cc.
#include "retrieval/wordpiece_tokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::retrieval {
namespace {

using ::silo::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// ids:                               0        1        2        3        4         5
const std::vector<std::string> kVocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un",
                                         // 6    7       8        9      10   11   12     13
                                         "##aff", "##able", "play", "##ing", ",", "!", "cafe", "a",
                                         // 14   15     16    17     18     19      20
                                         "##b", "##c", "中", "文", "hello", "world", "##ab"};

WordPieceTokenizer MakeTokenizer(const WordPieceOptions& options = {}) {
  absl::StatusOr<WordPieceTokenizer> tokenizer = WordPieceTokenizer::FromVocab(kVocab, options);
  EXPECT_OK(tokenizer);
  return *std::move(tokenizer);
}

TEST(WordPieceTokenizer, GreedyLongestMatchFirst) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  EXPECT_THAT(tokenizer.Tokenize("unaffable playing"), ElementsAre(5, 6, 7, 8, 9));
  // After "a", the longest continuation "##ab" wins; "abc" has no "##bc" and takes "##b".
  EXPECT_THAT(tokenizer.Tokenize("aab"), ElementsAre(13, 20));
  EXPECT_THAT(tokenizer.Tokenize("abc"), ElementsAre(13, 14, 15));
  // No cover for the tail: the whole word is [UNK], not a prefix plus [UNK].
  EXPECT_THAT(tokenizer.Tokenize("unx hello"), ElementsAre(1, 18));
  EXPECT_THAT(tokenizer.Encode("hello world", 512), ElementsAre(2, 18, 19, 3));
}

TEST(WordPieceTokenizer, LowerCasesAndStripsAccents) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  EXPECT_THAT(tokenizer.BasicTokenize("Café HELLO Ünïcödé"),
              ElementsAre("cafe", "hello", "unicode"));
  EXPECT_THAT(tokenizer.Tokenize("CAFÉ"), ElementsAre(12));
  // Combining marks written separately are removed too; Turkish dotted I is i.
  EXPECT_THAT(tokenizer.BasicTokenize("cafe\xCC\x81 \xC4\xB0"), ElementsAre("cafe", "i"));
  // Ligatures and full-width forms are not folded by NFD: they stay as they are (lower-cased).
  EXPECT_THAT(tokenizer.BasicTokenize("\xEF\xAC\x81 \xEF\xBC\xA1"),
              ElementsAre("\xEF\xAC\x81", "\xEF\xBD\x81"));
  // Hangul syllables decompose into jamo.
  EXPECT_THAT(tokenizer.BasicTokenize("\xED\x95\x9C"),  // 한
              ElementsAre("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"));
}

TEST(WordPieceTokenizer, CasedOptionsKeepCaseAndAccents) {
  const WordPieceTokenizer tokenizer = MakeTokenizer({.strip_accents = false, .lower_case = false});
  EXPECT_THAT(tokenizer.BasicTokenize("Café HELLO"), ElementsAre("Café", "HELLO"));
  const WordPieceTokenizer strip_only = MakeTokenizer({.strip_accents = true, .lower_case = false});
  EXPECT_THAT(strip_only.BasicTokenize("Café"), ElementsAre("Cafe"));
}

TEST(WordPieceTokenizer, SplitsPunctuationAndChineseCharacters) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  EXPECT_THAT(tokenizer.BasicTokenize("hello,world!!"),
              ElementsAre("hello", ",", "world", "!", "!"));
  // ASCII symbols count as punctuation, as in BERT.
  EXPECT_THAT(tokenizer.BasicTokenize("a$b+c`d"), ElementsAre("a", "$", "b", "+", "c", "`", "d"));
  // Unicode punctuation (em dash, guillemets) splits too.
  EXPECT_THAT(tokenizer.BasicTokenize("a\xE2\x80\x94"
                                      "b \xC2\xAB"
                                      "c\xC2\xBB"),
              ElementsAre("a", "\xE2\x80\x94", "b", "\xC2\xAB", "c", "\xC2\xBB"));
  EXPECT_THAT(tokenizer.Tokenize("中文hello"), ElementsAre(16, 17, 18));
  // Japanese kana are not CJK ideographs: they stay in one word.
  EXPECT_THAT(tokenizer.BasicTokenize("\xE3\x81\x82\xE3\x81\x84"),  // あい
              ElementsAre("\xE3\x81\x82\xE3\x81\x84"));
}

TEST(WordPieceTokenizer, CleansWhitespaceAndControlCharacters) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  EXPECT_THAT(tokenizer.BasicTokenize(" \t hello\r\n\u3000world\xC2\xA0 "),
              ElementsAre("hello", "world"));
  // NUL, other C0 controls, DEL and zero-width format characters vanish without splitting.
  EXPECT_THAT(tokenizer.BasicTokenize(std::string("he\0l\x01l\x7fo", 8)), ElementsAre("hello"));
  EXPECT_THAT(tokenizer.BasicTokenize("hel\xE2\x80\x8Blo"), ElementsAre("hello"));
  EXPECT_THAT(tokenizer.BasicTokenize(""), IsEmpty());
  EXPECT_THAT(tokenizer.BasicTokenize(" \t\n "), IsEmpty());
  EXPECT_THAT(tokenizer.Encode("", 512), ElementsAre(2, 3));
}

TEST(WordPieceTokenizer, LiteralSpecialTokens) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  EXPECT_THAT(tokenizer.Tokenize("hello[SEP]world [MASK]"), ElementsAre(18, 3, 19, 4));
  // Case-sensitive, as in the reference: "[sep]" is punctuation and a word.
  EXPECT_THAT(tokenizer.BasicTokenize("[sep]"), ElementsAre("[", "sep", "]"));
}

TEST(WordPieceTokenizer, LongWordsAreUnknown) {
  const WordPieceTokenizer tokenizer = MakeTokenizer({.max_chars_per_word = 4});
  EXPECT_THAT(tokenizer.Tokenize("abab"), ElementsAre(13, 14, 20));
  EXPECT_THAT(tokenizer.Tokenize("ababa cafe"), ElementsAre(1, 12));
  // Characters, not bytes: four two-byte letters are within the limit.
  EXPECT_THAT(tokenizer.BasicTokenize("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"), ElementsAre("eeee"));
}

TEST(WordPieceTokenizer, Truncates) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  EXPECT_THAT(tokenizer.Encode("hello world hello world", 4), ElementsAre(2, 18, 19, 3));
  EXPECT_THAT(tokenizer.Encode("hello world", 2), ElementsAre(2, 3));
  EXPECT_THAT(tokenizer.Encode("hello world", 0), ElementsAre(2, 3));
  // A word's pieces are cut too.
  EXPECT_THAT(tokenizer.Tokenize("unaffable", 2), ElementsAre(5, 6));
  EXPECT_THAT(tokenizer.Tokenize("unaffable", 0), IsEmpty());
}

TEST(WordPieceTokenizer, InvalidUtf8IsDropped) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  // Stray continuation byte, truncated sequence, overlong '/', encoded surrogate, above U+10FFFF.
  EXPECT_THAT(
      tokenizer.BasicTokenize("he\x80llo wor\xE4\xB8ld \xC0\xAF \xED\xA0\x80 \xF4\x90\x80\x80"),
      ElementsAre("hello", "world"));
  // A truncated sequence at the very end.
  EXPECT_THAT(tokenizer.BasicTokenize("hello\xE4"), ElementsAre("hello"));
  // Without cleanup U+FFFD stays, as an unknown word.
  const WordPieceTokenizer raw = MakeTokenizer({.clean_text = false});
  EXPECT_THAT(raw.Tokenize("hello \xFF"), ElementsAre(18, 1));
}

TEST(WordPieceTokenizer, HugeAndHostileInputs) {
  const WordPieceTokenizer tokenizer = MakeTokenizer();
  // 4 MB of one word: one [UNK], quickly.
  EXPECT_THAT(tokenizer.Tokenize(std::string(4 << 20, 'a')), ElementsAre(1));
  // 9 MB of words: truncation stops early.
  std::string words;
  for (int i = 0; i < (1 << 20); ++i) words += "hello wo ";
  EXPECT_EQ(tokenizer.Encode(words, 256).size(), 256u);
  EXPECT_EQ(tokenizer.Tokenize(words).size(), 2u << 20);
  // Every byte value, many times.
  std::string bytes;
  for (int rep = 0; rep < 64; ++rep) {
    for (int b = 0; b < 256; ++b) bytes.push_back(static_cast<char>(b));
  }
  const std::vector<int32_t> ids = tokenizer.Tokenize(bytes);
  for (const int32_t id : ids) EXPECT_LT(id, tokenizer.vocab_size());
  // A long run of '[' that never completes a special token.
  EXPECT_EQ(tokenizer.Tokenize(std::string(100000, '[')).size(), 100000u);
}

TEST(WordPieceTokenizer, RejectsBadVocabularies) {
  EXPECT_THAT(WordPieceTokenizer::FromVocab({}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(WordPieceTokenizer::FromVocab({"[PAD]", "[CLS]", "[SEP]", "a"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[UNK]")));
  EXPECT_THAT(WordPieceTokenizer::FromVocab(kVocab, {.max_chars_per_word = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(WordPieceTokenizer, ReadsVocabFiles) {
  const silo::testing::TempDir dir;
  std::string text;
  for (const std::string& token : kVocab) text += token + "\r\n";
  const std::string path = dir.WriteFile("vocab.txt", text);
  ASSERT_OK_AND_ASSIGN(const WordPieceTokenizer tokenizer, WordPieceTokenizer::FromVocabFile(path));
  EXPECT_EQ(tokenizer.vocab_size(), static_cast<int64_t>(kVocab.size()));
  EXPECT_EQ(tokenizer.token(6), "##aff");
  EXPECT_THAT(tokenizer.Tokenize("unaffable"), ElementsAre(5, 6, 7));

  EXPECT_THAT(WordPieceTokenizer::FromVocabFile((dir.path() / "missing.txt").string()),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(WordPieceTokenizer::FromVocabFile(dir.path().string()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(WordPieceTokenizer::FromVocabFile(dir.WriteFile("empty.txt", "")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(WordPieceTokenizer::FromVocabFile(
                  dir.WriteFile("junk.txt", std::string("\xFF\xFE\0\n\n", 5))),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(WordPieceTokenizer, ReadsTokenizerConfig) {
  const silo::testing::TempDir dir;
  std::string text;
  for (const std::string& token : kVocab) text += token + "\n";
  dir.WriteFile("vocab.txt", text);
  ASSERT_OK_AND_ASSIGN(WordPieceTokenizer defaults,
                       WordPieceTokenizer::FromModelDir(dir.path().string()));
  EXPECT_TRUE(defaults.options().lower_case);
  EXPECT_TRUE(defaults.options().strip_accents);

  dir.WriteFile("tokenizer_config.json", R"({"do_lower_case": false, "strip_accents": null})");
  ASSERT_OK_AND_ASSIGN(WordPieceTokenizer cased,
                       WordPieceTokenizer::FromModelDir(dir.path().string()));
  EXPECT_FALSE(cased.options().lower_case);
  EXPECT_FALSE(cased.options().strip_accents);
  EXPECT_THAT(cased.BasicTokenize("Café"), ElementsAre("Café"));

  dir.WriteFile("tokenizer_config.json", R"({"do_lower_case": "yes"})");
  EXPECT_THAT(WordPieceTokenizer::FromModelDir(dir.path().string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tokenizer_config.json")));
  dir.WriteFile("tokenizer_config.json", "{not json");
  EXPECT_THAT(WordPieceTokenizer::FromModelDir(dir.path().string()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const silo::testing::TempDir empty;
  EXPECT_THAT(WordPieceTokenizer::FromModelDir(empty.path().string()),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace silo::retrieval
