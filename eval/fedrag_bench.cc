#include "eval/fedrag_bench.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "coordinator/coordinator_server.h"
#include "crypto/mtls.h"
#include "eval/faq_questions.h"
#include "eval/internal/tcp_socket.h"
#include "eval/tcp_echo.h"
#include "eval/tcp_shaper.h"
#include "grpcpp/create_channel.h"
#include "node/node_server.h"
#include "retrieval/knowledge_base.h"
#include "retrieval/node_key.h"
#include "silo/v1/coordinator.grpc.pb.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kOwners = {"owner-a", "owner-b", "owner-c"};
constexpr char kQuerier[] = "querier";
constexpr char kCompute[] = "compute-1";

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// One node's configuration in the bench folder.
node::NodeConfig NodeConfigOf(const FedRagBenchOptions& options, const std::string& id,
                              const std::string& role, const std::string& listen,
                              const std::string& advertise, const std::string& coordinator) {
  const fs::path dir(options.work_dir);
  node::NodeConfig config;
  config.node_id = id;
  config.role = role;
  if (role == "institution") {
    config.node_key_file = (dir / "keys" / (id + ".key")).string();
    retrieval::KnowledgeBaseOptions& kb = config.knowledge_base;
    kb.data_dir = (dir / ("data-" + id)).string();
    kb.decoder_model = options.decoder_model;
    kb.embedder_model = options.embedder_model;
    kb.kv_shards = retrieval::KvShardMode::kLazy;
    kb.threads = options.threads;
  }
  config.serve.listen = listen;
  config.serve.advertise = advertise;
  config.serve.coordinator = coordinator;
  config.serve.tls = {.ca_file = (dir / "certs" / "ca.pem").string(),
                      .cert_file = (dir / "certs" / (id + ".pem")).string(),
                      .key_file = (dir / "certs" / (id + ".key")).string()};
  config.serve.plaintext_baseline = true;  // the CENTRALIZED rows
  return config;
}

// Certificates, node keys and each institution's ingested share of the docs (kept between
// runs: make-dev-ca and ingest reuse what is there).
absl::Status Prepare(const FedRagBenchOptions& options, std::ostream& log) {
  const fs::path dir(options.work_dir);
  fs::create_directories(dir / "keys");
  std::string command = StrCat(options.make_dev_ca, " ", (dir / "certs").string(),
                               " coordinator/coordinator operator/operator compute/", kCompute,
                               " institution/", kQuerier);
  for (const std::string& owner : kOwners) command += StrCat(" institution/", owner);
  command += " > /dev/null";
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(StrCat("`", command, "` failed"));
  }
  std::vector<std::string> files;
  for (const char* folder : {"faq", "tutorial"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(options.docs_dir) / folder)) {
      if (entry.path().extension() == ".txt") files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return absl::NotFoundError(StrCat("no documents under ", options.docs_dir));
  std::map<std::string, std::vector<std::string>> shares;
  for (size_t i = 0; i < files.size(); ++i) shares[kOwners[i % kOwners.size()]].push_back(files[i]);
  // The querier holds one small page of its own, unrelated to the questions' answers.
  shares[kQuerier] = {(fs::path(options.docs_dir) / "faq" / "index.rst.txt").string()};
  for (const auto& [id, share] : shares) {
    const fs::path key_file = dir / "keys" / (id + ".key");
    if (!fs::exists(key_file)) {
      SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key, crypto::SecretBytes::Random(32));
      std::string hex;
      for (const uint8_t byte : key.span()) hex += absl::StrFormat("%02x", byte);
      std::ofstream(key_file) << hex << "\n";
      ::chmod(key_file.c_str(), 0600);
    }
    const node::NodeConfig config = NodeConfigOf(options, id, "institution", "", "", "");
    SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key,
                          retrieval::ReadNodeKeyFile(key_file.string()));
    SILO_ASSIGN_OR_RETURN(std::unique_ptr<retrieval::KnowledgeBase> corpus,
                          retrieval::KnowledgeBase::Open(config.knowledge_base, key));
    SILO_ASSIGN_OR_RETURN(const retrieval::IngestReport report, corpus->Ingest(share));
    log << "  " << id << ": " << share.size() << " files, " << report.progress.chunks_written
        << " chunks written now\n";
  }
  return absl::OkStatus();
}

// A free port on 127.0.0.1 (bound, then released).
absl::StatusOr<int> FreePort() {
  SILO_ASSIGN_OR_RETURN(internal::Listener listener, internal::ListenOnLoopback());
  const int port = listener.port;
  ::close(listener.fd);
  return port;
}

struct Federation {
  std::unique_ptr<coordinator::CoordinatorServer> coordinator;
  std::vector<std::unique_ptr<TcpShaper>> shapers;
  std::vector<std::unique_ptr<node::NodeServer>> nodes;
  std::shared_ptr<grpc::Channel> operator_channel;

  ~Federation() {
    for (auto& node : nodes) node->Shutdown();
    for (auto& shaper : shapers) shaper->Shutdown();
    if (coordinator != nullptr) coordinator->Shutdown();
  }
};

// The federation with `rtt_ms` added between the querier and every owner, all nodes online.
absl::StatusOr<std::unique_ptr<Federation>> StartFederation(const FedRagBenchOptions& options,
                                                            double rtt_ms, int run) {
  const fs::path dir(options.work_dir);
  auto federation = std::make_unique<Federation>();
  coordinator::CoordinatorConfig coordinator_config;
  coordinator_config.listen = "127.0.0.1:0";
  coordinator_config.tls = {.ca_file = (dir / "certs" / "ca.pem").string(),
                            .cert_file = (dir / "certs" / "coordinator.pem").string(),
                            .key_file = (dir / "certs" / "coordinator.key").string()};
  coordinator_config.probe_interval = absl::ZeroDuration();
  coordinator_config.state.data_dir = (dir / StrCat("coordinator-", run)).string();
  coordinator_config.state.heartbeat_interval = absl::Seconds(1);
  SILO_ASSIGN_OR_RETURN(federation->coordinator,
                        coordinator::CoordinatorServer::Start(coordinator_config));
  const std::string& coordinator_address = federation->coordinator->address();

  for (const std::string& owner : kOwners) {
    SILO_ASSIGN_OR_RETURN(const int port, FreePort());
    const std::string listen = StrCat("127.0.0.1:", port);
    std::string advertise = listen;
    if (rtt_ms > 0) {
      SILO_ASSIGN_OR_RETURN(std::unique_ptr<TcpShaper> shaper,
                            TcpShaper::Start({.target = listen,
                                              .one_way_delay = absl::Microseconds(rtt_ms * 500),
                                              .jitter = absl::Microseconds(rtt_ms * 50),
                                              .seed = static_cast<uint64_t>(port),
                                              .bandwidth_bits_per_second = 0}));
      advertise = shaper->address();
      federation->shapers.push_back(std::move(shaper));
    }
    SILO_ASSIGN_OR_RETURN(
        std::unique_ptr<node::NodeServer> node,
        node::NodeServer::Start(
            NodeConfigOf(options, owner, "institution", listen, advertise, coordinator_address)));
    federation->nodes.push_back(std::move(node));
  }
  for (const auto& [id, role] : std::vector<std::pair<std::string, std::string>>{
           {kQuerier, "institution"}, {kCompute, "compute"}}) {
    SILO_ASSIGN_OR_RETURN(std::unique_ptr<node::NodeServer> node,
                          node::NodeServer::Start(NodeConfigOf(options, id, role, "127.0.0.1:0", "",
                                                               coordinator_address)));
    federation->nodes.push_back(std::move(node));
  }

  SILO_ASSIGN_OR_RETURN(
      const crypto::TlsMaterial tls,
      crypto::LoadTlsMaterial({.ca_file = (dir / "certs" / "ca.pem").string(),
                               .cert_file = (dir / "certs" / "operator.pem").string(),
                               .key_file = (dir / "certs" / "operator.key").string()}));
  federation->operator_channel =
      grpc::CreateCustomChannel(coordinator_address, crypto::MakeChannelCredentials(tls),
                                crypto::FederationChannelArguments());
  const auto stub = v1::CoordinatorService::NewStub(federation->operator_channel);
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListNodesResponse nodes;
    if (stub->ListNodes(&context, v1::ListNodesRequest(), &nodes).ok() &&
        std::count_if(nodes.nodes().begin(), nodes.nodes().end(), [](const v1::NodeStatus& node) {
          return node.online();
        }) == static_cast<int>(kOwners.size()) + 2) {
      break;
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("nodes did not come online");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return federation;
}

struct Sample {
  double ttft_ms = 0;
  double token_ms = 0;  // per generated token after the first
  double setup_ms = 0;
  double exchange_ms_per_token = 0;  // FedRAG: querier time in Attend round trips per step
  double upload_mib = 0;
  int owners = 0;  // distinct owners of the chunks
};

absl::StatusOr<Sample> Ask(Federation& federation, const FedRagBenchOptions& options,
                           const std::string& question, v1::GenerationMode mode) {
  v1::QueryRequest request;
  request.set_question(question);
  request.set_mode(mode);
  request.set_querier_node_id(kQuerier);
  request.set_top_k(static_cast<uint32_t>(options.top_k));
  request.set_max_tokens(static_cast<uint32_t>(options.max_tokens));
  request.set_kv_mode(mode == v1::GENERATION_MODE_CENTRALIZED ? v1::KV_MODE_PREFILL
                                                              : v1::KV_MODE_POSITION_INDEPENDENT);
  request.set_kv_dtype(v1::DTYPE_F16);
  request.set_owner_timeout_ms(10000);
  const auto stub = v1::QueryService::NewStub(federation.operator_channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  auto reader = stub->Query(&context, request);
  v1::QueryResponse message;
  v1::QueryDone done;
  while (reader->Read(&message)) {
    if (message.has_done()) done = message.done();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        StrCat(v1::GenerationMode_Name(mode), ": ", status.error_message()));
  }
  const v1::QueryStats& stats = done.stats();
  Sample sample;
  sample.ttft_ms = stats.ttft_ns() / 1e6;
  const int steps = static_cast<int>(stats.n_generated_tokens()) - 1;
  sample.token_ms = steps > 0 ? (stats.total_ns() - stats.ttft_ns()) / 1e6 / steps : 0;
  sample.setup_ms = stats.setup_ns() / 1e6;
  const double exchanges_per_step =
      stats.n_generated_tokens() > 0
          ? 1.0 * stats.attention_exchanges() / stats.n_generated_tokens()
          : 0;
  sample.exchange_ms_per_token =
      stats.attention_exchanges() > 0
          ? stats.attention_exchange_ns() / 1e6 / stats.attention_exchanges() * exchanges_per_step
          : 0;
  sample.upload_mib = stats.upload_bytes() / 1048576.0;
  std::set<std::string> owners;
  for (const v1::Source& source : done.sources()) owners.insert(source.owner_node_id());
  sample.owners = static_cast<int>(owners.size());
  return sample;
}

}  // namespace

absl::Status RunFedRagBench(const FedRagBenchOptions& options, std::ostream& out,
                            std::ostream& log) {
  if (options.n_questions < 1 || options.max_tokens < 2 || options.top_k < 1) {
    return absl::InvalidArgumentError("questions ≥ 1, max-tokens ≥ 2 and top-k ≥ 1");
  }
  log << "preparing " << options.work_dir << " (certificates, ingest)\n";
  SILO_RETURN_IF_ERROR(Prepare(options, log));
  SILO_ASSIGN_OR_RETURN(const std::vector<FaqQuestion> faq,
                        LoadFaqQuestions((fs::path(options.docs_dir) / "faq").string()));
  if (static_cast<int>(faq.size()) < options.n_questions) {
    return absl::InvalidArgumentError(StrCat("the FAQ has only ", faq.size(), " questions"));
  }

  // The floor of one exchange: a raw TCP echo of 1 KB on loopback.
  SILO_ASSIGN_OR_RETURN(const std::unique_ptr<TcpEchoServer> echo, TcpEchoServer::Start());
  SILO_ASSIGN_OR_RETURN(const TcpEchoResult raw, MeasureTcpRoundTrip(echo->address(), 2000));
  echo->Shutdown();

  const std::vector<std::pair<std::string, v1::GenerationMode>> modes = {
      {"local", v1::GENERATION_MODE_LOCAL},
      {"centralized", v1::GENERATION_MODE_CENTRALIZED},
      {"fedrag", v1::GENERATION_MODE_FEDRAG}};
  out << absl::StrFormat(
      "FedRAG bench: %d questions per row, top-%d chunks, %d tokens, greedy, f16 K'/V', %d "
      "thread(s) per node, medians\n",
      options.n_questions, options.top_k, options.max_tokens, options.threads);
  out << absl::StrFormat(
      "raw TCP round trip of a 1 KB echo on loopback: p50 %.1f us, p90 %.1f us\n", raw.p50_us,
      raw.p90_us);
  out << absl::StrFormat("%-8s %-12s %10s %10s %10s %14s %10s %7s\n", "RTT ms", "mode", "TTFT ms",
                         "token ms", "setup ms", "exchange ms/t", "upload MiB", "owners");
  int n_layers = 0;
  int run = 0;
  for (const double rtt : options.rtt_ms) {
    log << "federation with " << rtt << " ms between the querier and the owners\n";
    SILO_ASSIGN_OR_RETURN(std::unique_ptr<Federation> federation,
                          StartFederation(options, rtt, ++run));
    std::map<std::string, double> token_ms;
    for (const auto& [name, mode] : modes) {
      // One untimed answer first: owners compute lazy KV shards, caches warm up.
      SILO_RETURN_IF_ERROR(Ask(*federation, options, faq[0].question, mode).status());
      std::vector<Sample> samples;
      for (int q = 0; q < options.n_questions; ++q) {
        const std::string& question = faq[static_cast<size_t>(q * 3 + 1) % faq.size()].question;
        SILO_ASSIGN_OR_RETURN(samples.emplace_back(), Ask(*federation, options, question, mode));
        log << "  " << name << " q" << q << ": ttft " << samples.back().ttft_ms << " ms, token "
            << samples.back().token_ms << " ms\n";
      }
      const auto median = [&](double Sample::*field) {
        std::vector<double> values;
        for (const Sample& sample : samples) values.push_back(sample.*field);
        return Median(values);
      };
      std::vector<double> owners;
      for (const Sample& sample : samples) owners.push_back(sample.owners);
      token_ms[name] = median(&Sample::token_ms);
      out << absl::StrFormat("%-8.0f %-12s %10.1f %10.2f %10.1f %14.2f %10.2f %7.0f\n", rtt, name,
                             median(&Sample::ttft_ms), token_ms[name], median(&Sample::setup_ms),
                             median(&Sample::exchange_ms_per_token), median(&Sample::upload_mib),
                             Median(owners));
    }
    if (n_layers == 0) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      v1::ListNodesResponse nodes;
      if (v1::CoordinatorService::NewStub(federation->operator_channel)
              ->ListNodes(&context, v1::ListNodesRequest(), &nodes)
              .ok()) {
        for (const v1::NodeStatus& node : nodes.nodes()) {
          n_layers = std::max(n_layers, static_cast<int>(node.node().model().n_layers()));
        }
      }
    }
    const double overhead = token_ms["fedrag"] - token_ms["centralized"];
    const double goal = 1.25 * n_layers * raw.p50_us / 1000;
    out << absl::StrFormat(
        "  RTT %.0f ms: FedRAG per-token minus centralized %.2f ms; goal <= 1.25 x %d layers x "
        "raw round trip = %.2f ms: %s; ratio FedRAG / centralized %.2f\n",
        rtt, overhead, n_layers, goal, overhead <= goal ? "met" : "NOT met",
        token_ms["centralized"] > 0 ? token_ms["fedrag"] / token_ms["centralized"] : 0.0);
  }
  return absl::OkStatus();
}

}  // namespace silo::eval
