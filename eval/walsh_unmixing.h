// Attack 3 of DESIGN.md §6 on the sphps mixer: undo Φ = S1·P1·H·P2·S2 from the rows of one key.
//
// K′ = Π·K·Φ. Write Y = K·S1·P1 (K up to a signed scaling and permutation of its columns) and
// Z = Y·H, so that K′ = Z·P2·S2. When Y's columns are nearly uncorrelated, Z's covariance is
// close to a function of a ⊕ b alone (Walsh structure): C_Z[a][b] = Σ_i var(Y_i)·χ_i(a ⊕ b)/d,
// whose eigenvectors are the Walsh functions χ_i. K′'s column correlation is that matrix with
// rows and columns permuted by P2 and signed by S2 (S2's magnitudes cancel in a correlation),
// so its eigenvectors are ±1 vectors σ ⊙ χ_i∘label: a labelling of K′'s columns by GF(2)^log₂d
// and the signs σ are all that is unknown. The attack
//   1. rounds the eigenvectors of K′'s column correlation R (and `random_starts` random sign
//      vectors) to ±1 and climbs each to a local maximum of eᵀ·R·e by single sign flips;
//   2. takes a candidate e0 as σ ⊙ χ, multiplies the others by it (σ cancels: characters
//      χ_a·χ_b = χ_{a⊕b}) and keeps those that split every class of the labelling so far in
//      half, each one more bit of every column's label;
//   3. labels the columns still tied arbitrarily and improves the labelling and σ by swaps
//      and sign flips, maximizing Σ_i (e_iᵀ·R·e_i)² over the d transformed columns (with a
//      fixed Frobenius norm, that is the least correlation left between them);
//   4. kicks the best labelling `kicks` times (a few random swaps and flips) and searches
//      again, keeping improvements (single moves cannot leave some wrong labellings);
//   5. keeps, over `tries` choices of e0, the best; the rows K′·diag(1/std)·E/√d are then K up
//      to a signed scaling and permutation of its columns when the attack succeeds.
// It also weighs the hypothesis that the rows are not mixed at all (plaintext, permutation
// only): the unmixed rows win only when they leave clearly less correlation between columns
// than the rows as given and are less Gaussian (mean |excess kurtosis|; a mix sums many
// columns, which makes them more Gaussian).
//
// Keys must have more rows than columns, and the width must be a power of two (sphps pads to
// one). Real keys' columns are correlated (layer 0 strongly, deeper layers less), which is what
// makes the attack fail where it fails; the harness measures where.
//
// Thread-safety: pure functions.
#ifndef SILO_EVAL_WALSH_UNMIXING_H_
#define SILO_EVAL_WALSH_UNMIXING_H_

#include <cstdint>
#include <vector>

namespace silo::eval {

struct WalshUnmixingOptions {
  int32_t random_starts = 64;  // random sign vectors climbed beside the eigenvectors
  int32_t tries = 8;           // candidates tried as e0
  int32_t max_sweeps = 30;     // of the swap-and-flip search
  int32_t kicks = 40;          // random perturbations of the best labelling, searched again
  // The unmixed rows replace the rows as given only when their mean |correlation| is below
  // this share of the rows' own (and they are less Gaussian).
  double correlation_ratio = 0.7;
  uint64_t seed = 1;
};

struct WalshUnmixing {
  bool unmixed_as_given = false;  // the rows looked unmixed: `rows` are them, centred, scaled
  std::vector<float> rows;        // [n, d]: the attacker's estimate of K·S1·P1 (see above)
  double non_gaussianity = 0;     // mean |excess kurtosis| of the columns of `rows`
};

// Empty `rows` when n ≤ d, d is not a power of two (or below 2), or a column is constant.
WalshUnmixing UndoWalshMixing(const float* rows, int32_t n, int32_t d,
                              const WalshUnmixingOptions& options);

// Scoring (the harness, not the attacker): how many columns of `estimate` [n, d] correlate
// with a distinct column of `truth` [n, d] (rows in the same order) at |r| ≥ `threshold`.
int32_t MatchedColumns(const float* estimate, const float* truth, int32_t n, int32_t d,
                       double threshold);

}  // namespace silo::eval

#endif  // SILO_EVAL_WALSH_UNMIXING_H_
