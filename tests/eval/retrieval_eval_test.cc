// The smoke configuration of `silo-eval retrieval`: three small files of the Python FAQ (the
// full run ingests the whole documentation and takes tens of minutes on two cores).
#include "eval/retrieval_eval.h"

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::eval {
namespace {

constexpr char kFaqDir[] = "/usr/share/doc/python3.11/html/_sources/faq";

TEST(RetrievalEval, FindsMostAnswersOfASmallFaq) {
  namespace fs = std::filesystem;
  ASSERT_TRUE(fs::is_directory(kFaqDir)) << "python3.11-doc is missing: run scripts/install-deps";
  silo::testing::TempDir dir;
  const fs::path faq = dir.path() / "faq";
  fs::create_directories(faq);
  for (const char* name : {"gui.rst.txt", "installed.rst.txt", "windows.rst.txt"}) {
    fs::copy_file(fs::path(kFaqDir) / name, faq / name);
  }
  RetrievalEvalOptions options;
  options.docs = {faq.string()};
  options.faq_dir = faq.string();
  ASSERT_OK_AND_ASSIGN(options.knowledge_base.decoder_model, silo::testing::DefaultModelPath());
  ASSERT_OK_AND_ASSIGN(options.knowledge_base.embedder_model, silo::testing::EmbedderDir());
  options.knowledge_base.data_dir = (dir.path() / "data").string();
  options.knowledge_base.kv_shards = retrieval::KvShardMode::kOff;
  std::ostringstream log;
  ASSERT_OK_AND_ASSIGN(const RetrievalEvalResult result, RunRetrievalEval(options, log));
  std::ostringstream table;
  PrintRetrievalEval(result, /*per_question=*/true, table);
  std::printf("%s", table.str().c_str());
  ASSERT_EQ(result.ks, (std::vector<int>{1, 5, 10}));
  EXPECT_GE(result.questions.size(), 12u);
  // Recall can only grow with k, and a small FAQ is easy: the floor is below what it measures
  // (printed above), so that it fails only when retrieval breaks.
  EXPECT_LE(result.recall[0], result.recall[1]);
  EXPECT_LE(result.recall[1], result.recall[2]);
  EXPECT_GE(result.recall[1], 0.8);
  EXPECT_NE(RetrievalEvalJson(result).find("\"recall\""), std::string::npos);
}

}  // namespace
}  // namespace silo::eval
