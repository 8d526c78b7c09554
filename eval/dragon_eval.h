// DRAGON's evaluation (DESIGN.md §7, issue: DRAGON mode): every comparison runs through one
// entry point, RunDragonMode, in this process with the default model:
//   none                 the question alone (no retrieval)
//   device-only          the device's chunks: the mixture of their streams
//   cloud-only           the cloud's chunks
//   centralized-rag      every chunk concatenated in one context (classic RAG)
//   centralized-mixture  every chunk's stream in one place: the exact target of DRAGON
//   sequence             each side writes its whole answer alone; the answer of the side with
//                        the larger retrieval mass h wins once both are at the device
//   sync                 DRAGON without drafting ahead (token-by-token aggregation)
//   dragon               DRAGON: both sides draft ahead, the aggregator verifies
// DRAGON, sync and sequence run the two sides on two threads, each with its own one-thread
// decoder. DRAGON and sync join them by one TCP connection through a TcpShaper (one-way delay
// RTT/2 with jitter; eval/shaped_dragon_link.h): the real protocol code (node/dragon_peer.h)
// over a shaped network, framed directly rather than over gRPC. In all three the cloud starts
// one shaped one-way delay after the device (the question's trip: the first message of the
// session's stream). Sequence sends nothing while decoding: the cloud's answer counts as
// arriving one shaped one-way delay after it is done. The
// chunks of a question are its top n from the whole FAQ: the better half goes to the cloud, the
// rest to the device.
//
// RunDragonUtility prints gold-answer perplexity per mode and chunk count with the gain ratio
// (ppl_none − ppl_dragon) / (ppl_none − ppl_centralized-rag), and greedy DRAGON's agreement with
// centralized-mixture (full and top-p truncated distributions). RunDragonBench prints per-token
// latency and TTFT per mode and RTT and writes latency.png.
//
// Thread-safety: one run at a time.
#ifndef SILO_EVAL_DRAGON_EVAL_H_
#define SILO_EVAL_DRAGON_EVAL_H_

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/language_model.h"
#include "engine/rag_prompt.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "eval/faq_questions.h"
#include "node/dragon_peer.h"
#include "retrieval/knowledge_base.h"

namespace silo::eval {

enum class DragonMode {
  kNone,
  kDeviceOnly,
  kCloudOnly,
  kCentralizedRag,
  kCentralizedMixture,
  kSequence,
  kSync,
  kDragon,
};
std::string_view DragonModeName(DragonMode mode);

// One question's chunks, dealt to the two sides.
struct DragonCase {
  std::string question;
  std::vector<retrieval::SearchHit> device;
  std::vector<retrieval::SearchHit> cloud;
};

struct DragonRunOptions {
  DragonMode mode = DragonMode::kDragon;
  int32_t max_tokens = 64;
  std::vector<int32_t> forced_tokens;  // teacher forcing (perplexity); max_tokens then ignored
  float distribution_top_p = 1;
  int32_t max_lookahead = 16;  // kDragon (kSync uses 0)
  v1::DragonSide aggregator = v1::DRAGON_SIDE_DEVICE;
  node::AggregatorPolicy policy = node::AggregatorPolicy::kFixed;
  absl::Duration rtt = absl::ZeroDuration();  // added between device and cloud
  double jitter = 0.1;                        // of the one-way delay, uniform ±
};

struct DragonRunResult {
  std::vector<int32_t> tokens;
  double forced_logprob = 0;  // Σ log p of the forced tokens
  double ttft_ms = 0;         // start (streams' prefill included) → first token at the device
  double token_ms = 0;        // mean time between later tokens at the device
  double acceptance = -1;     // fraction of drafts (both sides) accepted; -1 without drafts
  int32_t aggregator_moves = 0;
};

// The model, two one-thread decoders (device, cloud) and the FAQ in one store.
class DragonLab {
 public:
  struct Options {
    std::string corpus_dir = "build/eval/dragon-corpus";
    std::string docs_dir = "/usr/share/doc/python3.11/html/_sources";
    std::string decoder_model = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
    std::string embedder_model = "models/all-minilm-l6-v2";
  };
  // Ingests the FAQ (kept between runs) and loads the decoder. The knowledge base's errors.
  static absl::StatusOr<std::unique_ptr<DragonLab>> Open(const Options& options, std::ostream& log);

  const std::vector<FaqQuestion>& faq() const { return faq_; }
  const engine::Tokenizer& tokenizer() const { return base_->decoder().tokenizer(); }

  // Question i of n spread over the FAQ, with its top n_chunks dealt: the better half
  // (rounded down) to the cloud, the rest to the device.
  absl::StatusOr<DragonCase> Case(int i, int n, int n_chunks) const;

  absl::StatusOr<DragonRunResult> Run(const DragonCase& c, const DragonRunOptions& options);

 private:
  DragonLab() = default;

  std::vector<FaqQuestion> faq_;
  std::unique_ptr<retrieval::KnowledgeBase> base_;
  std::unique_ptr<engine::ThreadPool> device_pool_, cloud_pool_;
  std::unique_ptr<engine::Transformer> device_, cloud_;
  std::optional<engine::RagPromptBuilder> prompts_;
  std::vector<int32_t> stop_tokens_;
};

struct DragonUtilityOptions {
  DragonLab::Options lab;
  int n_questions = 20;
  int max_tokens = 64;  // gold-answer tokens scored; greedy tokens compared
  std::vector<int> chunk_counts = {2, 4, 8, 16};
  int agreement_chunks = 4;      // chunks of the DRAGON/centralized comparison
  float truncated_top_p = 0.9f;  // the truncation whose agreement is reported
};

struct DragonUtilityRow {
  int n_chunks = 0;
  double ppl_none = 0, ppl_device = 0, ppl_cloud = 0, ppl_centralized_rag = 0, ppl_dragon = 0;
  double gain_ratio = 0;
};

struct DragonUtilityResult {
  std::vector<DragonUtilityRow> rows;
  int greedy_questions = 0;
  int greedy_identical = 0;  // DRAGON (full distributions) == centralized-mixture, all tokens
  int64_t greedy_tokens = 0;
  int64_t greedy_tokens_equal = 0;
  int64_t truncated_tokens_equal = 0;  // with distribution_top_p = truncated_top_p, same prefix
  int64_t truncated_tokens = 0;
};

absl::StatusOr<DragonUtilityResult> RunDragonUtility(const DragonUtilityOptions& options,
                                                     std::ostream& out, std::ostream& log);

struct DragonBenchOptions {
  DragonLab::Options lab;
  int n_questions = 3;
  int max_tokens = 32;
  int n_chunks = 4;
  std::vector<double> rtts_ms = {0, 50, 100, 200, 300};
  std::string out_dir = "build/eval/dragon-bench";  // latency.png
};

absl::Status RunDragonBench(const DragonBenchOptions& options, std::ostream& out,
                            std::ostream& log);

}  // namespace silo::eval

#endif  // SILO_EVAL_DRAGON_EVAL_H_
