#include "common/json.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo {
namespace {

using ::silo::testing::IsOkAndHolds;
using ::silo::testing::StatusIs;
using ::testing::HasSubstr;

TEST(Json, ParsesAConfigFile) {
  ASSERT_OK_AND_ASSIGN(const JsonValue config, ParseJson(R"( {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576, "rms_norm_eps": 1e-05, "rope_theta": 100000.0,
    "tie_word_embeddings": true, "rope_scaling": null,
    "name": "caf\u00e9 \ud83d\ude00 \"q\"\n"
  } )"));
  ASSERT_OK_AND_ASSIGN(const int64_t hidden, config.GetInt("hidden_size"));
  EXPECT_EQ(hidden, 576);
  ASSERT_OK_AND_ASSIGN(const double eps, config.GetDouble("rms_norm_eps"));
  EXPECT_DOUBLE_EQ(eps, 1e-5);
  ASSERT_OK_AND_ASSIGN(const double theta, config.GetDouble("rope_theta"));
  EXPECT_EQ(theta, 100000.0);
  EXPECT_THAT(config.GetInt("rope_theta"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_theta")));
  ASSERT_OK_AND_ASSIGN(const bool tied, config.GetBool("tie_word_embeddings"));
  EXPECT_TRUE(tied);
  ASSERT_NE(config.Find("rope_scaling"), nullptr);
  EXPECT_TRUE(config.Find("rope_scaling")->is_null());
  ASSERT_OK_AND_ASSIGN(const std::string_view name, config.GetString("name"));
  EXPECT_EQ(name, "caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"\n");
  ASSERT_OK_AND_ASSIGN(const JsonValue* architectures, config.Get("architectures"));
  ASSERT_OK_AND_ASSIGN(const JsonValue::Array* list, architectures->AsArray());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_THAT((*list)[0].AsString(), IsOkAndHolds(std::string_view("LlamaForCausalLM")));
  EXPECT_THAT(config.GetInt("num_layers"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(Json, KeepsLargeIntegersExact) {
  ASSERT_OK_AND_ASSIGN(const JsonValue value, ParseJson("[9007199254740993, -12, 0, 1.5e3]"));
  ASSERT_OK_AND_ASSIGN(const JsonValue::Array* list, value.AsArray());
  EXPECT_THAT((*list)[0].AsInt(), IsOkAndHolds(int64_t{9007199254740993}));
  EXPECT_THAT((*list)[1].AsInt(), IsOkAndHolds(int64_t{-12}));
  EXPECT_THAT((*list)[3].AsDouble(), IsOkAndHolds(1500.0));
  EXPECT_THAT((*list)[3].AsInt(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Json, RejectsMalformedDocumentsWithAPosition) {
  const char* bad[] = {
      "",    "{",          "{\"a\" 1}", "[1,]",        "[01]",     "\"abc",   "\"\\x\"",
      "tru", "{\"a\":1,}", "1 2",       "\"\\ud800\"", "\"a\tb\"", "[1e999]", "{\"a\":1,\"a\":2}",
      "-"};
  for (const char* text : bad) {
    EXPECT_THAT(ParseJson(text), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte")))
        << text;
  }
  EXPECT_THAT(ParseJson("{\"a\":1,\"a\":2}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate key \"a\"")));
}

TEST(Json, LimitsNesting) {
  const std::string deep(kMaxJsonDepth + 2, '[');
  EXPECT_THAT(ParseJson(deep), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nesting")));
  std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_OK(ParseJson(ok));
}

TEST(Json, LimitsTheNumberOfValues) {
  std::string text = "[0";
  for (int64_t i = 1; i < kMaxJsonValues; ++i) text += ",0";
  text += "]";  // the array itself is one more value than kMaxJsonValues
  EXPECT_THAT(ParseJson(text),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than")));
  text.erase(text.size() - 3, 2);  // one element fewer: exactly kMaxJsonValues values
  EXPECT_OK(ParseJson(text));
}

TEST(Json, HandlesLargeObjects) {
  std::string text = "{";
  for (int i = 0; i < 50000; ++i)
    text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":" + std::to_string(i);
  text += "}";
  ASSERT_OK_AND_ASSIGN(const JsonValue value, ParseJson(text));
  ASSERT_OK_AND_ASSIGN(const JsonValue::Object* object, value.AsObject());
  EXPECT_EQ(object->size(), 50000u);
  EXPECT_EQ(object->back().first, "k49999");
}

}  // namespace
}  // namespace silo
