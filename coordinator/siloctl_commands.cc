#include "coordinator/siloctl_commands.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "node/grpc_status.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::coordinator {
namespace {

using node::FromGrpcStatus;

// A stub of the coordinator's services over mTLS with the operator's certificate.
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  absl::Duration timeout;

  void Prepare(grpc::ClientContext& context) const {
    context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  }
};

absl::StatusOr<Connection> Connect(const SiloctlConfig& config) {
  SILO_ASSIGN_OR_RETURN(const crypto::TlsMaterial tls, crypto::LoadTlsMaterial(config.tls));
  return Connection{
      .channel = grpc::CreateCustomChannel(config.coordinator, crypto::MakeChannelCredentials(tls),
                                           crypto::FederationChannelArguments()),
      .timeout = config.timeout};
}

std::string RoleName(v1::NodeRole role) {
  std::string name = v1::NodeRole_Name(role);
  constexpr std::string_view kPrefix = "NODE_ROLE_";
  if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

std::string Ago(int64_t unix_ns) {
  if (unix_ns == 0) return "never";
  const double seconds = absl::ToDoubleSeconds(absl::Now() - absl::FromUnixNanos(unix_ns));
  return absl::StrFormat("%.1f s ago", std::max(0.0, seconds));
}

std::string HexOf(const std::string& bytes) {
  std::string hex;
  for (const char c : bytes) hex += absl::StrFormat("%02x", static_cast<unsigned char>(c));
  return hex;
}

void PrintMatrix(const std::vector<v1::NodeStatus>& nodes,
                 const google::protobuf::RepeatedPtrField<v1::NetworkLink>& links,
                 std::ostream& out) {
  std::map<std::pair<std::string, std::string>, const v1::NetworkLink*> by_pair;
  for (const v1::NetworkLink& link : links) {
    by_pair[{link.from_node_id(), link.to_node_id()}] = &link;
  }
  out << "\nnetwork (row measures column): median RTT ms / throughput Mbit/s\n";
  if (links.empty()) {
    out << "  no measurements yet (siloctl nodes --probe measures now)\n";
    return;
  }
  out << absl::StrFormat("%-16s", "");
  for (const v1::NodeStatus& to : nodes) out << absl::StrFormat(" %18s", to.node().node_id());
  out << "\n";
  for (const v1::NodeStatus& from : nodes) {
    out << absl::StrFormat("%-16s", from.node().node_id());
    for (const v1::NodeStatus& to : nodes) {
      const auto link = by_pair.find({from.node().node_id(), to.node().node_id()});
      if (link == by_pair.end()) {
        out << absl::StrFormat(" %18s", from.node().node_id() == to.node().node_id() ? "-" : "?");
      } else {
        out << absl::StrFormat(" %18s", absl::StrFormat("%.2f / %.0f", link->second->rtt_ms(),
                                                        link->second->throughput_mbps()));
      }
    }
    out << "\n";
  }
}

}  // namespace

absl::StatusOr<SiloctlConfig> LoadSiloctlConfig(const std::string& path) {
  SILO_ASSIGN_OR_RETURN(const ConfigNode root, ConfigNode::LoadFile(path));
  SiloctlConfig config;
  SILO_ASSIGN_OR_RETURN(config.coordinator, root.Get<std::string>("coordinator"));
  if (absl::Status valid = CheckHostPort(config.coordinator); !valid.ok()) {
    return absl::InvalidArgumentError(StrCat(path, ": coordinator: ", valid.message()));
  }
  SILO_ASSIGN_OR_RETURN(const ConfigNode tls, root.Child("tls"));
  SILO_ASSIGN_OR_RETURN(const std::string ca, tls.Get<std::string>("ca"));
  SILO_ASSIGN_OR_RETURN(const std::string cert, tls.Get<std::string>("cert"));
  SILO_ASSIGN_OR_RETURN(const std::string key, tls.Get<std::string>("key"));
  config.tls = {.ca_file = ResolveConfigPath(path, ca),
                .cert_file = ResolveConfigPath(path, cert),
                .key_file = ResolveConfigPath(path, key)};
  SILO_ASSIGN_OR_RETURN(const int64_t timeout_ms, root.GetOr<int64_t>("timeout_ms", 30000));
  if (timeout_ms < 1 || timeout_ms > 3600000) {
    return absl::InvalidArgumentError(
        StrCat(path, ": timeout_ms must be in [1, 3600000], not ", timeout_ms));
  }
  config.timeout = absl::Milliseconds(timeout_ms);
  SILO_RETURN_IF_ERROR(root.CheckAllKeysUsed());
  return config;
}

absl::Status RunNodes(const SiloctlConfig& config, const NodesCommandOptions& options,
                      std::ostream& out) {
  SILO_ASSIGN_OR_RETURN(const Connection connection, Connect(config));
  const std::unique_ptr<v1::CoordinatorService::Stub> stub =
      v1::CoordinatorService::NewStub(connection.channel);
  google::protobuf::RepeatedPtrField<v1::NetworkLink> links;
  if (options.probe) {
    grpc::ClientContext context;
    connection.Prepare(context);
    v1::MeasureNetworkResponse measured;
    SILO_RETURN_IF_ERROR(
        FromGrpcStatus(stub->MeasureNetwork(&context, v1::MeasureNetworkRequest(), &measured)));
    for (const std::string& id : measured.unreachable_node_ids()) {
      out << "did not answer the measurement: " << id << "\n";
    }
    links = measured.links();
  } else {
    grpc::ClientContext context;
    connection.Prepare(context);
    v1::GetNetworkMatrixResponse matrix;
    SILO_RETURN_IF_ERROR(
        FromGrpcStatus(stub->GetNetworkMatrix(&context, v1::GetNetworkMatrixRequest(), &matrix)));
    links = matrix.links();
  }
  grpc::ClientContext context;
  connection.Prepare(context);
  v1::ListNodesRequest request;
  request.set_include_offline(options.include_offline);
  v1::ListNodesResponse response;
  SILO_RETURN_IF_ERROR(FromGrpcStatus(stub->ListNodes(&context, request, &response)));
  const std::vector<v1::NodeStatus> nodes(response.nodes().begin(), response.nodes().end());
  out << absl::StrFormat("%-16s %-12s %-8s %-22s %8s %8s  %s\n", "NODE", "ROLE", "STATE", "ADDRESS",
                         "CHUNKS", "SESSIONS", "LAST HEARTBEAT");
  for (const v1::NodeStatus& node : nodes) {
    out << absl::StrFormat("%-16s %-12s %-8s %-22s %8d %8d  %s\n", node.node().node_id(),
                           RoleName(node.node().role()), node.online() ? "online" : "DOWN",
                           node.node().address(), node.node().capabilities().n_chunks(),
                           node.active_sessions(), Ago(node.last_heartbeat_unix_ns()));
  }
  PrintMatrix(nodes, links, out);
  return absl::OkStatus();
}

namespace {

// The QueryRequest of the command's options. InvalidArgument for an unknown name.
absl::StatusOr<v1::QueryRequest> QueryRequestOf(const QueryCommandOptions& options) {
  v1::QueryRequest request;
  if (options.mode == "retrieve") {
    request.set_mode(v1::GENERATION_MODE_RETRIEVE);
  } else if (options.mode == "fedrag") {
    request.set_mode(v1::GENERATION_MODE_FEDRAG);
  } else if (options.mode == "local") {
    request.set_mode(v1::GENERATION_MODE_LOCAL);
  } else if (options.mode == "centralized") {
    request.set_mode(v1::GENERATION_MODE_CENTRALIZED);
  } else if (options.mode == "dragon") {
    request.set_mode(v1::GENERATION_MODE_DRAGON);
  } else {
    return absl::InvalidArgumentError(StrCat(
        "--mode must be retrieve, fedrag, dragon, local or centralized, not ", options.mode));
  }
  if (!(options.distribution_top_p > 0 && options.distribution_top_p <= 1) ||
      options.lookahead < -1 || options.lookahead > 64 || options.alternate_every < 1) {
    return absl::InvalidArgumentError(
        "--distribution-top-p must be in (0, 1], --lookahead in [0, 64] (or -1: the default) and "
        "--alternate-every positive");
  }
  request.set_distribution_top_p(options.distribution_top_p);
  v1::DragonSettings& dragon = *request.mutable_dragon();
  if (options.lookahead >= 0) dragon.set_max_lookahead(static_cast<uint32_t>(options.lookahead));
  if (options.aggregator_policy == "scheduled" || options.aggregator_policy.empty()) {
    dragon.set_policy(v1::DRAGON_POLICY_SCHEDULED);
  } else if (options.aggregator_policy == "fixed") {
    dragon.set_policy(v1::DRAGON_POLICY_FIXED);
  } else if (options.aggregator_policy == "alternate") {
    dragon.set_policy(v1::DRAGON_POLICY_ALTERNATE);
    dragon.set_alternate_every(static_cast<uint32_t>(options.alternate_every));
  } else {
    return absl::InvalidArgumentError(
        StrCat("--aggregator-policy must be scheduled, fixed or alternate, not ",
               options.aggregator_policy));
  }
  if (options.merge != "score" && options.merge != "rrf") {
    return absl::InvalidArgumentError(StrCat("--merge must be score or rrf, not ", options.merge));
  }
  if (options.kv_mode != "shard" && options.kv_mode != "prefill") {
    return absl::InvalidArgumentError(
        StrCat("--kv-mode must be shard or prefill, not ", options.kv_mode));
  }
  if (options.kv_dtype != "f32" && options.kv_dtype != "f16" && options.kv_dtype != "bf16") {
    return absl::InvalidArgumentError(
        StrCat("--kv-dtype must be f32, f16 or bf16, not ", options.kv_dtype));
  }
  if (options.max_tokens < 1 || options.block_rows < 0 || options.protect_layers < -1) {
    return absl::InvalidArgumentError(
        "--max-tokens must be positive, --block-rows not negative and --protect-layers at least "
        "0 (or -1: the federation's default)");
  }
  request.set_question(options.question);
  request.set_querier_node_id(options.querier);
  request.set_top_k(static_cast<uint32_t>(std::max(0, options.top_k)));
  request.set_merge(options.merge == "rrf" ? v1::MERGE_RULE_RECIPROCAL_RANK : v1::MERGE_RULE_SCORE);
  request.set_owner_timeout_ms(static_cast<uint32_t>(std::max(0, options.owner_timeout_ms)));
  request.set_max_tokens(static_cast<uint32_t>(options.max_tokens));
  request.set_kv_mode(options.kv_mode == "prefill" ? v1::KV_MODE_PREFILL
                                                   : v1::KV_MODE_POSITION_INDEPENDENT);
  request.set_kv_dtype(options.kv_dtype == "f16"    ? v1::DTYPE_F16
                       : options.kv_dtype == "bf16" ? v1::DTYPE_BF16
                                                    : v1::DTYPE_F32);
  v1::PrivacySettings& privacy = *request.mutable_privacy();
  if (options.key_scope == "session") {
    privacy.set_key_scope(v1::KEY_SCOPE_SESSION);
  } else if (options.key_scope == "chunk") {
    privacy.set_key_scope(v1::KEY_SCOPE_CHUNK);
  } else if (options.key_scope == "block") {
    privacy.set_key_scope(v1::KEY_SCOPE_BLOCK);
  } else if (!options.key_scope.empty()) {
    return absl::InvalidArgumentError(
        StrCat("--key-scope must be session, chunk or block, not ", options.key_scope));
  }
  privacy.set_block_rows(static_cast<uint32_t>(options.block_rows));
  if (options.mixer == "sphps") {
    privacy.set_mixer(v1::MIXER_SPHPS);
  } else if (options.mixer == "dense") {
    privacy.set_mixer(v1::MIXER_DENSE);
  } else if (!options.mixer.empty()) {
    return absl::InvalidArgumentError(
        StrCat("--mixer must be sphps or dense, not ", options.mixer));
  }
  if (options.protect_layers >= 0) {
    privacy.set_protect_layers(static_cast<uint32_t>(options.protect_layers));
  }
  if (options.protect_mode == "skip") {
    privacy.set_protect_mode(v1::PROTECT_MODE_SKIP);
  } else if (options.protect_mode == "owner") {
    privacy.set_protect_mode(v1::PROTECT_MODE_OWNER);
  } else if (!options.protect_mode.empty()) {
    return absl::InvalidArgumentError(
        StrCat("--protect-mode must be skip or owner, not ", options.protect_mode));
  }
  request.set_compute_failure(options.continue_on_compute_failure ? v1::FAILURE_POLICY_CONTINUE
                                                                  : v1::FAILURE_POLICY_FAIL);
  return request;
}

}  // namespace

absl::Status RunQuery(const SiloctlConfig& config, const QueryCommandOptions& options,
                      std::ostream& out) {
  SILO_ASSIGN_OR_RETURN(const v1::QueryRequest request, QueryRequestOf(options));
  const bool generates = request.mode() != v1::GENERATION_MODE_RETRIEVE;

  SILO_ASSIGN_OR_RETURN(const Connection connection, Connect(config));
  const std::unique_ptr<v1::QueryService::Stub> stub =
      v1::QueryService::NewStub(connection.channel);
  grpc::ClientContext context;
  connection.Prepare(context);
  std::unique_ptr<grpc::ClientReader<v1::QueryResponse>> reader = stub->Query(&context, request);
  v1::QueryResponse message;
  while (reader->Read(&message)) {
    if (message.has_started()) {
      const v1::Placement& placement = message.started().placement();
      out << "session " << HexOf(placement.session().value()).substr(0, 12) << " on "
          << placement.querier_node_id() << ", asking " << placement.participants_size()
          << " other node(s)";
      if (!placement.compute().node_id().empty()) {
        out << ", compute node " << placement.compute().node_id();
      }
      if (!placement.dragon_peer().node_id().empty()) {
        out << ", DRAGON with cloud " << placement.dragon_peer().node_id() << " (aggregator on the "
            << (placement.aggregator() == v1::DRAGON_SIDE_CLOUD ? "cloud" : "device") << ")";
      }
      out << (generates ? "\n\n" : "\n") << std::flush;
    } else if (message.has_delta()) {
      out << message.delta().text() << std::flush;
    } else if (message.has_done()) {
      const v1::QueryDone& done = message.done();
      if (generates) out << "\n\n";
      int rank = 0;
      for (const v1::Source& source : done.sources()) {
        out << absl::StrFormat("%3d  %.4f  %-16s %4d tokens", ++rank, source.score(),
                               source.owner_node_id(), source.n_tokens());
        // DRAGON's chunks each have a stream of their own: no place in one context.
        if (generates && request.mode() != v1::GENERATION_MODE_DRAGON) {
          out << absl::StrFormat(" at %5d", source.virtual_start());
        }
        if (source.has_citation()) {
          out << "  " << source.citation().title() << "  (" << source.citation().source_path()
              << ")";
        }
        out << "\n";
      }
      for (const v1::NodeFailure& failure : done.unanswered()) {
        out << "no answer from " << failure.node_id() << ": "
            << absl::StatusCodeToString(static_cast<absl::StatusCode>(failure.code())) << ": "
            << failure.message() << "\n";
      }
      const v1::QueryStats& stats = done.stats();
      out << absl::StrFormat("retrieval %.1f ms", stats.retrieval_ns() / 1e6);
      if (generates) {
        const double decode_s = (stats.total_ns() - stats.ttft_ns()) / 1e9;
        out << absl::StrFormat(
            ", setup %.1f ms, time to first token %.1f ms, %d prompt tokens, %d generated, "
            "%.1f tokens/s after the first, %.1f KiB sent and %.1f KiB received by the querier",
            stats.setup_ns() / 1e6, stats.ttft_ns() / 1e6, stats.n_prompt_tokens(),
            stats.n_generated_tokens(),
            decode_s > 0 ? (stats.n_generated_tokens() - 1) / decode_s : 0.0,
            stats.bytes_sent() / 1024.0, stats.bytes_received() / 1024.0);
        if (request.mode() == v1::GENERATION_MODE_DRAGON) {
          out << absl::StrFormat(", %.0f%% of the querier's drafts accepted, %d aggregator moves",
                                 100.0 * stats.dragon_acceptance(), stats.aggregator_moves());
        }
      }
      out << "\n";
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::Status RunSessions(const SiloctlConfig& config, int32_t limit, std::ostream& out) {
  SILO_ASSIGN_OR_RETURN(const Connection connection, Connect(config));
  const std::unique_ptr<v1::CoordinatorService::Stub> stub =
      v1::CoordinatorService::NewStub(connection.channel);
  grpc::ClientContext context;
  connection.Prepare(context);
  v1::ListSessionsRequest request;
  request.set_limit(static_cast<uint32_t>(std::max(0, limit)));
  v1::ListSessionsResponse response;
  SILO_RETURN_IF_ERROR(FromGrpcStatus(stub->ListSessions(&context, request, &response)));
  out << absl::StrFormat("%-12s %-12s %-16s %-20s %8s  %s\n", "SESSION", "MODE", "QUERIER",
                         "STATUS", "MS", "OWNERS");
  for (const v1::SessionRecord& record : response.sessions()) {
    const v1::Placement& placement = record.placement();
    std::string owners;
    for (const std::string& owner : record.owner_node_ids()) {
      owners += owners.empty() ? owner : StrCat(",", owner);
    }
    const std::string status =
        record.finished_at_unix_ns() == 0
            ? "running"
            : absl::StatusCodeToString(static_cast<absl::StatusCode>(record.status_code()));
    std::string mode = v1::GenerationMode_Name(placement.mode());
    constexpr std::string_view kPrefix = "GENERATION_MODE_";
    if (mode.rfind(kPrefix, 0) == 0) mode = mode.substr(kPrefix.size());
    out << absl::StrFormat(
        "%-12s %-12s %-16s %-20s %8.1f  %s\n", HexOf(placement.session().value()).substr(0, 12),
        mode, placement.querier_node_id(), status, record.stats().total_ns() / 1e6, owners);
  }
  return absl::OkStatus();
}

}  // namespace silo::coordinator
