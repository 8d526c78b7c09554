// The querier's global ranking of the owners' top-k lists in federated retrieval (DESIGN.md §5).
// Every owner answers with its own best chunks, best first; the querier keeps the k best of the
// union. Owners hold disjoint corpora, so a chunk appears in one list only.
//
// Thread-safe (a pure function).
#ifndef SILO_RETRIEVAL_FEDERATED_MERGE_H_
#define SILO_RETRIEVAL_FEDERATED_MERGE_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace silo::retrieval {

enum class MergeRule {
  // By retrieval score. Scores of one embedder over unit vectors are comparable across owners,
  // so this equals the top-k of one index over the union of the corpora.
  kScore,
  // Reciprocal rank fusion: 1 / (kReciprocalRankOffset + rank), rank counted from 1 in the
  // owner's list. Ignores score scales, for owners whose scores are not comparable.
  kReciprocalRank,
};
inline constexpr double kReciprocalRankOffset = 60;

// "score" or "rrf"; InvalidArgument otherwise.
absl::StatusOr<MergeRule> ParseMergeRule(std::string_view name);

// One kept hit: the list it came from, its rank in that list (from 0) and the score it was
// ranked by (the retrieval score, or the fused one).
struct MergedHit {
  int32_t list = 0;
  int32_t rank = 0;
  double merged_score = 0;
};

// The k best hits of `scores` (scores[i] = list i's retrieval scores, best first), best first.
// Ties go to the lower list index, then the lower rank, so the result is deterministic.
// InvalidArgument when k < 1.
absl::StatusOr<std::vector<MergedHit>> MergeRankedLists(std::span<const std::vector<float>> scores,
                                                        int32_t k, MergeRule rule);

}  // namespace silo::retrieval

#endif  // SILO_RETRIEVAL_FEDERATED_MERGE_H_
