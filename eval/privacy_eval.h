// `silo-eval privacy`: what each curious node learns in a FedRAG session, per privacy setting.
//
// For FAQ questions of the Python documentation, the harness retrieves chunks from a corpus
// spread over three owners, records the plaintext states of the session (privacy_states.h),
// builds what the compute node receives under every setting (privacy_views.h: the production
// scrambler, and the plaintext / permutation-only / orthogonal-only baselines) and runs the
// attacks (privacy_attacks.h) against it, plus two observers beside the compute node:
//   owner      with protect_mode OWNER, the plain query rows of the protected layers
//              (owner-query); with every mode, the question's retrieval embedding
//              (embedding-inversion: nearest neighbour over a pool of sentences, the FAQ's
//              questions among them, with the open embedder);
//   querier    receives partials (m, l, o) per owner and key: sums over all the key's rows
//              (querier-partials: each o against public value rows);
//   coordinator sees node ids, settings and the question text of the operator's request (it
//              is the user-facing endpoint; it never receives keys, documents or KV).
// With `measure_cost`, every FedRAG setting is also run end to end over a LocalFederation
// (real processes' code, in one process, mTLS on loopback): gold-answer perplexity against the
// plaintext computation of the same chunks, bytes per generated token and per-token latency.
//
// Writes privacy.json, privacy.csv, privacy.md (the report, with the chosen default) and
// recovery.png / frontier.png under out_dir, and prints the table.
//
// Thread-safety: one run at a time.
#ifndef SILO_EVAL_PRIVACY_EVAL_H_
#define SILO_EVAL_PRIVACY_EVAL_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/local_federation.h"
#include "eval/privacy_attacks.h"
#include "eval/privacy_views.h"

namespace silo::eval {

struct PrivacyEvalOptions {
  LocalFederationOptions federation{.work_dir = "build/eval/federation"};
  std::string corpus_dir = "build/eval/privacy-corpus";  // the attack corpus' store (FAQ)
  std::string out_dir = "build/eval/privacy";
  int n_questions = 3;
  int top_k = 4;
  int decode_steps = 4;  // recorded; block-pairs uses them all (it needs ≥ head_dim query rows)
  int score_steps = 1;   // of them, attacked by exact-scores (its cost grows with each)
  int vocab = 0;         // candidate tokens [0, vocab) of the attacker; 0: the whole vocabulary
  int threads = 0;       // 0: every core
  bool smoke = false;    // baselines, the published setting, the default and OWNER only
  std::string only;      // when set, only the settings whose name contains it
  bool measure_cost = true;
  // When set, the utility and cost figures of each setting come from this earlier run's
  // privacy.json (they do not depend on the attacks) instead of being measured.
  std::string costs_from;
  // When set, the learned inversion's figures (attack 5: eval/learned_inversion.py's
  // inversion.json, trained on the GPU machine over ExportInversionData's sessions) join the
  // report under the settings whose rows it was tested on.
  std::string inversion_results;
  int cost_questions = 5;     // per setting, end to end
  int cost_tokens = 32;       // gold-answer tokens scored per question
  int embedding_pool = 2000;  // sentences in the embedding-inversion pool (FAQ questions first)
};

struct SettingResult {
  ObserverSetting setting;
  std::string protect_mode;  // "none", "skip" or "owner"
  std::vector<AttackResult> attacks;
  // From the end-to-end runs (measure_cost), else negative.
  double perplexity = -1, reference_perplexity = -1;
  double bytes_per_token = -1, ms_per_token = -1;
};

struct PrivacyEvalResult {
  std::vector<SettingResult> settings;
  std::string chosen_default;  // setting name, or empty
  std::string default_reason;
};

// The reports of an earlier run again, from its privacy.json (attacks and costs as measured;
// the default chosen anew, the reports written under options.out_dir and the table to `out`).
// NotFound, or InvalidArgument for a file that is not such a report.
absl::StatusOr<PrivacyEvalResult> RewritePrivacyReports(const PrivacyEvalOptions& options,
                                                        const std::string& json_path,
                                                        std::ostream& out);

// Training data of attack 5 (learned inversion, DESIGN.md §6), which eval/learned_inversion.py
// trains on the GPU machine: for `n_questions` sessions (FAQ questions, top_k chunks), every
// chunk row the compute node receives under five views: plaintext and FedRAG (session scope,
// sphps) at layer 0 and at layer 1 (the first layer the default delegates), and FedRAG with the
// dense mixer (the default's) at layer 1. Per view, under
// `dir`: <view>.rows.f16 [n, 2·dim] (K′ row, V′ row), <view>.leverage.f32 [n] (the row's
// leverage in its key, which no Φ changes), <view>.label.i32 [n] (true token) and
// <view>.session.i32 [n] (question index); meta.json describes them.
absl::Status ExportInversionData(const PrivacyEvalOptions& options, const std::string& dir,
                                 int n_questions, std::ostream& log);

// False for attacks on what no privacy knob removes (the retrieval embedding every owner
// receives, the partials the querier receives); the default is chosen over the others.
bool IsControlledByPrivacySettings(const AttackResult& attack);
// True for attacks that need a pool of candidate documents holding the attacked chunks
// (linear-invariants, block-pairs); the others need the open weights only.
bool NeedsDocumentPool(const AttackResult& attack);

absl::StatusOr<PrivacyEvalResult> RunPrivacyEval(const PrivacyEvalOptions& options,
                                                 std::ostream& out, std::ostream& log);

}  // namespace silo::eval

#endif  // SILO_EVAL_PRIVACY_EVAL_H_
