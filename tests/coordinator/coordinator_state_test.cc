// The coordinator's state: registration, heartbeats and liveness, the network matrix (EWMA
// arithmetic, dropped measurements), placement rules, the session log (order, filters, prune),
// recovery after reopening, and corrupt values written straight into the RocksDB database.
#include "coordinator/coordinator_state.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::v1 {

// gtest's own protobuf printer (`"\n" + DebugString()`) trips a false -Wrestrict of g++ 12 when
// matchers print vectors of messages; these one-line printers, found by argument-dependent
// lookup, take its place.
void PrintTo(const NodeStatus& message, std::ostream* os) { *os << message.ShortDebugString(); }
void PrintTo(const NetworkLink& message, std::ostream* os) { *os << message.ShortDebugString(); }
void PrintTo(const SessionRecord& message, std::ostream* os) { *os << message.ShortDebugString(); }

}  // namespace silo::v1

namespace silo::coordinator {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);
constexpr double kTolerance = 1e-9;

// Raw access to the database, as a disk fault or an older build would leave it.
void WithRawDb(const std::string& path,
               const std::function<void(rocksdb::DB&,
                                        std::map<std::string, rocksdb::ColumnFamilyHandle*>&)>& f) {
  std::vector<std::string> names;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(names.size());
  for (const std::string& name : names) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), path, descriptors, &handles, &db).ok());
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs;
  for (size_t i = 0; i < names.size(); ++i) cfs[names[i]] = handles[i];
  f(*db, cfs);
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
  ASSERT_TRUE(db->Close().ok());
  delete db;
}

v1::NodeInfo Node(const std::string& id, v1::NodeRole role, char embedder = 'E') {
  static int port = 7000;
  v1::NodeInfo node;
  node.set_node_id(id);
  node.set_role(role);
  node.set_address(StrCat("10.0.0.1:", ++port));
  node.set_cert_identity(StrCat("spiffe://silo.test/", id));
  if (embedder != 0) {
    node.mutable_embedder()->set_name(StrCat("embedder-", std::string(1, embedder)));
    node.mutable_embedder()->set_sha256(std::string(32, embedder));
  }
  node.set_version("test");
  return node;
}

v1::NetworkMeasurement Measurement(const std::string& peer, double rtt_ms, double throughput_mbps) {
  v1::NetworkMeasurement m;
  m.set_peer_node_id(peer);
  m.set_rtt_ms(rtt_ms);
  m.set_rtt_p90_ms(rtt_ms);
  m.set_throughput_mbps(throughput_mbps);
  m.set_n_probes(5);
  return m;
}

v1::PlaceSessionRequest Request(v1::GenerationMode mode, const std::string& querier,
                                std::vector<std::string> participants = {}) {
  v1::PlaceSessionRequest request;
  request.set_mode(mode);
  request.set_querier_node_id(querier);
  for (std::string& id : participants) request.add_participant_node_ids(std::move(id));
  return request;
}

std::vector<std::string> Ids(const std::vector<v1::NodeStatus>& nodes) {
  std::vector<std::string> ids;
  ids.reserve(nodes.size());
  for (const v1::NodeStatus& node : nodes) ids.push_back(node.node().node_id());
  return ids;
}

std::vector<std::string> Ids(const v1::Placement& placement) {
  std::vector<std::string> ids;
  for (const v1::NodeRef& ref : placement.participants()) ids.push_back(ref.node_id());
  return ids;
}

std::vector<std::string> Queriers(const std::vector<v1::SessionRecord>& sessions) {
  std::vector<std::string> ids;
  ids.reserve(sessions.size());
  for (const v1::SessionRecord& record : sessions) {
    ids.push_back(record.placement().querier_node_id());
  }
  return ids;
}

std::vector<std::string> LinkNames(const std::vector<v1::NetworkLink>& links) {
  std::vector<std::string> names;
  names.reserve(links.size());
  for (const v1::NetworkLink& link : links) {
    names.push_back(StrCat(link.from_node_id(), ">", link.to_node_id()));
  }
  return names;
}

v1::ListSessionsRequest ListRequest(uint32_t limit = 0, int64_t since_unix_ns = 0,
                                    std::string node_id = "") {
  v1::ListSessionsRequest request;
  request.set_limit(limit);
  request.set_since_unix_ns(since_unix_ns);
  request.set_node_id(std::move(node_id));
  return request;
}

class CoordinatorStateTest : public ::testing::Test {
 protected:
  CoordinatorStateTest() {
    options_.data_dir = (dir_.path() / "db").string();
    options_.heartbeat_interval = absl::Seconds(2);
    options_.missed_heartbeats = 3;
    options_.ewma_alpha = 0.3;
    options_.session_log_limit = 1000;
  }

  void Open(absl::Time now = kT0) {
    state_.reset();
    absl::StatusOr<std::unique_ptr<CoordinatorState>> state = CoordinatorState::Open(options_, now);
    ASSERT_OK(state);
    state_ = *std::move(state);
  }

  void Register(const v1::NodeInfo& node, absl::Time now = kT0) {
    ASSERT_OK(state_->RegisterNode(node, now));
  }

  absl::StatusOr<v1::Placement> Place(const v1::PlaceSessionRequest& request,
                                      absl::Time now = kT0) {
    return state_->PlaceSession(request, now, gen_);
  }

  TempDir dir_;
  CoordinatorStateOptions options_;
  std::unique_ptr<CoordinatorState> state_;
  std::mt19937_64 gen_{42};
};

// ---------------------------------------------------------------------------------------------
// Membership and liveness.

TEST_F(CoordinatorStateTest, RegisterListAndHeartbeat) {
  Open();
  Register(Node("hospital-b", v1::NODE_ROLE_INSTITUTION));
  Register(Node("compute-1", v1::NODE_ROLE_COMPUTE, 0));
  Register(Node("phone.7", v1::NODE_ROLE_DEVICE));

  const std::vector<v1::NodeStatus> all = state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, false, kT0);
  EXPECT_THAT(Ids(all), ElementsAre("compute-1", "hospital-b", "phone.7"));
  for (const v1::NodeStatus& node : all) {
    EXPECT_TRUE(node.online());
    EXPECT_EQ(node.last_heartbeat_unix_ns(), absl::ToUnixNanos(kT0));
    EXPECT_EQ(node.active_sessions(), 0u);
  }
  EXPECT_THAT(Ids(state_->ListNodes(v1::NODE_ROLE_DEVICE, false, kT0)), ElementsAre("phone.7"));
  EXPECT_THAT(state_->ListNodes(v1::NODE_ROLE_OPERATOR, true, kT0), IsEmpty());

  ASSERT_OK_AND_ASSIGN(const HeartbeatResult beat,
                       state_->Heartbeat("hospital-b", 5, kT0 + absl::Seconds(1)));
  EXPECT_EQ(beat.heartbeat_interval, absl::Seconds(2));
  EXPECT_FALSE(beat.was_offline);
  ASSERT_OK_AND_ASSIGN(const v1::NodeStatus b,
                       state_->GetNode("hospital-b", kT0 + absl::Seconds(1)));
  EXPECT_EQ(b.active_sessions(), 5u);
  EXPECT_EQ(b.last_heartbeat_unix_ns(), absl::ToUnixNanos(kT0 + absl::Seconds(1)));
  EXPECT_EQ(b.node().cert_identity(), "spiffe://silo.test/hospital-b");

  EXPECT_THAT(state_->Heartbeat("nobody", 0, kT0), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(state_->GetNode("nobody", kT0), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(state_->heartbeat_interval(), absl::Seconds(2));
}

TEST_F(CoordinatorStateTest, ReRegistrationReplacesTheInfoAndCountsAsAHeartbeat) {
  Open();
  Register(Node("hospital-a", v1::NODE_ROLE_INSTITUTION));
  ASSERT_OK(state_->Heartbeat("hospital-a", 3, kT0 + absl::Seconds(1)));
  v1::NodeInfo moved = Node("hospital-a", v1::NODE_ROLE_INSTITUTION);
  moved.set_address("hospital-a.example.org:9443");
  const absl::Time later = kT0 + absl::Minutes(5);  // long offline
  ASSERT_OK(state_->RegisterNode(moved, later));
  ASSERT_OK_AND_ASSIGN(const v1::NodeStatus node, state_->GetNode("hospital-a", later));
  EXPECT_EQ(node.node().address(), "hospital-a.example.org:9443");
  EXPECT_TRUE(node.online());
  EXPECT_EQ(node.last_heartbeat_unix_ns(), absl::ToUnixNanos(later));
  EXPECT_EQ(node.active_sessions(), 0u);
  EXPECT_THAT(state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, later), SizeIs(1));
}

TEST_F(CoordinatorStateTest, NodeGoesOfflineAfterMissedHeartbeatsAndBackOnlineAfterOne) {
  Open();
  Register(Node("hospital-a", v1::NODE_ROLE_INSTITUTION));
  Register(Node("hospital-b", v1::NODE_ROLE_INSTITUTION));
  const absl::Time deadline = kT0 + absl::Seconds(6);  // 3 × 2 s
  ASSERT_OK(state_->Heartbeat("hospital-b", 0, deadline));

  EXPECT_THAT(Ids(state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, false, deadline)),
              ElementsAre("hospital-a", "hospital-b"));
  const absl::Time late = deadline + absl::Nanoseconds(1);
  EXPECT_THAT(Ids(state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, false, late)),
              ElementsAre("hospital-b"));
  const std::vector<v1::NodeStatus> with_offline =
      state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, late);
  ASSERT_THAT(Ids(with_offline), ElementsAre("hospital-a", "hospital-b"));
  EXPECT_FALSE(with_offline[0].online());
  EXPECT_TRUE(with_offline[1].online());
  ASSERT_OK_AND_ASSIGN(v1::NodeStatus a, state_->GetNode("hospital-a", late));
  EXPECT_FALSE(a.online());

  const absl::Time back = kT0 + absl::Seconds(30);
  ASSERT_OK_AND_ASSIGN(HeartbeatResult beat, state_->Heartbeat("hospital-a", 1, back));
  EXPECT_TRUE(beat.was_offline);
  ASSERT_OK_AND_ASSIGN(a, state_->GetNode("hospital-a", back));
  EXPECT_TRUE(a.online());
  ASSERT_OK_AND_ASSIGN(beat, state_->Heartbeat("hospital-a", 1, back + absl::Seconds(2)));
  EXPECT_FALSE(beat.was_offline);
}

TEST_F(CoordinatorStateTest, RegisterRejectsMalformedNodes) {
  Open();
  const auto with = [](const std::function<void(v1::NodeInfo&)>& edit) {
    v1::NodeInfo node = Node("good-node", v1::NODE_ROLE_INSTITUTION);
    edit(node);
    return node;
  };
  const std::vector<v1::NodeInfo> bad = {
      with([](v1::NodeInfo& n) { n.set_node_id(""); }),
      with([](v1::NodeInfo& n) { n.set_node_id(std::string(65, 'a')); }),
      with([](v1::NodeInfo& n) { n.set_node_id("two words"); }),
      with([](v1::NodeInfo& n) { n.set_node_id("a/b"); }),
      with([](v1::NodeInfo& n) { n.set_node_id("caf\xc3\xa9"); }),
      with([](v1::NodeInfo& n) { n.set_node_id(std::string("a\0b", 3)); }),
      with([](v1::NodeInfo& n) { n.set_role(v1::NODE_ROLE_UNSPECIFIED); }),
      with([](v1::NodeInfo& n) { n.set_role(v1::NODE_ROLE_COORDINATOR); }),
      with([](v1::NodeInfo& n) { n.set_role(v1::NODE_ROLE_OPERATOR); }),
      with([](v1::NodeInfo& n) { n.set_role(static_cast<v1::NodeRole>(42)); }),
      with([](v1::NodeInfo& n) { n.set_address(""); }),
      with([](v1::NodeInfo& n) { n.set_address("10.0.0.1"); }),
      with([](v1::NodeInfo& n) { n.set_address("10.0.0.1:0"); }),
      with([](v1::NodeInfo& n) { n.set_address("10.0.0.1:65536"); }),
      with([](v1::NodeInfo& n) { n.set_address("10.0.0.1:-1"); }),
      with([](v1::NodeInfo& n) { n.set_address(":7000"); }),
      with([](v1::NodeInfo& n) { n.set_address("::1:7000"); }),
      with([](v1::NodeInfo& n) { n.set_address(StrCat(std::string(300, 'h'), ":7000")); }),
      with([](v1::NodeInfo& n) { n.set_cert_identity(std::string(257, 'c')); }),
      with([](v1::NodeInfo& n) { n.mutable_model()->set_name(std::string(257, 'm')); }),
      with([](v1::NodeInfo& n) { n.mutable_embedder()->set_sha256("short"); }),
      with([](v1::NodeInfo& n) { n.mutable_capabilities()->set_gpu_name(std::string(257, 'g')); }),
      with([](v1::NodeInfo& n) { n.set_version(std::string(257, 'v')); }),
      with([](v1::NodeInfo& n) {
        for (int i = 0; i < 17; ++i) n.mutable_capabilities()->add_modes(v1::GENERATION_MODE_LOCAL);
      }),
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_THAT(state_->RegisterNode(bad[i], kT0), StatusIs(absl::StatusCode::kInvalidArgument))
        << "case " << i << ": " << bad[i].ShortDebugString();
  }
  EXPECT_THAT(state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, kT0), IsEmpty());

  // The limits themselves are fine.
  EXPECT_OK(state_->RegisterNode(with([](v1::NodeInfo& n) {
                                   n.set_node_id(std::string(64, 'A'));
                                   n.set_address("[fe80::1]:65535");
                                   n.set_version(std::string(256, 'v'));
                                 }),
                                 kT0));
  EXPECT_OK(state_->RegisterNode(with([](v1::NodeInfo& n) {
                                   n.set_node_id("a.b_c-9");
                                   n.set_role(v1::NODE_ROLE_COMPUTE);
                                   n.set_address("compute.example.org:1");
                                   n.clear_embedder();
                                 }),
                                 kT0));
}

// ---------------------------------------------------------------------------------------------
// Network matrix.

TEST_F(CoordinatorStateTest, EwmaSmoothsRttAndThroughputIndependently) {
  Open();  // ewma_alpha 0.3
  Register(Node("a", v1::NODE_ROLE_INSTITUTION));
  Register(Node("b", v1::NODE_ROLE_INSTITUTION));

  // First sample taken as is.
  ASSERT_OK_AND_ASSIGN(uint32_t n, state_->ReportProbes("a", {Measurement("b", 10, 100)}, kT0));
  EXPECT_EQ(n, 1u);
  std::vector<v1::NetworkLink> links = state_->NetworkMatrix({});
  ASSERT_THAT(links, SizeIs(1));
  EXPECT_EQ(links[0].from_node_id(), "a");
  EXPECT_EQ(links[0].to_node_id(), "b");
  EXPECT_DOUBLE_EQ(links[0].rtt_ms(), 10);
  EXPECT_DOUBLE_EQ(links[0].throughput_mbps(), 100);
  EXPECT_EQ(links[0].n_samples(), 1u);
  EXPECT_EQ(links[0].updated_at_unix_ns(), absl::ToUnixNanos(kT0));

  // Throughput 0 = not measured: rtt 0.3·20 + 0.7·10 = 13, throughput unchanged.
  const absl::Time t1 = kT0 + absl::Seconds(30);
  ASSERT_OK(state_->ReportProbes("a", {Measurement("b", 20, 0)}, t1));
  links = state_->NetworkMatrix({});
  ASSERT_THAT(links, SizeIs(1));
  EXPECT_THAT(links[0].rtt_ms(), DoubleNear(13, kTolerance));
  EXPECT_DOUBLE_EQ(links[0].throughput_mbps(), 100);
  EXPECT_EQ(links[0].n_samples(), 2u);
  EXPECT_EQ(links[0].updated_at_unix_ns(), absl::ToUnixNanos(t1));

  // rtt 0.3·5 + 0.7·13 = 10.6; throughput 0.3·200 + 0.7·100 = 130.
  ASSERT_OK(state_->ReportProbes("a", {Measurement("b", 5, 200)}, t1));
  links = state_->NetworkMatrix({});
  EXPECT_THAT(links[0].rtt_ms(), DoubleNear(10.6, kTolerance));
  EXPECT_THAT(links[0].throughput_mbps(), DoubleNear(130, kTolerance));
  EXPECT_EQ(links[0].n_samples(), 3u);

  // The reverse direction is its own link; its first throughput (after a first sample without
  // one) is taken as is.
  ASSERT_OK(state_->ReportProbes("b", {Measurement("a", 40, 0)}, t1));
  ASSERT_OK(state_->ReportProbes("b", {Measurement("a", 50, 80)}, t1));
  links = state_->NetworkMatrix({});
  ASSERT_THAT(LinkNames(links), ElementsAre("a>b", "b>a"));
  EXPECT_THAT(links[1].rtt_ms(), DoubleNear(43, kTolerance));
  EXPECT_DOUBLE_EQ(links[1].throughput_mbps(), 80);
  EXPECT_EQ(links[1].n_samples(), 2u);

  // Several measurements of one link in one report fold in order: 0.3·1 + 0.7·(0.3·1 + 0.7·43).
  ASSERT_OK_AND_ASSIGN(
      n, state_->ReportProbes("b", {Measurement("a", 1, 0), Measurement("a", 1, 0)}, t1));
  EXPECT_EQ(n, 2u);
  EXPECT_THAT(state_->NetworkMatrix({})[1].rtt_ms(),
              DoubleNear(0.3 + 0.7 * (0.3 + 0.7 * 43), kTolerance));
}

TEST_F(CoordinatorStateTest, ReportProbesDropsBadMeasurementsAndRejectsBadReports) {
  Open();
  Register(Node("a", v1::NODE_ROLE_INSTITUTION));
  Register(Node("b", v1::NODE_ROLE_DEVICE));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  v1::NetworkMeasurement bad_p90 = Measurement("b", 1, 1);
  bad_p90.set_rtt_p90_ms(-1);
  ASSERT_OK_AND_ASSIGN(
      const uint32_t n,
      state_->ReportProbes(
          "a",
          {Measurement("unknown", 1, 1), Measurement("a", 1, 1), Measurement("b", nan, 1),
           Measurement("b", inf, 1), Measurement("b", -1, 1), Measurement("b", 1, nan),
           Measurement("b", 1, -inf), bad_p90, Measurement("b", 7, 0)},
          kT0));
  EXPECT_EQ(n, 1u);
  const std::vector<v1::NetworkLink> links = state_->NetworkMatrix({});
  ASSERT_THAT(LinkNames(links), ElementsAre("a>b"));
  EXPECT_DOUBLE_EQ(links[0].rtt_ms(), 7);
  EXPECT_DOUBLE_EQ(links[0].throughput_mbps(), 0);

  EXPECT_THAT(state_->ReportProbes("stranger", {Measurement("b", 1, 1)}, kT0),
              StatusIs(absl::StatusCode::kNotFound));
  std::vector<v1::NetworkMeasurement> many(257, Measurement("b", 1, 1));
  EXPECT_THAT(state_->ReportProbes("a", many, kT0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("256")));
  many.pop_back();
  EXPECT_THAT(state_->ReportProbes("a", many, kT0), ::silo::testing::IsOkAndHolds(256u));
  EXPECT_EQ(state_->NetworkMatrix({})[0].n_samples(), 257u);
  EXPECT_THAT(state_->ReportProbes("a", {}, kT0), ::silo::testing::IsOkAndHolds(0u));
}

TEST_F(CoordinatorStateTest, NetworkMatrixIsOrderedAndFiltered) {
  Open();
  for (const char* id : {"c", "a", "b"}) Register(Node(id, v1::NODE_ROLE_INSTITUTION));
  ASSERT_OK(state_->ReportProbes("c", {Measurement("b", 1, 0), Measurement("a", 1, 0)}, kT0));
  ASSERT_OK(state_->ReportProbes("b", {Measurement("a", 1, 0)}, kT0));
  ASSERT_OK(state_->ReportProbes("a", {Measurement("c", 1, 0), Measurement("b", 1, 0)}, kT0));
  EXPECT_THAT(LinkNames(state_->NetworkMatrix({})), ElementsAre("a>b", "a>c", "b>a", "c>a", "c>b"));
  EXPECT_THAT(LinkNames(state_->NetworkMatrix({"b", "a"})), ElementsAre("a>b", "b>a"));
  EXPECT_THAT(LinkNames(state_->NetworkMatrix({"a", "nobody"})), IsEmpty());
}

// ---------------------------------------------------------------------------------------------
// Placement.

class PlacementTest : public CoordinatorStateTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(Open());
    Register(Node("querier", v1::NODE_ROLE_INSTITUTION));
    Register(Node("owner-1", v1::NODE_ROLE_INSTITUTION));
    Register(Node("owner-2", v1::NODE_ROLE_DEVICE));
    Register(Node("asleep", v1::NODE_ROLE_INSTITUTION), kT0 - absl::Minutes(1));
    Register(Node("other-embedder", v1::NODE_ROLE_INSTITUTION, 'F'));
    Register(Node("compute", v1::NODE_ROLE_COMPUTE));
    Register(Node("no-embedder", v1::NODE_ROLE_DEVICE, 0));
  }
};

TEST_F(PlacementTest, DefaultParticipantsAreOnlineDataNodesWithTheQueriersEmbedder) {
  Register(Node("asleep-phone", v1::NODE_ROLE_DEVICE), kT0 - absl::Minutes(1));
  ASSERT_OK_AND_ASSIGN(const v1::Placement placement,
                       Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier")));
  EXPECT_EQ(placement.mode(), v1::GENERATION_MODE_RETRIEVE);
  EXPECT_EQ(placement.querier_node_id(), "querier");
  EXPECT_EQ(placement.session().value().size(), 16u);
  EXPECT_THAT(Ids(placement), ElementsAre("owner-1", "owner-2"));
  ASSERT_OK_AND_ASSIGN(const v1::NodeStatus owner_1, state_->GetNode("owner-1", kT0));
  EXPECT_EQ(placement.participants(0).address(), owner_1.node().address());
  // The offline institution with the querier's embedder is named, to be reported unanswered;
  // the offline device is not.
  ASSERT_EQ(placement.offline_size(), 1);
  EXPECT_EQ(placement.offline(0).node_id(), "asleep");
  EXPECT_FALSE(placement.has_compute());
  EXPECT_FALSE(placement.has_dragon_peer());

  ASSERT_OK_AND_ASSIGN(const v1::SessionRecord record, state_->GetSession(placement.session()));
  EXPECT_EQ(record.placement().SerializeAsString(), placement.SerializeAsString());
  EXPECT_EQ(record.started_at_unix_ns(), absl::ToUnixNanos(kT0));
  EXPECT_EQ(record.finished_at_unix_ns(), 0);

  ASSERT_OK_AND_ASSIGN(const v1::Placement again,
                       Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier")));
  EXPECT_NE(again.session().value(), placement.session().value());
}

TEST_F(PlacementTest, QuerierMustBeRegisteredOnlineAndHoldData) {
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "nobody")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nobody")));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "asleep")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "compute")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "no-embedder")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("embedder")));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "bad id")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(state_->ListSessions(ListRequest()), ::silo::testing::IsOkAndHolds(IsEmpty()));
}

TEST_F(PlacementTest, ExplicitParticipantsAreCheckedAndKeptInOrderEvenOffline) {
  ASSERT_OK_AND_ASSIGN(
      const v1::Placement placement,
      Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"owner-2", "asleep", "owner-1"})));
  EXPECT_THAT(Ids(placement), ElementsAre("owner-2", "asleep", "owner-1"));
  EXPECT_EQ(placement.offline_size(), 0);  // the querier asks the named ones, online or not

  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"owner-1", "ghost"})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("ghost")));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"querier"})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"owner-1", "owner-1"})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"compute"})),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("compute")));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"other-embedder"})),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("other-embedder")));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier", {"no-embedder"})),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(state_->ListSessions(ListRequest()), ::silo::testing::IsOkAndHolds(SizeIs(1)));
}

TEST_F(PlacementTest, LocalSessionsHaveNoParticipants) {
  ASSERT_OK_AND_ASSIGN(const v1::Placement placement,
                       Place(Request(v1::GENERATION_MODE_LOCAL, "no-embedder")));
  EXPECT_EQ(placement.mode(), v1::GENERATION_MODE_LOCAL);
  EXPECT_THAT(Ids(placement), IsEmpty());
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_LOCAL, "querier", {"owner-1"})),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A FedRAG querier with SmolLM2-135M's shape: 30 layers, 3 KV heads, head_dim 64.
v1::NodeInfo FedRagQuerier(const std::string& id) {
  v1::NodeInfo node = Node(id, v1::NODE_ROLE_INSTITUTION);
  node.mutable_model()->set_n_layers(30);
  node.mutable_model()->set_n_kv_heads(3);
  node.mutable_model()->set_head_dim(64);
  return node;
}

TEST_F(PlacementTest, FedRagTakesTheComputeNodeOfLowestEstimatedCost) {
  Register(FedRagQuerier("q"));
  Register(Node("near", v1::NODE_ROLE_COMPUTE, 0));
  Register(Node("far", v1::NODE_ROLE_COMPUTE, 0));
  // The querier is 1 ms from `near` and 20 ms from `far`; the owners reach `near` at 1 Mbit/s
  // and `far` at 10 Gbit/s, both 5 ms away. `compute` was never measured (50 ms).
  ASSERT_OK(
      state_->ReportProbes("q", {Measurement("near", 1, 1000), Measurement("far", 20, 1000)}, kT0)
          .status());
  for (const char* owner : {"owner-1", "owner-2", "querier"}) {
    ASSERT_OK(
        state_->ReportProbes(owner, {Measurement("near", 5, 1), Measurement("far", 5, 1e4)}, kT0)
            .status());
  }
  v1::PlaceSessionRequest request = Request(v1::GENERATION_MODE_FEDRAG, "q");
  request.set_n_context_tokens(256);
  request.set_max_tokens(128);
  ASSERT_OK_AND_ASSIGN(const v1::Placement chatty, Place(request));
  EXPECT_EQ(chatty.compute().node_id(), "near");
  ASSERT_OK_AND_ASSIGN(const v1::NodeStatus near, state_->GetNode("near", kT0));
  EXPECT_EQ(chatty.compute().address(), near.node().address());
  EXPECT_DOUBLE_EQ(chatty.estimated_token_ms(), 30 * 1.0);
  // 256 tokens over 3 owners × 30 layers × 3 KV heads × 64 dims × K and V × 2 bytes at 1 Mbit/s.
  const double upload_ms = 5 + 256.0 / 3 * 30 * 3 * 64 * 2 * 2 * 8 / 1e3;
  EXPECT_NEAR(chatty.estimated_ttft_ms(), upload_ms + 30, 1e-6);
  EXPECT_THAT(Ids(chatty), ElementsAre("owner-1", "owner-2", "querier"));
  const v1::PrivacySettings defaults = DefaultPrivacySettings();
  EXPECT_EQ(chatty.privacy().key_scope(), defaults.key_scope());
  EXPECT_EQ(chatty.privacy().mixer(), defaults.mixer());
  EXPECT_EQ(chatty.privacy().protect_layers(), defaults.protect_layers());
  EXPECT_EQ(chatty.privacy().protect_mode(), defaults.protect_mode());

  // A long context and one token: the upload decides.
  request.set_n_context_tokens(100000);
  request.set_max_tokens(1);
  ASSERT_OK_AND_ASSIGN(const v1::Placement bulky, Place(request));
  EXPECT_EQ(bulky.compute().node_id(), "far");
}

TEST_F(PlacementTest, FedRagResolvesAndChecksThePrivacyKnobs) {
  Register(FedRagQuerier("q"));
  v1::PlaceSessionRequest request = Request(v1::GENERATION_MODE_FEDRAG, "q");
  request.mutable_privacy()->set_key_scope(v1::KEY_SCOPE_BLOCK);
  request.mutable_privacy()->set_protect_layers(2);
  ASSERT_OK_AND_ASSIGN(const v1::Placement placement, Place(request));
  EXPECT_EQ(placement.compute().node_id(), "compute");
  EXPECT_EQ(placement.privacy().block_rows(), 64u) << "head_dim by default";
  EXPECT_EQ(placement.privacy().protect_mode(), v1::PROTECT_MODE_SKIP);
  request.mutable_privacy()->set_protect_layers(31);
  EXPECT_THAT(Place(request), StatusIs(absl::StatusCode::kInvalidArgument));
  // An explicit 0 delegates every layer; the default is not applied over it.
  request.mutable_privacy()->set_protect_layers(0);
  ASSERT_OK_AND_ASSIGN(const v1::Placement unprotected, Place(request));
  EXPECT_TRUE(unprotected.privacy().has_protect_layers());
  EXPECT_EQ(unprotected.privacy().protect_layers(), 0u);
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_FEDRAG, "querier")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model shape")));
}

TEST_F(CoordinatorStateTest, FedRagNeedsAnOnlineComputeNode) {
  Open();
  Register(FedRagQuerier("q"));
  Register(Node("owner", v1::NODE_ROLE_INSTITUTION));
  Register(Node("sleeping-compute", v1::NODE_ROLE_COMPUTE, 0), kT0 - absl::Minutes(1));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_FEDRAG, "q")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("compute")));
}

v1::NodeInfo WithModel(v1::NodeInfo node, char model, bool gpu = false) {
  node.mutable_model()->set_name(StrCat("model-", std::string(1, model)));
  node.mutable_model()->set_sha256(std::string(32, model));
  node.mutable_capabilities()->set_has_gpu(gpu);
  return node;
}

TEST_F(PlacementTest, DragonTakesTheNearestInstitutionWithTheSameModel) {
  Register(WithModel(Node("phone", v1::NODE_ROLE_DEVICE), 'M'));
  Register(WithModel(Node("cloud-near", v1::NODE_ROLE_INSTITUTION), 'M', /*gpu=*/true));
  Register(WithModel(Node("cloud-far", v1::NODE_ROLE_INSTITUTION), 'M'));
  Register(WithModel(Node("cloud-other-model", v1::NODE_ROLE_INSTITUTION), 'N'));
  Register(WithModel(Node("other-phone", v1::NODE_ROLE_DEVICE), 'M'));
  ASSERT_OK(state_->ReportProbes(
      "phone",
      {Measurement("cloud-near", 5, 100), Measurement("cloud-far", 80, 100),
       Measurement("cloud-other-model", 1, 100), Measurement("other-phone", 1, 100)},
      kT0));
  ASSERT_OK_AND_ASSIGN(const v1::Placement placement,
                       Place(Request(v1::GENERATION_MODE_DRAGON, "phone")));
  EXPECT_EQ(placement.dragon_peer().node_id(), "cloud-near");
  EXPECT_EQ(placement.participants_size(), 0);
  EXPECT_EQ(placement.aggregator(), v1::DRAGON_SIDE_DEVICE);
  EXPECT_FALSE(placement.has_compute());

  // A named cloud is taken as named, and checked.
  v1::PlaceSessionRequest named = Request(v1::GENERATION_MODE_DRAGON, "phone");
  named.add_participant_node_ids("cloud-far");
  ASSERT_OK_AND_ASSIGN(const v1::Placement far, Place(named));
  EXPECT_EQ(far.dragon_peer().node_id(), "cloud-far");
  named.set_participant_node_ids(0, "cloud-other-model");
  EXPECT_THAT(Place(named),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("another model")));
  named.set_participant_node_ids(0, "other-phone");
  EXPECT_THAT(Place(named), StatusIs(absl::StatusCode::kFailedPrecondition));
  named.add_participant_node_ids("cloud-near");
  EXPECT_THAT(Place(named), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PlacementTest, DragonAggregatesOnTheSlowerSideAndNeedsACloud) {
  Register(WithModel(Node("gpu-phone", v1::NODE_ROLE_DEVICE), 'G', /*gpu=*/true));
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_DRAGON, "gpu-phone")),
              StatusIs(absl::StatusCode::kUnavailable));
  Register(WithModel(Node("cpu-cloud", v1::NODE_ROLE_INSTITUTION), 'G'));
  ASSERT_OK_AND_ASSIGN(const v1::Placement placement,
                       Place(Request(v1::GENERATION_MODE_DRAGON, "gpu-phone")));
  EXPECT_EQ(placement.aggregator(), v1::DRAGON_SIDE_CLOUD);
}

TEST_F(PlacementTest, OtherModesAreInvalid) {
  EXPECT_THAT(Place(Request(v1::GENERATION_MODE_UNSPECIFIED, "querier")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Place(Request(static_cast<v1::GenerationMode>(77), "querier")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------------
// Session log.

TEST_F(PlacementTest, FinishSessionRecordsTheOutcomeOnce) {
  ASSERT_OK_AND_ASSIGN(const v1::Placement placement,
                       Place(Request(v1::GENERATION_MODE_RETRIEVE, "querier")));
  v1::QueryStats stats;
  stats.set_retrieval_ns(1234);
  stats.set_total_ns(5678);
  const absl::Time end = kT0 + absl::Seconds(3);

  EXPECT_THAT(state_->FinishSession(placement.session(), 0, stats, {"owner-1", "compute"}, end),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("compute")));
  EXPECT_THAT(state_->FinishSession(placement.session(), 17, stats, {}, end),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(state_->FinishSession(placement.session(), -1, stats, {}, end),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::SessionId short_id;
  short_id.set_value("short");
  EXPECT_THAT(state_->FinishSession(short_id, 0, stats, {}, end),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::SessionId unknown;
  unknown.set_value(std::string(16, 'u'));
  EXPECT_THAT(state_->FinishSession(unknown, 0, stats, {}, end),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(state_->GetSession(unknown), StatusIs(absl::StatusCode::kNotFound));

  ASSERT_OK(state_->FinishSession(placement.session(), 0, stats, {"owner-2", "querier"}, end));
  ASSERT_OK_AND_ASSIGN(const v1::SessionRecord record, state_->GetSession(placement.session()));
  EXPECT_EQ(record.finished_at_unix_ns(), absl::ToUnixNanos(end));
  EXPECT_EQ(record.status_code(), 0);
  EXPECT_EQ(record.stats().retrieval_ns(), 1234);
  EXPECT_EQ(record.stats().total_ns(), 5678);
  EXPECT_THAT(record.owner_node_ids(), ElementsAre("owner-2", "querier"));

  EXPECT_THAT(state_->FinishSession(placement.session(), 0, stats, {}, end),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(PlacementTest, ListSessionsIsNewestFirstWithFilters) {
  Register(Node("querier-2", v1::NODE_ROLE_DEVICE));
  std::vector<v1::Placement> placed;
  for (int i = 0; i < 5; ++i) {
    const std::string querier = i % 2 == 0 ? "querier" : "querier-2";
    std::vector<std::string> participants;
    if (i == 3) participants = {"owner-1"};
    ASSERT_OK_AND_ASSIGN(
        v1::Placement placement,
        Place(Request(i == 4 ? v1::GENERATION_MODE_LOCAL : v1::GENERATION_MODE_RETRIEVE, querier,
                      participants),
              kT0 + absl::Seconds(i)));
    placed.push_back(std::move(placement));
  }
  ASSERT_OK(state_->FinishSession(placed[2].session(), 0, {}, {"owner-2"}, kT0 + absl::Seconds(9)));

  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> all, state_->ListSessions(ListRequest()));
  ASSERT_THAT(all, SizeIs(5));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(all[i].placement().session().value(), placed[4 - i].session().value());
    EXPECT_EQ(all[i].started_at_unix_ns(), absl::ToUnixNanos(kT0 + absl::Seconds(4 - i)));
  }
  EXPECT_THAT(Queriers(all),
              ElementsAre("querier", "querier-2", "querier", "querier-2", "querier"));

  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> two, state_->ListSessions(ListRequest(2)));
  ASSERT_THAT(two, SizeIs(2));
  EXPECT_EQ(two[1].placement().session().value(), placed[3].session().value());

  ASSERT_OK_AND_ASSIGN(
      std::vector<v1::SessionRecord> since,
      state_->ListSessions(ListRequest(0, absl::ToUnixNanos(kT0) + 3'000'000'000)));
  EXPECT_THAT(since, SizeIs(2));

  // A querier, a participant (default or explicit), an owner.
  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> of_q2,
                       state_->ListSessions(ListRequest(0, 0, "querier-2")));
  EXPECT_THAT(of_q2, SizeIs(4));  // queried twice, default participant of sessions 0 and 2
  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> of_owner1,
                       state_->ListSessions(ListRequest(0, 0, "owner-1")));
  EXPECT_THAT(of_owner1, SizeIs(4));  // every RETRIEVE session
  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> of_owner1_limited,
                       state_->ListSessions(ListRequest(1, 0, "owner-1")));
  ASSERT_THAT(of_owner1_limited, SizeIs(1));
  EXPECT_EQ(of_owner1_limited[0].placement().session().value(), placed[3].session().value());
  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> of_compute,
                       state_->ListSessions(ListRequest(0, 0, "compute")));
  EXPECT_THAT(of_compute, IsEmpty());

  EXPECT_THAT(state_->ListSessions(ListRequest(1001)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(state_->ListSessions(ListRequest(1000)), ::silo::testing::IsOkAndHolds(SizeIs(5)));
}

TEST_F(CoordinatorStateTest, ListSessionsDefaultsToAHundred) {
  Open();
  Register(Node("querier", v1::NODE_ROLE_INSTITUTION));
  for (int i = 0; i < 101; ++i) {
    ASSERT_OK(Place(Request(v1::GENERATION_MODE_LOCAL, "querier")));
  }
  EXPECT_THAT(state_->ListSessions(ListRequest()), ::silo::testing::IsOkAndHolds(SizeIs(100)));
  EXPECT_THAT(state_->ListSessions(ListRequest(101)), ::silo::testing::IsOkAndHolds(SizeIs(101)));
}

TEST_F(CoordinatorStateTest, OldestSessionsArePrunedBeyondTheLimit) {
  options_.session_log_limit = 3;
  Open();
  Register(Node("querier", v1::NODE_ROLE_INSTITUTION));
  std::vector<v1::Placement> placed;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(v1::Placement placement,
                         Place(Request(v1::GENERATION_MODE_LOCAL, "querier")));
    placed.push_back(std::move(placement));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<v1::SessionRecord> kept, state_->ListSessions(ListRequest()));
  ASSERT_THAT(kept, SizeIs(3));
  EXPECT_EQ(kept[2].placement().session().value(), placed[2].session().value());
  EXPECT_THAT(state_->GetSession(placed[1].session()), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(state_->FinishSession(placed[0].session(), 0, {}, {}, kT0),
              StatusIs(absl::StatusCode::kNotFound));

  // The pruned running sessions are not finished on reopen (they are gone), the kept ones are,
  // and the limit still holds afterwards.
  Open(kT0 + absl::Seconds(1));
  ASSERT_OK_AND_ASSIGN(kept, state_->ListSessions(ListRequest()));
  ASSERT_THAT(kept, SizeIs(3));
  for (const v1::SessionRecord& record : kept) EXPECT_EQ(record.status_code(), 14);
  ASSERT_OK_AND_ASSIGN(v1::Placement newest, Place(Request(v1::GENERATION_MODE_LOCAL, "querier"),
                                                   kT0 + absl::Seconds(1)));
  ASSERT_OK_AND_ASSIGN(kept, state_->ListSessions(ListRequest()));
  ASSERT_THAT(kept, SizeIs(3));
  EXPECT_EQ(kept[0].placement().session().value(), newest.session().value());
  EXPECT_EQ(kept[2].placement().session().value(), placed[3].session().value());
}

// ---------------------------------------------------------------------------------------------
// Persistence.

TEST_F(CoordinatorStateTest, ReopenRecoversEverythingAndFinishesRunningSessions) {
  Open();
  Register(Node("hospital-a", v1::NODE_ROLE_INSTITUTION));
  Register(Node("hospital-b", v1::NODE_ROLE_INSTITUTION));
  Register(Node("compute-1", v1::NODE_ROLE_COMPUTE, 0));
  const absl::Time t1 = kT0 + absl::Seconds(5);
  ASSERT_OK(state_->Heartbeat("hospital-b", 2, t1));
  ASSERT_OK(state_->ReportProbes("hospital-a", {Measurement("hospital-b", 10, 100)}, t1));
  ASSERT_OK(state_->ReportProbes("hospital-a", {Measurement("hospital-b", 20, 0)}, t1));
  ASSERT_OK(state_->ReportProbes("hospital-b", {Measurement("compute-1", 3, 900)}, t1));
  ASSERT_OK_AND_ASSIGN(const v1::Placement finished,
                       Place(Request(v1::GENERATION_MODE_RETRIEVE, "hospital-a"), t1));
  v1::QueryStats stats;
  stats.set_ttft_ns(42);
  ASSERT_OK(state_->FinishSession(finished.session(), 0, stats, {"hospital-b"}, t1));
  ASSERT_OK_AND_ASSIGN(const v1::Placement running,
                       Place(Request(v1::GENERATION_MODE_LOCAL, "hospital-b"), t1));

  const std::vector<v1::NodeStatus> nodes_before =
      state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, t1);
  const std::vector<v1::NetworkLink> links_before = state_->NetworkMatrix({});

  const absl::Time restart = kT0 + absl::Minutes(1);
  Open(restart);
  const std::vector<v1::NodeStatus> nodes_after =
      state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, t1);
  ASSERT_EQ(nodes_after.size(), nodes_before.size());
  for (size_t i = 0; i < nodes_before.size(); ++i) {
    EXPECT_EQ(nodes_after[i].SerializeAsString(), nodes_before[i].SerializeAsString()) << i;
  }
  ASSERT_OK_AND_ASSIGN(const v1::NodeStatus b, state_->GetNode("hospital-b", t1));
  EXPECT_EQ(b.last_heartbeat_unix_ns(), absl::ToUnixNanos(t1));
  EXPECT_EQ(b.active_sessions(), 2u);
  // Liveness is computed from the recovered heartbeats.
  EXPECT_THAT(state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, false, restart), IsEmpty());

  const std::vector<v1::NetworkLink> links_after = state_->NetworkMatrix({});
  ASSERT_EQ(links_after.size(), 2u);
  for (size_t i = 0; i < links_before.size(); ++i) {
    EXPECT_EQ(links_after[i].SerializeAsString(), links_before[i].SerializeAsString()) << i;
  }
  // The EWMA continues from the recovered state: 0.3·30 + 0.7·13 = 18.1.
  ASSERT_OK(state_->ReportProbes("hospital-a", {Measurement("hospital-b", 30, 0)}, restart));
  EXPECT_THAT(state_->NetworkMatrix({"hospital-a", "hospital-b"})[0].rtt_ms(),
              DoubleNear(18.1, kTolerance));

  ASSERT_OK_AND_ASSIGN(const v1::SessionRecord done, state_->GetSession(finished.session()));
  EXPECT_EQ(done.status_code(), 0);
  EXPECT_EQ(done.finished_at_unix_ns(), absl::ToUnixNanos(t1));
  EXPECT_EQ(done.stats().ttft_ns(), 42);
  EXPECT_THAT(done.owner_node_ids(), ElementsAre("hospital-b"));
  ASSERT_OK_AND_ASSIGN(const v1::SessionRecord stopped, state_->GetSession(running.session()));
  EXPECT_EQ(stopped.status_code(), static_cast<int32_t>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(stopped.finished_at_unix_ns(), absl::ToUnixNanos(restart));
  EXPECT_EQ(stopped.started_at_unix_ns(), absl::ToUnixNanos(t1));
  EXPECT_THAT(state_->FinishSession(running.session(), 0, {}, {}, restart),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  // New sessions go on top of the recovered log.
  ASSERT_OK(state_->Heartbeat("hospital-a", 0, restart));
  ASSERT_OK_AND_ASSIGN(const v1::Placement after,
                       Place(Request(v1::GENERATION_MODE_LOCAL, "hospital-a"), restart));
  ASSERT_OK_AND_ASSIGN(const std::vector<v1::SessionRecord> log,
                       state_->ListSessions(ListRequest()));
  ASSERT_THAT(log, SizeIs(3));
  EXPECT_EQ(log[0].placement().session().value(), after.session().value());
  EXPECT_EQ(log[1].placement().session().value(), running.session().value());
  EXPECT_EQ(log[2].placement().session().value(), finished.session().value());

  // A second reopen changes nothing more.
  Open(restart + absl::Minutes(1));
  ASSERT_OK_AND_ASSIGN(const v1::SessionRecord still, state_->GetSession(running.session()));
  EXPECT_EQ(still.finished_at_unix_ns(), absl::ToUnixNanos(restart));
}

TEST_F(CoordinatorStateTest, OpenRejectsBadOptions) {
  const auto with = [this](const std::function<void(CoordinatorStateOptions&)>& edit) {
    CoordinatorStateOptions options = options_;
    edit(options);
    return CoordinatorState::Open(options, kT0);
  };
  EXPECT_THAT(with([](auto& o) { o.data_dir.clear(); }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](auto& o) { o.heartbeat_interval = absl::ZeroDuration(); }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](auto& o) { o.missed_heartbeats = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](auto& o) { o.ewma_alpha = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](auto& o) { o.ewma_alpha = std::nan(""); }),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(with([](auto& o) { o.session_log_limit = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(CoordinatorStateTest, SecondOpenOfTheSameDatabaseIsUnavailable) {
  Open();
  EXPECT_THAT(CoordinatorState::Open(options_, kT0), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(CoordinatorStateTest, AnotherRocksDbDatabaseIsRefused) {
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, options_.data_dir, &db).ok());
  rocksdb::ColumnFamilyHandle* handle = nullptr;
  ASSERT_TRUE(db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "docs", &handle).ok());
  ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  ASSERT_TRUE(db->Close().ok());
  delete db;
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("docs")));
}

// ---------------------------------------------------------------------------------------------
// Corruption.

class CorruptionTest : public CoordinatorStateTest {
 protected:
  // A database with two nodes, a link, a finished and a running session, closed.
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(Open());
    Register(Node("hospital-a", v1::NODE_ROLE_INSTITUTION));
    Register(Node("hospital-b", v1::NODE_ROLE_INSTITUTION));
    ASSERT_OK(state_->ReportProbes("hospital-a", {Measurement("hospital-b", 1, 1)}, kT0));
    absl::StatusOr<v1::Placement> finished =
        Place(Request(v1::GENERATION_MODE_LOCAL, "hospital-a"));
    ASSERT_OK(finished);
    finished_ = finished->session();
    ASSERT_OK(state_->FinishSession(finished_, 0, {}, {}, kT0));
    absl::StatusOr<v1::Placement> running = Place(Request(v1::GENERATION_MODE_LOCAL, "hospital-b"));
    ASSERT_OK(running);
    running_ = running->session();
    state_.reset();
  }

  // Writes `value` at `key` of column family `cf` behind the coordinator's back.
  void Put(const std::string& cf, const std::string& key, const std::string& value) {
    WithRawDb(options_.data_dir,
              [&](rocksdb::DB& db, std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs) {
                ASSERT_TRUE(cfs.contains(cf)) << cf;
                rocksdb::WriteOptions write;
                write.sync = true;
                ASSERT_TRUE(db.Put(write, cfs[cf], key, value).ok());
              });
  }

  // The sessions key of a session: u64 seq (big-endian) || id.
  static std::string SessionKey(uint64_t seq, const v1::SessionId& id) {
    std::string key(8, '\0');
    for (int i = 0; i < 8; ++i) key[i] = static_cast<char>(seq >> (8 * (7 - i)));
    return key + id.value();
  }

  v1::SessionId finished_;  // seq 0
  v1::SessionId running_;   // seq 1
};

TEST_F(CorruptionTest, IntactDatabaseOpens) {
  Open();
  EXPECT_THAT(state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, kT0), SizeIs(2));
}

TEST_F(CorruptionTest, GarbageNodeIsDataLossNamingTheKey) {
  Put("nodes", "hospital-b", "\xff\xff\xff garbage");
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("nodes key 'hospital-b'")));
}

TEST_F(CorruptionTest, NodeUnderAnotherKeyIsDataLoss) {
  v1::NodeStatus status;
  *status.mutable_node() = Node("hospital-c", v1::NODE_ROLE_INSTITUTION);
  Put("nodes", "hospital-b", status.SerializeAsString());
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("nodes key 'hospital-b'")));
}

TEST_F(CorruptionTest, InvalidNodeRecordIsDataLoss) {
  v1::NodeStatus status;
  *status.mutable_node() = Node("hospital-b", v1::NODE_ROLE_OPERATOR);
  Put("nodes", "hospital-b", status.SerializeAsString());
  EXPECT_THAT(CoordinatorState::Open(options_, kT0), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(CorruptionTest, GarbageLinkIsDataLoss) {
  Put("links", std::string("hospital-a\0hospital-b", 21), "\x0a\xff");
  EXPECT_THAT(
      CoordinatorState::Open(options_, kT0),
      StatusIs(absl::StatusCode::kDataLoss, HasSubstr("links key 'hospital-a\\x00hospital-b'")));
}

TEST_F(CorruptionTest, LinkWithNonFiniteRttIsDataLoss) {
  v1::NetworkLink link;
  link.set_from_node_id("hospital-a");
  link.set_to_node_id("hospital-b");
  link.set_rtt_ms(std::numeric_limits<double>::infinity());
  link.set_n_samples(1);
  Put("links", std::string("hospital-a\0hospital-b", 21), link.SerializeAsString());
  EXPECT_THAT(CoordinatorState::Open(options_, kT0), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(CorruptionTest, GarbageRunningSessionIsDataLossOnOpen) {
  Put("sessions", SessionKey(1, running_), "\xff\xff");
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("sessions key")));
}

TEST_F(CorruptionTest, GarbageFinishedSessionIsDataLossWhenRead) {
  Put("sessions", SessionKey(0, finished_), "\xff\xff");
  Open();
  EXPECT_THAT(state_->ListSessions(ListRequest()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("sessions key")));
  EXPECT_THAT(state_->GetSession(finished_), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(state_->FinishSession(finished_, 0, {}, {}, kT0),
              StatusIs(absl::StatusCode::kDataLoss));
  // The newest record is still readable.
  EXPECT_THAT(state_->ListSessions(ListRequest(1)), ::silo::testing::IsOkAndHolds(SizeIs(1)));
}

TEST_F(CorruptionTest, SessionIndexOfTheWrongSizeIsDataLoss) {
  Put("session_ids", finished_.value(), "123");
  Open();
  EXPECT_THAT(state_->GetSession(finished_),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("session_ids key")));
}

TEST_F(CorruptionTest, MalformedSessionKeyIsDataLoss) {
  Put("sessions", "short", "");
  EXPECT_THAT(CoordinatorState::Open(options_, kT0), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(CorruptionTest, SchemaVersionIsChecked) {
  Put("meta", "schema_version", std::string("\x02\x00\x00\x00", 4));
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("schema version 2")));
  Put("meta", "schema_version", "x");
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("meta key 'schema_version'")));
  WithRawDb(options_.data_dir,
            [](rocksdb::DB& db, std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs) {
              ASSERT_TRUE(db.Delete(rocksdb::WriteOptions(), cfs["meta"], "schema_version").ok());
            });
  EXPECT_THAT(CoordinatorState::Open(options_, kT0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no schema version")));
}

// ---------------------------------------------------------------------------------------------
// Concurrency (run under TSan to make it meaningful; here it checks that nothing is lost).

TEST_F(CoordinatorStateTest, ConcurrentCallsLoseNothing) {
  Open();
  constexpr int kThreads = 4;
  constexpr int kRounds = 25;
  for (int t = 0; t < kThreads; ++t) Register(Node(StrCat("node-", t), v1::NODE_ROLE_INSTITUTION));
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      std::mt19937_64 gen(static_cast<uint64_t>(t));
      const std::string self = StrCat("node-", t);
      const std::string peer = StrCat("node-", (t + 1) % kThreads);
      for (int i = 0; i < kRounds; ++i) {
        EXPECT_OK(state_->Heartbeat(self, static_cast<uint32_t>(i), kT0));
        EXPECT_OK(state_->ReportProbes(self, {Measurement(peer, 1, 1)}, kT0));
        EXPECT_OK(state_->PlaceSession(Request(v1::GENERATION_MODE_LOCAL, self), kT0, gen));
        state_->ListNodes(v1::NODE_ROLE_UNSPECIFIED, true, kT0);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const v1::NetworkLink& link : state_->NetworkMatrix({})) {
    EXPECT_EQ(link.n_samples(), static_cast<uint32_t>(kRounds));
  }
  EXPECT_THAT(state_->ListSessions(ListRequest(1000)),
              ::silo::testing::IsOkAndHolds(SizeIs(kThreads * kRounds)));
}

}  // namespace
}  // namespace silo::coordinator
