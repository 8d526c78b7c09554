#include "eval/fedrag_bench.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "eval/faq_questions.h"
#include "eval/local_federation.h"
#include "eval/tcp_echo.h"
#include "silo/v1/coordinator.pb.h"

namespace silo::eval {
namespace {

namespace fs = std::filesystem;

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Sample {
  double ttft_ms = 0;
  double token_ms = 0;  // per generated token after the first
  double setup_ms = 0;
  double exchange_ms_per_token = 0;  // FedRAG: querier time in Attend round trips per step
  double upload_mib = 0;
  int owners = 0;  // distinct owners of the chunks
};

absl::StatusOr<Sample> Ask(LocalFederation& federation, const FedRagBenchOptions& options,
                           const std::string& question, v1::GenerationMode mode) {
  v1::QueryRequest request = LocalQueryRequest(question, mode, options.top_k, options.max_tokens);
  request.set_kv_mode(mode == v1::GENERATION_MODE_CENTRALIZED ? v1::KV_MODE_PREFILL
                                                              : v1::KV_MODE_POSITION_INDEPENDENT);
  request.set_kv_dtype(v1::DTYPE_F16);
  SILO_ASSIGN_OR_RETURN(const v1::QueryDone done, federation.Query(request));
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
  log << "preparing " << options.federation.work_dir << " (certificates, ingest)\n";
  SILO_RETURN_IF_ERROR(LocalFederation::Prepare(options.federation, log));
  SILO_ASSIGN_OR_RETURN(const std::vector<FaqQuestion> faq,
                        LoadFaqQuestions((fs::path(options.federation.docs_dir) / "faq").string()));
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
      options.n_questions, options.top_k, options.max_tokens, options.federation.threads);
  out << absl::StrFormat(
      "raw TCP round trip of a 1 KB echo on loopback: p50 %.1f us, p90 %.1f us\n", raw.p50_us,
      raw.p90_us);
  out << absl::StrFormat("%-8s %-12s %10s %10s %10s %14s %10s %7s\n", "RTT ms", "mode", "TTFT ms",
                         "token ms", "setup ms", "exchange ms/t", "upload MiB", "owners");
  int n_layers = 0;
  int run = 0;
  for (const double rtt : options.rtt_ms) {
    log << "federation with " << rtt << " ms between the querier and the owners\n";
    SILO_ASSIGN_OR_RETURN(std::unique_ptr<LocalFederation> federation,
                          LocalFederation::Start(options.federation, rtt, ++run));
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
        values.reserve(samples.size());
        for (const Sample& sample : samples) values.push_back(sample.*field);
        return Median(values);
      };
      std::vector<double> owners;
      owners.reserve(samples.size());
      for (const Sample& sample : samples) owners.push_back(sample.owners);
      token_ms[name] = median(&Sample::token_ms);
      out << absl::StrFormat("%-8.0f %-12s %10.1f %10.2f %10.1f %14.2f %10.2f %7.0f\n", rtt, name,
                             median(&Sample::ttft_ms), token_ms[name], median(&Sample::setup_ms),
                             median(&Sample::exchange_ms_per_token), median(&Sample::upload_mib),
                             Median(owners));
    }
    n_layers = federation->n_layers();
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
