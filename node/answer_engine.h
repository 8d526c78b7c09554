// The querier's decoder: it answers a placed session's question in GENERATION_MODE_LOCAL (the
// question alone, nothing leaves the node), GENERATION_MODE_DRAGON (DESIGN.md §7: this node is
// the device side, with its own chunks; the placement's dragon_peer is the cloud side),
// GENERATION_MODE_CENTRALIZED (evaluation only: the
// owners hand over their chunks' text, see below) or GENERATION_MODE_FEDRAG (DESIGN.md §6) over
// the virtual context [system][chunk_1]...[chunk_m][question][generated...]:
//   - the system prompt is prefilled here at positions 0..P-1 (it precedes every chunk);
//   - the querier's own chunks are appended here from their KV shards, rotated to their
//     positions;
//   - other owners' chunks stay with them: a FedRagSession has them scrambled onto the compute
//     node and supplies their attention partials at every layer;
//   - the question and every generated token attend to all of it, and tokens stream out.
// The local KV cache is f32, so that FedRAG's only rounding is the wire type of K'/V' and a
// single-process run over the same plaintext KV is its exact reference.
//
// CENTRALIZED gathers the chunks' text here (owners with `serve.plaintext_baseline: true` only)
// and, with kv_mode PREFILL, prefills the whole prompt normally (chunks attend to each other:
// the plaintext RAG baseline); with POSITION_INDEPENDENT it computes each chunk's KV alone, as
// its owner would, and places it where FedRAG places it: the plaintext computation of exactly
// the KV FedRAG attends over.
//
// Thread-safety: one answer at a time (Answer serializes on a lock).
#ifndef SILO_NODE_ANSWER_ENGINE_H_
#define SILO_NODE_ANSWER_ENGINE_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/kv_cache.h"
#include "engine/rag_prompt.h"
#include "engine/sampler.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "node/chunk_handles.h"
#include "node/dragon_side.h"
#include "node/fedrag_key_exchange.h"
#include "node/fedrag_session.h"
#include "node/peer_channels.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/coordinator.pb.h"

namespace silo::node {

struct AnswerRequest {
  std::string question;
  v1::Placement placement;  // mode LOCAL or FEDRAG; session id; compute node
  // FEDRAG: the chunks of the context, in context order (owner, handle, n_tokens); their
  // virtual_start is set by Answer.
  std::vector<v1::Source> sources;
  engine::SamplingParams sampling;
  int32_t max_tokens = 256;
  v1::KvMode kv_mode = v1::KV_MODE_POSITION_INDEPENDENT;
  v1::DType kv_dtype = v1::DTYPE_F32;
  absl::Time deadline = absl::InfiniteFuture();
  // Evaluation: fed instead of generated (at most max_tokens tokens), and scored.
  std::string forced_answer;
  // FedRAG: a compute node failing mid-answer ends it (false) or the answer goes on without the
  // remote chunks (true), the compute node named in AnswerResult::failures.
  bool continue_on_compute_failure = false;
  // DRAGON: chunks each side retrieves from its own corpus, truncation of the distributions on
  // the wire (1 = full), lookahead and aggregator policy.
  int32_t dragon_top_k = 4;
  float distribution_top_p = 1;
  v1::DragonSettings dragon;
};

struct AnswerResult {
  std::vector<v1::Source> sources;  // as requested, virtual_start filled in
  v1::QueryStats stats;             // setup, ttft, total, tokens, bytes
  bool stopped_by_eos = false;
  std::vector<v1::NodeFailure> failures;  // peers the answer went on without
};

inline constexpr absl::Duration kDragonEngineWait = absl::Seconds(10);

class AnswerEngine {
 public:
  // `corpus` (the querier's own; its decoder answers), `handles`, `peers` must outlive it.
  // Errors of RagPromptBuilder::Create (a model without a chat template).
  static absl::StatusOr<std::unique_ptr<AnswerEngine>> Create(
      retrieval::KnowledgeBase* corpus, const ChunkHandles* handles, std::string node_id,
      KeyExchangeSigner signer, PeerChannels* peers, v1::ModelFingerprint model, int32_t threads);

  // Answers; `on_delta` gets the text of each generated token (held back while a character is
  // incomplete) and returns false to stop. InvalidArgument (bad request, context too long),
  // UNIMPLEMENTED (another mode), the FedRagSession's errors, the engine's.
  absl::StatusOr<AnswerResult> Answer(AnswerRequest request,
                                      const std::function<bool(const v1::TextDelta&)>& on_delta);

  const engine::RagPromptBuilder& prompts() const { return prompts_; }

  // DRAGON, the cloud's side (DragonService): runs node/dragon_side.h with this node's decoder,
  // waiting up to kDragonEngineWait for an answer in progress (Unavailable after). Its errors.
  absl::StatusOr<DragonSideResult> RunDragonSide(std::string_view question,
                                                 std::span<const retrieval::SearchHit> hits,
                                                 const DragonPeerOptions& options,
                                                 DragonInbox& inbox, const DragonSend& send,
                                                 const std::function<void(int32_t)>& on_token);

 private:
  AnswerEngine(retrieval::KnowledgeBase* corpus, const ChunkHandles* handles, std::string node_id,
               KeyExchangeSigner signer, PeerChannels* peers, v1::ModelFingerprint model,
               int32_t threads, engine::RagPromptBuilder prompts);

  // Prefills the system prompt at positions 0..n-1, no logits.
  absl::Status PrefillPrefix(engine::KvCache& cache, engine::SequenceId sequence,
                             std::span<const int32_t> prefix);
  // Generates from `prompt` at `first_position` onward, streaming text to `on_delta`; fills
  // result's ttft (from `start`) and generated tokens.
  absl::Status Decode(engine::KvCache& cache, engine::SequenceId sequence,
                      std::span<const int32_t> prompt, int32_t first_position,
                      engine::AttentionHook* hook, const AnswerRequest& request, absl::Time start,
                      AnswerResult& result,
                      const std::function<bool(const v1::TextDelta&)>& on_delta);
  // CENTRALIZED: every source's text, from this node's store or its owner's ExportChunkText.
  absl::StatusOr<std::vector<std::string>> GatherChunkText(const AnswerRequest& request);
  // DRAGON, the device's side: its own chunks, the cloud over a DragonCloudLink.
  absl::StatusOr<AnswerResult> AnswerDragon(
      const AnswerRequest& request, absl::Time start,
      const std::function<bool(const v1::TextDelta&)>& on_delta);
  absl::StatusOr<AnswerResult> AnswerCentralized(
      AnswerRequest request, AnswerResult result, absl::Time start,
      const std::function<bool(const v1::TextDelta&)>& on_delta);

  retrieval::KnowledgeBase* corpus_;
  const ChunkHandles* handles_;
  const std::string node_id_;
  const KeyExchangeSigner signer_;
  PeerChannels* peers_;
  const v1::ModelFingerprint model_;
  engine::RagPromptBuilder prompts_;
  std::timed_mutex mutex_;  // one answer at a time
  engine::ThreadPool pool_;
  engine::Transformer transformer_;
};

}  // namespace silo::node

#endif  // SILO_NODE_ANSWER_ENGINE_H_
