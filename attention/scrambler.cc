#include "attention/scrambler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::attention {
namespace {

// Generator streams of one seed, so that each parameter has its own.
enum Stream : uint64_t {
  kScaleStream = 1,
  kPermutationStream = 2,
  kMatrixStream = 3,
  kRowPermutationStream = 4,  // Π: independent of P1/P2 even if one seed were reused
};

int32_t NextPowerOfTwo(int32_t n) {
  int32_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// Magnitude log-uniform in [1/max_scale, max_scale], sign uniform.
std::vector<float> RandomScales(SeededGenerator& generator, int32_t n, double max_scale) {
  std::vector<float> scales(n);
  const double log_max = std::log(max_scale);
  for (float& scale : scales) {
    const double magnitude = std::exp((2.0 * generator.UniformDouble() - 1.0) * log_max);
    scale = static_cast<float>((generator.NextUint32() & 1u) ? -magnitude : magnitude);
  }
  return scales;
}

std::vector<int32_t> RandomPermutation(SeededGenerator& generator, int32_t n) {
  std::vector<int32_t> permutation(n);
  std::iota(permutation.begin(), permutation.end(), 0);
  for (int32_t i = n - 1; i > 0; --i) {
    std::swap(permutation[i], permutation[generator.Below(static_cast<uint64_t>(i) + 1)]);
  }
  return permutation;
}

std::vector<float> Reciprocals(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = 1.0f / values[i];
  return out;
}

// Haar-random orthogonal [n, n] matrix, row-major: Gram–Schmidt (twice, in f64) on the columns of
// a Gaussian matrix; a positive diagonal of R makes the distribution Haar.
std::vector<double> HaarOrthogonal(SeededGenerator& generator, int32_t n) {
  std::vector<double> columns(static_cast<size_t>(n) * n);  // column c at [c * n, (c + 1) * n)
  for (double& x : columns) x = generator.Normal();
  for (int32_t c = 0; c < n; ++c) {
    double* column = &columns[static_cast<size_t>(c) * n];
    for (int pass = 0; pass < 2; ++pass) {
      for (int32_t p = 0; p < c; ++p) {
        const double* previous = &columns[static_cast<size_t>(p) * n];
        double dot = 0;
        for (int32_t i = 0; i < n; ++i) dot += column[i] * previous[i];
        for (int32_t i = 0; i < n; ++i) column[i] -= dot * previous[i];
      }
    }
    double norm = 0;
    for (int32_t i = 0; i < n; ++i) norm += column[i] * column[i];
    norm = std::sqrt(norm);
    for (int32_t i = 0; i < n; ++i) column[i] /= norm;
  }
  std::vector<double> matrix(columns.size());
  for (int32_t r = 0; r < n; ++r) {
    for (int32_t c = 0; c < n; ++c) matrix[static_cast<size_t>(r) * n + c] = columns[c * n + r];
  }
  return matrix;
}

std::vector<float> ToFloat(const std::vector<double>& values, int32_t n, bool transpose) {
  std::vector<float> out(values.size());
  for (int32_t r = 0; r < n; ++r) {
    for (int32_t c = 0; c < n; ++c) {
      out[static_cast<size_t>(r) * n + c] =
          static_cast<float>(transpose ? values[c * n + r] : values[r * n + c]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<Scrambler> Scrambler::Create(int32_t head_dim, const Seed& seed,
                                            const ScramblerOptions& options) {
  if (head_dim < 1 || head_dim > 1024) {
    return absl::InvalidArgumentError(
        StrCat("scrambler: head_dim ", head_dim, " is outside [1, 1024]"));
  }
  if (!(options.max_scale >= 1.0) || !std::isfinite(options.max_scale)) {
    return absl::InvalidArgumentError("scrambler: max_scale must be finite and at least 1");
  }
  const bool sphps = options.mixer == Mixer::kSphps;
  const int32_t dim = sphps ? NextPowerOfTwo(head_dim) : head_dim;

  SeededGenerator scale_generator(seed, kScaleStream);
  const std::vector<float> s1 = RandomScales(scale_generator, dim, options.max_scale);
  const std::vector<float> s2 = RandomScales(scale_generator, dim, options.max_scale);

  Scrambler scrambler;
  RowTransform& forward = scrambler.forward_;
  forward.dim = dim;
  forward.in_dim = head_dim;
  forward.out_dim = dim;
  forward.pre_scale = s1;
  forward.post_scale = s2;
  RowTransform inverse;
  inverse.dim = dim;
  inverse.in_dim = dim;
  inverse.out_dim = head_dim;
  inverse.pre_scale = Reciprocals(s2);
  inverse.post_scale = Reciprocals(s1);

  if (sphps) {
    SeededGenerator permutation_generator(seed, kPermutationStream);
    forward.mix = inverse.mix = RowMix::kHadamard;
    forward.pre_gather = RandomPermutation(permutation_generator, dim);   // P1
    forward.post_gather = RandomPermutation(permutation_generator, dim);  // P2
    inverse.pre_gather = InversePermutation(forward.post_gather);         // P2ᵀ
    inverse.post_gather = InversePermutation(forward.pre_gather);         // P1ᵀ
  } else {
    SeededGenerator matrix_generator(seed, kMatrixStream);
    const std::vector<double> q = HaarOrthogonal(matrix_generator, dim);
    forward.mix = inverse.mix = RowMix::kMatrix;
    forward.matrix = ToFloat(q, dim, /*transpose=*/false);
    inverse.matrix = ToFloat(q, dim, /*transpose=*/true);
  }

  // Φ^{-T} = S1⁻¹·M·S2⁻¹: the forward transform with reciprocal scales.
  scrambler.inverse_transpose_ = forward;
  scrambler.inverse_transpose_.pre_scale = Reciprocals(s1);
  scrambler.inverse_transpose_.post_scale = Reciprocals(s2);
  scrambler.inverse_ = std::move(inverse);
  return scrambler;
}

std::vector<int32_t> RowPermutation(const Seed& seed, int32_t n_rows) {
  SeededGenerator generator(seed, kRowPermutationStream);
  return RandomPermutation(generator, n_rows);
}

std::vector<int32_t> InversePermutation(const std::vector<int32_t>& permutation) {
  std::vector<int32_t> inverse(permutation.size());
  for (size_t i = 0; i < permutation.size(); ++i) {
    inverse[permutation[i]] = static_cast<int32_t>(i);
  }
  return inverse;
}

namespace {

// The parameters of a set of transforms, stacked on the host before they are uploaded.
struct RowTransformStack {
  std::vector<float> pre_scale, matrix, post_scale;
  std::vector<int32_t> pre_gather, post_gather;
};

}  // namespace

absl::StatusOr<BackendRowTransform> BackendRowTransform::Upload(AttentionBackend& backend,
                                                                const RowTransform& transform) {
  const RowTransform* one[] = {&transform};
  return UploadSet(backend, one);
}

absl::StatusOr<BackendRowTransform> BackendRowTransform::UploadSet(
    AttentionBackend& backend, std::span<const RowTransform* const> transforms) {
  if (transforms.empty()) return absl::InvalidArgumentError("row transform: an empty set");
  // The parameters index rows on the device: check them here, where they are still on the host.
  const RowTransform& first = *transforms.front();
  const size_t dim = first.dim > 0 ? static_cast<size_t>(first.dim) : 0;
  auto valid_gather = [&](const std::vector<int32_t>& gather, bool present) {
    if (gather.empty()) return !present;
    if (gather.size() != dim || !present) return false;
    return std::all_of(gather.begin(), gather.end(), [&](int32_t index) {
      return index >= 0 && static_cast<size_t>(index) < dim;
    });
  };
  RowTransformStack stack;
  for (const RowTransform* t : transforms) {
    if (dim == 0 || t->dim != first.dim || t->in_dim != first.in_dim ||
        t->out_dim != first.out_dim || t->mix != first.mix || t->pre_scale.size() != dim ||
        t->post_scale.size() != dim || !valid_gather(t->pre_gather, !first.pre_gather.empty()) ||
        !valid_gather(t->post_gather, !first.post_gather.empty()) ||
        (t->mix == RowMix::kMatrix && t->matrix.size() != dim * dim)) {
      return absl::InvalidArgumentError(
          StrCat("row transform: parameters do not match dim ", first.dim,
                 " (one shape and mix for the set, scales of dim entries, gathers empty in all or"
                 " of dim indices in [0, dim), matrix dim²)"));
    }
    stack.pre_scale.insert(stack.pre_scale.end(), t->pre_scale.begin(), t->pre_scale.end());
    stack.pre_gather.insert(stack.pre_gather.end(), t->pre_gather.begin(), t->pre_gather.end());
    stack.matrix.insert(stack.matrix.end(), t->matrix.begin(), t->matrix.end());
    stack.post_gather.insert(stack.post_gather.end(), t->post_gather.begin(), t->post_gather.end());
    stack.post_scale.insert(stack.post_scale.end(), t->post_scale.begin(), t->post_scale.end());
  }
  // One buffer for all of them (floats and int32s alike): one allocation, and one page for a
  // kernel to look up, instead of five.
  const size_t n_scale = stack.pre_scale.size();
  const size_t n_pre_gather = stack.pre_gather.size();
  const size_t n_post_gather = stack.post_gather.size();
  const size_t n_matrix = stack.matrix.size();
  const size_t words = 2 * n_scale + n_pre_gather + n_post_gather + n_matrix;
  BackendRowTransform uploaded;
  SILO_ASSIGN_OR_RETURN(uploaded.parameters_, backend.Allocate(words * 4));
  char* base = static_cast<char*>(uploaded.parameters_.data());
  size_t offset = 0;
  auto place = [&](const auto& values) -> absl::StatusOr<const void*> {
    if (values.empty()) return nullptr;
    void* at = base + offset;
    SILO_RETURN_IF_ERROR(backend.CopyIn(at, values.data(), values.size() * 4));
    offset += values.size() * 4;
    return at;
  };
  RowTransformSet& set = uploaded.set_;
  set.count = static_cast<int32_t>(transforms.size());
  set.dim = first.dim;
  set.in_dim = first.in_dim;
  set.out_dim = first.out_dim;
  set.mix = first.mix;
  SILO_ASSIGN_OR_RETURN(const void* pre_scale, place(stack.pre_scale));
  SILO_ASSIGN_OR_RETURN(const void* post_scale, place(stack.post_scale));
  SILO_ASSIGN_OR_RETURN(const void* pre_gather, place(stack.pre_gather));
  SILO_ASSIGN_OR_RETURN(const void* post_gather, place(stack.post_gather));
  SILO_ASSIGN_OR_RETURN(const void* matrix, place(stack.matrix));
  set.pre_scale = static_cast<const float*>(pre_scale);
  set.post_scale = static_cast<const float*>(post_scale);
  set.pre_gather = static_cast<const int32_t*>(pre_gather);
  set.post_gather = static_cast<const int32_t*>(post_gather);
  set.matrix = static_cast<const float*>(matrix);
  return uploaded;
}

absl::Status BackendRowTransform::Run(AttentionBackend& backend, const float* in, float* out,
                                      int64_t n_rows, int64_t in_stride, int64_t out_stride) const {
  RowTransformArgs args;
  args.in = in;
  args.out = out;
  args.n_rows = n_rows;
  args.n_in_rows = n_rows;
  args.in_stride = in_stride != 0 ? in_stride : set_.in_dim;
  args.out_stride = out_stride != 0 ? out_stride : set_.out_dim;
  args.transforms = set_;
  return backend.TransformRows(args);
}

}  // namespace silo::attention
