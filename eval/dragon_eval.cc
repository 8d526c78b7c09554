#include "eval/dragon_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/document_streams.h"
#include "eval/privacy_plots.h"
#include "eval/retrieval_eval.h"
#include "eval/shaped_dragon_link.h"
#include "node/dragon_aggregation.h"
#include "node/dragon_side.h"

namespace silo::eval {
namespace {

using absl::StrCat;
using absl::StrFormat;

DragonRunOptions ModeOptions(DragonMode mode) {
  DragonRunOptions options;
  options.mode = mode;
  return options;
}

// One side's streams: a stream per hit (their scores), or one stream of the question alone.
struct SideStreams {
  std::unique_ptr<engine::DocumentStreams> streams;
  std::vector<float> scores;
};

absl::StatusOr<SideStreams> StartSide(engine::Transformer& transformer,
                                      const engine::RagPromptBuilder& prompts,
                                      const std::string& question,
                                      const std::vector<std::vector<int32_t>>& documents,
                                      std::vector<float> scores, int32_t max_answer_tokens) {
  const engine::RagPrompt frame = prompts.Build(question, {});
  engine::DocumentStreamsPrompt prompt{
      .prefix = frame.prefix, .documents = documents, .suffix = frame.suffix};
  if (prompt.documents.empty()) {
    prompt.documents.emplace_back();
    scores = {0};
  }
  SideStreams side;
  side.scores = std::move(scores);
  SILO_ASSIGN_OR_RETURN(side.streams,
                        engine::DocumentStreams::Start(transformer, prompt, max_answer_tokens));
  return side;
}

struct AloneResult {
  std::vector<int32_t> tokens;
  std::vector<absl::Time> times;  // when each token was final
  double forced_logprob = 0;
};

// Greedy (or forced) decoding of one side's mixture, nothing exchanged.
absl::StatusOr<AloneResult> DecodeAlone(SideStreams& side, const DragonRunOptions& options,
                                        const std::vector<int32_t>& stop_tokens) {
  AloneResult result;
  const bool forced = !options.forced_tokens.empty();
  const int32_t n =
      forced ? static_cast<int32_t>(options.forced_tokens.size()) : options.max_tokens;
  for (int32_t step = 0; step < n; ++step) {
    SILO_ASSIGN_OR_RETURN(const node::SideMixture mixture,
                          node::MixStreams(side.streams->logits(), side.scores, 0));
    std::mt19937_64 unused;
    int32_t token = node::DraftToken(mixture.p, true, unused);
    if (forced) {
      token = options.forced_tokens[static_cast<size_t>(step)];
      result.forced_logprob += std::log(std::max(mixture.p[static_cast<size_t>(token)], 1e-30f));
    }
    result.tokens.push_back(token);
    result.times.push_back(absl::Now());
    const bool stop =
        !forced && std::find(stop_tokens.begin(), stop_tokens.end(), token) != stop_tokens.end();
    if (stop || step + 1 == n) break;
    SILO_RETURN_IF_ERROR(side.streams->Append(token));
  }
  return result;
}

void FillTiming(const std::vector<absl::Time>& times, absl::Time start, DragonRunResult& result) {
  if (times.empty()) return;
  result.ttft_ms = absl::ToDoubleMilliseconds(times.front() - start);
  if (times.size() > 1) {
    result.token_ms = absl::ToDoubleMilliseconds(times.back() - times.front()) /
                      static_cast<double>(times.size() - 1);
  }
}

std::vector<retrieval::SearchHit> Union(const DragonCase& c) {
  std::vector<retrieval::SearchHit> all = c.cloud;
  all.insert(all.end(), c.device.begin(), c.device.end());
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.score > b.score; });
  return all;
}

}  // namespace

std::string_view DragonModeName(DragonMode mode) {
  switch (mode) {
    case DragonMode::kNone:
      return "none";
    case DragonMode::kDeviceOnly:
      return "device-only";
    case DragonMode::kCloudOnly:
      return "cloud-only";
    case DragonMode::kCentralizedRag:
      return "centralized-rag";
    case DragonMode::kCentralizedMixture:
      return "centralized-mixture";
    case DragonMode::kSequence:
      return "sequence";
    case DragonMode::kSync:
      return "sync";
    case DragonMode::kDragon:
      return "dragon";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<DragonLab>> DragonLab::Open(const Options& options,
                                                           std::ostream& log) {
  std::unique_ptr<DragonLab> lab(new DragonLab());
  const std::string faq_dir = options.docs_dir + "/faq";
  SILO_ASSIGN_OR_RETURN(lab->faq_, LoadFaqQuestions(faq_dir));
  retrieval::KnowledgeBaseOptions kb;
  kb.data_dir = options.corpus_dir;
  kb.decoder_model = options.decoder_model;
  kb.embedder_model = options.embedder_model;
  kb.kv_shards = retrieval::KvShardMode::kOff;
  kb.threads = 2;
  SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes key, EvalNodeKey(kb.data_dir));
  SILO_ASSIGN_OR_RETURN(lab->base_, retrieval::KnowledgeBase::Open(kb, key));
  log << "ingesting " << faq_dir << " into " << kb.data_dir << "\n";
  SILO_RETURN_IF_ERROR(lab->base_->Ingest(std::vector<std::string>{faq_dir}).status());
  const engine::LanguageModel& decoder = lab->base_->decoder();
  // One thread each: the two sides are two machines, and this one has two cores.
  lab->device_pool_ = std::make_unique<engine::ThreadPool>(1);
  lab->cloud_pool_ = std::make_unique<engine::ThreadPool>(1);
  lab->device_ = std::make_unique<engine::Transformer>(decoder.model(), *lab->device_pool_);
  lab->cloud_ = std::make_unique<engine::Transformer>(decoder.model(), *lab->cloud_pool_);
  SILO_ASSIGN_OR_RETURN(lab->prompts_, engine::RagPromptBuilder::Create(&decoder.tokenizer()));
  lab->stop_tokens_ = node::StopTokensOf(decoder.tokenizer());
  return lab;
}

absl::StatusOr<DragonCase> DragonLab::Case(int i, int n, int n_chunks) const {
  const size_t stride = std::max<size_t>(1, faq_.size() / static_cast<size_t>(std::max(1, n)));
  DragonCase c;
  c.question = faq_[static_cast<size_t>(i) * stride % faq_.size()].question;
  SILO_ASSIGN_OR_RETURN(std::vector<retrieval::SearchHit> hits,
                        base_->Search(c.question, std::max(1, n_chunks)));
  const size_t to_cloud = hits.size() / 2;
  c.cloud.assign(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(to_cloud));
  c.device.assign(hits.begin() + static_cast<std::ptrdiff_t>(to_cloud), hits.end());
  return c;
}

absl::StatusOr<DragonRunResult> DragonLab::Run(const DragonCase& c,
                                               const DragonRunOptions& options) {
  const int32_t max_answer = options.forced_tokens.empty()
                                 ? options.max_tokens
                                 : static_cast<int32_t>(options.forced_tokens.size());
  const auto documents_of = [&](const std::vector<retrieval::SearchHit>& hits) {
    std::vector<std::vector<int32_t>> documents;
    std::vector<float> scores;
    for (const retrieval::SearchHit& hit : hits) {
      documents.push_back(prompts_->EncodeChunk(hit.text));
      scores.push_back(hit.score);
    }
    return std::make_pair(documents, scores);
  };
  DragonRunResult result;
  const absl::Time start = absl::Now();

  // One side alone, on the device's decoder.
  std::optional<std::pair<std::vector<std::vector<int32_t>>, std::vector<float>>> alone;
  switch (options.mode) {
    case DragonMode::kNone:
      alone.emplace();
      break;
    case DragonMode::kDeviceOnly:
      alone = documents_of(c.device);
      break;
    case DragonMode::kCloudOnly:
      alone = documents_of(c.cloud);
      break;
    case DragonMode::kCentralizedMixture:
      alone = documents_of(Union(c));
      break;
    case DragonMode::kCentralizedRag: {
      // Every chunk in one context, best first, as the classic RAG prompt lists them.
      std::vector<int32_t> context;
      for (const retrieval::SearchHit& hit : Union(c)) {
        const std::vector<int32_t> chunk = prompts_->EncodeChunk(hit.text);
        context.insert(context.end(), chunk.begin(), chunk.end());
      }
      alone.emplace(std::vector<std::vector<int32_t>>{context}, std::vector<float>{0});
      break;
    }
    default:
      break;
  }
  if (alone.has_value()) {
    SILO_ASSIGN_OR_RETURN(SideStreams side, StartSide(*device_, *prompts_, c.question, alone->first,
                                                      alone->second, max_answer));
    SILO_ASSIGN_OR_RETURN(AloneResult decoded, DecodeAlone(side, options, stop_tokens_));
    result.tokens = std::move(decoded.tokens);
    result.forced_logprob = decoded.forced_logprob;
    FillTiming(decoded.times, start, result);
    return result;
  }

  // Lambdas below capture these: plain variables, not structured bindings.
  const auto device_side = documents_of(c.device);
  const auto cloud_side = documents_of(c.cloud);
  const std::vector<std::vector<int32_t>>& device_documents = device_side.first;
  const std::vector<float>& device_scores = device_side.second;
  const std::vector<std::vector<int32_t>>& cloud_documents = cloud_side.first;
  const std::vector<float>& cloud_scores = cloud_side.second;
  const absl::Duration one_way = options.rtt / 2;
  std::mt19937_64 jitter_generator(7);
  const auto jittered_one_way = [&] {
    const double spread = std::uniform_real_distribution<double>(-1, 1)(jitter_generator);
    return one_way * (1 + options.jitter * spread);
  };
  // The cloud starts once the question has reached it, one way after the device sent it (the
  // first message of the session's stream); both sides' retrieval is done before the clock.
  const absl::Duration question_trip = jittered_one_way();

  if (options.mode == DragonMode::kSequence) {
    // Each side alone, in parallel; the cloud's answer reaches the device one way later.
    auto cloud = std::async(std::launch::async, [&]() -> absl::StatusOr<AloneResult> {
      absl::SleepFor(question_trip);
      SILO_ASSIGN_OR_RETURN(SideStreams side, StartSide(*cloud_, *prompts_, c.question,
                                                        cloud_documents, cloud_scores, max_answer));
      return DecodeAlone(side, options, stop_tokens_);
    });
    SILO_ASSIGN_OR_RETURN(
        SideStreams device_side,
        StartSide(*device_, *prompts_, c.question, device_documents, device_scores, max_answer));
    absl::StatusOr<AloneResult> device = DecodeAlone(device_side, options, stop_tokens_);
    absl::StatusOr<AloneResult> cloud_result = cloud.get();
    SILO_RETURN_IF_ERROR(device.status());
    SILO_RETURN_IF_ERROR(cloud_result.status());
    const absl::Time cloud_arrival = cloud_result->times.back() + jittered_one_way();
    const absl::Time merged = std::max(device->times.back(), cloud_arrival);
    // A side without chunks decodes one stream of score 0 (StartSide).
    const auto mass = [](const std::vector<float>& scores) {
      return scores.empty() ? 0.0f : node::LogSumExp(scores);
    };
    const bool cloud_wins = mass(cloud_scores) > mass(device_scores);
    result.tokens = cloud_wins ? cloud_result->tokens : device->tokens;
    result.forced_logprob = cloud_wins ? cloud_result->forced_logprob : device->forced_logprob;
    // The merged answer exists only once both are in: all of it arrives at once.
    result.ttft_ms = absl::ToDoubleMilliseconds(merged - start);
    result.token_ms =
        result.ttft_ms / static_cast<double>(std::max<size_t>(1, result.tokens.size()));
    return result;
  }

  // DRAGON and sync: the protocol on two threads through the TcpShaper.
  node::DragonPeerOptions peer;
  peer.aggregator = options.aggregator;
  peer.max_tokens = options.max_tokens;
  peer.forced_tokens = options.forced_tokens;
  peer.stop_tokens = stop_tokens_;
  peer.distribution_top_p = options.distribution_top_p;
  peer.max_lookahead = options.mode == DragonMode::kSync ? 0 : options.max_lookahead;
  peer.policy = options.policy;
  node::DragonInbox device_inbox;
  node::DragonInbox cloud_inbox;
  // The shaper adds base + uniform [0, span]: mean one way RTT/2, ± jitter of it.
  SILO_ASSIGN_OR_RETURN(
      std::unique_ptr<ShapedDragonLink> link,
      ShapedDragonLink::Open(&device_inbox, &cloud_inbox, one_way * (1 - options.jitter),
                             one_way * (2 * options.jitter)));
  node::DragonPeerOptions cloud_options = peer;
  cloud_options.side = v1::DRAGON_SIDE_CLOUD;
  auto cloud = std::async(std::launch::async, [&]() -> absl::StatusOr<node::DragonPeerResult> {
    absl::StatusOr<node::DragonPeerResult> run = [&]() -> absl::StatusOr<node::DragonPeerResult> {
      absl::SleepFor(question_trip);
      SILO_ASSIGN_OR_RETURN(SideStreams side, StartSide(*cloud_, *prompts_, c.question,
                                                        cloud_documents, cloud_scores, max_answer));
      return node::RunDragonPeer(
          *side.streams, side.scores, cloud_options, cloud_inbox,
          [&](const node::DragonMessage& m) { return link->SendToDevice(m); }, [](int32_t) {});
    }();
    link->FinishCloud();
    return run;
  });
  peer.side = v1::DRAGON_SIDE_DEVICE;
  std::vector<absl::Time> times;
  absl::StatusOr<node::DragonPeerResult> device = [&]() -> absl::StatusOr<node::DragonPeerResult> {
    SILO_ASSIGN_OR_RETURN(SideStreams side, StartSide(*device_, *prompts_, c.question,
                                                      device_documents, device_scores, max_answer));
    return node::RunDragonPeer(
        *side.streams, side.scores, peer, device_inbox,
        [&](const node::DragonMessage& m) { return link->SendToCloud(m); },
        [&](int32_t) { times.push_back(absl::Now()); });
  }();
  link->FinishDevice();
  absl::StatusOr<node::DragonPeerResult> cloud_result = cloud.get();
  SILO_RETURN_IF_ERROR(device.status());
  SILO_RETURN_IF_ERROR(cloud_result.status());
  if (device->lost_at_step.has_value() || cloud_result->lost_at_step.has_value()) {
    return absl::InternalError("a side lost the other in an emulated run");
  }
  if (device->tokens != cloud_result->tokens) {
    return absl::InternalError("the two sides committed different tokens");
  }
  result.tokens = device->tokens;
  result.forced_logprob = device->forced_logprob + cloud_result->forced_logprob;
  FillTiming(times, start, result);
  const int64_t decided = device->stats.own_drafts_decided + cloud_result->stats.own_drafts_decided;
  const int64_t accepted =
      device->stats.own_drafts_accepted + cloud_result->stats.own_drafts_accepted;
  if (decided > 0) result.acceptance = static_cast<double>(accepted) / static_cast<double>(decided);
  result.aggregator_moves = device->stats.handoffs_sent + cloud_result->stats.handoffs_sent;
  return result;
}

absl::StatusOr<DragonUtilityResult> RunDragonUtility(const DragonUtilityOptions& options,
                                                     std::ostream& out, std::ostream& log) {
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<DragonLab> lab, DragonLab::Open(options.lab, log));
  DragonUtilityResult result;

  // 1. Greedy DRAGON against its exact target.
  for (int i = 0; i < options.n_questions; ++i) {
    SILO_ASSIGN_OR_RETURN(const DragonCase c,
                          lab->Case(i, options.n_questions, options.agreement_chunks));
    DragonRunOptions run = ModeOptions(DragonMode::kCentralizedMixture);
    run.max_tokens = options.max_tokens;
    SILO_ASSIGN_OR_RETURN(const DragonRunResult target, lab->Run(c, run));
    run.mode = DragonMode::kDragon;
    run.policy = node::AggregatorPolicy::kAlternate;  // the aggregator moves, too
    SILO_ASSIGN_OR_RETURN(const DragonRunResult dragon, lab->Run(c, run));
    run.distribution_top_p = options.truncated_top_p;
    SILO_ASSIGN_OR_RETURN(const DragonRunResult truncated, lab->Run(c, run));
    ++result.greedy_questions;
    result.greedy_identical += dragon.tokens == target.tokens ? 1 : 0;
    result.greedy_tokens += static_cast<int64_t>(target.tokens.size());
    for (size_t t = 0; t < std::min(target.tokens.size(), dragon.tokens.size()); ++t) {
      if (dragon.tokens[t] != target.tokens[t]) break;
      ++result.greedy_tokens_equal;
    }
    result.truncated_tokens += static_cast<int64_t>(target.tokens.size());
    for (size_t t = 0; t < std::min(target.tokens.size(), truncated.tokens.size()); ++t) {
      if (truncated.tokens[t] != target.tokens[t]) break;
      ++result.truncated_tokens_equal;
    }
    log << "question " << i + 1 << "/" << options.n_questions << ": greedy DRAGON "
        << (dragon.tokens == target.tokens ? "identical to" : "DIFFERS from")
        << " centralized-mixture over " << target.tokens.size() << " tokens\n";
  }
  out << StrFormat(
      "Greedy DRAGON vs centralized-mixture (%d chunks, %d tokens at most, aggregator moving "
      "every 4 tokens):\n  full distributions: %d of %d answers identical, %d of %d tokens "
      "before the first difference\n  top-p %.2f distributions: %d of %d tokens before the "
      "first difference\n\n",
      options.agreement_chunks, options.max_tokens, result.greedy_identical,
      result.greedy_questions, result.greedy_tokens_equal, result.greedy_tokens,
      options.truncated_top_p, result.truncated_tokens_equal, result.truncated_tokens);

  // 2. Gold-answer perplexity.
  const engine::Tokenizer& tokenizer = lab->tokenizer();
  std::vector<std::vector<int32_t>> gold(static_cast<size_t>(options.n_questions));
  for (int i = 0; i < options.n_questions; ++i) {
    const size_t stride = std::max<size_t>(1, lab->faq().size() / options.n_questions);
    const FaqQuestion& question = lab->faq()[static_cast<size_t>(i) * stride % lab->faq().size()];
    SILO_ASSIGN_OR_RETURN(const std::string answer, LoadAnswerText(question));
    gold[i] = tokenizer.Encode(answer, /*parse_special=*/false);
    if (gold[i].size() > static_cast<size_t>(options.max_tokens))
      gold[i].resize(options.max_tokens);
  }
  const auto perplexity = [&](DragonMode mode, int n_chunks) -> absl::StatusOr<double> {
    double logprob = 0;
    int64_t n = 0;
    for (int i = 0; i < options.n_questions; ++i) {
      if (gold[i].empty()) continue;
      SILO_ASSIGN_OR_RETURN(const DragonCase c, lab->Case(i, options.n_questions, n_chunks));
      DragonRunOptions run = ModeOptions(mode);
      run.forced_tokens = gold[i];
      SILO_ASSIGN_OR_RETURN(const DragonRunResult scored, lab->Run(c, run));
      logprob += scored.forced_logprob;
      n += static_cast<int64_t>(gold[i].size());
    }
    return std::exp(-logprob / static_cast<double>(std::max<int64_t>(1, n)));
  };
  SILO_ASSIGN_OR_RETURN(const double ppl_none, perplexity(DragonMode::kNone, 1));
  out << StrFormat("Gold-answer perplexity, %d FAQ questions, %d answer tokens at most:\n",
                   options.n_questions, options.max_tokens);
  out << StrFormat("%7s %9s %12s %11s %16s %9s %11s\n", "chunks", "none", "device-only",
                   "cloud-only", "centralized-rag", "dragon", "gain ratio");
  for (const int n_chunks : options.chunk_counts) {
    DragonUtilityRow row{.n_chunks = n_chunks, .ppl_none = ppl_none};
    log << "perplexity with " << n_chunks << " chunks\n";
    SILO_ASSIGN_OR_RETURN(row.ppl_device, perplexity(DragonMode::kDeviceOnly, n_chunks));
    SILO_ASSIGN_OR_RETURN(row.ppl_cloud, perplexity(DragonMode::kCloudOnly, n_chunks));
    SILO_ASSIGN_OR_RETURN(row.ppl_centralized_rag,
                          perplexity(DragonMode::kCentralizedRag, n_chunks));
    SILO_ASSIGN_OR_RETURN(row.ppl_dragon, perplexity(DragonMode::kDragon, n_chunks));
    row.gain_ratio = (row.ppl_none - row.ppl_dragon) / (row.ppl_none - row.ppl_centralized_rag);
    out << StrFormat("%7d %9.3f %12.3f %11.3f %16.3f %9.3f %11.2f\n", n_chunks, row.ppl_none,
                     row.ppl_device, row.ppl_cloud, row.ppl_centralized_rag, row.ppl_dragon,
                     row.gain_ratio);
    result.rows.push_back(row);
  }
  out << "gain ratio = (ppl_none − ppl_dragon) / (ppl_none − ppl_centralized-rag); chunks are "
         "each question's top n over the whole FAQ, the better half at the cloud.\n";
  return result;
}

namespace {

struct BenchRow {
  std::string name;
  DragonRunOptions options;
};

// latency.png: per-token latency against RTT, one line per mode.
absl::Status WriteLatencyPlot(const std::vector<BenchRow>& rows, const std::vector<double>& rtts,
                              const std::vector<std::vector<double>>& token_ms,
                              const std::string& path) {
  constexpr int32_t kWidth = 720, kHeight = 420, kLeft = 60, kBottom = 40, kTop = 20, kRight = 200;
  Canvas canvas(kWidth, kHeight);
  canvas.Fill(0, 0, kWidth, kHeight, 0xffffff);
  double max_ms = 1;
  for (const auto& line : token_ms) {
    for (const double ms : line) max_ms = std::max(max_ms, ms);
  }
  const double max_rtt = std::max(1.0, *std::max_element(rtts.begin(), rtts.end()));
  const int32_t plot_w = kWidth - kLeft - kRight;
  const int32_t plot_h = kHeight - kTop - kBottom;
  const auto x_of = [&](double rtt) {
    return kLeft + static_cast<int32_t>(rtt / max_rtt * plot_w);
  };
  const auto y_of = [&](double ms) {
    return kTop + plot_h - static_cast<int32_t>(ms / (max_ms * 1.1) * plot_h);
  };
  canvas.Line(kLeft, kTop, kLeft, kTop + plot_h, 0x000000);
  canvas.Line(kLeft, kTop + plot_h, kLeft + plot_w, kTop + plot_h, 0x000000);
  for (const double rtt : rtts) {
    canvas.Text(x_of(rtt) - 8, kTop + plot_h + 6, StrFormat("%.0f", rtt), 0x000000);
  }
  canvas.Text(kLeft + plot_w / 2 - 30, kHeight - 16, "RTT (ms)", 0x000000);
  for (int tick = 0; tick <= 4; ++tick) {
    const double ms = max_ms * 1.1 * tick / 4;
    canvas.Text(4, y_of(ms) - 3, StrFormat("%.0f", ms), 0x000000);
  }
  canvas.Text(4, 4, "ms per token", 0x000000);
  const uint32_t colors[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b};
  for (size_t r = 0; r < rows.size(); ++r) {
    const uint32_t color = colors[r % 6];
    for (size_t i = 0; i + 1 < rtts.size(); ++i) {
      canvas.Line(x_of(rtts[i]), y_of(token_ms[r][i]), x_of(rtts[i + 1]), y_of(token_ms[r][i + 1]),
                  color);
    }
    canvas.Fill(kWidth - kRight + 10, kTop + 14 * static_cast<int32_t>(r), 10, 8, color);
    canvas.Text(kWidth - kRight + 24, kTop + 14 * static_cast<int32_t>(r), rows[r].name, color);
  }
  std::ofstream file(path, std::ios::binary);
  file << canvas.EncodePng();
  if (!file) return absl::InternalError(StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status RunDragonBench(const DragonBenchOptions& options, std::ostream& out,
                            std::ostream& log) {
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<DragonLab> lab, DragonLab::Open(options.lab, log));
  const auto dragon = [](v1::DragonSide aggregator, node::AggregatorPolicy policy) {
    DragonRunOptions run = ModeOptions(DragonMode::kDragon);
    run.aggregator = aggregator;
    run.policy = policy;
    return run;
  };
  std::vector<BenchRow> rows = {
      {"device-only", ModeOptions(DragonMode::kDeviceOnly)},
      {"sync", ModeOptions(DragonMode::kSync)},
      {"sequence", ModeOptions(DragonMode::kSequence)},
      {"dragon@device", dragon(v1::DRAGON_SIDE_DEVICE, node::AggregatorPolicy::kFixed)},
      {"dragon@cloud", dragon(v1::DRAGON_SIDE_CLOUD, node::AggregatorPolicy::kFixed)},
      {"dragon scheduled", dragon(v1::DRAGON_SIDE_DEVICE, node::AggregatorPolicy::kScheduled)},
  };
  std::vector<std::vector<double>> token_ms(rows.size());
  std::vector<std::vector<double>> ttft_ms(rows.size());
  std::vector<std::vector<double>> acceptance(rows.size());
  // Each question through every row before the next question, so that the rows of an RTT run
  // interleaved in time: a drift of this machine's speed over the minutes an RTT takes then
  // weighs on every row alike rather than on the rows that ran while it lasted.
  for (const double rtt : options.rtts_ms) {
    // One row's sums over the questions at this RTT.
    struct RowSums {
      double token_ms = 0;
      double ttft_ms = 0;
      double acceptance = 0;
      int n_acceptance = 0;  // runs that report one (DRAGON rows)
      int64_t moves = 0;
    };
    std::vector<RowSums> sums(rows.size());
    for (int i = 0; i < options.n_questions; ++i) {
      SILO_ASSIGN_OR_RETURN(const DragonCase c,
                            lab->Case(i, options.n_questions, options.n_chunks));
      for (size_t r = 0; r < rows.size(); ++r) {
        DragonRunOptions run = rows[r].options;
        run.max_tokens = options.max_tokens;
        run.rtt = absl::Milliseconds(rtt);
        SILO_ASSIGN_OR_RETURN(const DragonRunResult measured, lab->Run(c, run));
        RowSums& sum = sums[r];
        sum.token_ms += measured.token_ms;
        sum.ttft_ms += measured.ttft_ms;
        sum.moves += measured.aggregator_moves;
        if (measured.acceptance >= 0) {
          sum.acceptance += measured.acceptance;
          ++sum.n_acceptance;
        }
      }
    }
    for (size_t r = 0; r < rows.size(); ++r) {
      const RowSums& sum = sums[r];
      token_ms[r].push_back(sum.token_ms / options.n_questions);
      ttft_ms[r].push_back(sum.ttft_ms / options.n_questions);
      acceptance[r].push_back(sum.n_acceptance > 0 ? sum.acceptance / sum.n_acceptance : -1);
      log << StrFormat("rtt %.0f ms, %s: %.1f ms/token, ttft %.1f ms, aggregator moves %d\n", rtt,
                       rows[r].name, token_ms[r].back(), ttft_ms[r].back(), sum.moves);
    }
  }
  out << StrFormat(
      "DRAGON speed: %d questions, %d tokens, %d chunks (half per side), one decoder thread per "
      "side, TcpShaper between them (one-way delay RTT/2 ± 10%%), lookahead %d\n",
      options.n_questions, options.max_tokens, options.n_chunks, DragonRunOptions().max_lookahead);
  out << StrFormat("%-18s", "ms/token | RTT");
  for (const double rtt : options.rtts_ms) out << StrFormat(" %8.0f", rtt);
  out << StrFormat("   %s\n", "vs device-only at the largest RTT");
  for (size_t r = 0; r < rows.size(); ++r) {
    out << StrFormat("%-18s", rows[r].name);
    for (const double ms : token_ms[r]) out << StrFormat(" %8.1f", ms);
    out << StrFormat("   %.3fx\n", token_ms[r].back() / token_ms[0].back());
  }
  out << StrFormat("%-18s", "TTFT ms | RTT");
  for (const double rtt : options.rtts_ms) out << StrFormat(" %8.0f", rtt);
  out << "\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    out << StrFormat("%-18s", rows[r].name);
    for (const double ms : ttft_ms[r]) out << StrFormat(" %8.1f", ms);
    out << StrFormat("   %.3fx\n", ttft_ms[r].back() / ttft_ms[0].back());
  }
  out << StrFormat("%-18s", "acceptance | RTT");
  for (const double rtt : options.rtts_ms) out << StrFormat(" %8.0f", rtt);
  out << "\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    if (acceptance[r].front() < 0) continue;
    out << StrFormat("%-18s", rows[r].name);
    for (const double a : acceptance[r]) out << StrFormat(" %8.2f", a);
    out << "\n";
  }
  std::filesystem::create_directories(options.out_dir);
  const std::string plot = options.out_dir + "/latency.png";
  SILO_RETURN_IF_ERROR(WriteLatencyPlot(rows, options.rtts_ms, token_ms, plot));
  out << "sequence: the merged answer arrives whole; its per-token figure is total / tokens.\n"
      << "plot: " << plot << "\n";
  return absl::OkStatus();
}

}  // namespace silo::eval
