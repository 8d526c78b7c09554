// Chat templates: detection from Jinja text and rendering, checked against what Hugging Face's
// apply_chat_template renders (tests/engine/fixtures/tokenizer_reference.json, written by
// make_tokenizer_fixture.py) for SmolLM2's, Llama-3's and Qwen2's templates.
#include "engine/chat_template.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;

JsonValue ReadReference() {
  std::ifstream in(std::string(SILO_SOURCE_DIR) +
                   "/tests/engine/fixtures/tokenizer_reference.json");
  std::ostringstream text;
  text << in.rdbuf();
  absl::StatusOr<JsonValue> json = ParseJson(text.str());
  EXPECT_OK(json);
  return json.ok() ? *std::move(json) : JsonValue();
}

std::vector<ChatMessage> MessagesOf(const JsonValue& c) {
  std::vector<ChatMessage> messages;
  for (const JsonValue& m : **(*c.Get("messages"))->AsArray()) {
    messages.push_back({std::string(*m.GetString("role")), std::string(*m.GetString("content"))});
  }
  return messages;
}

TEST(ChatTemplate, RendersSmolLm2LikeHuggingFace) {
  const JsonValue reference = ReadReference();
  ASSERT_OK_AND_ASSIGN(const ChatTemplate t,
                       ChatTemplate::FromJinja(*reference.GetString("chat_template")));
  EXPECT_EQ(t.kind(), ChatTemplate::Kind::kChatMl);
  EXPECT_EQ(t.default_system(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  int compared = 0;
  for (const JsonValue& c : **(*reference.Get("chats"))->AsArray()) {
    EXPECT_EQ(t.Render(MessagesOf(c), *c.GetBool("add_generation_prompt")),
              *c.GetString("rendered"));
    ++compared;
  }
  EXPECT_EQ(compared, 4);
}

TEST(ChatTemplate, RendersLlama3AndQwen2LikeHuggingFace) {
  const JsonValue reference = ReadReference();
  int compared = 0;
  for (const JsonValue& c : **(*reference.Get("other_templates"))->AsArray()) {
    const std::string name(*c.GetString("name"));
    SCOPED_TRACE(name);
    ASSERT_OK_AND_ASSIGN(const ChatTemplate t, ChatTemplate::FromJinja(*c.GetString("template")));
    EXPECT_EQ(t.kind(),
              name == "llama3" ? ChatTemplate::Kind::kLlama3 : ChatTemplate::Kind::kChatMl);
    EXPECT_EQ(t.Render(MessagesOf(c), *c.GetBool("add_generation_prompt")),
              *c.GetString("rendered"));
    ++compared;
  }
  EXPECT_EQ(compared, 8);
}

TEST(ChatTemplate, PiecesComposeTheRendering) {
  const ChatTemplate t = ChatTemplate::Of(ChatTemplate::Kind::kChatMl);
  EXPECT_EQ(t.default_system(), std::nullopt);
  const std::vector<ChatMessage> messages = {{"user", "Hi"}};
  EXPECT_EQ(t.Render(messages, true), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.Render({}, false), "");
  const ChatTemplate llama = ChatTemplate::Of(ChatTemplate::Kind::kLlama3, "ignored");
  EXPECT_EQ(llama.default_system(), std::nullopt);
  EXPECT_EQ(llama.Render(messages, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(llama.GenerationPrompt(), "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, UnknownOrMissingTemplatesAreErrors) {
  EXPECT_THAT(ChatTemplate::FromJinja(""), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ChatTemplate::FromJinja("{% for m in messages %}[INST] {{ m.content }} [/INST]"
                                      "{% endfor %}"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::engine
