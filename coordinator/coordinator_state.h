// The coordinator's state (DESIGN.md §8): membership and liveness of the nodes, the network
// matrix (EWMA per directed link), placement of sessions and the session log, persistent in one
// RocksDB database so that a restarted coordinator recovers all of it. No gRPC here: the services
// translate protos to calls of this class and statuses back.
//
// Time is an argument (`now`, the coordinator's clock) of every call that depends on it, so tests
// control it. A node is online when its last heartbeat (or registration) is at most
// missed_heartbeats × heartbeat_interval before `now`.
//
// Storage: column families of the database at `data_dir`, values are serialized silo.v1 protos:
//   meta         "schema_version"      u32 little-endian (kSchemaVersion)
//   nodes        node_id               NodeStatus (online is not stored; computed on read)
//   links        from '\0' to          NetworkLink
//   sessions     u64 seq (big-endian) || session id[16]   SessionRecord; seq counts placements
//   session_ids  session id[16]        u64 seq (big-endian)
//   running      the sessions key      empty; present while the session is not finished
// Nodes and links are also held in memory; sessions are read from the database. A value that
// does not parse or does not match its key is DataLoss naming the column family and key.
// Durability: registrations and session writes are synced (WAL fsynced before the call returns);
// heartbeats and probe reports are written unsynced (they survive a crash of the process, not
// necessarily of the machine, and are refreshed every few seconds anyway).
//
// Thread-safety: every method may be called concurrently; one mutex serializes the calls that
// read or change nodes, links or the session counters. One process opens a database at a time
// (RocksDB's lock; a second Open is Unavailable).
#ifndef SILO_COORDINATOR_COORDINATOR_STATE_H_
#define SILO_COORDINATOR_COORDINATOR_STATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "silo/v1/common.pb.h"
#include "silo/v1/coordinator.pb.h"

namespace silo::coordinator {

// Schema of the database; another version is FailedPrecondition on Open.
inline constexpr uint32_t kSchemaVersion = 1;
// At most this many measurements per ReportProbes call.
inline constexpr size_t kMaxMeasurementsPerReport = 256;
// At most this many explicit participants per PlaceSession, owners per FinishSession.
inline constexpr size_t kMaxSessionNodes = 1024;
// ListSessions: limit 0 means kDefaultSessionListLimit; more than kMaxSessionListLimit is
// InvalidArgument.
inline constexpr uint32_t kDefaultSessionListLimit = 100;
inline constexpr uint32_t kMaxSessionListLimit = 1000;
// Identifiers, addresses, model names and versions hold at most this many bytes.
inline constexpr size_t kMaxIdentifierBytes = 256;

struct CoordinatorStateOptions {
  std::string data_dir;                                  // the RocksDB folder; created if missing
  absl::Duration heartbeat_interval = absl::Seconds(2);  // > 0; what nodes are told to use
  int32_t missed_heartbeats = 3;                         // 1..100
  double ewma_alpha = 0.3;                               // weight of a new measurement, (0, 1]
  int64_t session_log_limit = 10000;                     // 1..10^7 records kept
};

struct HeartbeatResult {
  absl::Duration heartbeat_interval;  // how often the node should call Heartbeat
  bool was_offline = false;           // the node had missed its heartbeats before this one
};

class CoordinatorState {
 public:
  // Opens (or creates) the database at options.data_dir and recovers nodes (with their last
  // heartbeats), links and the session log. Sessions that were still running are finished at
  // `now` with status UNAVAILABLE (the coordinator restarted; their stats stay empty).
  // InvalidArgument when an option is out of range; DataLoss when a stored value is corrupt
  // (the message names the column family and key) or records exist without a schema version;
  // FailedPrecondition for another schema version or a folder holding another RocksDB database;
  // Unavailable when another process has the database open or the disk fails.
  static absl::StatusOr<std::unique_ptr<CoordinatorState>> Open(
      const CoordinatorStateOptions& options, absl::Time now);

  CoordinatorState(const CoordinatorState&) = delete;
  CoordinatorState& operator=(const CoordinatorState&) = delete;
  ~CoordinatorState();  // closes the database

  // Registers `node`, or replaces the registration of a node with the same id. Counts as a
  // heartbeat at `now` (active sessions reset to 0). Unknown fields of `node` are dropped.
  // InvalidArgument when node_id fails crypto::CheckNodeId, role is not INSTITUTION, DEVICE or
  // COMPUTE, address fails CheckHostPort, a string is over kMaxIdentifierBytes, a sha256 is neither
  // empty nor 32 bytes, or capabilities.modes has more than 16 entries; Unavailable when the write
  // fails.
  absl::Status RegisterNode(const v1::NodeInfo& node, absl::Time now);

  // Records a heartbeat of `node_id` at `now`. NotFound for a node that is not registered (the
  // service answers reregister = true); Unavailable when the write fails.
  absl::StatusOr<HeartbeatResult> Heartbeat(std::string_view node_id, uint32_t active_sessions,
                                            absl::Time now);

  // Registered nodes of `role_filter` (UNSPECIFIED: every role), ordered by node_id; offline
  // ones only with `include_offline`. `online` is computed at `now`.
  std::vector<v1::NodeStatus> ListNodes(v1::NodeRole role_filter, bool include_offline,
                                        absl::Time now) const;
  // NotFound when `node_id` is not registered.
  absl::StatusOr<v1::NodeStatus> GetNode(std::string_view node_id, absl::Time now) const;

  // Folds the measurements that `from_node_id` took into the matrix and returns how many were
  // accepted. Per directed link (from, peer): the first sample is taken as is, later ones as
  // x ← α·sample + (1 − α)·x, rtt_ms and throughput_mbps independently; a throughput of 0 means
  // "not measured" and leaves the throughput unchanged. n_samples counts accepted measurements,
  // updated_at is `now`. Dropped (not counted): measurements to an unregistered peer or to the
  // reporter itself, and ones with a NaN, infinite or negative rtt_ms, rtt_p90_ms or
  // throughput_mbps. InvalidArgument for more than kMaxMeasurementsPerReport measurements;
  // NotFound when the reporter is not registered; Unavailable when the write fails.
  absl::StatusOr<uint32_t> ReportProbes(std::string_view from_node_id,
                                        const std::vector<v1::NetworkMeasurement>& measurements,
                                        absl::Time now);

  // Links among `node_ids` (both ends in the list; empty: every link), ordered by
  // (from_node_id, to_node_id).
  std::vector<v1::NetworkLink> NetworkMatrix(const std::vector<std::string>& node_ids) const;

  // Places a session and logs it as running (started at `now`) under a fresh 16-byte session id
  // drawn from `bitgen`; the oldest records beyond session_log_limit are pruned in the same
  // write. Supported modes: RETRIEVE, LOCAL and FEDRAG.
  // - The querier must be registered (NotFound), online (Unavailable) and an institution or a
  //   device (FailedPrecondition); for RETRIEVE and FEDRAG it must have an embedder
  //   (FailedPrecondition).
  // - RETRIEVE, no participant_node_ids: every online institution or device other than the
  //   querier whose embedder.sha256 equals the querier's, ordered by node_id; such institutions
  //   that are offline are listed in Placement.offline (the querier reports them unanswered).
  // - RETRIEVE, explicit participant_node_ids (kept in the given order): each must be
  //   registered (NotFound naming it), not the querier and not listed twice (InvalidArgument),
  //   an institution or a device with the querier's embedder (FailedPrecondition). Offline
  //   participants are kept: the querier reports them unanswered.
  // - LOCAL: no participants (InvalidArgument when some are given).
  // - FEDRAG: participants as for RETRIEVE, and the online compute node with the lowest
  //   estimated TTFT + max_tokens × per-token cost from the measured network (see PlaceCompute in
  //   the .cc; unmeasured links count as 50 ms and 100 Mbit/s); the estimates and the privacy
  //   knobs, defaults resolved, are in the placement. Unavailable without an online compute
  //   node; FailedPrecondition when the querier registered no model shape; InvalidArgument for
  //   privacy knobs out of range.
  // - DRAGON: no participants; dragon_peer is the one named participant or the online
  //   institution with the querier's decoder at the lowest RTT; the aggregator starts on the
  //   device unless only the device has a GPU (PlaceDragon in the .cc). Unavailable without such
  //   an institution; FailedPrecondition when the named one decodes with another model.
  // InvalidArgument for mode UNSPECIFIED, an unknown mode, a malformed querier id or more than
  // kMaxSessionNodes participants; Unavailable when the write fails.
  absl::StatusOr<v1::Placement> PlaceSession(const v1::PlaceSessionRequest& request, absl::Time now,
                                             absl::BitGenRef bitgen);

  // Marks a running session finished at `now` with its final gRPC status code, stats and the
  // owners whose chunks were selected. InvalidArgument when the id is not 16 bytes, the code is
  // not in 0..16, or an owner is neither the querier nor a participant of the session (or there
  // are more than kMaxSessionNodes); NotFound for an unknown (or pruned) session;
  // FailedPrecondition when it is already finished; DataLoss when its record is corrupt;
  // Unavailable when the write fails.
  absl::Status FinishSession(const v1::SessionId& session, int32_t status_code,
                             const v1::QueryStats& stats, std::vector<std::string> owner_node_ids,
                             absl::Time now);

  // The record of one session. InvalidArgument when the id is not 16 bytes; NotFound when
  // unknown or pruned; DataLoss when corrupt.
  absl::StatusOr<v1::SessionRecord> GetSession(const v1::SessionId& session) const;

  // The session log, newest (most recently placed) first, filtered by the request: started at
  // or after since_unix_ns; node_id the querier, a participant, the compute node, the DRAGON
  // peer or an owner; at most `limit` records (0: kDefaultSessionListLimit). InvalidArgument
  // when limit > kMaxSessionListLimit (not clamped: the proto says ≤ 1000); DataLoss when a
  // record on the way is corrupt. A filtered list may read the whole log.
  absl::StatusOr<std::vector<v1::SessionRecord>> ListSessions(
      const v1::ListSessionsRequest& request) const;

  absl::Duration heartbeat_interval() const;

 private:
  struct Impl;  // the database, its column families, nodes and links in memory, counters

  explicit CoordinatorState(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// The privacy knobs a FedRAG session gets where its query leaves them unset: the default that
// `silo-eval privacy` chose (README, "Threat model"). block_rows is the model's head_dim when a
// query asks for block scope without it.
v1::PrivacySettings DefaultPrivacySettings();

}  // namespace silo::coordinator

#endif  // SILO_COORDINATOR_COORDINATOR_STATE_H_
