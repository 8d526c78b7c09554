// The arithmetic of DRAGON's aggregation (DESIGN.md §7): a side's local mixture over its document
// streams, the aggregator's mixture of the two sides, drafting, the speculative-sampling verdict,
// and distributions on the wire (full F32, or top-p truncated as uint32 index + f16 value).
//
// With scores s_k of a side's chunks, p^s = Σ_k softmax(s)_k · p_k and h^s = logsumexp(s);
// the aggregator's p = η^a p^a + η^b p^b with η = softmax(h^a, h^b) is the mixture over every
// chunk held in one place (what `centralized-mixture` computes). p_k is softmax(logits_k / T)
// for temperature T > 0 and softmax(logits_k) for greedy decoding.
//
// Thread-safety: free functions without shared state.
#ifndef SILO_NODE_DRAGON_AGGREGATION_H_
#define SILO_NODE_DRAGON_AGGREGATION_H_

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "silo/v1/node.pb.h"

namespace silo::node {

struct SideMixture {
  float h = 0;           // logsumexp of the side's chunk scores
  std::vector<float> p;  // [vocab_size] next-token distribution p^s
};

// log Σ exp(values), stably. Precondition: not empty.
float LogSumExp(std::span<const float> values);

// logits [n_streams, vocab_size] row-major, scores [n_streams]. InvalidArgument when the shapes
// disagree, there is no stream, a value is not finite or temperature < 0.
absl::StatusOr<SideMixture> MixStreams(std::span<const float> logits, std::span<const float> scores,
                                       float temperature);

// η^a p^a + η^b p^b. Precondition: equal vocabulary sizes.
std::vector<float> MixSides(const SideMixture& a, const SideMixture& b);

// The drafted token: argmax p when greedy, else a sample from p with `generator`.
int32_t DraftToken(std::span<const float> p, bool greedy, std::mt19937_64& generator);

struct DraftVerdict {
  int32_t token = 0;      // the committed token
  bool accepted = false;  // whether it is the draft
};

// The speculative-sampling rule for a draft x̃ drawn from `proposal`: accept with probability
// min(1, target(x̃)/proposal(x̃)), else resample from norm(max(0, target − proposal)); the
// committed token then follows `target` exactly. Greedy: the token is argmax target. Precondition:
// equal sizes, draft in range.
DraftVerdict VerifyDraft(std::span<const float> target, std::span<const float> proposal,
                         int32_t draft, bool greedy, std::mt19937_64& generator);

// The smallest set of most probable tokens whose mass reaches top_p (at most kMaxTruncatedTokens),
// renormalized, as a dense distribution: what a side drafts from and sends when truncating.
// top_p ≥ 1 returns p unchanged.
inline constexpr int32_t kMaxTruncatedTokens = 4096;
std::vector<float> TruncateTopP(std::span<const float> p, float top_p);

// p on the wire: F32 [vocab_size] when full, else its non-zero entries (TruncateTopP's output)
// as indices in descending probability and f16 values.
v1::TokenDistribution EncodeDistribution(std::span<const float> p, bool full);

// The dense distribution of a received message, renormalized to sum 1. InvalidArgument for a
// wrong dtype or shape, indices out of range or repeated, more than kMaxTruncatedTokens entries,
// negative or non-finite values, or no mass.
absl::StatusOr<std::vector<float>> DecodeDistribution(const v1::TokenDistribution& message,
                                                      int32_t vocab_size);

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_AGGREGATION_H_
