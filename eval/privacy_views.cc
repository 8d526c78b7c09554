#include "eval/privacy_views.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/secret_bytes.h"
#include "node/fedrag_scrambler.h"

namespace silo::eval {
namespace {

// A tensor of the wire (F32, F16 or BF16 rows) in f32.
absl::StatusOr<std::vector<float>> WireToF32(const v1::Tensor& tensor) {
  const size_t width = tensor.dtype() == v1::DTYPE_F32 ? 4 : 2;
  if (tensor.dtype() != v1::DTYPE_F32 && tensor.dtype() != v1::DTYPE_F16 &&
      tensor.dtype() != v1::DTYPE_BF16) {
    return absl::InvalidArgumentError("the view decodes F32, F16 and BF16 tensors");
  }
  std::vector<float> values(tensor.data().size() / width);
  const auto* bytes = reinterpret_cast<const uint8_t*>(tensor.data().data());
  for (size_t i = 0; i < values.size(); ++i) {
    if (width == 4) {
      std::memcpy(&values[i], bytes + 4 * i, 4);
    } else {
      const auto bits = static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
      values[i] = tensor.dtype() == v1::DTYPE_F16 ? HalfToFloat(bits) : Bf16ToFloat(bits);
    }
  }
  return values;
}

// A d×d matrix, row-major: identity, a random permutation or a Haar-random orthogonal matrix
// (modified Gram–Schmidt of a Gaussian matrix, in f64).
std::vector<double> BaselineMix(ViewKind kind, int32_t d, std::mt19937_64& rng) {
  const size_t n = static_cast<size_t>(d);
  std::vector<double> mix(n * n, 0.0);
  if (kind == ViewKind::kPlaintext) {
    for (size_t i = 0; i < n; ++i) mix[i * n + i] = 1;
  } else if (kind == ViewKind::kPermutation) {
    std::vector<size_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t i = 0; i < n; ++i) mix[i * n + perm[i]] = 1;
  } else {
    std::normal_distribution<double> normal;
    for (double& x : mix) x = normal(rng);
    for (size_t c = 0; c < n; ++c) {  // columns orthonormalized in turn
      for (size_t p = 0; p < c; ++p) {
        double dot = 0;
        for (size_t r = 0; r < n; ++r) dot += mix[r * n + c] * mix[r * n + p];
        for (size_t r = 0; r < n; ++r) mix[r * n + c] -= dot * mix[r * n + p];
      }
      double norm = 0;
      for (size_t r = 0; r < n; ++r) norm += mix[r * n + c] * mix[r * n + c];
      norm = std::sqrt(norm);
      for (size_t r = 0; r < n; ++r) mix[r * n + c] /= norm;
    }
  }
  return mix;
}

// out[i] = in[order[i]] · mix, rows of width d.
std::vector<float> MixRows(const std::vector<float>& in, const std::vector<int32_t>& order,
                           const std::vector<double>& mix, int32_t d) {
  const size_t n = static_cast<size_t>(d);
  std::vector<float> out(order.size() * n);
  for (size_t i = 0; i < order.size(); ++i) {
    const float* row = &in[static_cast<size_t>(order[i]) * n];
    for (size_t c = 0; c < n; ++c) {
      double sum = 0;
      for (size_t r = 0; r < n; ++r) sum += row[r] * mix[r * n + c];
      out[i * n + c] = static_cast<float>(sum);
    }
  }
  return out;
}

std::vector<int32_t> Iota(size_t n) {
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  return order;
}

}  // namespace

absl::StatusOr<ObservedLayer> ObserveLayer(const PlainSessionStates& states,
                                           const ObserverSetting& setting, uint64_t seed) {
  const auto layer = static_cast<int32_t>(setting.privacy.protect_layers());
  const auto found = std::find(states.layers.begin(), states.layers.end(), layer);
  if (found == states.layers.end()) {
    return absl::InvalidArgumentError(StrCat("layer ", layer, " was not recorded"));
  }
  const size_t li = static_cast<size_t>(found - states.layers.begin());
  std::mt19937_64 rng(seed);
  const int32_t d = states.head_dim;
  const int32_t group = states.n_heads / states.n_kv_heads;
  ObservedLayer view;
  view.layer = layer;
  view.scale = 1.0f / std::sqrt(static_cast<float>(d));
  view.group = group;
  const size_t n_steps = states.q[li].size();

  // The querier's rows per step and KV head, shuffled: received row i is plain row order[i].
  std::vector<std::vector<std::vector<float>>> rows(n_steps);
  view.q_row_token.resize(n_steps);
  view.q_row_head.resize(n_steps);
  for (size_t step = 0; step < n_steps; ++step) {
    view.step_positions.push_back(states.StepPositions(static_cast<int32_t>(step)));
    view.step_tokens.push_back(states.StepTokens(static_cast<int32_t>(step)));
    const std::vector<float>& q = states.q[li][step];
    const size_t n_tokens = q.size() / (static_cast<size_t>(states.n_heads) * d);
    for (int32_t kv_head = 0; kv_head < states.n_kv_heads; ++kv_head) {
      std::vector<int32_t> order = Iota(n_tokens * static_cast<size_t>(group));
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<float>& received = rows[step].emplace_back(order.size() * d);
      std::vector<int32_t>& tokens = view.q_row_token[step].emplace_back();
      std::vector<int32_t>& heads = view.q_row_head[step].emplace_back();
      for (size_t i = 0; i < order.size(); ++i) {
        const auto token = static_cast<size_t>(order[i] / group);
        const auto head = static_cast<size_t>(kv_head) * static_cast<size_t>(group) +
                          static_cast<size_t>(order[i] % group);
        std::memcpy(&received[i * d], &q[(token * states.n_heads + head) * d], d * sizeof(float));
        tokens.push_back(static_cast<int32_t>(token));
        heads.push_back(order[i] % group);
      }
    }
  }

  for (int32_t owner = 0; owner < states.n_owners; ++owner) {
    const std::vector<int32_t> tokens = states.OwnerTokens(owner);
    const std::vector<int32_t> positions = states.OwnerPositions(owner);
    std::vector<int32_t> chunk_rows;
    for (size_t c = 0; c < states.chunk_tokens.size(); ++c) {
      if (states.chunk_owner[c] == owner) {
        chunk_rows.push_back(static_cast<int32_t>(states.chunk_tokens[c].size()));
      }
    }
    std::optional<node::FedRagScrambler> scrambler;
    if (setting.kind == ViewKind::kFedRag) {
      std::string session_id(16, '\0');
      for (char& c : session_id) c = static_cast<char>(rng());
      v1::PrivacySettings privacy = setting.privacy;
      SILO_ASSIGN_OR_RETURN(node::FedRagScramblerOptions options,
                            node::ScramblerOptionsOf(privacy, session_id, d, chunk_rows));
      SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes secret, crypto::SecretBytes::Random(32));
      SILO_ASSIGN_OR_RETURN(scrambler, node::FedRagScrambler::Create(secret, std::move(options)));
    }
    for (int32_t kv_head = 0; kv_head < states.n_kv_heads; ++kv_head) {
      const std::vector<float>& k =
          states.k[li][static_cast<size_t>(owner)][static_cast<size_t>(kv_head)];
      const std::vector<float>& v =
          states.v[li][static_cast<size_t>(owner)][static_cast<size_t>(kv_head)];
      auto truth = [&](ObservedKey& key, int32_t row_begin, const std::vector<int32_t>& order) {
        for (const int32_t row : order) {
          const size_t at = static_cast<size_t>(row_begin) + static_cast<size_t>(row);
          key.row_token.push_back(tokens[at]);
          key.row_position.push_back(positions[at]);
          const auto row_begin = static_cast<std::ptrdiff_t>(at * static_cast<size_t>(d));
          const auto row_end = row_begin + d;
          key.truth_k.insert(key.truth_k.end(), k.begin() + row_begin, k.begin() + row_end);
          key.truth_v.insert(key.truth_v.end(), v.begin() + row_begin, v.begin() + row_end);
        }
        key.layout_positions = key.row_position;
        std::sort(key.layout_positions.begin(), key.layout_positions.end());
      };
      if (scrambler.has_value()) {
        SILO_ASSIGN_OR_RETURN(
            const std::vector<v1::UploadScrambledKvRequest> uploads,
            scrambler->ScrambleKv(static_cast<uint32_t>(layer), static_cast<uint32_t>(kv_head), k,
                                  v, setting.wire));
        for (const v1::UploadScrambledKvRequest& upload : uploads) {
          ObservedKey& key = view.keys.emplace_back();
          key.owner = owner;
          key.kv_head = kv_head;
          key.key_index = static_cast<int32_t>(upload.key_index());
          key.dim = scrambler->padded_dim();
          SILO_ASSIGN_OR_RETURN(key.k, WireToF32(upload.k()));
          SILO_ASSIGN_OR_RETURN(key.v, WireToF32(upload.v()));
          key.n_rows = static_cast<int32_t>(key.k.size()) / key.dim;
          SILO_ASSIGN_OR_RETURN(const std::vector<int32_t> order,
                                scrambler->RowOrder(static_cast<uint32_t>(layer),
                                                    static_cast<uint32_t>(kv_head), key.key_index));
          truth(key, scrambler->blocks()[static_cast<size_t>(key.key_index)].row_begin, order);
          for (size_t step = 0; step < n_steps; ++step) {
            SILO_ASSIGN_OR_RETURN(
                const v1::HeadQuery query,
                scrambler->ScrambleQuery(static_cast<uint32_t>(owner), static_cast<uint32_t>(layer),
                                         static_cast<uint32_t>(kv_head), key.key_index,
                                         rows[step][static_cast<size_t>(kv_head)]));
            SILO_ASSIGN_OR_RETURN(key.q.emplace_back(), WireToF32(query.q()));
          }
        }
        continue;
      }
      // Baselines: one key per owner; the mix is orthogonal, so q′ = q·mix keeps the scores.
      ObservedKey& key = view.keys.emplace_back();
      key.owner = owner;
      key.kv_head = kv_head;
      key.dim = d;
      key.n_rows = static_cast<int32_t>(tokens.size());
      std::vector<int32_t> order = Iota(tokens.size());
      if (setting.kind != ViewKind::kPlaintext) std::shuffle(order.begin(), order.end(), rng);
      const std::vector<double> key_mix = BaselineMix(setting.kind, d, rng);
      const std::vector<double> value_mix = BaselineMix(setting.kind, d, rng);
      key.k = MixRows(k, order, key_mix, d);
      key.v = MixRows(v, order, value_mix, d);
      truth(key, 0, order);
      for (size_t step = 0; step < n_steps; ++step) {
        const std::vector<float>& plain = rows[step][static_cast<size_t>(kv_head)];
        key.q.push_back(MixRows(plain, Iota(plain.size() / d), key_mix, d));
      }
    }
  }
  return view;
}

}  // namespace silo::eval
