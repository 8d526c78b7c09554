// Tokenizer tests that need no model: tiny GGUF vocabularies written here, the tiny tokenizer.json
// files of tests/engine/fixtures/tiny_tokenizers (ids checked against Hugging Face tokenizers),
// hostile metadata, arbitrary bytes and the streaming decoder.
#include "engine/tokenizer.h"

#include <fstream>
#include <functional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "common/json.h"
#include "engine/gguf_file.h"
#include "engine/internal/pre_tokenizer.h"
#include "engine/internal/unicode_tables.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/gguf_writer.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::engine {
namespace {

using ::silo::testing::GgufWriter;
using ::silo::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string FixturePath(std::string_view name) {
  return std::string(SILO_SOURCE_DIR) + "/tests/engine/fixtures/" + std::string(name);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// GPT-2's byte alphabet: the token text of byte `b`.
std::string ByteToken(int b) {
  static const std::vector<std::string> kTokens = [] {
    std::vector<std::string> tokens(256);
    int next = 256;
    for (int c = 0; c < 256; ++c) {
      const bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
      const int cp = printable ? c : next++;
      std::string& s = tokens[c];
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
    }
    return tokens;
  }();
  return kTokens[b];
}

// A GGUF file whose vocabulary is the 256 bytes, "he", "ll", "hell", "hello", "Ġw" and two
// special tokens; tests edit the pieces they break.
struct TinyVocab {
  std::string model = "gpt2";
  std::string pre = "gpt-2";
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges = {"h e", "l l", "he ll", "hell o", "Ġ w"};
  bool write_types = true;

  TinyVocab() {
    for (int b = 0; b < 256; ++b) tokens.push_back(ByteToken(b));
    for (const char* t : {"he", "ll", "hell", "hello", "Ġw", "<|im_start|>", "<|im_end|>"}) {
      tokens.push_back(t);
    }
    types.assign(tokens.size(), 1);
    types[tokens.size() - 2] = 3;
    types[tokens.size() - 1] = 3;
  }

  std::string Build(const std::function<void(GgufWriter&)>& extra = nullptr) const {
    GgufWriter w;
    w.AddString("general.architecture", "llama");
    w.AddString("tokenizer.ggml.model", model);
    if (!pre.empty()) w.AddString("tokenizer.ggml.pre", pre);
    w.AddStringArray("tokenizer.ggml.tokens", tokens);
    if (write_types) w.AddInt32Array("tokenizer.ggml.token_type", types);
    w.AddStringArray("tokenizer.ggml.merges", merges);
    w.AddUint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokens.size() - 1));
    if (extra) extra(w);
    return w.Build();
  }
};

absl::StatusOr<Tokenizer> FromBytes(const std::string& bytes) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  absl::StatusOr<GgufFile> file = GgufFile::Parse({data, bytes.size()}, "tiny.gguf");
  if (!file.ok()) return file.status();
  return Tokenizer::FromGguf(*file);
}

TEST(Tokenizer, EncodesWithRankedMerges) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, FromBytes(TinyVocab().Build()));
  EXPECT_EQ(t.vocab_size(), 263);
  // "hello" -> he, ll -> hell -> hello; " world" -> Ġw o r l d.
  EXPECT_THAT(t.Encode("hello world", false), ElementsAre(259, 260, 'o', 'r', 'l', 'd'));
  EXPECT_THAT(t.Encode("hellhe", false), ElementsAre(258, 256));
  ASSERT_OK_AND_ASSIGN(const std::string text, t.Decode(t.Encode("hello world", false)));
  EXPECT_EQ(text, "hello world");
  EXPECT_EQ(t.TokenId("hello"), 259);
  EXPECT_EQ(t.TokenId("nope"), std::nullopt);
  EXPECT_EQ(t.eos_id(), 262);
  EXPECT_EQ(t.bos_id(), std::nullopt);
  EXPECT_TRUE(t.IsEndOfGeneration(262));  // eos, and <|im_end|>
  EXPECT_FALSE(t.IsEndOfGeneration(261));
  EXPECT_FALSE(t.IsEndOfGeneration(-1));
  EXPECT_FALSE(t.IsEndOfGeneration(100000));
}

TEST(Tokenizer, MatchesSpecialTokensOnlyWhenAsked) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, FromBytes(TinyVocab().Build()));
  EXPECT_THAT(t.Encode("<|im_start|>hello<|im_end|>", true), ElementsAre(261, 259, 262));
  const std::vector<int32_t> plain = t.Encode("<|im_start|>hello", false);
  EXPECT_EQ(plain.size(), 12u + 1u);  // "<|im_start|>" byte by byte ('_' too), then hello
  EXPECT_EQ(plain.back(), 259);
  ASSERT_OK_AND_ASSIGN(const std::string text, t.Decode(std::vector<int32_t>{261, 259, 262}));
  EXPECT_EQ(text, "<|im_start|>hello<|im_end|>");
}

TEST(Tokenizer, DecodeRejectsIdsOutOfRange) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, FromBytes(TinyVocab().Build()));
  EXPECT_THAT(t.Decode(std::vector<int32_t>{1, 263}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("263")));
  EXPECT_THAT(t.Decode(std::vector<int32_t>{-1}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Tokenizer, EncodesArbitraryBytesAndDecodesThemBack) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, FromBytes(TinyVocab().Build()));
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    for (bool special : {false, true}) {
      ASSERT_OK_AND_ASSIGN(const std::string back, t.Decode(t.Encode(bytes, special)));
      ASSERT_EQ(back, bytes);
    }
  }
}

TEST(Tokenizer, HostileGgufMetadataIsInvalidArgument) {
  struct Case {
    const char* name;
    std::function<void(TinyVocab&)> edit;
    std::function<void(GgufWriter&)> extra;
  };
  const std::vector<Case> cases = {
      {"sentencepiece model", [](TinyVocab& v) { v.model = "llama"; }, nullptr},
      {"unknown pre", [](TinyVocab& v) { v.pre = "klingon"; }, nullptr},
      {"empty vocabulary",
       [](TinyVocab& v) {
         v.tokens.clear();
         v.types.clear();
         v.merges.clear();
       },
       nullptr},
      {"merge of unknown token", [](TinyVocab& v) { v.merges.push_back("he xyz"); }, nullptr},
      {"merge without space", [](TinyVocab& v) { v.merges.push_back("hello"); }, nullptr},
      {"merge result unknown", [](TinyVocab& v) { v.merges.push_back("o o"); }, nullptr},
      {"token types short", [](TinyVocab& v) { v.types.pop_back(); }, nullptr},
      {"token type out of range", [](TinyVocab& v) { v.types[3] = 77; }, nullptr},
      {"huge bos id", nullptr,
       [](GgufWriter& w) { w.AddUint32("tokenizer.ggml.bos_token_id", 4000000000u); }},
      {"negative bos id", nullptr,
       [](GgufWriter& w) { w.AddInt32("tokenizer.ggml.bos_token_id", -7); }},
      {"chat template not a string", nullptr,
       [](GgufWriter& w) { w.AddUint32("tokenizer.chat_template", 3); }},
      {"add_bos not a bool", nullptr,
       [](GgufWriter& w) { w.AddString("tokenizer.ggml.add_bos_token", "yes"); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TinyVocab vocab;
    if (c.edit) c.edit(vocab);
    EXPECT_THAT(FromBytes(vocab.Build(c.extra)), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST(Tokenizer, HostileGgufArrayTypesAreInvalidArgument) {
  GgufWriter w;
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddInt32Array("tokenizer.ggml.tokens", {1, 2, 3});
  EXPECT_THAT(FromBytes(w.Build()), StatusIs(absl::StatusCode::kInvalidArgument));

  TinyVocab vocab;
  vocab.write_types = false;
  EXPECT_THAT(FromBytes(vocab.Build([](GgufWriter& g) {
                g.AddStringArray("tokenizer.ggml.token_type", std::vector<std::string>(263, "1"));
              })),
              StatusIs(absl::StatusCode::kInvalidArgument));
  GgufWriter merges;
  merges.AddString("tokenizer.ggml.model", "gpt2");
  merges.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  merges.AddInt32Array("tokenizer.ggml.merges", {1});
  EXPECT_THAT(FromBytes(merges.Build()), StatusIs(absl::StatusCode::kInvalidArgument));
  GgufWriter missing;
  missing.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  EXPECT_THAT(FromBytes(missing.Build()), StatusIs(absl::StatusCode::kNotFound));
}

TEST(StreamingDecoder, EmitsOnlyCompleteCharacters) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, FromBytes(TinyVocab().Build()));
  StreamingDecoder decoder(&t);
  // "é" (C3 A9) then the emoji 😀 (F0 9F 98 80), one byte token at a time.
  const std::vector<int> bytes = {'a', 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 'b'};
  std::vector<std::string> outs;
  for (int b : bytes) {
    ASSERT_OK_AND_ASSIGN(std::string out, decoder.Push(*t.TokenId(ByteToken(b))));
    outs.push_back(out);
  }
  EXPECT_THAT(outs, ElementsAre("a", "", "\xC3\xA9", "", "", "", "\xF0\x9F\x98\x80", "b"));
  EXPECT_EQ(decoder.Flush(), "");
  EXPECT_THAT(decoder.Push(263), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StreamingDecoder, ReplacesInvalidBytes) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, FromBytes(TinyVocab().Build()));
  StreamingDecoder decoder(&t);
  auto push = [&](int b) { return *decoder.Push(*t.TokenId(ByteToken(b))); };
  EXPECT_EQ(push(0xFF), "\xEF\xBF\xBD");  // never valid: replaced at once
  EXPECT_EQ(push(0xE2), "");              // could start a 3-byte sequence
  EXPECT_EQ(push('x'), "\xEF\xBF\xBDx");  // ... which 'x' breaks
  EXPECT_EQ(push(0xF0), "");
  EXPECT_EQ(push(0x9F), "");
  EXPECT_EQ(decoder.Flush(), "\xEF\xBF\xBD");  // incomplete at the end
  EXPECT_EQ(push(0xED), "");
  EXPECT_EQ(push(0xA0), "\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate: ED then A0 are invalid
  EXPECT_EQ(decoder.Flush(), "");
}

TEST(PreTokenizer, SplitsLikeTheReferenceExpressions) {
  using internal::PreTokenize;
  using internal::PreTokenizerKind;
  EXPECT_THAT(PreTokenize(PreTokenizerKind::kGpt2, "Hello world's  12345 !!\n\n x"),
              ElementsAre("Hello", " world", "'s", " ", " 12345", " !!", "\n\n", " x"));
  EXPECT_THAT(PreTokenize(PreTokenizerKind::kSmolLm, "a 123b"),
              ElementsAre("a", " ", "1", "2", "3", "b"));
  EXPECT_THAT(PreTokenize(PreTokenizerKind::kLlama3, "I'LL pay 12345 now!\n\n  ok"),
              ElementsAre("I", "'LL", " pay", " ", "123", "45", " now", "!\n\n", " ", " ok"));
  EXPECT_THAT(PreTokenize(PreTokenizerKind::kQwen2, "ab12 \n x"),
              ElementsAre("ab", "1", "2", " \n", " x"));
  EXPECT_THAT(PreTokenize(PreTokenizerKind::kGpt2, "\xFF\xFEz"), ElementsAre("\xFF\xFE", "z"));
  EXPECT_THAT(internal::PreTokenizerKindFromGgufName("smollm"),
              ::silo::testing::IsOkAndHolds(PreTokenizerKind::kSmolLm));
  EXPECT_THAT(internal::PreTokenizerKindFromGgufName("bogus"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bogus")));
}

TEST(UnicodeTables, ClassifiesCodepoints) {
  using internal::Classify;
  EXPECT_EQ(Classify('a'), internal::kLetter);
  EXPECT_EQ(Classify(0x4E2D), internal::kLetter);  // 中
  EXPECT_EQ(Classify(0x0663), internal::kNumber);  // Arabic-Indic three
  EXPECT_EQ(Classify(0x2162), internal::kNumber);  // Roman numeral three (Nl)
  EXPECT_EQ(Classify(0x3000), internal::kWhitespace);
  EXPECT_EQ(Classify(0x85), internal::kWhitespace);
  EXPECT_EQ(Classify(0x1C), 0);                     // not White_Space
  EXPECT_EQ(Classify(0x0301), 0);                   // combining mark (Mn)
  EXPECT_EQ(Classify(0x1D400), internal::kLetter);  // mathematical bold A
  EXPECT_EQ(Classify(0x1F600), 0);                  // emoji
  EXPECT_EQ(Classify(0x110000), 0);
}

// The tiny tokenizer.json files against the ids Hugging Face tokenizers gave for them.
TEST(TokenizerJson, MatchesHuggingFaceOnTinyTokenizers) {
  ASSERT_OK_AND_ASSIGN(const JsonValue reference,
                       ParseJson(ReadText(FixturePath("tiny_tokenizers/reference.json"))));
  const std::vector<std::pair<std::string, internal::PreTokenizerKind>> kinds = {
      {"gpt2", internal::PreTokenizerKind::kGpt2},
      {"llama3", internal::PreTokenizerKind::kLlama3},
      {"qwen2", internal::PreTokenizerKind::kQwen2}};
  for (const auto& [kind, pre] : kinds) {
    SCOPED_TRACE(kind);
    ASSERT_OK_AND_ASSIGN(
        const Tokenizer t,
        Tokenizer::FromTokenizerJson(FixturePath("tiny_tokenizers/" + kind + "/tokenizer.json")));
    EXPECT_EQ(t.pre_tokenizer(), pre);
    ASSERT_OK_AND_ASSIGN(const JsonValue* cases, reference.Get(kind));
    int compared = 0;
    for (const JsonValue& c : **cases->AsArray()) {
      const std::string text(*c.GetString("text"));
      std::vector<int32_t> expected;
      for (const JsonValue& id : **(*c.Get("ids"))->AsArray()) expected.push_back(*id.AsInt());
      ASSERT_EQ(t.Encode(text, true), expected) << "text: " << text;
      ASSERT_OK_AND_ASSIGN(const std::string back, t.Decode(expected));
      ASSERT_EQ(back, text);
      ++compared;
    }
    EXPECT_EQ(compared, 160);
  }
}

TEST(TokenizerJson, ReadsAddedTokensAndConfig) {
  ASSERT_OK_AND_ASSIGN(const Tokenizer t, Tokenizer::FromTokenizerJson(
                                              FixturePath("tiny_tokenizers/qwen2/tokenizer.json")));
  ASSERT_TRUE(t.TokenId("<|im_end|>").has_value());
  const int32_t im_end = *t.TokenId("<|im_end|>");
  EXPECT_EQ(t.eos_id(), im_end);
  EXPECT_EQ(t.padding_id(), t.TokenId("<|endoftext|>"));
  EXPECT_EQ(t.bos_id(), std::nullopt);
  EXPECT_FALSE(t.add_bos());
  EXPECT_THAT(t.chat_template(), HasSubstr("<|im_start|>"));
  EXPECT_TRUE(t.IsEndOfGeneration(im_end));
  EXPECT_EQ(t.token_type(im_end), TokenType::kControl);
  ASSERT_TRUE(t.TokenId("<custom>").has_value());
  EXPECT_EQ(t.token_type(*t.TokenId("<custom>")), TokenType::kUserDefined);
  // A user-defined token is matched even when special tokens are not.
  EXPECT_THAT(t.Encode("<custom>", false), ElementsAre(*t.TokenId("<custom>")));
  EXPECT_NE(t.Encode("<|im_end|>", false), std::vector<int32_t>{im_end});
}

TEST(TokenizerJson, HostileFilesAreInvalidArgument) {
  const std::string good = ReadText(FixturePath("tiny_tokenizers/gpt2/tokenizer.json"));
  ASSERT_OK(Tokenizer::FromTokenizerJsonText(good, ""));
  auto edited = [&](std::string_view from, std::string_view to) {
    std::string text = good;
    const size_t pos = text.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    if (pos != std::string::npos) text.replace(pos, from.size(), to);
    return text;
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"WordPiece model", edited(R"("type":"BPE")", R"("type":"WordPiece")")},
      {"unknown pre-tokenizer", edited(R"("type":"ByteLevel")", R"("type":"Whitespace")")},
      {"truncated", good.substr(0, good.size() / 2)},
      {"not json", "{"},
      {"byte fallback", edited(R"("fuse_unk":false)", R"("fuse_unk":false,"byte_fallback":true)")},
      {"normalizer", edited(R"("normalizer":null)", R"("normalizer":{"type":"Lowercase"})")},
  };
  for (const auto& [name, text] : cases) {
    SCOPED_TRACE(name);
    EXPECT_THAT(Tokenizer::FromTokenizerJsonText(text, ""),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  // An added token far past the vocabulary leaves a hole.
  EXPECT_THAT(Tokenizer::FromTokenizerJsonText(edited(R"("id":400)", R"("id":4000000)"), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("4000000")));
  // A merge of tokens the vocabulary lacks.
  std::string bad_merge = good;
  const size_t merges = bad_merge.find(R"("merges":[)");
  ASSERT_NE(merges, std::string::npos);
  bad_merge.insert(merges + 10, R"("zzzq qqqz",)");
  EXPECT_THAT(Tokenizer::FromTokenizerJsonText(bad_merge, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not in the vocabulary")));
  EXPECT_THAT(Tokenizer::FromTokenizerJson("/nonexistent/tokenizer.json"),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace silo::engine
