// Argument structs of the attention ops, shared by the CPU backend (.cc) and the CUDA kernels
// (.cu, C++17). Plain data: pointers are in the memory of the backend that runs the op (host
// memory for CPU, device memory for CUDA). Thread-safety: none needed (values).
//
// Vocabulary: a "partial" is attention over one block of keys, kept mergeable:
//   m = max_j s_j,  l = Σ_j exp(s_j − m),  o = Σ_j exp(s_j − m) v_j / l,  s_j = scale · q·k_j.
// A row that sees no key (empty block, or every key masked) has m = −inf, l = 0, o = 0.
#ifndef SILO_ATTENTION_ATTENTION_ARGS_H_
#define SILO_ATTENTION_ATTENTION_ARGS_H_

#include <cstddef>
#include <cstdint>

namespace silo::attention {

// Element type of keys and values. Queries, outputs and statistics are always f32.
enum class KvDType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

constexpr size_t KvDTypeBytes(KvDType dtype) { return dtype == KvDType::kF32 ? 4 : 2; }

// How the orthogonal core of a row transform mixes a row (see RowTransformSet).
enum class RowMix : int32_t { kHadamard = 0, kMatrix = 1 };

// `count` row transforms of one shape, their parameters stacked: transform t is
//   y = post_scale_t ⊙ gather_post_t( mix_t( gather_pre_t( pre_scale_t ⊙ pad(x) ) ) ),
// truncated to out_dim, with pre_scale_t = pre_scale + t·dim (likewise the gathers and
// post_scale) and, for kMatrix, mix_t(u) = u · (matrix + t·dim²) (row-major dim × dim); kHadamard
// is the normalized Walsh–Hadamard transform (dim a power of two). gather_p(u)_j = u_{p[j]}; a
// null gather is the identity for every transform.
struct RowTransformSet {
  int32_t count = 0;
  int32_t dim = 0;
  int32_t in_dim = 0;   // <= dim; missing entries are zero
  int32_t out_dim = 0;  // <= dim
  RowMix mix = RowMix::kHadamard;
  const float* pre_scale = nullptr;      // [count, dim]
  const int32_t* pre_gather = nullptr;   // [count, dim] or null
  const float* matrix = nullptr;         // [count, dim, dim], kMatrix only
  const int32_t* post_gather = nullptr;  // [count, dim] or null
  const float* post_scale = nullptr;     // [count, dim]
};

// out row i = transforms[transform[i]](in row source[i]): every row independently, each by its
// own transform of the set (the scrambler's Φ, Φ^{-T} or Ψ⁻¹ of one key block, scrambler.h).
struct RowTransformArgs {
  const float* in = nullptr;  // [n_in_rows, in_dim] with row stride in_stride (floats)
  float* out = nullptr;       // [n_rows, out_dim] with row stride out_stride; may not alias in
  int64_t n_rows = 0;
  int64_t n_in_rows = 0;  // rows of `in`; with source null it must be at least n_rows
  int64_t in_stride = 0;
  int64_t out_stride = 0;
  RowTransformSet transforms = {};
  const int32_t* transform = nullptr;  // [n_rows], each in [0, count); null: transform 0
  const int32_t* source = nullptr;     // [n_rows], each in [0, n_in_rows); null: row i
};

struct PartialAttentionArgs {
  const float* q = nullptr;  // [n_q, n_heads, head_dim], row-major
  const void* k = nullptr;   // [n_kv, n_kv_heads, head_dim], kv_dtype
  const void* v = nullptr;   // [n_kv, n_kv_heads, head_dim], kv_dtype
  KvDType kv_dtype = KvDType::kF32;
  // Causal mask: key j is visible to query i iff kv_positions[j] <= q_positions[i]. Both null
  // for no mask; both set or both null.
  const int32_t* q_positions = nullptr;   // [n_q]
  const int32_t* kv_positions = nullptr;  // [n_kv]
  int32_t n_q = 0;
  int32_t n_kv = 0;  // may be 0: every row is then empty
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;  // divides n_heads; query head h reads KV head h / (n_heads / n_kv_heads)
  int32_t head_dim = 0;
  float scale = 0;     // usually 1 / sqrt(head_dim)
  float* o = nullptr;  // out: [n_q, n_heads, head_dim]
  float* m = nullptr;  // out: [n_q, n_heads]
  float* l = nullptr;  // out: [n_q, n_heads]
  // Optional (n_rows 0: none): a row transform run by the same launch, for the querier's
  // scrambled queries q′ = q·Φ^{-T} of the remote key blocks (in = q), which then cost no launch
  // of their own. Independent of the attention; it may not write what the attention reads.
  RowTransformArgs also_transform = {};
};

// Merges n_parts partials of the same rows into one partial (associative; merging the merged
// result with more partials gives the same as merging all at once).
struct MergeArgs {
  const float* o = nullptr;  // [n_parts, n_rows, head_dim]
  const float* m = nullptr;  // [n_parts, n_rows]
  const float* l = nullptr;  // [n_parts, n_rows]
  int32_t n_parts = 0;
  int32_t n_rows = 0;
  int32_t head_dim = 0;
  float* out_o = nullptr;  // [n_rows, head_dim]; may not alias the inputs
  float* out_m = nullptr;  // [n_rows]
  float* out_l = nullptr;  // [n_rows]
  // Optional, for the querier's merge of the compute node's partials with its own: part p's row
  // r is o′ = o·Ψ and is merged as o′·Ψ⁻¹ = unscramble[unscramble_index[p·n_rows + r]](o′); an
  // index of −1 marks a plain row. With unscramble_index set, o's rows are unscramble.in_dim
  // wide (the padded width; a plain row uses its first head_dim columns) and unscramble.out_dim
  // is head_dim. Scores are not scrambled, so m and l need nothing. A CUDA merge reads the set
  // and the index while the kernel before it still runs: that kernel may not write them.
  RowTransformSet unscramble = {};
  const int32_t* unscramble_index = nullptr;  // [n_parts, n_rows], each in [−1, count), or null
};

// out row i = in row rows[i]: a row permutation (or any selection) of a [n_in, row_bytes] table.
struct GatherRowsArgs {
  const void* in = nullptr;
  void* out = nullptr;            // may not alias in
  const int32_t* rows = nullptr;  // [n_out], each in [0, n_in)
  int64_t n_in = 0;
  int64_t n_out = 0;
  int64_t row_bytes = 0;
};

}  // namespace silo::attention

#endif  // SILO_ATTENTION_ATTENTION_ARGS_H_
