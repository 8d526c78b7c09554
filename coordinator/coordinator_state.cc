#include "coordinator/coordinator_state.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/status.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "common/rocksdb_status.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/certificate.h"

namespace silo::coordinator {
namespace {

enum Cf { kMeta = 0, kNodes, kLinks, kSessions, kSessionIds, kRunning, kNumCfs };
constexpr std::array<const char*, kNumCfs> kCfNames = {"meta",     "nodes",       "links",
                                                       "sessions", "session_ids", "running"};

constexpr char kSchemaVersionKey[] = "schema_version";
constexpr size_t kSessionIdBytes = 16;
constexpr size_t kSeqBytes = 8;
constexpr size_t kSessionKeyBytes = kSeqBytes + kSessionIdBytes;
constexpr size_t kSha256Bytes = 32;
constexpr int kMaxModes = 16;
constexpr int32_t kMaxStatusCode = 16;  // UNAUTHENTICATED, the last canonical code
constexpr int kMaxIdAttempts = 4;

absl::string_view AbslView(std::string_view text) { return {text.data(), text.size()}; }

// `bytes` for an error message: escaped, and cut after kMaxIdentifierBytes.
std::string Escaped(std::string_view bytes) {
  if (bytes.size() <= kMaxIdentifierBytes) return absl::CHexEscape(AbslView(bytes));
  return StrCat(absl::CHexEscape(AbslView(bytes.substr(0, kMaxIdentifierBytes))), "...");
}
std::string Hex(std::string_view bytes) { return absl::BytesToHexString(AbslView(bytes)); }

std::string DescribeKey(Cf cf, std::string_view key) {
  return StrCat(kCfNames[cf], " key '", Escaped(key), "'");
}

std::string EncodeSeq(uint64_t seq) {
  std::string bytes(kSeqBytes, '\0');
  for (size_t i = 0; i < kSeqBytes; ++i) {
    bytes[i] = static_cast<char>(seq >> (8 * (kSeqBytes - 1 - i)));
  }
  return bytes;
}

// Precondition: bytes.size() == kSeqBytes.
uint64_t DecodeSeq(std::string_view bytes) {
  uint64_t seq = 0;
  for (size_t i = 0; i < kSeqBytes; ++i) seq = (seq << 8) | static_cast<uint8_t>(bytes[i]);
  return seq;
}

std::string SessionKey(uint64_t seq, std::string_view session_id) {
  std::string key = EncodeSeq(seq);
  key.append(session_id);
  return key;
}

// Node ids hold no '\0', which sorts before every allowed character: keys sort by (from, to).
// What placement assumes of a link never measured: slow enough that measured ones win.
constexpr double kUnmeasuredRttMs = 50;
constexpr double kUnmeasuredThroughputMbps = 100;

std::string LinkKey(std::string_view from, std::string_view to) {
  std::string key(from);
  key.push_back('\0');
  key.append(to);
  return key;
}

bool IsDataRole(v1::NodeRole role) {
  return role == v1::NODE_ROLE_INSTITUTION || role == v1::NODE_ROLE_DEVICE;
}

bool IsNonNegativeFinite(double value) { return std::isfinite(value) && value >= 0; }

absl::Status CheckSize(std::string_view what, size_t size, size_t max) {
  if (size > max) {
    return absl::InvalidArgumentError(
        StrCat(what, " has ", size, " bytes, more than the ", max, " allowed"));
  }
  return absl::OkStatus();
}

absl::Status CheckFingerprint(std::string_view what, const v1::ModelFingerprint& model) {
  SILO_RETURN_IF_ERROR(CheckSize(StrCat(what, ".name"), model.name().size(), kMaxIdentifierBytes));
  if (!model.sha256().empty() && model.sha256().size() != kSha256Bytes) {
    return absl::InvalidArgumentError(StrCat(what, ".sha256 has ", model.sha256().size(),
                                             " bytes; it must be empty or ", kSha256Bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckNodeInfo(const v1::NodeInfo& node) {
  SILO_RETURN_IF_ERROR(crypto::CheckNodeId(node.node_id()));
  const std::string who = StrCat("node ", node.node_id());
  if (node.role() != v1::NODE_ROLE_INSTITUTION && node.role() != v1::NODE_ROLE_DEVICE &&
      node.role() != v1::NODE_ROLE_COMPUTE) {
    return absl::InvalidArgumentError(
        StrCat(who, ": role ", static_cast<int>(node.role()), " (", v1::NodeRole_Name(node.role()),
               ") cannot register; a node is an institution, a device or a compute node"));
  }
  if (absl::Status address = CheckHostPort(node.address()); !address.ok()) {
    return absl::InvalidArgumentError(StrCat(who, ": ", address.message()));
  }
  SILO_RETURN_IF_ERROR(
      CheckSize(StrCat(who, ": cert_identity"), node.cert_identity().size(), kMaxIdentifierBytes));
  SILO_RETURN_IF_ERROR(CheckFingerprint(StrCat(who, ": model"), node.model()));
  SILO_RETURN_IF_ERROR(CheckFingerprint(StrCat(who, ": embedder"), node.embedder()));
  SILO_RETURN_IF_ERROR(CheckSize(StrCat(who, ": capabilities.gpu_name"),
                                 node.capabilities().gpu_name().size(), kMaxIdentifierBytes));
  if (node.capabilities().modes_size() > kMaxModes) {
    return absl::InvalidArgumentError(StrCat(who, ": capabilities.modes has ",
                                             node.capabilities().modes_size(),
                                             " entries, more than the ", kMaxModes, " allowed"));
  }
  SILO_RETURN_IF_ERROR(
      CheckSize(StrCat(who, ": version"), node.version().size(), kMaxIdentifierBytes));
  return absl::OkStatus();
}

absl::Status CheckSessionId(const v1::SessionId& session) {
  if (session.value().size() != kSessionIdBytes) {
    return absl::InvalidArgumentError(
        StrCat("a session id has ", kSessionIdBytes, " bytes, not ", session.value().size()));
  }
  return absl::OkStatus();
}

std::string_view ModeName(v1::GenerationMode mode) {
  switch (mode) {
    case v1::GENERATION_MODE_FEDRAG:
      return "fedrag";
    case v1::GENERATION_MODE_DRAGON:
      return "dragon";
    case v1::GENERATION_MODE_LOCAL:
      return "local";
    case v1::GENERATION_MODE_CENTRALIZED:
      return "centralized";
    case v1::GENERATION_MODE_RETRIEVE:
      return "retrieve";
    default:
      break;
  }
  return "unspecified";
}

template <typename Message>
absl::StatusOr<Message> ParseValue(Cf cf, std::string_view key, std::string_view value) {
  Message message;
  if (value.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !message.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return absl::DataLossError(StrCat(DescribeKey(cf, key), ": the stored value (", value.size(),
                                      " bytes) is not a ", message.GetTypeName()));
  }
  return message;
}

absl::StatusOr<v1::NodeStatus> DecodeNode(std::string_view key, std::string_view value) {
  SILO_ASSIGN_OR_RETURN(v1::NodeStatus status, ParseValue<v1::NodeStatus>(kNodes, key, value));
  if (status.node().node_id() != key) {
    return absl::DataLossError(StrCat(DescribeKey(kNodes, key), ": the record is of node '",
                                      Escaped(status.node().node_id()), "'"));
  }
  if (absl::Status valid = CheckNodeInfo(status.node()); !valid.ok()) {
    return absl::DataLossError(
        StrCat(DescribeKey(kNodes, key), ": the record is invalid: ", valid.message()));
  }
  status.set_online(false);
  return status;
}

absl::StatusOr<v1::NetworkLink> DecodeLink(std::string_view key, std::string_view value) {
  SILO_ASSIGN_OR_RETURN(v1::NetworkLink link, ParseValue<v1::NetworkLink>(kLinks, key, value));
  if (!crypto::CheckNodeId(link.from_node_id()).ok() ||
      !crypto::CheckNodeId(link.to_node_id()).ok() ||
      LinkKey(link.from_node_id(), link.to_node_id()) != key ||
      !IsNonNegativeFinite(link.rtt_ms()) || !IsNonNegativeFinite(link.throughput_mbps()) ||
      link.n_samples() == 0) {
    return absl::DataLossError(
        StrCat(DescribeKey(kLinks, key), ": the record does not match its key or is out of range"));
  }
  return link;
}

absl::StatusOr<v1::SessionRecord> DecodeSession(std::string_view key, std::string_view value) {
  SILO_ASSIGN_OR_RETURN(v1::SessionRecord record,
                        ParseValue<v1::SessionRecord>(kSessions, key, value));
  if (key.size() != kSessionKeyBytes ||
      record.placement().session().value() != key.substr(kSeqBytes)) {
    return absl::DataLossError(
        StrCat(DescribeKey(kSessions, key), ": the record does not match its key"));
  }
  return record;
}

absl::Status AppendPut(rocksdb::WriteBatch& batch, rocksdb::ColumnFamilyHandle* cf,
                       std::string_view key, std::string_view value) {
  return FromRocksDb(batch.Put(cf, rocksdb::Slice(key.data(), key.size()),
                               rocksdb::Slice(value.data(), value.size())),
                     "building a write batch");
}

absl::Status AppendDelete(rocksdb::WriteBatch& batch, rocksdb::ColumnFamilyHandle* cf,
                          std::string_view key) {
  return FromRocksDb(batch.Delete(cf, rocksdb::Slice(key.data(), key.size())),
                     "building a write batch");
}

template <typename Message>
absl::Status AppendPutMessage(rocksdb::WriteBatch& batch, rocksdb::ColumnFamilyHandle* cf,
                              std::string_view key, const Message& message) {
  std::string value;
  if (!message.SerializeToString(&value)) {
    return absl::InternalError(StrCat("cannot serialize a ", message.GetTypeName()));
  }
  return AppendPut(batch, cf, key, value);
}

bool TookPart(const v1::SessionRecord& record, std::string_view node_id) {
  const v1::Placement& placement = record.placement();
  if (placement.querier_node_id() == node_id || placement.compute().node_id() == node_id ||
      placement.dragon_peer().node_id() == node_id) {
    return true;
  }
  for (const v1::NodeRef& participant : placement.participants()) {
    if (participant.node_id() == node_id) return true;
  }
  for (const std::string& owner : record.owner_node_ids()) {
    if (owner == node_id) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Impl.

struct CoordinatorState::Impl {
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (db == nullptr) return;
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      db->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
    }
    handles.clear();
    const absl::Status status = FromRocksDb(db->Close(), "closing the coordinator's database");
    if (!status.ok()) {
      SILO_LOG(Warning) << status;
    }
  }

  // The smoothed RTT (ms) and throughput (Mbit/s) between two nodes, from either direction's
  // measurements (their mean when both exist); pessimistic guesses for a link never measured,
  // so that measured nodes are preferred.
  std::pair<double, double> LinkCost(const std::string& a, const std::string& b) const {
    double rtt = 0;
    double throughput = 0;
    int n_rtt = 0;
    int n_throughput = 0;
    for (const auto& key : {std::make_pair(a, b), std::make_pair(b, a)}) {
      const auto it = links.find(key);
      if (it == links.end()) continue;
      rtt += it->second.rtt_ms();
      ++n_rtt;
      if (it->second.throughput_mbps() > 0) {
        throughput += it->second.throughput_mbps();
        ++n_throughput;
      }
    }
    return {n_rtt > 0 ? rtt / n_rtt : kUnmeasuredRttMs,
            n_throughput > 0 ? throughput / n_throughput : kUnmeasuredThroughputMbps};
  }

  // FedRAG placement (DESIGN.md §6, §8): the online compute node with the lowest estimated
  //   TTFT + max_tokens × per-token cost, where
  //   per-token cost = n_layers × RTT(querier, compute)        (one exchange per layer)
  //   TTFT = max over owners of (RTT(owner, compute) + K′/V′ bytes / throughput(owner, compute))
  //          + per-token cost                                   (the question's prefill step)
  // with each owner's K′/V′ taken as its share of n_context_tokens in f16. Resolves the privacy
  // knobs left at their defaults. Ties go to the lower node id.
  absl::Status PlaceCompute(const v1::PlaceSessionRequest& request, const v1::NodeInfo& querier,
                            absl::Time now, v1::Placement& placement) const {
    const v1::ModelFingerprint& model = querier.model();
    if (model.n_layers() == 0 || model.n_kv_heads() == 0 || model.head_dim() == 0) {
      return absl::FailedPreconditionError(
          StrCat("querier '", querier.node_id(), "' registered no model shape"));
    }
    v1::PrivacySettings privacy = request.privacy();
    const v1::PrivacySettings defaults = DefaultPrivacySettings();
    if (privacy.key_scope() == v1::KEY_SCOPE_UNSPECIFIED)
      privacy.set_key_scope(defaults.key_scope());
    if (privacy.mixer() == v1::MIXER_UNSPECIFIED) privacy.set_mixer(defaults.mixer());
    if (privacy.key_scope() == v1::KEY_SCOPE_BLOCK && privacy.block_rows() == 0) {
      privacy.set_block_rows(model.head_dim());
    }
    if (!privacy.has_protect_layers()) {
      privacy.set_protect_layers(std::min(defaults.protect_layers(), model.n_layers()));
    }
    if (privacy.protect_layers() > 0 && privacy.protect_mode() == v1::PROTECT_MODE_UNSPECIFIED) {
      privacy.set_protect_mode(defaults.protect_mode());
    }
    if (!v1::KeyScope_IsValid(privacy.key_scope()) || !v1::Mixer_IsValid(privacy.mixer()) ||
        !v1::ProtectMode_IsValid(privacy.protect_mode())) {
      return absl::InvalidArgumentError("unknown privacy setting");
    }
    if (privacy.block_rows() > 4096 || privacy.decoy_rows() > 4096 ||
        privacy.protect_layers() > model.n_layers()) {
      return absl::InvalidArgumentError(
          StrCat("privacy: block_rows and decoy_rows must be at most 4096 and protect_layers at "
                 "most n_layers (",
                 model.n_layers(), ")"));
    }
    const double context_tokens =
        request.n_context_tokens() == 0 ? 2048 : request.n_context_tokens();
    const double max_tokens = request.max_tokens() == 0 ? 128 : request.max_tokens();
    const double owners = std::max(1, placement.participants_size());
    const double bytes_per_owner = context_tokens / owners * model.n_layers() * model.n_kv_heads() *
                                   model.head_dim() * 2 /* K, V */ * 2 /* f16 */;
    const v1::NodeStatus* best = nullptr;
    double best_cost = 0;
    double best_ttft = 0;
    double best_token = 0;
    for (const auto& [id, status] : nodes) {
      if (status.node().role() != v1::NODE_ROLE_COMPUTE || !Online(status, now)) continue;
      const double token_ms = model.n_layers() * LinkCost(querier.node_id(), id).first;
      double upload_ms = 0;
      for (const v1::NodeRef& owner : placement.participants()) {
        const auto [rtt, mbps] = LinkCost(owner.node_id(), id);
        upload_ms = std::max(upload_ms, rtt + bytes_per_owner * 8 / (mbps * 1e3));
      }
      const double ttft_ms = upload_ms + token_ms;
      const double cost = ttft_ms + max_tokens * token_ms;
      if (best == nullptr || cost < best_cost) {
        best = &status;
        best_cost = cost;
        best_ttft = ttft_ms;
        best_token = token_ms;
      }
    }
    if (best == nullptr) {
      return absl::UnavailableError("no compute node is online for a FedRAG session");
    }
    placement.mutable_compute()->set_node_id(best->node().node_id());
    placement.mutable_compute()->set_address(best->node().address());
    placement.set_estimated_ttft_ms(best_ttft);
    placement.set_estimated_token_ms(best_token);
    *placement.mutable_privacy() = privacy;
    return absl::OkStatus();
  }

  // DRAGON placement (DESIGN.md §7, §8): the cloud side is the named participant, or else the
  // online institution with the querier's decoder (same fingerprint) at the lowest RTT from it,
  // ties to the lower node id. The aggregator starts on the slower side (the ΔZ rule prefers it
  // there): the device, unless only the device has a GPU.
  absl::Status PlaceDragon(const v1::PlaceSessionRequest& request, const v1::NodeInfo& querier,
                           absl::Time now, v1::Placement& placement) const {
    if (request.participant_node_ids_size() > 1) {
      return absl::InvalidArgumentError(
          "a DRAGON session has one cloud peer: name at most one participant");
    }
    const std::string& model = querier.model().sha256();
    const auto eligible = [&](const v1::NodeInfo& node) -> absl::Status {
      if (node.node_id() == querier.node_id()) {
        return absl::InvalidArgumentError("the DRAGON cloud peer cannot be the querier");
      }
      if (node.role() != v1::NODE_ROLE_INSTITUTION) {
        return absl::FailedPreconditionError(
            StrCat("'", node.node_id(), "' is a ", v1::NodeRole_Name(node.role()),
                   " node; the DRAGON cloud side is an institution"));
      }
      if (model.empty() || node.model().sha256() != model) {
        return absl::FailedPreconditionError(
            StrCat("'", node.node_id(), "' decodes with another model than the querier ('",
                   node.model().name(), "' vs '", querier.model().name(), "')"));
      }
      return absl::OkStatus();
    };
    const v1::NodeInfo* cloud = nullptr;
    if (request.participant_node_ids_size() == 1) {
      const std::string& id = request.participant_node_ids(0);
      const auto found = nodes.find(id);
      if (found == nodes.end()) {
        return absl::NotFoundError(StrCat("participant '", Escaped(id), "' is not registered"));
      }
      if (!Online(found->second, now)) {
        return absl::UnavailableError(StrCat("participant '", id, "' is offline"));
      }
      SILO_RETURN_IF_ERROR(eligible(found->second.node()));
      cloud = &found->second.node();
    } else {
      double best_rtt = 0;
      for (const auto& [id, status] : nodes) {
        if (!Online(status, now) || !eligible(status.node()).ok()) continue;
        const double rtt = LinkCost(querier.node_id(), id).first;
        if (cloud == nullptr || rtt < best_rtt) {
          cloud = &status.node();
          best_rtt = rtt;
        }
      }
      if (cloud == nullptr) {
        return absl::UnavailableError(
            "no online institution decodes with the querier's model for a DRAGON session");
      }
    }
    placement.mutable_dragon_peer()->set_node_id(cloud->node_id());
    placement.mutable_dragon_peer()->set_address(cloud->address());
    const bool only_device_has_gpu =
        querier.capabilities().has_gpu() && !cloud->capabilities().has_gpu();
    placement.set_aggregator(only_device_has_gpu ? v1::DRAGON_SIDE_CLOUD : v1::DRAGON_SIDE_DEVICE);
    placement.set_estimated_token_ms(LinkCost(querier.node_id(), cloud->node_id()).first);
    return absl::OkStatus();
  }

  bool Online(const v1::NodeStatus& status, absl::Time now) const {
    const absl::Time last = absl::FromUnixNanos(status.last_heartbeat_unix_ns());
    return now - last <= options.heartbeat_interval * options.missed_heartbeats;
  }

  v1::NodeStatus WithOnline(const v1::NodeStatus& status, absl::Time now) const {
    v1::NodeStatus copy = status;
    copy.set_online(Online(status, now));
    return copy;
  }

  absl::Status Write(rocksdb::WriteBatch& batch, bool sync) {
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    return FromRocksDb(db->Write(write_options, &batch), "writing the coordinator's database");
  }

  // The value at `key` of `cf` as of `snapshot` (nullptr: now); std::nullopt when absent.
  absl::StatusOr<std::optional<std::string>> Get(Cf cf, std::string_view key,
                                                 const rocksdb::Snapshot* snapshot) const {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    read_options.verify_checksums = true;
    std::string value;
    const rocksdb::Status status =
        db->Get(read_options, cfs[cf], rocksdb::Slice(key.data(), key.size()), &value);
    if (status.IsNotFound()) return std::optional<std::string>();
    SILO_RETURN_IF_ERROR(FromRocksDb(status, StrCat("reading ", DescribeKey(cf, key))));
    return std::optional<std::string>(std::move(value));
  }

  // The sessions key and record of `session_id`. NotFound when unknown; DataLoss when the index
  // or the record is corrupt.
  absl::StatusOr<std::pair<std::string, v1::SessionRecord>> FindSession(
      std::string_view session_id, const rocksdb::Snapshot* snapshot) const {
    SILO_ASSIGN_OR_RETURN(std::optional<std::string> seq, Get(kSessionIds, session_id, snapshot));
    if (!seq.has_value()) {
      return absl::NotFoundError(StrCat("no session ", Hex(session_id), " (unknown or pruned)"));
    }
    if (seq->size() != kSeqBytes) {
      return absl::DataLossError(StrCat(DescribeKey(kSessionIds, session_id), ": the value has ",
                                        seq->size(), " bytes, not ", kSeqBytes));
    }
    std::string key = SessionKey(DecodeSeq(*seq), session_id);
    SILO_ASSIGN_OR_RETURN(std::optional<std::string> value, Get(kSessions, key, snapshot));
    if (!value.has_value()) {
      return absl::DataLossError(StrCat(DescribeKey(kSessionIds, session_id),
                                        " names a session record that does not exist"));
    }
    SILO_ASSIGN_OR_RETURN(v1::SessionRecord record, DecodeSession(key, *value));
    return std::make_pair(std::move(key), std::move(record));
  }

  // Adds to `batch` the deletion of every session record with a seq below `keep_from`.
  absl::Status PruneBelow(rocksdb::WriteBatch& batch, uint64_t keep_from) const {
    const std::string upper = EncodeSeq(keep_from);
    const rocksdb::Slice upper_bound(upper);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper_bound;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, cfs[kSessions]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      SILO_RETURN_IF_ERROR(AppendDelete(batch, cfs[kSessions], key));
      if (key.size() == kSessionKeyBytes) {
        SILO_RETURN_IF_ERROR(AppendDelete(batch, cfs[kSessionIds], key.substr(kSeqBytes)));
      }
      SILO_RETURN_IF_ERROR(AppendDelete(batch, cfs[kRunning], key));
    }
    return FromRocksDb(it->status(), "pruning the session log");
  }

  absl::Status Load(absl::Time now);

  CoordinatorStateOptions options;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // all of them, RocksDB's default included
  std::array<rocksdb::ColumnFamilyHandle*, kNumCfs> cfs{};

  mutable std::mutex mu;  // guards what follows and serializes writes
  std::map<std::string, v1::NodeStatus, std::less<>> nodes;  // online is not kept
  std::map<std::pair<std::string, std::string>, v1::NetworkLink> links;
  uint64_t next_seq = 0;    // seq of the next placement
  uint64_t oldest_seq = 0;  // lowest seq in the log; next_seq when it is empty
};

// Reads the schema version, nodes, links and the bounds of the session log, and finishes the
// sessions that were running.
absl::Status CoordinatorState::Impl::Load(absl::Time now) {
  SILO_ASSIGN_OR_RETURN(std::optional<std::string> version, Get(kMeta, kSchemaVersionKey, nullptr));
  if (!version.has_value()) {
    for (Cf cf : {kNodes, kLinks, kSessions, kSessionIds, kRunning}) {
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cfs[cf]));
      it->SeekToFirst();
      SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "scanning the coordinator's database"));
      if (it->Valid()) {
        return absl::DataLossError(
            StrCat("the coordinator's database holds ", kCfNames[cf], " but no schema version"));
      }
    }
    std::string value(4, '\0');
    for (int i = 0; i < 4; ++i) value[i] = static_cast<char>(kSchemaVersion >> (8 * i));
    rocksdb::WriteBatch batch;
    SILO_RETURN_IF_ERROR(AppendPut(batch, cfs[kMeta], kSchemaVersionKey, value));
    SILO_RETURN_IF_ERROR(Write(batch, /*sync=*/true));
  } else {
    if (version->size() != 4) {
      return absl::DataLossError(StrCat(DescribeKey(kMeta, kSchemaVersionKey), ": the value has ",
                                        version->size(), " bytes, not 4"));
    }
    uint32_t stored = 0;
    for (int i = 3; i >= 0; --i) stored = (stored << 8) | static_cast<uint8_t>((*version)[i]);
    if (stored != kSchemaVersion) {
      return absl::FailedPreconditionError(StrCat("the coordinator's database has schema version ",
                                                  stored, "; this build reads ", kSchemaVersion));
    }
  }

  rocksdb::ReadOptions read_options;
  read_options.verify_checksums = true;
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, cfs[kNodes]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      SILO_ASSIGN_OR_RETURN(v1::NodeStatus status, DecodeNode(key, it->value().ToStringView()));
      nodes.emplace(std::string(key), std::move(status));
    }
    SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading the nodes"));
  }
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, cfs[kLinks]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      SILO_ASSIGN_OR_RETURN(v1::NetworkLink link,
                            DecodeLink(it->key().ToStringView(), it->value().ToStringView()));
      std::pair<std::string, std::string> key(link.from_node_id(), link.to_node_id());
      links.emplace(std::move(key), std::move(link));
    }
    SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading the network links"));
  }
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, cfs[kSessions]));
    for (const bool first : {true, false}) {
      if (first) {
        it->SeekToFirst();
      } else {
        it->SeekToLast();
      }
      SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading the session log"));
      if (!it->Valid()) break;
      const std::string_view key = it->key().ToStringView();
      if (key.size() != kSessionKeyBytes) {
        return absl::DataLossError(
            StrCat(DescribeKey(kSessions, key), ": a key has ", kSessionKeyBytes, " bytes"));
      }
      const uint64_t seq = DecodeSeq(key);
      if (first) {
        oldest_seq = seq;
      } else {
        if (seq == std::numeric_limits<uint64_t>::max()) {
          return absl::DataLossError(
              StrCat(DescribeKey(kSessions, key), ": the sequence number is out of range"));
        }
        next_seq = seq + 1;
      }
    }
  }

  // Sessions that were running when the coordinator stopped: they will never be finished.
  rocksdb::WriteBatch batch;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, cfs[kRunning]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    SILO_ASSIGN_OR_RETURN(std::optional<std::string> value, Get(kSessions, key, nullptr));
    if (!value.has_value()) {
      return absl::DataLossError(
          StrCat(DescribeKey(kRunning, key), " names a session record that does not exist"));
    }
    SILO_ASSIGN_OR_RETURN(v1::SessionRecord record, DecodeSession(key, *value));
    if (record.finished_at_unix_ns() == 0) {
      record.set_finished_at_unix_ns(std::max<int64_t>(absl::ToUnixNanos(now), 1));
      record.set_status_code(static_cast<int32_t>(absl::StatusCode::kUnavailable));
      SILO_RETURN_IF_ERROR(AppendPutMessage(batch, cfs[kSessions], key, record));
      SILO_LOG(Info) << "session " << Hex(key.substr(kSeqBytes))
                     << " was running when the coordinator stopped; finished as UNAVAILABLE "
                        "(coordinator restarted)";
    }
    SILO_RETURN_IF_ERROR(AppendDelete(batch, cfs[kRunning], key));
  }
  SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading the running sessions"));
  if (batch.Count() > 0) SILO_RETURN_IF_ERROR(Write(batch, /*sync=*/true));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// CoordinatorState.

CoordinatorState::CoordinatorState(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoordinatorState::~CoordinatorState() = default;

absl::StatusOr<std::unique_ptr<CoordinatorState>> CoordinatorState::Open(
    const CoordinatorStateOptions& options, absl::Time now) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  if (options.heartbeat_interval <= absl::ZeroDuration() ||
      options.heartbeat_interval == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(StrCat("heartbeat_interval ",
                                             absl::FormatDuration(options.heartbeat_interval),
                                             " must be positive and finite"));
  }
  if (options.missed_heartbeats < 1 || options.missed_heartbeats > 100) {
    return absl::InvalidArgumentError(
        StrCat("missed_heartbeats ", options.missed_heartbeats, " is not in 1..100"));
  }
  if (!(options.ewma_alpha > 0 && options.ewma_alpha <= 1)) {
    return absl::InvalidArgumentError(
        StrCat("ewma_alpha ", options.ewma_alpha, " is not in (0, 1]"));
  }
  if (options.session_log_limit < 1 || options.session_log_limit > 10'000'000) {
    return absl::InvalidArgumentError(
        StrCat("session_log_limit ", options.session_log_limit, " is not in 1..10^7"));
  }

  const std::string& path = options.data_dir;
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  SILO_RETURN_IF_ERROR(
      CheckColumnFamilies(db_options, path, kCfNames, "the coordinator's database"));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const char* name : kCfNames) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  rocksdb::DB* db = nullptr;
  SILO_RETURN_IF_ERROR(
      FromRocksDb(rocksdb::DB::Open(db_options, path, descriptors, &impl->handles, &db),
                  StrCat("opening the coordinator's database ", path)));
  impl->db.reset(db);
  for (int cf = 0; cf < kNumCfs; ++cf) impl->cfs[cf] = impl->handles[cf + 1];
  SILO_RETURN_IF_ERROR(impl->Load(now));
  return std::unique_ptr<CoordinatorState>(new CoordinatorState(std::move(impl)));
}

absl::Status CoordinatorState::RegisterNode(const v1::NodeInfo& node, absl::Time now) {
  SILO_RETURN_IF_ERROR(CheckNodeInfo(node));
  v1::NodeStatus status;
  *status.mutable_node() = node;
  status.mutable_node()->DiscardUnknownFields();
  status.set_last_heartbeat_unix_ns(absl::ToUnixNanos(now));
  status.set_active_sessions(0);

  const std::lock_guard<std::mutex> lock(impl_->mu);
  rocksdb::WriteBatch batch;
  SILO_RETURN_IF_ERROR(AppendPutMessage(batch, impl_->cfs[kNodes], node.node_id(), status));
  SILO_RETURN_IF_ERROR(impl_->Write(batch, /*sync=*/true));
  impl_->nodes.insert_or_assign(node.node_id(), std::move(status));
  return absl::OkStatus();
}

absl::StatusOr<HeartbeatResult> CoordinatorState::Heartbeat(std::string_view node_id,
                                                            uint32_t active_sessions,
                                                            absl::Time now) {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  const auto found = impl_->nodes.find(node_id);
  if (found == impl_->nodes.end()) {
    return absl::NotFoundError(StrCat("node '", Escaped(node_id), "' is not registered"));
  }
  HeartbeatResult result;
  result.heartbeat_interval = impl_->options.heartbeat_interval;
  result.was_offline = !impl_->Online(found->second, now);
  v1::NodeStatus status = found->second;
  status.set_last_heartbeat_unix_ns(absl::ToUnixNanos(now));
  status.set_active_sessions(active_sessions);
  rocksdb::WriteBatch batch;
  SILO_RETURN_IF_ERROR(AppendPutMessage(batch, impl_->cfs[kNodes], node_id, status));
  SILO_RETURN_IF_ERROR(impl_->Write(batch, /*sync=*/false));
  found->second = std::move(status);
  return result;
}

std::vector<v1::NodeStatus> CoordinatorState::ListNodes(v1::NodeRole role_filter,
                                                        bool include_offline,
                                                        absl::Time now) const {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<v1::NodeStatus> result;
  for (const auto& [id, status] : impl_->nodes) {
    if (role_filter != v1::NODE_ROLE_UNSPECIFIED && status.node().role() != role_filter) continue;
    v1::NodeStatus copy = impl_->WithOnline(status, now);
    if (!include_offline && !copy.online()) continue;
    result.push_back(std::move(copy));
  }
  return result;
}

absl::StatusOr<v1::NodeStatus> CoordinatorState::GetNode(std::string_view node_id,
                                                         absl::Time now) const {
  const std::lock_guard<std::mutex> lock(impl_->mu);
  const auto found = impl_->nodes.find(node_id);
  if (found == impl_->nodes.end()) {
    return absl::NotFoundError(StrCat("node '", Escaped(node_id), "' is not registered"));
  }
  return impl_->WithOnline(found->second, now);
}

absl::StatusOr<uint32_t> CoordinatorState::ReportProbes(
    std::string_view from_node_id, const std::vector<v1::NetworkMeasurement>& measurements,
    absl::Time now) {
  if (measurements.size() > kMaxMeasurementsPerReport) {
    return absl::InvalidArgumentError(StrCat("a report holds at most ", kMaxMeasurementsPerReport,
                                             " measurements; got ", measurements.size()));
  }
  const std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->nodes.contains(from_node_id)) {
    return absl::NotFoundError(
        StrCat("reporting node '", Escaped(from_node_id), "' is not registered"));
  }
  const double alpha = impl_->options.ewma_alpha;
  const int64_t now_ns = absl::ToUnixNanos(now);
  std::map<std::pair<std::string, std::string>, v1::NetworkLink> updated;
  uint32_t n_accepted = 0;
  for (const v1::NetworkMeasurement& m : measurements) {
    if (m.peer_node_id() == from_node_id || !impl_->nodes.contains(m.peer_node_id()) ||
        !IsNonNegativeFinite(m.rtt_ms()) || !IsNonNegativeFinite(m.rtt_p90_ms()) ||
        !IsNonNegativeFinite(m.throughput_mbps())) {
      continue;
    }
    std::pair<std::string, std::string> key(std::string(from_node_id), m.peer_node_id());
    auto link_it = updated.find(key);
    if (link_it == updated.end()) {
      const auto existing = impl_->links.find(key);
      v1::NetworkLink link;
      if (existing != impl_->links.end()) {
        link = existing->second;
      } else {
        link.set_from_node_id(key.first);
        link.set_to_node_id(key.second);
      }
      link_it = updated.emplace(std::move(key), std::move(link)).first;
    }
    v1::NetworkLink& link = link_it->second;
    if (link.n_samples() == 0) {
      link.set_rtt_ms(m.rtt_ms());
      link.set_throughput_mbps(m.throughput_mbps());
    } else {
      link.set_rtt_ms(alpha * m.rtt_ms() + (1 - alpha) * link.rtt_ms());
      if (m.throughput_mbps() > 0) {
        link.set_throughput_mbps(link.throughput_mbps() == 0
                                     ? m.throughput_mbps()
                                     : alpha * m.throughput_mbps() +
                                           (1 - alpha) * link.throughput_mbps());
      }
    }
    if (link.n_samples() < std::numeric_limits<uint32_t>::max()) {
      link.set_n_samples(link.n_samples() + 1);
    }
    link.set_updated_at_unix_ns(now_ns);
    ++n_accepted;
  }
  if (updated.empty()) return n_accepted;
  rocksdb::WriteBatch batch;
  for (const auto& [key, link] : updated) {
    SILO_RETURN_IF_ERROR(
        AppendPutMessage(batch, impl_->cfs[kLinks], LinkKey(key.first, key.second), link));
  }
  SILO_RETURN_IF_ERROR(impl_->Write(batch, /*sync=*/false));
  for (auto& [key, link] : updated) impl_->links.insert_or_assign(key, std::move(link));
  return n_accepted;
}

std::vector<v1::NetworkLink> CoordinatorState::NetworkMatrix(
    const std::vector<std::string>& node_ids) const {
  const std::set<std::string_view> filter(node_ids.begin(), node_ids.end());
  const std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<v1::NetworkLink> result;
  for (const auto& [key, link] : impl_->links) {
    if (!filter.empty() && (!filter.contains(key.first) || !filter.contains(key.second))) continue;
    result.push_back(link);
  }
  return result;
}

absl::StatusOr<v1::Placement> CoordinatorState::PlaceSession(const v1::PlaceSessionRequest& request,
                                                             absl::Time now,
                                                             absl::BitGenRef bitgen) {
  switch (request.mode()) {
    case v1::GENERATION_MODE_RETRIEVE:
    case v1::GENERATION_MODE_LOCAL:
    case v1::GENERATION_MODE_FEDRAG:
    case v1::GENERATION_MODE_CENTRALIZED:  // placed as retrieval; owners decide to hand text
    case v1::GENERATION_MODE_DRAGON:
      break;
    default:
      return absl::InvalidArgumentError(StrCat("generation mode ", static_cast<int>(request.mode()),
                                               " (", ModeName(request.mode()),
                                               ") cannot be placed; name a mode"));
  }
  const bool local = request.mode() == v1::GENERATION_MODE_LOCAL;
  const bool dragon = request.mode() == v1::GENERATION_MODE_DRAGON;
  const std::string& querier_id = request.querier_node_id();
  if (absl::Status valid = crypto::CheckNodeId(querier_id); !valid.ok()) {
    return absl::InvalidArgumentError(StrCat("querier: ", valid.message()));
  }
  if (static_cast<size_t>(request.participant_node_ids_size()) > kMaxSessionNodes) {
    return absl::InvalidArgumentError(StrCat("at most ", kMaxSessionNodes, " participants; got ",
                                             request.participant_node_ids_size()));
  }
  if (local && request.participant_node_ids_size() > 0) {
    return absl::InvalidArgumentError(
        "a local session searches only the querier's corpus: participant_node_ids must be empty");
  }

  const std::lock_guard<std::mutex> lock(impl_->mu);
  const auto querier_it = impl_->nodes.find(querier_id);
  if (querier_it == impl_->nodes.end()) {
    return absl::NotFoundError(StrCat("querier '", querier_id, "' is not registered"));
  }
  const v1::NodeStatus& querier = querier_it->second;
  if (!impl_->Online(querier, now)) {
    return absl::UnavailableError(
        StrCat("querier '", querier_id, "' is offline (missed its heartbeats)"));
  }
  if (!IsDataRole(querier.node().role())) {
    return absl::FailedPreconditionError(
        StrCat("querier '", querier_id, "' is a ", v1::NodeRole_Name(querier.node().role()),
               " node; only institutions and devices run queries"));
  }
  const std::string& embedder = querier.node().embedder().sha256();
  if (!local && !dragon && embedder.empty()) {
    return absl::FailedPreconditionError(
        StrCat("querier '", querier_id, "' has no embedder and cannot run federated retrieval"));
  }

  v1::Placement placement;
  placement.set_mode(request.mode());
  placement.set_querier_node_id(querier_id);
  const auto add_participant = [&placement](const v1::NodeInfo& node) {
    v1::NodeRef* ref = placement.add_participants();
    ref->set_node_id(node.node_id());
    ref->set_address(node.address());
  };
  if (dragon) {
    // Each side retrieves from its own corpus; the cloud peer is placed below.
  } else if (!local && request.participant_node_ids().empty()) {
    for (const auto& [id, status] : impl_->nodes) {
      if (id == querier_id || !IsDataRole(status.node().role()) ||
          status.node().embedder().sha256() != embedder) {
        continue;
      }
      if (impl_->Online(status, now)) {
        add_participant(status.node());
      } else if (status.node().role() == v1::NODE_ROLE_INSTITUTION) {
        // A user is told which institutions' knowledge is missing from the answer; devices
        // come and go by nature and are left out silently.
        v1::NodeRef* ref = placement.add_offline();
        ref->set_node_id(id);
        ref->set_address(status.node().address());
      }
    }
  } else {
    std::set<std::string_view> seen;
    for (const std::string& id : request.participant_node_ids()) {
      if (id == querier_id) {
        return absl::InvalidArgumentError(
            StrCat("participant '", id, "' is the querier; it searches its own corpus anyway"));
      }
      if (!seen.insert(id).second) {
        return absl::InvalidArgumentError(
            StrCat("participant '", Escaped(id), "' is listed twice"));
      }
      const auto found = impl_->nodes.find(id);
      if (found == impl_->nodes.end()) {
        return absl::NotFoundError(StrCat("participant '", Escaped(id), "' is not registered"));
      }
      const v1::NodeInfo& node = found->second.node();
      if (!IsDataRole(node.role())) {
        return absl::FailedPreconditionError(
            StrCat("participant '", id, "' is a ", v1::NodeRole_Name(node.role()),
                   " node; only institutions and devices hold documents"));
      }
      if (node.embedder().sha256() != embedder) {
        return absl::FailedPreconditionError(
            StrCat("participant '", id, "' embeds with another model than the querier ('",
                   node.embedder().name(), "' vs '", querier.node().embedder().name(),
                   "'): their scores are not comparable"));
      }
      add_participant(node);
    }
  }

  if (request.mode() == v1::GENERATION_MODE_FEDRAG) {
    SILO_RETURN_IF_ERROR(impl_->PlaceCompute(request, querier.node(), now, placement));
  }
  if (dragon) SILO_RETURN_IF_ERROR(impl_->PlaceDragon(request, querier.node(), now, placement));

  // A fresh session id; a collision with a logged one is astronomically unlikely, but cheap to
  // rule out.
  std::string session_id;
  for (int attempt = 0;; ++attempt) {
    if (attempt == kMaxIdAttempts) {
      return absl::InternalError("the random source keeps repeating session ids");
    }
    session_id.clear();
    for (int half = 0; half < 2; ++half) {
      const uint64_t bits = absl::Uniform<uint64_t>(bitgen);
      for (int i = 0; i < 8; ++i) session_id.push_back(static_cast<char>(bits >> (8 * i)));
    }
    SILO_ASSIGN_OR_RETURN(std::optional<std::string> existing,
                          impl_->Get(kSessionIds, session_id, nullptr));
    if (!existing.has_value()) break;
  }
  placement.mutable_session()->set_value(session_id);

  v1::SessionRecord record;
  *record.mutable_placement() = placement;
  record.set_started_at_unix_ns(absl::ToUnixNanos(now));

  const uint64_t seq = impl_->next_seq;
  if (seq == std::numeric_limits<uint64_t>::max()) {
    return absl::ResourceExhaustedError("the session log has run out of sequence numbers");
  }
  const std::string key = SessionKey(seq, session_id);
  rocksdb::WriteBatch batch;
  SILO_RETURN_IF_ERROR(AppendPutMessage(batch, impl_->cfs[kSessions], key, record));
  SILO_RETURN_IF_ERROR(AppendPut(batch, impl_->cfs[kSessionIds], session_id, EncodeSeq(seq)));
  SILO_RETURN_IF_ERROR(AppendPut(batch, impl_->cfs[kRunning], key, ""));
  const uint64_t limit = static_cast<uint64_t>(impl_->options.session_log_limit);
  const uint64_t keep_from = seq + 1 > limit ? seq + 1 - limit : 0;
  if (impl_->oldest_seq < keep_from) SILO_RETURN_IF_ERROR(impl_->PruneBelow(batch, keep_from));
  SILO_RETURN_IF_ERROR(impl_->Write(batch, /*sync=*/true));
  impl_->next_seq = seq + 1;
  impl_->oldest_seq = std::max(impl_->oldest_seq, keep_from);
  return placement;
}

absl::Status CoordinatorState::FinishSession(const v1::SessionId& session, int32_t status_code,
                                             const v1::QueryStats& stats,
                                             std::vector<std::string> owner_node_ids,
                                             absl::Time now) {
  SILO_RETURN_IF_ERROR(CheckSessionId(session));
  if (status_code < 0 || status_code > kMaxStatusCode) {
    return absl::InvalidArgumentError(
        StrCat("status code ", status_code, " is not a gRPC status code (0..16)"));
  }
  if (owner_node_ids.size() > kMaxSessionNodes) {
    return absl::InvalidArgumentError(
        StrCat("at most ", kMaxSessionNodes, " owners; got ", owner_node_ids.size()));
  }
  const std::string& session_id = session.value();

  const std::lock_guard<std::mutex> lock(impl_->mu);
  SILO_ASSIGN_OR_RETURN(auto found, impl_->FindSession(session_id, nullptr));
  auto& [key, record] = found;
  if (record.finished_at_unix_ns() != 0) {
    return absl::FailedPreconditionError(
        StrCat("session ", Hex(session_id), " is already finished"));
  }
  std::set<std::string_view> members = {record.placement().querier_node_id()};
  for (const v1::NodeRef& participant : record.placement().participants()) {
    members.insert(participant.node_id());
  }
  for (const std::string& owner : owner_node_ids) {
    if (!members.contains(owner)) {
      return absl::InvalidArgumentError(StrCat("owner '", Escaped(owner), "' of session ",
                                               Hex(session_id),
                                               " is neither its querier nor a participant"));
    }
  }
  // finished_at 0 means "running": a clock at the epoch still finishes the session.
  record.set_finished_at_unix_ns(std::max<int64_t>(absl::ToUnixNanos(now), 1));
  record.set_status_code(status_code);
  *record.mutable_stats() = stats;
  record.mutable_stats()->DiscardUnknownFields();
  record.mutable_owner_node_ids()->Assign(std::make_move_iterator(owner_node_ids.begin()),
                                          std::make_move_iterator(owner_node_ids.end()));
  rocksdb::WriteBatch batch;
  SILO_RETURN_IF_ERROR(AppendPutMessage(batch, impl_->cfs[kSessions], key, record));
  SILO_RETURN_IF_ERROR(AppendDelete(batch, impl_->cfs[kRunning], key));
  return impl_->Write(batch, /*sync=*/true);
}

absl::StatusOr<v1::SessionRecord> CoordinatorState::GetSession(const v1::SessionId& session) const {
  SILO_RETURN_IF_ERROR(CheckSessionId(session));
  // One snapshot, so that a concurrent prune removes the index entry and the record together.
  rocksdb::ManagedSnapshot snapshot(impl_->db.get());
  SILO_ASSIGN_OR_RETURN(auto found, impl_->FindSession(session.value(), snapshot.snapshot()));
  return std::move(found.second);
}

absl::StatusOr<std::vector<v1::SessionRecord>> CoordinatorState::ListSessions(
    const v1::ListSessionsRequest& request) const {
  if (request.limit() > kMaxSessionListLimit) {
    return absl::InvalidArgumentError(StrCat("limit ", request.limit(), " is over the ",
                                             kMaxSessionListLimit, " sessions a list may hold"));
  }
  const size_t limit = request.limit() == 0 ? kDefaultSessionListLimit : request.limit();
  rocksdb::ManagedSnapshot snapshot(impl_->db.get());
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot.snapshot();
  read_options.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(read_options, impl_->cfs[kSessions]));
  std::vector<v1::SessionRecord> result;
  for (it->SeekToLast(); it->Valid() && result.size() < limit; it->Prev()) {
    SILO_ASSIGN_OR_RETURN(v1::SessionRecord record,
                          DecodeSession(it->key().ToStringView(), it->value().ToStringView()));
    if (record.started_at_unix_ns() < request.since_unix_ns()) continue;
    if (!request.node_id().empty() && !TookPart(record, request.node_id())) continue;
    result.push_back(std::move(record));
  }
  SILO_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading the session log"));
  return result;
}

absl::Duration CoordinatorState::heartbeat_interval() const {
  return impl_->options.heartbeat_interval;
}

v1::PrivacySettings DefaultPrivacySettings() {
  v1::PrivacySettings privacy;
  privacy.set_key_scope(v1::KEY_SCOPE_SESSION);
  // Attack 3 (walsh-unmixing) undoes sphps' Φ for a fifth of session-scope rows at layer 1 from
  // K′ alone and nothing of the dense mixer's (silo-eval privacy), for 14% more time per token.
  privacy.set_mixer(v1::MIXER_DENSE);
  // Layer 0's exact scores give every chunk token and the query token away to anyone with the
  // open weights (silo-eval privacy); the first layer is therefore not delegated.
  privacy.set_protect_layers(1);
  privacy.set_protect_mode(v1::PROTECT_MODE_SKIP);
  return privacy;
}

}  // namespace silo::coordinator
