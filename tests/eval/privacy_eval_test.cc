// The smoke configuration of `silo-eval privacy`: one question, the three baselines, the
// published setting (FedRAG with no protected layer), the default setting and protect_mode
// OWNER, over a corpus of three FAQ files; the end-to-end cost of each FedRAG setting over a
// LocalFederation of the same files. The whole vocabulary is the attacker's.
#include "eval/privacy_eval.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "coordinator/coordinator_state.h"
#include "gtest/gtest.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

constexpr char kSources[] = "/usr/share/doc/python3.11/html/_sources";

double Percent(int64_t part, int64_t whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

const AttackResult* Find(const SettingResult& setting, std::string_view attack,
                         std::string_view target) {
  for (const AttackResult& result : setting.attacks) {
    if (result.attack == attack && result.target == target) return &result;
  }
  return nullptr;
}

TEST(PrivacyEval, AttacksBreakTheBaselinesAndTheDefaultStaysAtChance) {
  ASSERT_TRUE(fs::is_directory(kSources)) << "python3.11-doc is missing: run scripts/install-deps";
  silo::testing::TempDir dir;
  const fs::path docs = dir.path() / "docs";
  fs::create_directories(docs / "faq");
  fs::create_directories(docs / "tutorial");
  for (const char* name :
       {"gui.rst.txt", "installed.rst.txt", "windows.rst.txt", "index.rst.txt"}) {
    fs::copy_file(fs::path(kSources) / "faq" / name, docs / "faq" / name);
  }
  fs::copy_file(fs::path(kSources) / "tutorial" / "appetite.rst.txt",
                docs / "tutorial" / "appetite.rst.txt");

  PrivacyEvalOptions options;
  options.federation.work_dir = (dir.path() / "federation").string();
  options.federation.docs_dir = docs.string();
  ASSERT_OK_AND_ASSIGN(options.federation.decoder_model, silo::testing::DefaultModelPath());
  ASSERT_OK_AND_ASSIGN(options.federation.embedder_model, silo::testing::EmbedderDir());
  options.federation.make_dev_ca = std::string(SILO_SOURCE_DIR) + "/deploy/certs/make-dev-ca";
  options.corpus_dir = (dir.path() / "corpus").string();
  options.out_dir = (dir.path() / "out").string();
  options.n_questions = 1;
  options.smoke = true;
  options.cost_questions = 1;
  options.cost_tokens = 16;
  options.embedding_pool = 200;
  std::ostringstream out, log;
  absl::StatusOr<PrivacyEvalResult> result = RunPrivacyEval(options, out, log);
  ASSERT_OK(result.status()) << log.str();
  std::printf("%s\n", out.str().c_str());

  // The attacks work: every baseline gives its chunk tokens and the query token away.
  int baselines = 0;
  for (const SettingResult& setting : result->settings) {
    if (setting.setting.kind == ViewKind::kFedRag) continue;
    ++baselines;
    const AttackResult* chunks = Find(setting, "exact-scores", "chunk tokens");
    const AttackResult* query = Find(setting, "exact-scores", "query tokens");
    ASSERT_NE(chunks, nullptr);
    ASSERT_NE(query, nullptr);
    EXPECT_GT(chunks->recovered.n, 100);
    EXPECT_GE(Percent(chunks->recovered.top1, chunks->recovered.n), 95.0) << setting.setting.name;
    EXPECT_EQ(query->recovered.top1, query->recovered.n) << setting.setting.name;
    if (setting.setting.kind == ViewKind::kPlaintext) {
      const AttackResult* values = Find(setting, "vocab-match-v", "chunk tokens");
      ASSERT_NE(values, nullptr);
      EXPECT_GE(Percent(values->recovered.top1, values->recovered.n), 95.0);
    }
  }
  EXPECT_EQ(baselines, 3);

  // The default holds as README's "Threat model" says: every attack that needs only the open
  // weights stays within chance + 1 point, for a few percent of perplexity (3.1% over five
  // questions in the full run; one question here is noisier); an attacker holding the documents
  // still recovers chunk tokens (no setting stops it; if this starts failing, the README is
  // stale).
  const v1::PrivacySettings defaults = coordinator::DefaultPrivacySettings();
  const SettingResult* chosen = nullptr;
  for (const SettingResult& setting : result->settings) {
    const v1::PrivacySettings& privacy = setting.setting.privacy;
    if (setting.setting.kind == ViewKind::kFedRag && privacy.key_scope() == defaults.key_scope() &&
        privacy.mixer() == defaults.mixer() &&
        privacy.protect_layers() == defaults.protect_layers() &&
        privacy.protect_mode() == defaults.protect_mode()) {
      chosen = &setting;
    }
  }
  ASSERT_NE(chosen, nullptr) << "the smoke sweep lacks the default setting";
  double pool_excess = 0;
  for (const AttackResult& attack : chosen->attacks) {
    if (!IsControlledByPrivacySettings(attack)) continue;
    const double recovered = Percent(attack.recovered.top1, attack.recovered.n);
    const double chance = Percent(attack.chance.top1, attack.chance.n);
    if (NeedsDocumentPool(attack)) {
      pool_excess = std::max(pool_excess, recovered - chance);
    } else {
      EXPECT_LE(recovered, chance + 1.0) << attack.attack << " on " << attack.target;
    }
  }
  EXPECT_GT(pool_excess, 10.0);
  ASSERT_GT(chosen->perplexity, 0);
  EXPECT_LE(chosen->perplexity / chosen->reference_perplexity - 1, 0.06);

  // The reports are written.
  for (const char* name :
       {"privacy.json", "privacy.csv", "privacy.md", "recovery.png", "frontier.png"}) {
    EXPECT_GT(fs::file_size(fs::path(options.out_dir) / name), 100u) << name;
  }
  std::ifstream png(fs::path(options.out_dir) / "recovery.png", std::ios::binary);
  std::string signature(8, '\0');
  png.read(signature.data(), 8);
  EXPECT_EQ(signature, std::string("\x89PNG\r\n\x1a\n", 8));
}

}  // namespace
}  // namespace silo::eval
