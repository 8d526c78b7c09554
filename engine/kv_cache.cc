#include "engine/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::engine {
namespace {

using attention::KvDType;

void StoreRow(KvDType dtype, const float* in, int64_t n, uint8_t* out) {
  switch (dtype) {
    case KvDType::kF32:
      std::memcpy(out, in, n * sizeof(float));
      break;
    case KvDType::kF16: {
      auto* half = reinterpret_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) half[i] = FloatToHalf(in[i]);
      break;
    }
    case KvDType::kBF16: {
      auto* bf16 = reinterpret_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) bf16[i] = FloatToBf16(in[i]);
      break;
    }
  }
}

}  // namespace

absl::Status ValidateKvShard(const KvShard& shard, const ModelConfig& config) {
  if (shard.n_layers != config.n_layers || shard.n_kv_heads != config.n_kv_heads ||
      shard.head_dim != config.head_dim || shard.n_tokens < 0) {
    return absl::InvalidArgumentError(
        StrCat("KV shard [", shard.n_layers, ", ", shard.n_kv_heads, ", ", shard.n_tokens, ", ",
               shard.head_dim, "] does not fit the model (", config.n_layers, " layers, ",
               config.n_kv_heads, " KV heads, head_dim ", config.head_dim, ")"));
  }
  const uint64_t elements = static_cast<uint64_t>(shard.n_layers) * shard.n_kv_heads *
                            static_cast<uint64_t>(shard.n_tokens) * shard.head_dim;
  if (shard.k.size() != elements || shard.v.size() != elements) {
    return absl::InvalidArgumentError("KV shard buffers have the wrong size");
  }
  for (const std::vector<uint16_t>* values : {&shard.k, &shard.v}) {
    for (uint16_t h : *values) {
      if ((h & 0x7c00) == 0x7c00) return absl::InvalidArgumentError("KV shard holds Inf or NaN");
    }
  }
  return absl::OkStatus();
}

KvCache::KvCache(const ModelConfig& config, KvDType dtype, int64_t max_tokens)
    : n_layers_(config.n_layers),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      dtype_(dtype),
      max_tokens_(max_tokens) {}

int64_t KvCache::RowBytes() const {
  return static_cast<int64_t>(n_kv_heads_) * head_dim_ *
         static_cast<int64_t>(attention::KvDTypeBytes(dtype_));
}

SequenceId KvCache::NewSequence() {
  const SequenceId id = next_id_++;
  Sequence& s = sequences_[id];
  s.k.resize(n_layers_);
  s.v.resize(n_layers_);
  return id;
}

absl::StatusOr<SequenceId> KvCache::Fork(SequenceId parent, std::optional<int64_t> prefix_length) {
  SILO_ASSIGN_OR_RETURN(int64_t parent_length, Length(parent));
  const int64_t rows = prefix_length.value_or(parent_length);
  if (rows < 0 || rows > parent_length) {
    return absl::InvalidArgumentError(
        StrCat("fork of ", rows, " rows from a sequence of ", parent_length));
  }
  const SequenceId id = NewSequence();
  Sequence& child = sequences_[id];
  child.parent = parent;
  child.parent_rows = rows;
  ++sequences_[parent].n_children;
  return id;
}

int64_t KvCache::SharedOwnRows(SequenceId sequence) const {
  const Sequence& s = sequences_.at(sequence);
  int64_t shared = 0;
  if (s.n_children == 0) return 0;
  for (const auto& [id, other] : sequences_) {
    if (other.parent == sequence) shared = std::max(shared, other.parent_rows - s.parent_rows);
  }
  return shared;
}

absl::Status KvCache::Truncate(SequenceId sequence, int64_t length) {
  SILO_ASSIGN_OR_RETURN(int64_t current, Length(sequence));
  if (length < 0 || length > current) {
    return absl::InvalidArgumentError(
        StrCat("truncate to ", length, " rows of a sequence of ", current));
  }
  Sequence& s = sequences_[sequence];
  for (const auto& [id, other] : sequences_) {
    if (other.parent == sequence && other.parent_rows > length) {
      return absl::FailedPreconditionError(
          StrCat("sequence ", id, " still shares ", other.parent_rows, " rows of this one"));
    }
  }
  int64_t own = length - s.parent_rows;
  if (own < 0) {
    s.parent_rows = length;
    own = 0;
  }
  used_tokens_ -= static_cast<int64_t>(s.positions.size()) - own;
  s.positions.resize(own);
  const size_t bytes = static_cast<size_t>(own * RowBytes());
  for (int32_t layer = 0; layer < n_layers_; ++layer) {
    s.k[layer].resize(bytes);
    s.v[layer].resize(bytes);
  }
  return absl::OkStatus();
}

absl::Status KvCache::Free(SequenceId sequence) {
  auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return absl::NotFoundError(StrCat("no sequence ", sequence));
  if (it->second.n_children > 0) {
    return absl::FailedPreconditionError(
        StrCat("sequence ", sequence, " has ", it->second.n_children, " forked sequences"));
  }
  if (it->second.parent) --sequences_[*it->second.parent].n_children;
  used_tokens_ -= static_cast<int64_t>(it->second.positions.size());
  sequences_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> KvCache::Length(SequenceId sequence) const {
  auto it = sequences_.find(sequence);
  if (it == sequences_.end()) return absl::NotFoundError(StrCat("no sequence ", sequence));
  return it->second.parent_rows + static_cast<int64_t>(it->second.positions.size());
}

absl::StatusOr<std::optional<int32_t>> KvCache::LastPosition(SequenceId sequence) const {
  SILO_ASSIGN_OR_RETURN(int64_t length, Length(sequence));
  if (length == 0) return std::optional<int32_t>();
  const std::vector<Segment> segments = Segments(sequence, 0);
  const Segment& last = segments.back();
  return std::optional<int32_t>(last.positions[last.n_rows - 1]);
}

absl::StatusOr<int64_t> KvCache::AppendRows(SequenceId sequence,
                                            std::span<const int32_t> positions) {
  SILO_ASSIGN_OR_RETURN(int64_t length, Length(sequence));
  const int64_t n = static_cast<int64_t>(positions.size());
  if (used_tokens_ + n > max_tokens_) {
    return absl::ResourceExhaustedError(
        StrCat("KV cache full: ", used_tokens_, " + ", n, " rows exceed ", max_tokens_));
  }
  Sequence& s = sequences_[sequence];
  s.positions.insert(s.positions.end(), positions.begin(), positions.end());
  const size_t bytes = s.positions.size() * static_cast<size_t>(RowBytes());
  for (int32_t layer = 0; layer < n_layers_; ++layer) {
    s.k[layer].resize(bytes);
    s.v[layer].resize(bytes);
  }
  used_tokens_ += n;
  return length;
}

void KvCache::WriteRows(SequenceId sequence, int32_t layer, int64_t first_row, int64_t n_rows,
                        const float* k, const float* v) {
  Sequence& s = sequences_.at(sequence);
  const int64_t own_first = first_row - s.parent_rows;
  SILO_CHECK(own_first >= 0 && own_first + n_rows <= static_cast<int64_t>(s.positions.size()));
  const int64_t row_elements = static_cast<int64_t>(n_kv_heads_) * head_dim_;
  for (int64_t r = 0; r < n_rows; ++r) {
    StoreRow(dtype_, k + r * row_elements, row_elements,
             s.k[layer].data() + (own_first + r) * RowBytes());
    StoreRow(dtype_, v + r * row_elements, row_elements,
             s.v[layer].data() + (own_first + r) * RowBytes());
  }
}

absl::Status KvCache::AppendShard(SequenceId sequence, const KvShard& shard,
                                  std::span<const int32_t> positions, const Rope& rope) {
  if (shard.n_layers != n_layers_ || shard.n_kv_heads != n_kv_heads_ ||
      shard.head_dim != head_dim_ || positions.size() != static_cast<size_t>(shard.n_tokens)) {
    return absl::InvalidArgumentError("KV shard or its positions do not fit this cache");
  }
  SILO_ASSIGN_OR_RETURN(int64_t first, AppendRows(sequence, positions));
  const int64_t row_elements = static_cast<int64_t>(n_kv_heads_) * head_dim_;
  std::vector<float> k(shard.n_tokens * row_elements);  // [n_tokens, n_kv_heads, head_dim]
  std::vector<float> v(k.size());
  for (int32_t layer = 0; layer < n_layers_; ++layer) {
    for (int32_t t = 0; t < shard.n_tokens; ++t) {
      for (int32_t h = 0; h < n_kv_heads_; ++h) {
        const int64_t from = shard.Offset(layer, h, t);
        const int64_t row = static_cast<int64_t>(t) * n_kv_heads_ + h;
        float* k_row = &k[row * head_dim_];
        float* v_row = &v[row * head_dim_];
        for (int32_t c = 0; c < head_dim_; ++c) {
          k_row[c] = HalfToFloat(shard.k[from + c]);
          v_row[c] = HalfToFloat(shard.v[from + c]);
        }
      }
    }
    rope.Rotate(positions.data(), shard.n_tokens, n_kv_heads_, k.data());
    WriteRows(sequence, layer, first, shard.n_tokens, k.data(), v.data());
  }
  return absl::OkStatus();
}

std::vector<KvCache::Segment> KvCache::Segments(SequenceId sequence, int32_t layer) const {
  // Walk up the chain, remembering how many rows of each ancestor are visible.
  std::vector<std::pair<const Sequence*, int64_t>> chain;  // (sequence, own rows visible)
  int64_t visible = Length(sequence).value();
  for (std::optional<SequenceId> id = sequence; id;) {
    const Sequence& s = sequences_.at(*id);
    chain.emplace_back(&s, std::max<int64_t>(0, visible - s.parent_rows));
    visible = std::min(visible, s.parent_rows);
    id = s.parent;
  }
  std::vector<Segment> segments;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const auto& [s, rows] = *it;
    if (rows == 0) continue;
    segments.push_back(Segment{.k = s->k[layer].data(),
                               .v = s->v[layer].data(),
                               .positions = s->positions.data(),
                               .n_rows = rows});
  }
  return segments;
}

}  // namespace silo::engine
