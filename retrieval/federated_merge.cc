#include "retrieval/federated_merge.h"

#include <algorithm>

#include "common/strings.h"

namespace silo::retrieval {

absl::StatusOr<MergeRule> ParseMergeRule(std::string_view name) {
  if (name == "score") return MergeRule::kScore;
  if (name == "rrf") return MergeRule::kReciprocalRank;
  return absl::InvalidArgumentError(
      StrCat("merge rule must be \"score\" or \"rrf\", not \"", name, "\""));
}

absl::StatusOr<std::vector<MergedHit>> MergeRankedLists(std::span<const std::vector<float>> scores,
                                                        int32_t k, MergeRule rule) {
  if (k < 1) return absl::InvalidArgumentError(StrCat("k must be at least 1, not ", k));
  std::vector<MergedHit> hits;
  for (size_t list = 0; list < scores.size(); ++list) {
    for (size_t rank = 0; rank < scores[list].size(); ++rank) {
      const double merged = rule == MergeRule::kScore
                                ? static_cast<double>(scores[list][rank])
                                : 1.0 / (kReciprocalRankOffset + static_cast<double>(rank + 1));
      hits.push_back({.list = static_cast<int32_t>(list),
                      .rank = static_cast<int32_t>(rank),
                      .merged_score = merged});
    }
  }
  const auto better = [](const MergedHit& a, const MergedHit& b) {
    if (a.merged_score != b.merged_score) return a.merged_score > b.merged_score;
    if (a.list != b.list) return a.list < b.list;
    return a.rank < b.rank;
  };
  const size_t keep = std::min(hits.size(), static_cast<size_t>(k));
  std::partial_sort(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(keep), hits.end(),
                    better);
  hits.resize(keep);
  return hits;
}

}  // namespace silo::retrieval
