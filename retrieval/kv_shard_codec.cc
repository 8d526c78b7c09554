#include "retrieval/kv_shard_codec.h"

#include <cstring>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::retrieval {
namespace {

constexpr char kMagic[4] = {'S', 'K', 'V', '1'};
constexpr size_t kHeaderBytes = sizeof(kMagic) + 4 * sizeof(int32_t);

void AppendInt32(int32_t value, std::vector<uint8_t>& out) {
  const auto bits = static_cast<uint32_t>(value);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(bits >> (8 * i)));
}

int32_t ReadInt32(const uint8_t* p) {
  uint32_t bits = 0;
  for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(p[i]) << (8 * i);
  return static_cast<int32_t>(bits);
}

void AppendHalves(const std::vector<uint16_t>& values, std::vector<uint8_t>& out) {
  for (const uint16_t value : values) {
    out.push_back(static_cast<uint8_t>(value));
    out.push_back(static_cast<uint8_t>(value >> 8));
  }
}

void ReadHalves(const uint8_t* p, std::vector<uint16_t>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
  }
}

}  // namespace

std::vector<uint8_t> EncodeKvShard(const engine::KvShard& shard) {
  std::vector<uint8_t> out;
  out.reserve(kHeaderBytes + 2 * (shard.k.size() + shard.v.size()));
  for (const char c : kMagic) out.push_back(static_cast<uint8_t>(c));
  AppendInt32(shard.n_layers, out);
  AppendInt32(shard.n_kv_heads, out);
  AppendInt32(shard.n_tokens, out);
  AppendInt32(shard.head_dim, out);
  AppendHalves(shard.k, out);
  AppendHalves(shard.v, out);
  return out;
}

absl::StatusOr<engine::KvShard> DecodeKvShard(std::span<const uint8_t> bytes,
                                              const engine::ModelConfig& config) {
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("KV shard: not a shard (bad magic or truncated header)");
  }
  engine::KvShard shard;
  const uint8_t* p = bytes.data() + sizeof(kMagic);
  shard.n_layers = ReadInt32(p);
  shard.n_kv_heads = ReadInt32(p + 4);
  shard.n_tokens = ReadInt32(p + 8);
  shard.head_dim = ReadInt32(p + 12);
  if (shard.n_layers <= 0 || shard.n_kv_heads <= 0 || shard.n_tokens <= 0 || shard.head_dim <= 0) {
    return absl::DataLossError(StrCat("KV shard: bad shape [", shard.n_layers, ", ",
                                      shard.n_kv_heads, ", ", shard.n_tokens, ", ", shard.head_dim,
                                      "]"));
  }
  // Each factor is below 2^31, so the product of the four fits in 128 bits but not always in
  // 64: check against the bytes we have before multiplying further.
  const uint64_t payload = bytes.size() - kHeaderBytes;
  uint64_t elements = static_cast<uint64_t>(shard.n_layers) * shard.n_kv_heads;
  for (const int32_t factor : {shard.n_tokens, shard.head_dim}) {
    if (elements > payload / static_cast<uint64_t>(factor)) {
      return absl::DataLossError("KV shard: shape larger than its bytes");
    }
    elements *= static_cast<uint64_t>(factor);
  }
  if (payload != 4 * elements) {
    return absl::DataLossError(
        StrCat("KV shard: ", payload, " bytes of K and V for ", elements, " elements each"));
  }
  shard.k.resize(elements);
  shard.v.resize(elements);
  ReadHalves(bytes.data() + kHeaderBytes, shard.k);
  ReadHalves(bytes.data() + kHeaderBytes + 2 * elements, shard.v);
  SILO_RETURN_IF_ERROR(engine::ValidateKvShard(shard, config));
  return shard;
}

}  // namespace silo::retrieval
