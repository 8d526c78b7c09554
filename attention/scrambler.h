// The scrambler of DESIGN.md §6: Φ = S1·M·S2 with S1, S2 random diagonal scalings and M a
// secret orthogonal mix, drawn from a seed; and Π, a secret permutation of token rows.
//
//   mixer sphps: M = P1·H·P2 (random permutations around the normalized Walsh–Hadamard matrix);
//                O(d log d) per row; d is padded to the next power of two (zeros), which costs
//                dim / head_dim more bytes and work (80 → 128: 1.6×; 64, 128: none).
//   mixer dense: M = Q, a Haar-random orthogonal matrix built in f64; O(d²) per row, no padding.
//
// Keys are sent as K′ = Π·K·Φ and values as V′ = Π·V·Ψ; a query as q′ = q·Φ^{-T}, so that
// q′·K′ᵀ = q·Kᵀ·Πᵀ exactly; an output o′ = p·V′ comes back as o = o′·Ψ⁻¹.
// Since M is orthogonal, Φ^{-T} = S1⁻¹·M·S2⁻¹ and Φ⁻¹ = S2⁻¹·Mᵀ·S1⁻¹: every transform is one
// RowTransform of the same shape (attention_args.h), which every backend runs.
//
// Scale magnitudes are log-uniform in [1/max_scale, max_scale] with random signs, so
// cond(Φ) ≤ cond(S1)·cond(S2) = max_scale⁴ (16 for the default 2): f16 keys lose at most about
// four more bits than unscrambled ones.
//
// Thread-safety: immutable after Create.
#ifndef SILO_ATTENTION_SCRAMBLER_H_
#define SILO_ATTENTION_SCRAMBLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "attention/attention_args.h"
#include "attention/backend.h"
#include "attention/seeded_generator.h"

namespace silo::attention {

enum class Mixer { kSphps, kDense };

struct ScramblerOptions {
  Mixer mixer = Mixer::kSphps;
  double max_scale = 2.0;  // >= 1
};

// Host copy of one row transform's parameters (see RowTransformSet).
struct RowTransform {
  int32_t dim = 0;
  int32_t in_dim = 0;
  int32_t out_dim = 0;
  std::vector<float> pre_scale;     // [dim]
  std::vector<int32_t> pre_gather;  // [dim], empty for the identity
  RowMix mix = RowMix::kHadamard;
  std::vector<float> matrix;         // [dim, dim] for kMatrix
  std::vector<int32_t> post_gather;  // [dim], empty for the identity
  std::vector<float> post_scale;     // [dim]
};

class Scrambler {
 public:
  // InvalidArgument when head_dim is outside [1, 1024] or max_scale < 1.
  static absl::StatusOr<Scrambler> Create(int32_t head_dim, const Seed& seed,
                                          const ScramblerOptions& options);

  int32_t dim() const { return forward_.dim; }  // padded width of scrambled rows

  const RowTransform& forward() const { return forward_; }                      // x → pad(x)·Φ
  const RowTransform& inverse_transpose() const { return inverse_transpose_; }  // x → pad(x)·Φ^{-T}
  const RowTransform& inverse() const { return inverse_; }  // y → (y·Φ⁻¹)[:head_dim]

 private:
  Scrambler() = default;

  RowTransform forward_;
  RowTransform inverse_transpose_;
  RowTransform inverse_;
};

// A uniformly random permutation of [0, n_rows) drawn from `seed` (Fisher–Yates):
// scrambled row i is original row permutation[i].
std::vector<int32_t> RowPermutation(const Seed& seed, int32_t n_rows);
// The inverse permutation: original row j is scrambled row inverse[j].
std::vector<int32_t> InversePermutation(const std::vector<int32_t>& permutation);

// The parameters of one RowTransform, or of a set of them of one shape (RowTransformSet), in a
// backend's memory, ready to run on rows there.
class BackendRowTransform {
 public:
  static absl::StatusOr<BackendRowTransform> Upload(AttentionBackend& backend,
                                                    const RowTransform& transform);
  // Transform t of the set is transforms[t]. InvalidArgument for an empty set or transforms of
  // different dims, mixes or gathers.
  static absl::StatusOr<BackendRowTransform> UploadSet(
      AttentionBackend& backend, std::span<const RowTransform* const> transforms);

  // For RowTransformArgs and MergeArgs::unscramble; valid while this object lives.
  const RowTransformSet& set() const { return set_; }

  // Runs transform 0 on n_rows rows: in [n_rows, in_dim] → out [n_rows, out_dim], with the
  // given row strides in floats (0: packed). Pointers in the backend's memory.
  absl::Status Run(AttentionBackend& backend, const float* in, float* out, int64_t n_rows,
                   int64_t in_stride = 0, int64_t out_stride = 0) const;

 private:
  BackendRowTransform() = default;

  RowTransformSet set_;       // parameter pointers into parameters_
  BackendBuffer parameters_;  // every array of set_, one after the other
};

}  // namespace silo::attention

#endif  // SILO_ATTENTION_SCRAMBLER_H_
