// DocumentStreams against one sequence per document run alone: the shared prefix, the batched
// steps, rollback and cancellation change nothing in the logits.
#include "engine/document_streams.h"

#include <atomic>
#include <memory>
#include <vector>

#include "attention/backend.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_model.h"

namespace silo::engine {
namespace {

using ::silo::testing::StatusIs;

class DocumentStreamsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path =
        dir_.WriteFile("tiny.gguf", silo::testing::MakeTinyModel({.vocab_size = 96}).gguf);
    ASSERT_OK_AND_ASSIGN(model_, Model::Open(path));
    transformer_ = std::make_unique<Transformer>(*model_, pool_);
  }

  // Last-token logits of `tokens` run alone in a fresh cache.
  std::vector<float> Alone(const std::vector<int32_t>& tokens) {
    KvCache cache(model_->config(), attention::KvDType::kF32, 4096);
    const SequenceId sequence = cache.NewSequence();
    std::vector<int32_t> positions(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) positions[i] = static_cast<int32_t>(i);
    const SequenceInput input{.sequence = sequence, .tokens = tokens, .positions = positions};
    std::vector<float> logits;
    EXPECT_OK(transformer_->Forward({&input, 1}, cache, logits));
    return logits;
  }

  void ExpectStreamsMatch(const DocumentStreams& streams, const DocumentStreamsPrompt& prompt,
                          const std::vector<int32_t>& answer) {
    const int32_t vocab = streams.vocab_size();
    ASSERT_EQ(streams.logits().size(), prompt.documents.size() * vocab);
    for (size_t k = 0; k < prompt.documents.size(); ++k) {
      std::vector<int32_t> tokens = prompt.prefix;
      tokens.insert(tokens.end(), prompt.documents[k].begin(), prompt.documents[k].end());
      tokens.insert(tokens.end(), prompt.suffix.begin(), prompt.suffix.end());
      tokens.insert(tokens.end(), answer.begin(), answer.end());
      const std::vector<float> expected = Alone(tokens);
      for (int32_t i = 0; i < vocab; ++i) {
        ASSERT_NEAR(streams.logits()[k * vocab + i], expected[i], 1e-4) << "stream " << k;
      }
    }
  }

  silo::testing::TempDir dir_;
  ThreadPool pool_{2};
  std::unique_ptr<Model> model_;
  std::unique_ptr<Transformer> transformer_;
};

TEST_F(DocumentStreamsTest, EveryStepMatchesEachDocumentRunAlone) {
  const DocumentStreamsPrompt prompt{
      .prefix = {1, 2, 3}, .documents = {{10, 11, 12, 13}, {20}, {}}, .suffix = {5, 6}};
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStreams> streams,
                       DocumentStreams::Start(*transformer_, prompt, 8));
  EXPECT_EQ(streams->n_streams(), 3);
  ExpectStreamsMatch(*streams, prompt, {});
  std::vector<int32_t> answer;
  for (const int32_t token : {40, 41, 42}) {
    ASSERT_OK(streams->Append(token));
    answer.push_back(token);
    ExpectStreamsMatch(*streams, prompt, answer);
  }
  // A rejected draft: back to one answer token, then another continuation.
  ASSERT_OK(streams->Truncate(1));
  EXPECT_TRUE(streams->logits().empty());
  ASSERT_OK(streams->Append(77));
  ExpectStreamsMatch(*streams, prompt, {40, 77});
}

TEST_F(DocumentStreamsTest, AResumedAnswerStartsWhereItStopped) {
  const DocumentStreamsPrompt prompt{.prefix = {1}, .documents = {{10, 11}, {20}}, .suffix = {5}};
  const std::vector<int32_t> answer = {40, 41};
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStreams> streams,
                       DocumentStreams::Start(*transformer_, prompt, 4, answer));
  EXPECT_EQ(streams->n_answer_tokens(), 2);
  ExpectStreamsMatch(*streams, prompt, answer);
  ASSERT_OK(streams->Append(42));
  ExpectStreamsMatch(*streams, prompt, {40, 41, 42});
  ASSERT_OK(streams->Truncate(1));  // into the resumed part
  ASSERT_OK(streams->Append(43));
  ExpectStreamsMatch(*streams, prompt, {40, 43});
  EXPECT_THAT(DocumentStreams::Start(*transformer_, prompt, 2, answer),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DocumentStreams::Start(*transformer_, prompt, 4, std::vector<int32_t>{96}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(DocumentStreamsTest, CancelledAppendLeavesTheStreamsAsTheyWere) {
  const DocumentStreamsPrompt prompt{.prefix = {1}, .documents = {{10, 11}, {20}}, .suffix = {5}};
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DocumentStreams> streams,
                       DocumentStreams::Start(*transformer_, prompt, 4));
  std::atomic<bool> cancel{true};
  EXPECT_THAT(streams->Append(40, &cancel), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(streams->n_answer_tokens(), 0);
  cancel = false;
  ASSERT_OK(streams->Append(40, &cancel));
  ExpectStreamsMatch(*streams, prompt, {40});
}

TEST_F(DocumentStreamsTest, RejectsBadPromptsAndLimits) {
  EXPECT_THAT(
      DocumentStreams::Start(*transformer_, {.prefix = {1}, .documents = {}, .suffix = {}}, 4),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      DocumentStreams::Start(*transformer_, {.prefix = {}, .documents = {{}}, .suffix = {}}, 4),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      DocumentStreams::Start(*transformer_, {.prefix = {1}, .documents = {{2}}, .suffix = {}}, 0),
      StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<DocumentStreams> streams,
      DocumentStreams::Start(*transformer_, {.prefix = {}, .documents = {{2}}, .suffix = {}}, 1));
  EXPECT_THAT(streams->Append(96), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(streams->Append(3));
  EXPECT_THAT(streams->Append(3), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(streams->Truncate(2), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::engine
