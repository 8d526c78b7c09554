#include "node/fedrag_scrambler.h"

#include <cstring>

#include "attention/backend.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/scrambler_seeds.h"

namespace silo::node {
namespace {

constexpr size_t kSessionIdBytes = 16;

std::span<const uint8_t> Bytes(const std::string& text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// [n_rows, dim] rows as a tensor of `dtype` (F32, F16 or BF16), row i taken from
// rows[order[i]].
v1::Tensor Encode(const std::vector<float>& rows, int32_t dim, const std::vector<int32_t>& order,
                  v1::DType dtype) {
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  tensor.add_shape(static_cast<int64_t>(order.size()));
  tensor.add_shape(dim);
  std::string& data = *tensor.mutable_data();
  const bool half_width = dtype == v1::DTYPE_F16 || dtype == v1::DTYPE_BF16;
  data.reserve(order.size() * static_cast<size_t>(dim) * (half_width ? 2 : 4));
  for (const int32_t source : order) {
    const float* row = rows.data() + static_cast<size_t>(source) * static_cast<size_t>(dim);
    for (int32_t c = 0; c < dim; ++c) {
      if (half_width) {
        const uint16_t half = dtype == v1::DTYPE_F16 ? FloatToHalf(row[c]) : FloatToBf16(row[c]);
        data.push_back(static_cast<char>(half & 0xff));
        data.push_back(static_cast<char>(half >> 8));
      } else {
        char bytes[4];
        std::memcpy(bytes, &row[c], 4);
        for (const char byte : bytes) data.push_back(byte);
      }
    }
  }
  return tensor;
}

absl::StatusOr<std::vector<float>> DecodeF32(const v1::Tensor& tensor, std::vector<int64_t> shape,
                                             std::string_view what) {
  int64_t elements = 1;
  bool shaped =
      tensor.dtype() == v1::DTYPE_F32 && tensor.shape_size() == static_cast<int>(shape.size());
  for (size_t i = 0; shaped && i < shape.size(); ++i) {
    shaped = tensor.shape(static_cast<int>(i)) == shape[i];
    elements *= shape[i];
  }
  if (!shaped || tensor.data().size() != static_cast<size_t>(elements) * 4) {
    return absl::InvalidArgumentError(StrCat("the partial's ", what, " is malformed"));
  }
  std::vector<float> values(static_cast<size_t>(elements));
  std::memcpy(values.data(), tensor.data().data(), tensor.data().size());
  return values;
}

}  // namespace

absl::StatusOr<PlainPartial> DecodePartial(const v1::AttentionPartial& partial, int32_t head_dim) {
  if (partial.m().shape_size() != 1) {
    return absl::InvalidArgumentError("the partial's m is malformed");
  }
  const int64_t n_rows = partial.m().shape(0);
  if (n_rows < 1) return absl::InvalidArgumentError("the partial has no rows");
  PlainPartial plain;
  SILO_ASSIGN_OR_RETURN(plain.m, DecodeF32(partial.m(), {n_rows}, "m"));
  SILO_ASSIGN_OR_RETURN(plain.l, DecodeF32(partial.l(), {n_rows}, "l"));
  SILO_ASSIGN_OR_RETURN(plain.o, DecodeF32(partial.o(), {n_rows, head_dim}, "o"));
  return plain;
}

absl::StatusOr<FedRagScramblerOptions> ScramblerOptionsOf(const v1::PrivacySettings& privacy,
                                                          std::string session_id, int32_t head_dim,
                                                          std::vector<int32_t> chunk_rows) {
  FedRagScramblerOptions options{.session_id = std::move(session_id),
                                 .head_dim = head_dim,
                                 .mixer = {},
                                 .key_scope = attention::KeyScope::kSession,
                                 .block_rows = 0,
                                 .chunk_rows = std::move(chunk_rows)};
  switch (privacy.key_scope()) {
    case v1::KEY_SCOPE_SESSION:
      break;
    case v1::KEY_SCOPE_CHUNK:
      options.key_scope = attention::KeyScope::kChunk;
      break;
    case v1::KEY_SCOPE_BLOCK:
      if (privacy.block_rows() < 1 || privacy.block_rows() > 4096) {
        return absl::InvalidArgumentError("block_rows must be in [1, 4096]");
      }
      options.key_scope = attention::KeyScope::kBlock;
      options.block_rows = static_cast<int32_t>(privacy.block_rows());
      break;
    default:
      return absl::InvalidArgumentError(
          StrCat("key_scope ", privacy.key_scope(), " is not a resolved key scope"));
  }
  switch (privacy.mixer()) {
    case v1::MIXER_SPHPS:
      options.mixer.mixer = attention::Mixer::kSphps;
      break;
    case v1::MIXER_DENSE:
      options.mixer.mixer = attention::Mixer::kDense;
      break;
    default:
      return absl::InvalidArgumentError(
          StrCat("mixer ", privacy.mixer(), " is not a resolved mixer"));
  }
  if (privacy.decoy_rows() != 0) {
    return absl::UnimplementedError("decoy rows are not implemented yet; use decoy_rows 0");
  }
  return options;
}

// One direction of Φ or Ψ, uploaded to the scrambler's backend once.
struct FedRagScrambler::Transform {
  int32_t out_dim;
  attention::BackendRowTransform uploaded;

  static absl::StatusOr<Transform> Upload(attention::AttentionBackend& backend,
                                          const attention::RowTransform& transform) {
    SILO_ASSIGN_OR_RETURN(attention::BackendRowTransform uploaded,
                          attention::BackendRowTransform::Upload(backend, transform));
    return Transform{transform.out_dim, std::move(uploaded)};
  }
};

struct FedRagScrambler::KeyScramblers {
  Transform key;              // Φ: K rows (owner)
  Transform query;            // Φ^{-T}: query rows (querier)
  Transform value;            // Ψ: V rows (owner)
  Transform output;           // Ψ⁻¹: partial outputs (querier)
  std::vector<int32_t> perm;  // scrambled row i is the block's row perm[i]
};

absl::StatusOr<std::vector<float>> FedRagScrambler::Apply(const Transform& transform,
                                                          std::span<const float> in,
                                                          int64_t n_rows) const {
  std::vector<float> out(static_cast<size_t>(n_rows) * static_cast<size_t>(transform.out_dim));
  const std::lock_guard<std::mutex> lock(cache_->backend_mutex);
  SILO_RETURN_IF_ERROR(transform.uploaded.Run(*cache_->backend, in.data(), out.data(), n_rows));
  return out;
}

absl::StatusOr<FedRagScrambler> FedRagScrambler::Create(const crypto::SecretBytes& session_secret,
                                                        FedRagScramblerOptions options) {
  if (options.session_id.size() != kSessionIdBytes) {
    return absl::InvalidArgumentError(StrCat("the session id must be ", kSessionIdBytes, " bytes"));
  }
  if (options.head_dim < 1 || options.head_dim > 512) {
    return absl::InvalidArgumentError("head_dim must be in [1, 512]");
  }
  SILO_ASSIGN_OR_RETURN(
      std::vector<attention::KeyBlock> blocks,
      attention::PlanKeyBlocks(options.chunk_rows, options.key_scope, options.block_rows));
  // The padded width is the mixer's; any seed tells it.
  SILO_ASSIGN_OR_RETURN(
      const attention::Scrambler probe,
      attention::Scrambler::Create(options.head_dim, attention::Seed{}, options.mixer));
  auto cache = std::make_unique<Cache>();
  SILO_ASSIGN_OR_RETURN(cache->backend, attention::CreateBackend(attention::BackendKind::kCpu));
  return FedRagScrambler(crypto::SecretBytes::FromBytes(session_secret.span()), std::move(options),
                         std::move(blocks), probe.dim(), std::move(cache));
}

std::vector<uint32_t> FedRagScrambler::key_rows() const {
  std::vector<uint32_t> rows;
  rows.reserve(blocks_.size());
  for (const attention::KeyBlock& block : blocks_)
    rows.push_back(static_cast<uint32_t>(block.n_rows));
  return rows;
}

absl::StatusOr<std::shared_ptr<const FedRagScrambler::KeyScramblers>> FedRagScrambler::ScramblersOf(
    uint32_t layer, uint32_t kv_head, int32_t key_index) const {
  if (key_index < 0 || key_index >= static_cast<int32_t>(blocks_.size())) {
    return absl::InvalidArgumentError(StrCat("no key block ", key_index));
  }
  const std::tuple<uint32_t, uint32_t, int32_t> at{layer, kv_head, key_index};
  {
    const std::lock_guard<std::mutex> lock(cache_->mutex);
    const auto found = cache_->keys.find(at);
    if (found != cache_->keys.end()) return found->second;
  }
  SILO_ASSIGN_OR_RETURN(const crypto::ScramblerSeeds seeds,
                        crypto::DeriveScramblerSeeds(secret_, Bytes(options_.session_id), layer,
                                                     kv_head, static_cast<uint32_t>(key_index)));
  SILO_ASSIGN_OR_RETURN(attention::Scrambler phi,
                        attention::Scrambler::Create(options_.head_dim, seeds.phi, options_.mixer));
  SILO_ASSIGN_OR_RETURN(attention::Scrambler psi,
                        attention::Scrambler::Create(options_.head_dim, seeds.psi, options_.mixer));
  std::unique_lock<std::mutex> uploading(cache_->backend_mutex);
  attention::AttentionBackend& backend = *cache_->backend;
  SILO_ASSIGN_OR_RETURN(Transform key, Transform::Upload(backend, phi.forward()));
  SILO_ASSIGN_OR_RETURN(Transform query, Transform::Upload(backend, phi.inverse_transpose()));
  SILO_ASSIGN_OR_RETURN(Transform value, Transform::Upload(backend, psi.forward()));
  SILO_ASSIGN_OR_RETURN(Transform output, Transform::Upload(backend, psi.inverse()));
  uploading.unlock();
  auto keys = std::make_shared<const KeyScramblers>(
      KeyScramblers{std::move(key), std::move(query), std::move(value), std::move(output),
                    attention::RowPermutation(seeds.perm, blocks_[key_index].n_rows)});
  const std::lock_guard<std::mutex> lock(cache_->mutex);
  return cache_->keys.emplace(at, std::move(keys)).first->second;  // a racing twin is equal
}

absl::StatusOr<std::vector<v1::UploadScrambledKvRequest>> FedRagScrambler::ScrambleKv(
    uint32_t layer, uint32_t kv_head, std::span<const float> k, std::span<const float> v,
    v1::DType wire_dtype) const {
  if (wire_dtype != v1::DTYPE_F32 && wire_dtype != v1::DTYPE_F16 && wire_dtype != v1::DTYPE_BF16) {
    return absl::InvalidArgumentError("K'/V' travel as F32, F16 or BF16");
  }
  int64_t total_rows = 0;
  for (const attention::KeyBlock& block : blocks_) total_rows += block.n_rows;
  const size_t expected = static_cast<size_t>(total_rows) * static_cast<size_t>(options_.head_dim);
  if (k.size() != expected || v.size() != expected) {
    return absl::InvalidArgumentError(
        StrCat("k and v must hold [", total_rows, ", ", options_.head_dim, "] values"));
  }
  std::vector<v1::UploadScrambledKvRequest> messages;
  messages.reserve(blocks_.size());
  for (const attention::KeyBlock& block : blocks_) {
    SILO_ASSIGN_OR_RETURN(const std::shared_ptr<const KeyScramblers> keys,
                          ScramblersOf(layer, kv_head, block.key_index));
    const size_t begin =
        static_cast<size_t>(block.row_begin) * static_cast<size_t>(options_.head_dim);
    const size_t count = static_cast<size_t>(block.n_rows) * static_cast<size_t>(options_.head_dim);
    SILO_ASSIGN_OR_RETURN(const std::vector<float> k_mixed,
                          Apply(keys->key, k.subspan(begin, count), block.n_rows));
    SILO_ASSIGN_OR_RETURN(const std::vector<float> v_mixed,
                          Apply(keys->value, v.subspan(begin, count), block.n_rows));
    v1::UploadScrambledKvRequest& message = messages.emplace_back();
    message.mutable_session()->set_value(options_.session_id);
    message.set_layer(layer);
    message.set_kv_head(kv_head);
    message.set_key_index(static_cast<uint32_t>(block.key_index));
    *message.mutable_k() = Encode(k_mixed, padded_dim_, keys->perm, wire_dtype);
    *message.mutable_v() = Encode(v_mixed, padded_dim_, keys->perm, wire_dtype);
  }
  return messages;
}

absl::StatusOr<v1::HeadQuery> FedRagScrambler::ScrambleQuery(uint32_t owner_index, uint32_t layer,
                                                             uint32_t kv_head, int32_t key_index,
                                                             std::span<const float> q) const {
  if (q.empty() || q.size() % static_cast<size_t>(options_.head_dim) != 0) {
    return absl::InvalidArgumentError(StrCat("q must hold [n_rows, ", options_.head_dim, "]"));
  }
  const int64_t n_rows = static_cast<int64_t>(q.size()) / options_.head_dim;
  SILO_ASSIGN_OR_RETURN(const std::shared_ptr<const KeyScramblers> keys,
                        ScramblersOf(layer, kv_head, key_index));
  SILO_ASSIGN_OR_RETURN(const std::vector<float> mixed, Apply(keys->query, q, n_rows));
  std::vector<int32_t> order(static_cast<size_t>(n_rows));
  for (int32_t i = 0; i < static_cast<int32_t>(n_rows); ++i) order[static_cast<size_t>(i)] = i;
  v1::HeadQuery query;
  query.set_owner_index(owner_index);
  query.set_kv_head(kv_head);
  query.set_key_index(static_cast<uint32_t>(key_index));
  *query.mutable_q() = Encode(mixed, padded_dim_, order, v1::DTYPE_F32);
  return query;
}

absl::StatusOr<std::vector<int32_t>> FedRagScrambler::RowOrder(uint32_t layer, uint32_t kv_head,
                                                               int32_t key_index) const {
  SILO_ASSIGN_OR_RETURN(const std::shared_ptr<const KeyScramblers> keys,
                        ScramblersOf(layer, kv_head, key_index));
  return keys->perm;
}

absl::StatusOr<PlainPartial> FedRagScrambler::Unscramble(
    uint32_t layer, uint32_t kv_head, const v1::AttentionPartial& partial) const {
  SILO_ASSIGN_OR_RETURN(PlainPartial plain, DecodePartial(partial, padded_dim_));
  SILO_ASSIGN_OR_RETURN(const std::shared_ptr<const KeyScramblers> keys,
                        ScramblersOf(layer, kv_head, static_cast<int32_t>(partial.key_index())));
  SILO_ASSIGN_OR_RETURN(plain.o,
                        Apply(keys->output, plain.o, static_cast<int64_t>(plain.m.size())));
  return plain;
}

}  // namespace silo::node
