// The querier's side of federated retrieval (DESIGN.md §5): embed the question here, send only
// the embedding to every participant in parallel (each call with its own deadline), search the
// querier's own corpus, and keep the global top-k of all answers. Participants that fail or miss
// their deadline are reported, and the answer is made from the others.
//
// Thread-safe (each call is independent; PeerChannels is thread-safe).
#ifndef SILO_NODE_FEDERATED_RETRIEVAL_H_
#define SILO_NODE_FEDERATED_RETRIEVAL_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "node/chunk_handles.h"
#include "node/peer_channels.h"
#include "retrieval/federated_merge.h"
#include "retrieval/knowledge_base.h"
#include "silo/v1/coordinator.pb.h"

namespace silo::node {

inline constexpr int32_t kMaxQueryTopK = 64;
inline constexpr size_t kMaxQuestionBytes = size_t{32} * 1024;  // UTF-8, as in QueryRequest

struct FederatedRetrievalOptions {
  int32_t top_k = 8;  // 1..kMaxQueryTopK
  retrieval::MergeRule merge = retrieval::MergeRule::kScore;
  absl::Duration owner_timeout = absl::Seconds(2);
};

struct FederatedRetrievalResult {
  std::vector<v1::Source> sources;          // the global top-k, best first
  std::vector<v1::NodeFailure> unanswered;  // Placement.offline, then participants without an
                                            // answer
  int64_t n_candidates = 0;                 // hits of all lists before the merge
};

// The querier's own corpus and identity, and how it reaches the others.
struct Querier {
  std::string node_id;
  const retrieval::KnowledgeBase* corpus = nullptr;  // embeds the question; searched too
  const ChunkHandles* handles = nullptr;             // handles of the querier's own chunks
  v1::ModelFingerprint embedder;
  bool citations = false;  // whether its own sources carry citations
  PeerChannels* peers = nullptr;
};

// InvalidArgument for an empty or over-long question or options out of range; the embedder's
// errors. Failures of single participants are reported in the result, not returned.
absl::StatusOr<FederatedRetrievalResult> RetrieveFederated(
    const Querier& querier, const v1::Placement& placement, std::string_view question,
    const FederatedRetrievalOptions& options);

}  // namespace silo::node

#endif  // SILO_NODE_FEDERATED_RETRIEVAL_H_
