// One DRAGON side on a node (DESIGN.md §7): its own top-k chunks with their scores, one stream per
// chunk over the RAG prompt [system][chunk][question], and the protocol of node/dragon_peer.h.
// The device side drives it from AnswerEngine with a DragonCloudLink; the cloud side from
// DragonService. Chunk text never leaves the side; only tokens and distributions do.
//
// Thread-safety: RunDragonSide uses the Transformer from one thread (callers serialize).
#ifndef SILO_NODE_DRAGON_SIDE_H_
#define SILO_NODE_DRAGON_SIDE_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/rag_prompt.h"
#include "engine/tokenizer.h"
#include "engine/transformer.h"
#include "node/dragon_peer.h"
#include "retrieval/knowledge_base.h"

namespace silo::node {

// The side's top_k chunks for `question`; none when top_k is 0 or the corpus is empty (the side
// then decodes from the question alone). The errors of KnowledgeBase::Search.
absl::StatusOr<std::vector<retrieval::SearchHit>> RetrieveDragonChunks(
    const retrieval::KnowledgeBase& corpus, std::string_view question, int32_t top_k);

inline constexpr uint32_t kMaxDragonTokens = 32768;
inline constexpr uint32_t kMaxDragonLookahead = 64;
inline constexpr uint32_t kMaxDragonAlternateEvery = 4096;

// The protocol options both sides derive from the session's parameters, for `side`.
// InvalidArgument for an aggregator that is not DEVICE or CLOUD, max_tokens outside
// 1..kMaxDragonTokens, distribution_top_p outside [0, 1], a lookahead over kMaxDragonLookahead,
// alternate_every outside 1..kMaxDragonAlternateEvery for
// ALTERNATE, an unknown policy, or sampling DRAGON does not do (top_k, top_p: the mixture is
// sampled as it is, at the temperature).
absl::StatusOr<DragonPeerOptions> DragonPeerOptionsOf(const v1::StartSessionRequest& session,
                                                      v1::DragonSide side);

// Every token that ends a generation (engine::Tokenizer::IsEndOfGeneration).
std::vector<int32_t> StopTokensOf(const engine::Tokenizer& tokenizer);

struct DragonSideResult {
  DragonPeerResult peer;
  int32_t n_prompt_tokens = 0;  // all streams' prompts, the shared prefix once
  absl::Duration prefill;       // starting the streams
};

// Starts one stream per hit (scores from the hits) and runs the protocol. `options.stop_tokens`
// is taken from the tokenizer when empty. `streams_started`, when given, runs between the two (the
// device waits there for its link to the cloud, opened while it prefilled); its error ends the
// side. Errors: DocumentStreams::Start, streams_started, RunDragonPeer.
absl::StatusOr<DragonSideResult> RunDragonSide(
    engine::Transformer& transformer, const engine::RagPromptBuilder& prompts,
    std::string_view question, std::span<const retrieval::SearchHit> hits,
    DragonPeerOptions options, DragonInbox& inbox, const DragonSend& send,
    const std::function<void(int32_t)>& on_token,
    const std::function<absl::Status()>& streams_started = nullptr);

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_SIDE_H_
