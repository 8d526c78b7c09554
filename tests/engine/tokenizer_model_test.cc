// The tokenizer, chat template and RAG prompt of the default model (SmolLM2-135M-Instruct GGUF)
// against Hugging Face: tests/engine/fixtures/tokenizer_reference.json (make_tokenizer_fixture.py)
// holds 1,210 strings with the ids Hugging Face tokenizers gives, and apply_chat_template's
// renderings. Needs the fetched model (label models).
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/json.h"
#include "engine/chat_template.h"
#include "engine/gguf_file.h"
#include "engine/rag_prompt.h"
#include "engine/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

class DefaultModelTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> path = silo::testing::DefaultModelPath();
    ASSERT_OK(path);
    absl::StatusOr<GgufFile> file = GgufFile::Open(*path);
    ASSERT_OK(file);
    absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromGguf(*file);
    ASSERT_OK(tokenizer);
    tokenizer_ = new Tokenizer(*std::move(tokenizer));
    std::ifstream in(std::string(SILO_SOURCE_DIR) +
                     "/tests/engine/fixtures/tokenizer_reference.json");
    std::ostringstream text;
    text << in.rdbuf();
    absl::StatusOr<JsonValue> reference = ParseJson(text.str());
    ASSERT_OK(reference);
    reference_ = new JsonValue(*std::move(reference));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete reference_;
  }

  static std::vector<int32_t> Ids(const JsonValue& c) {
    std::vector<int32_t> ids;
    for (const JsonValue& id : **(*c.Get("ids"))->AsArray()) ids.push_back(*id.AsInt());
    return ids;
  }

  static const Tokenizer* tokenizer_;
  static const JsonValue* reference_;
};
const Tokenizer* DefaultModelTokenizer::tokenizer_ = nullptr;
const JsonValue* DefaultModelTokenizer::reference_ = nullptr;

TEST_F(DefaultModelTokenizer, ReadsTheVocabulary) {
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  EXPECT_EQ(tokenizer_->pre_tokenizer(), internal::PreTokenizerKind::kSmolLm);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_FALSE(tokenizer_->add_bos());
  EXPECT_EQ(tokenizer_->TokenId("<|im_start|>"), 1);
  EXPECT_TRUE(tokenizer_->IsEndOfGeneration(2));  // <|im_end|>
  EXPECT_TRUE(tokenizer_->IsEndOfGeneration(0));  // <|endoftext|>
  EXPECT_FALSE(tokenizer_->IsEndOfGeneration(1));
}

TEST_F(DefaultModelTokenizer, MatchesHuggingFaceIds) {
  int compared = 0;
  int equal = 0;
  for (const JsonValue& c : **(*reference_->Get("strings"))->AsArray()) {
    const std::string text(*c.GetString("text"));
    const std::vector<int32_t> ids = tokenizer_->Encode(text, /*parse_special=*/true);
    ++compared;
    if (ids == Ids(c)) {
      ++equal;
    } else {
      ADD_FAILURE() << "ids differ for " << ::testing::PrintToString(text);
    }
    ASSERT_OK_AND_ASSIGN(const std::string back, tokenizer_->Decode(ids));
    EXPECT_EQ(back, text);
  }
  std::cout << "compared " << compared << " strings with Hugging Face: " << equal << " equal\n";
  EXPECT_EQ(compared, 1210);
}

TEST_F(DefaultModelTokenizer, ChatTemplateMatchesHuggingFace) {
  ASSERT_OK_AND_ASSIGN(const ChatTemplate t, ChatTemplate::FromJinja(tokenizer_->chat_template()));
  EXPECT_EQ(t.kind(), ChatTemplate::Kind::kChatMl);
  for (const JsonValue& c : **(*reference_->Get("chats"))->AsArray()) {
    std::vector<ChatMessage> messages;
    for (const JsonValue& m : **(*c.Get("messages"))->AsArray()) {
      messages.push_back({std::string(*m.GetString("role")), std::string(*m.GetString("content"))});
    }
    const std::string text = t.Render(messages, *c.GetBool("add_generation_prompt"));
    EXPECT_EQ(text, *c.GetString("rendered"));
    EXPECT_EQ(tokenizer_->Encode(text, true), Ids(c));
  }
}

TEST_F(DefaultModelTokenizer, RagPromptIsTheTokenizedChatPrompt) {
  ASSERT_OK_AND_ASSIGN(const RagPromptBuilder builder, RagPromptBuilder::Create(tokenizer_));
  const std::vector<std::string> chunks = {
      "Aspirin is contraindicated in children under 16 because of Reye's syndrome.",
      "The clinic's opening hours are 8:00 to 17:00, Monday to Friday."};
  const RagPrompt prompt = builder.Build("Can a 12-year-old take aspirin?", chunks);
  const std::vector<ChatMessage> messages = {
      {"system", builder.system_prompt() +
                     "\n\nUse the following documents to answer the question.\n" + chunks[0] +
                     "\n" + chunks[1] + "\n"},
      {"user", "Can a 12-year-old take aspirin?"}};
  const std::string rendered = builder.chat_template().Render(messages, true);
  // Segment boundaries fall where the pre-tokenizer cuts anyway (a "\n" before text), so the
  // ids equal those of the whole prompt.
  EXPECT_EQ(prompt.Concatenated(), tokenizer_->Encode(rendered, true));
}

// Not a benchmark: prints the encode speed for the record, on the fixture's strings once
// (varied text, ~200 KB) and on them repeated to over 1 MB (words repeat, as in real documents).
TEST_F(DefaultModelTokenizer, EncodeSpeed) {
  std::string text;
  for (const JsonValue& c : **(*reference_->Get("strings"))->AsArray()) {
    text += *c.GetString("text");
    text += "\n";
  }
  std::string repeated = text;
  while (repeated.size() < (1 << 20)) repeated += text;
  for (const std::string* input : {&text, &repeated}) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tokenizer_->Encode(*input, true);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "encoded " << input->size() << " bytes into " << ids.size() << " tokens in "
              << seconds * 1e3 << " ms: " << input->size() / seconds / 1e6 << " MB/s\n";
    EXPECT_FALSE(ids.empty());
  }
}

}  // namespace
}  // namespace silo::engine
