#include "node/answer_engine.h"

#include <atomic>
#include <future>
#include <map>
#include <numeric>

#include "common/logging.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "node/dragon_client.h"

namespace silo::node {
namespace {

int64_t NanosSince(absl::Time start) { return absl::ToInt64Nanoseconds(absl::Now() - start); }

}  // namespace

absl::StatusOr<std::unique_ptr<AnswerEngine>> AnswerEngine::Create(
    retrieval::KnowledgeBase* corpus, const ChunkHandles* handles, std::string node_id,
    KeyExchangeSigner signer, PeerChannels* peers, v1::ModelFingerprint model, int32_t threads) {
  SILO_ASSIGN_OR_RETURN(engine::RagPromptBuilder prompts,
                        engine::RagPromptBuilder::Create(&corpus->decoder().tokenizer()));
  return std::unique_ptr<AnswerEngine>(new AnswerEngine(corpus, handles, std::move(node_id),
                                                        std::move(signer), peers, std::move(model),
                                                        threads, std::move(prompts)));
}

AnswerEngine::AnswerEngine(retrieval::KnowledgeBase* corpus, const ChunkHandles* handles,
                           std::string node_id, KeyExchangeSigner signer, PeerChannels* peers,
                           v1::ModelFingerprint model, int32_t threads,
                           engine::RagPromptBuilder prompts)
    : corpus_(corpus),
      handles_(handles),
      node_id_(std::move(node_id)),
      signer_(std::move(signer)),
      peers_(peers),
      model_(std::move(model)),
      prompts_(std::move(prompts)),
      pool_(threads),
      transformer_(corpus->decoder().model(), pool_) {}

absl::StatusOr<AnswerResult> AnswerEngine::Answer(
    AnswerRequest request, const std::function<bool(const v1::TextDelta&)>& on_delta) {
  const absl::Time start = absl::Now();
  const v1::GenerationMode mode = request.placement.mode();
  if (mode != v1::GENERATION_MODE_LOCAL && mode != v1::GENERATION_MODE_FEDRAG &&
      mode != v1::GENERATION_MODE_CENTRALIZED && mode != v1::GENERATION_MODE_DRAGON) {
    return absl::UnimplementedError(
        StrCat(v1::GenerationMode_Name(mode), " is not answered by this node's engine"));
  }
  if (mode == v1::GENERATION_MODE_DRAGON) {
    const std::lock_guard<std::timed_mutex> lock(mutex_);
    return AnswerDragon(request, start, on_delta);
  }
  if (mode == v1::GENERATION_MODE_LOCAL) request.sources.clear();
  if (request.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be positive");
  SILO_RETURN_IF_ERROR(engine::ValidateSamplingParams(request.sampling));
  const engine::ModelConfig& config = corpus_->decoder().model().config();
  const engine::RagPrompt prompt = prompts_.Build(request.question, {});

  // The virtual context: prefix, chunks in the order given, then the question.
  AnswerResult result;
  int64_t position = static_cast<int64_t>(prompt.prefix.size());
  int64_t own_tokens = 0;
  std::vector<FedRagOwnerChunks> owners;
  for (v1::Source& source : request.sources) {
    if (source.n_tokens() == 0) return absl::InvalidArgumentError("a source has no tokens");
    source.set_virtual_start(position);
    position += source.n_tokens();
    if (source.owner_node_id() == node_id_) {
      own_tokens += source.n_tokens();
      continue;
    }
    auto owner = std::find_if(owners.begin(), owners.end(), [&](const FedRagOwnerChunks& o) {
      return o.owner.node_id() == source.owner_node_id();
    });
    if (owner == owners.end()) {
      const auto participant = std::find_if(
          request.placement.participants().begin(), request.placement.participants().end(),
          [&](const v1::NodeRef& ref) { return ref.node_id() == source.owner_node_id(); });
      if (participant == request.placement.participants().end()) {
        return absl::InvalidArgumentError(
            StrCat("source owner ", source.owner_node_id(), " is not a participant"));
      }
      owner = owners.insert(
          owners.end(), FedRagOwnerChunks{.owner = *participant, .selections = {}, .n_tokens = {}});
    }
    v1::ChunkSelection& selection = owner->selections.emplace_back();
    selection.set_handle(source.handle());
    selection.set_virtual_start(source.virtual_start());
    owner->n_tokens.push_back(static_cast<int32_t>(source.n_tokens()));
  }
  const int64_t question_start = position;
  const int64_t context_end =
      question_start + static_cast<int64_t>(prompt.suffix.size()) + request.max_tokens;
  if (config.n_ctx_train > 0 && context_end > config.n_ctx_train) {
    return absl::InvalidArgumentError(
        StrCat("the context (", question_start + prompt.suffix.size(), " tokens) and max_tokens ",
               request.max_tokens, " exceed the model's ", config.n_ctx_train, " tokens"));
  }
  result.stats.set_n_prompt_tokens(static_cast<uint32_t>(question_start + prompt.suffix.size()));

  const std::lock_guard<std::timed_mutex> lock(mutex_);
  if (mode == v1::GENERATION_MODE_CENTRALIZED) {
    return AnswerCentralized(std::move(request), std::move(result), start, on_delta);
  }
  std::unique_ptr<FedRagSession> session;
  if (!owners.empty()) {
    FedRagSessionOptions options{.placement = request.placement,
                                 .owners = std::move(owners),
                                 .model = model_,
                                 .kv_mode = request.kv_mode,
                                 .kv_dtype = request.kv_dtype,
                                 .deadline = request.deadline,
                                 .continue_on_failure = request.continue_on_compute_failure};
    SILO_ASSIGN_OR_RETURN(session,
                          FedRagSession::Open(std::move(options), config, signer_, *peers_));
  }

  engine::KvCache cache(config, attention::KvDType::kF32,
                        static_cast<int64_t>(prompt.prefix.size()) + own_tokens +
                            static_cast<int64_t>(prompt.suffix.size()) + request.max_tokens);
  const engine::SequenceId sequence = cache.NewSequence();
  // The system prompt precedes every chunk: no partials (the compute node does not mask).
  SILO_RETURN_IF_ERROR(PrefillPrefix(cache, sequence, prompt.prefix));
  for (const v1::Source& source : request.sources) {
    if (source.owner_node_id() != node_id_) continue;
    SILO_ASSIGN_OR_RETURN(const int64_t vector_id,
                          handles_->Open(request.placement.session().value(), source.handle()));
    SILO_ASSIGN_OR_RETURN(const retrieval::ChunkRecord chunk,
                          corpus_->store().GetChunkByVectorId(vector_id));
    SILO_ASSIGN_OR_RETURN(const engine::KvShard shard, request.kv_mode == v1::KV_MODE_PREFILL
                                                           ? corpus_->PrefillKvShard(chunk.chunk_id)
                                                           : corpus_->KvShardOf(chunk.chunk_id));
    std::vector<int32_t> positions(static_cast<size_t>(shard.n_tokens));
    std::iota(positions.begin(), positions.end(), static_cast<int32_t>(source.virtual_start()));
    SILO_RETURN_IF_ERROR(cache.AppendShard(sequence, shard, positions, transformer_.rope()));
  }
  result.stats.set_setup_ns(NanosSince(start));
  SILO_RETURN_IF_ERROR(Decode(cache, sequence, prompt.suffix, static_cast<int32_t>(question_start),
                              session.get(), request, start, result, on_delta));
  if (session != nullptr) {
    if (!session->failure().ok()) {
      v1::NodeFailure& failure = result.failures.emplace_back();
      failure.set_node_id(request.placement.compute().node_id());
      failure.set_code(static_cast<int32_t>(session->failure().code()));
      const std::string message(session->failure().message());
      failure.set_message(message);
    }
    // The answer is complete; a compute node that cannot be told leaves it to its TTL.
    if (absl::Status closed = session->Close(); !closed.ok() && session->failure().ok()) {
      SILO_LOG(Warning) << "FedRAG session not closed: " << closed.message();
    }
    const FedRagSessionStats& fedrag = session->stats();
    result.stats.set_bytes_sent(fedrag.bytes_sent);
    result.stats.set_bytes_received(fedrag.bytes_received);
    result.stats.set_attention_exchanges(static_cast<uint32_t>(fedrag.n_exchanges));
    result.stats.set_attention_exchange_ns(fedrag.exchange_ns);
    result.stats.set_upload_bytes(fedrag.upload_bytes);
  }
  result.stats.set_total_ns(NanosSince(start));
  result.sources = std::move(request.sources);
  return result;
}

absl::Status AnswerEngine::PrefillPrefix(engine::KvCache& cache, engine::SequenceId sequence,
                                         std::span<const int32_t> prefix) {
  std::vector<int32_t> positions(prefix.size());
  std::iota(positions.begin(), positions.end(), 0);
  const engine::SequenceInput input{.sequence = sequence,
                                    .tokens = prefix,
                                    .positions = positions,
                                    .logits = engine::LogitsWanted::kNone,
                                    .hook = nullptr,
                                    .capture = nullptr};
  std::vector<float> logits;
  return transformer_.Forward({&input, 1}, cache, logits);
}

absl::Status AnswerEngine::Decode(engine::KvCache& cache, engine::SequenceId sequence,
                                  std::span<const int32_t> prompt, int32_t first_position,
                                  engine::AttentionHook* hook, const AnswerRequest& request,
                                  absl::Time start, AnswerResult& result,
                                  const std::function<bool(const v1::TextDelta&)>& on_delta) {
  const engine::Tokenizer& tokenizer = corpus_->decoder().tokenizer();
  engine::StreamingDecoder decoder(&tokenizer);
  absl::Status delta_status;
  bool first = true;
  std::vector<int32_t> forced;
  if (!request.forced_answer.empty()) {
    forced = tokenizer.Encode(request.forced_answer, /*parse_special=*/false);
    if (forced.size() > static_cast<size_t>(request.max_tokens)) {
      forced.resize(static_cast<size_t>(request.max_tokens));
    }
  }
  double forced_logprob = 0;
  const engine::GenerateOptions options{.sampling = request.sampling,
                                        .max_tokens = request.max_tokens,
                                        .stop_tokens = {},
                                        .first_position = first_position,
                                        .hook = hook,
                                        .forced_tokens = forced};
  SILO_ASSIGN_OR_RETURN(
      const engine::GenerateStats generated,
      engine::Generate(transformer_, cache, sequence, prompt, options,
                       [&](const engine::SampledToken& token) {
                         if (first) {
                           result.stats.set_ttft_ns(NanosSince(start));
                           first = false;
                         }
                         forced_logprob += token.logprob;
                         if (forced.empty() && tokenizer.IsEndOfGeneration(token.id)) {
                           result.stopped_by_eos = true;
                           return false;
                         }
                         absl::StatusOr<std::string> text = decoder.Push(token.id);
                         if (!text.ok()) {
                           delta_status = text.status();
                           return false;
                         }
                         v1::TextDelta delta;
                         delta.set_text(*std::move(text));
                         delta.add_token_ids(static_cast<uint32_t>(token.id));
                         return on_delta(delta);
                       }));
  SILO_RETURN_IF_ERROR(delta_status);
  if (std::string rest = decoder.Flush(); !rest.empty()) {
    v1::TextDelta delta;
    delta.set_text(std::move(rest));
    on_delta(delta);
  }
  result.stats.set_n_generated_tokens(static_cast<uint32_t>(generated.generated_tokens));
  if (!forced.empty()) result.stats.set_forced_answer_logprob(forced_logprob);
  return absl::OkStatus();
}

absl::StatusOr<DragonSideResult> AnswerEngine::RunDragonSide(
    std::string_view question, std::span<const retrieval::SearchHit> hits,
    const DragonPeerOptions& options, DragonInbox& inbox, const DragonSend& send,
    const std::function<void(int32_t)>& on_token) {
  // Two nodes that are each other's cloud would otherwise wait on each other for ever.
  std::unique_lock<std::timed_mutex> lock(mutex_, std::defer_lock);
  if (!lock.try_lock_for(absl::ToChronoNanoseconds(kDragonEngineWait))) {
    return absl::UnavailableError("this node's decoder is busy with another answer");
  }
  return node::RunDragonSide(transformer_, prompts_, question, hits, options, inbox, send,
                             on_token);
}

absl::StatusOr<AnswerResult> AnswerEngine::AnswerDragon(
    const AnswerRequest& request, absl::Time start,
    const std::function<bool(const v1::TextDelta&)>& on_delta) {
  const v1::Placement& placement = request.placement;
  if (placement.dragon_peer().address().empty()) {
    return absl::InvalidArgumentError("a DRAGON placement names no cloud peer");
  }
  if (!request.forced_answer.empty()) {
    return absl::UnimplementedError("DRAGON does not score forced answers");
  }
  v1::StartSessionRequest session;
  *session.mutable_session() = placement.session();
  *session.mutable_model() = model_;
  session.set_question(request.question);
  session.set_top_k(static_cast<uint32_t>(request.dragon_top_k));
  session.set_max_tokens(static_cast<uint32_t>(request.max_tokens));
  session.mutable_sampling()->set_temperature(request.sampling.temperature);
  session.mutable_sampling()->set_seed(request.sampling.seed);
  if (request.sampling.top_p != 1) session.mutable_sampling()->set_top_p(request.sampling.top_p);
  session.mutable_sampling()->set_top_k(static_cast<uint32_t>(request.sampling.top_k));
  session.set_aggregator(placement.aggregator() == v1::DRAGON_SIDE_CLOUD ? v1::DRAGON_SIDE_CLOUD
                                                                         : v1::DRAGON_SIDE_DEVICE);
  session.set_distribution_top_p(request.distribution_top_p);
  *session.mutable_settings() = request.dragon;
  SILO_ASSIGN_OR_RETURN(const DragonPeerOptions options,
                        DragonPeerOptionsOf(session, v1::DRAGON_SIDE_DEVICE));
  DragonInbox inbox;
  std::unique_ptr<DragonCloudLink> cloud;
  // The cloud's session starts while this side retrieves and prefills: the round trip and the
  // cloud's retrieval overlap them instead of coming before them. The link is awaited once the
  // streams are started; a cloud that refuses the session fails the answer, as before.
  int64_t setup_ns = 0;
  std::future<absl::StatusOr<std::unique_ptr<DragonCloudLink>>> opening =
      std::async(std::launch::async, [&] {
        absl::StatusOr<std::unique_ptr<DragonCloudLink>> link = DragonCloudLink::Open(
            peers_->GetConnected(placement.dragon_peer().address(), request.deadline), session,
            request.deadline, request.deadline, &inbox);
        setup_ns = NanosSince(start);
        return link;
      });
  SILO_ASSIGN_OR_RETURN(std::vector<retrieval::SearchHit> hits,
                        RetrieveDragonChunks(*corpus_, request.question, request.dragon_top_k));

  AnswerResult result;
  const auto link_opened = [&]() -> absl::Status {
    SILO_ASSIGN_OR_RETURN(cloud, opening.get());
    result.stats.set_setup_ns(setup_ns);
    return absl::OkStatus();
  };
  for (const retrieval::SearchHit& hit : hits) {
    v1::Source& source = result.sources.emplace_back();
    source.set_owner_node_id(node_id_);
    source.set_score(hit.score);
    source.set_n_tokens(static_cast<uint32_t>(hit.n_tokens));
    // The device's own documents: its user may see where they come from.
    source.mutable_citation()->set_title(hit.title);
    source.mutable_citation()->set_source_path(hit.source_path);
  }
  const engine::Tokenizer& tokenizer = corpus_->decoder().tokenizer();
  engine::StreamingDecoder decoder(&tokenizer);
  absl::Status delta_status;
  bool streaming = true;
  std::atomic<bool> user_gone{false};
  const auto on_token = [&](int32_t token) {
    if (result.stats.n_generated_tokens() == 0) result.stats.set_ttft_ns(NanosSince(start));
    result.stats.set_n_generated_tokens(result.stats.n_generated_tokens() + 1);
    if (!streaming || tokenizer.IsEndOfGeneration(token)) return;
    absl::StatusOr<std::string> text = decoder.Push(token);
    if (!text.ok()) {
      delta_status = text.status();
      streaming = false;
      return;
    }
    v1::TextDelta delta;
    delta.set_text(*std::move(text));
    delta.add_token_ids(static_cast<uint32_t>(token));
    streaming = on_delta(delta);
    if (!streaming) user_gone = true;  // nobody reads the answer: both sides stop
  };
  int64_t bytes_received = 0;
  // A lost cloud is asked to resume from the tokens final so far (it may have restarted), once
  // it answers a Health call made off this thread: the device decodes alone meanwhile.
  CloudHealthWatch cloud_health([&] { return peers_->Get(placement.dragon_peer().address()); },
                                kPeerConnectWait);
  DragonPeerOptions resumable = options;
  resumable.stop = &user_gone;
  resumable.reconnect = [&](std::span<const int32_t> confirmed) {
    if (static_cast<int32_t>(confirmed.size()) + 1 >= request.max_tokens) return false;
    if (!cloud_health.Answers()) return false;
    if (cloud != nullptr) {
      bytes_received += cloud->bytes_received();
      cloud.reset();  // cancels what is left of the old stream
    }
    inbox.Reopen();
    v1::StartSessionRequest resume = session;
    for (const int32_t token : confirmed) resume.add_resume_tokens(static_cast<uint32_t>(token));
    resume.set_aggregator(v1::DRAGON_SIDE_DEVICE);
    absl::StatusOr<std::unique_ptr<DragonCloudLink>> link =
        DragonCloudLink::Open(peers_->Get(placement.dragon_peer().address()), resume,
                              // The cloud has just answered; this thread should not wait long.
                              std::min(request.deadline, absl::Now() + kDragonReconnectTimeout),
                              request.deadline, &inbox);
    if (!link.ok()) return false;
    cloud = *std::move(link);
    return true;
  };
  absl::StatusOr<DragonSideResult> side = node::RunDragonSide(
      transformer_, prompts_, request.question, hits, resumable, inbox,
      [&](const DragonMessage& message) { return cloud->Send(message); }, on_token, link_opened);
  absl::Status cloud_status = absl::UnavailableError("the cloud could not be reached again");
  if (cloud != nullptr) {
    // A cloud that is not done (this side failed, stopped early or went alone) is stopped.
    const bool cloud_done =
        side.ok() && !side->peer.stopped_by_caller &&
        (!side->peer.lost_at_step.has_value() || side->peer.resumed_at_step.has_value());
    cloud_status = cloud_done ? cloud->Finish() : cloud->Cancel();
    bytes_received += cloud->bytes_received();
  }
  SILO_RETURN_IF_ERROR(side.status());
  SILO_RETURN_IF_ERROR(delta_status);
  if (std::string rest = decoder.Flush(); !rest.empty()) {
    v1::TextDelta delta;
    delta.set_text(std::move(rest));
    on_delta(delta);
  }
  const DragonPeerStats& stats = side->peer.stats;
  result.stopped_by_eos = side->peer.stopped_by_stop_token;
  result.stats.set_n_prompt_tokens(static_cast<uint32_t>(side->n_prompt_tokens));
  result.stats.set_bytes_sent(stats.bytes_sent);
  result.stats.set_bytes_received(bytes_received);
  if (stats.own_drafts_decided > 0) {
    result.stats.set_dragon_acceptance(static_cast<float>(stats.own_drafts_accepted) /
                                       static_cast<float>(stats.own_drafts_decided));
  }
  result.stats.set_aggregator_moves(
      static_cast<uint32_t>(stats.handoffs_sent + stats.handoffs_received));
  if (side->peer.lost_at_step.has_value()) {
    // The device finished alone; the answer says so.
    v1::NodeFailure& failure = result.failures.emplace_back();
    failure.set_node_id(placement.dragon_peer().node_id());
    // The cloud stream's own error says more than the side's view of it, unless the error is
    // only this side cancelling a cloud it had already given up on.
    const absl::Status& lost = cloud_status.ok() || absl::IsCancelled(cloud_status)
                                   ? side->peer.lost_status
                                   : cloud_status;
    failure.set_code(static_cast<int32_t>(lost.code()));
    failure.set_message(
        side->peer.resumed_at_step.has_value()
            ? StrCat("the cloud was lost after ", *side->peer.lost_at_step,
                     " tokens; the device went on alone and resumed aggregation with it after ",
                     *side->peer.resumed_at_step, " tokens: ", lost.message())
            : StrCat("the cloud was lost after ", *side->peer.lost_at_step,
                     " tokens; the device finished alone: ", lost.message()));
  }
  result.stats.set_total_ns(NanosSince(start));
  return result;
}

absl::StatusOr<std::vector<std::string>> AnswerEngine::GatherChunkText(
    const AnswerRequest& request) {
  std::vector<std::string> texts(request.sources.size());
  std::map<std::string, std::vector<size_t>> remote;  // owner → indexes of its sources
  const std::string& session_id = request.placement.session().value();
  for (size_t i = 0; i < request.sources.size(); ++i) {
    const v1::Source& source = request.sources[i];
    if (source.owner_node_id() != node_id_) {
      remote[source.owner_node_id()].push_back(i);
      continue;
    }
    SILO_ASSIGN_OR_RETURN(const int64_t vector_id, handles_->Open(session_id, source.handle()));
    SILO_ASSIGN_OR_RETURN(retrieval::ChunkRecord chunk,
                          corpus_->store().GetChunkByVectorId(vector_id));
    texts[i] = std::move(chunk.text);
  }
  for (const auto& [owner_id, indexes] : remote) {
    const std::string& owner = owner_id;  // a lambda may not capture a structured binding
    const auto participant = std::find_if(
        request.placement.participants().begin(), request.placement.participants().end(),
        [&](const v1::NodeRef& ref) { return ref.node_id() == owner; });
    if (participant == request.placement.participants().end()) {
      return absl::InvalidArgumentError(StrCat("source owner ", owner, " is not a participant"));
    }
    v1::ExportChunkTextRequest export_request;
    *export_request.mutable_session() = request.placement.session();
    for (const size_t i : indexes) export_request.add_handles(request.sources[i].handle());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(request.deadline));
    v1::ExportChunkTextResponse response;
    const grpc::Status status = v1::RetrievalService::NewStub(
                                    peers_->GetConnected(participant->address(), request.deadline))
                                    ->ExportChunkText(&context, export_request, &response);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          StrCat("ExportChunkText at ", owner, ": ", status.error_message()));
    }
    if (response.texts_size() != static_cast<int>(indexes.size())) {
      return absl::InternalError(StrCat(owner, " exported another number of chunks"));
    }
    for (size_t j = 0; j < indexes.size(); ++j) {
      texts[indexes[j]] = response.texts(static_cast<int>(j));
    }
  }
  return texts;
}

absl::StatusOr<AnswerResult> AnswerEngine::AnswerCentralized(
    AnswerRequest request, AnswerResult result, absl::Time start,
    const std::function<bool(const v1::TextDelta&)>& on_delta) {
  SILO_ASSIGN_OR_RETURN(const std::vector<std::string> texts, GatherChunkText(request));
  const engine::ModelConfig& config = corpus_->decoder().model().config();
  const engine::RagPrompt prompt = prompts_.Build(request.question, texts);
  engine::KvCache cache(config, attention::KvDType::kF32,
                        static_cast<int64_t>(prompt.Concatenated().size()) + request.max_tokens);
  const engine::SequenceId sequence = cache.NewSequence();
  if (request.kv_mode == v1::KV_MODE_PREFILL) {
    // Prefilled normally: the whole prompt in one pass, chunks attending to each other.
    int64_t position = static_cast<int64_t>(prompt.prefix.size());
    for (size_t i = 0; i < request.sources.size(); ++i) {
      request.sources[i].set_virtual_start(position);
      request.sources[i].set_n_tokens(static_cast<uint32_t>(prompt.chunks[i].size()));
      position += static_cast<int64_t>(prompt.chunks[i].size());
    }
    const std::vector<int32_t> tokens = prompt.Concatenated();
    result.stats.set_n_prompt_tokens(static_cast<uint32_t>(tokens.size()));
    result.stats.set_setup_ns(NanosSince(start));
    SILO_RETURN_IF_ERROR(
        Decode(cache, sequence, tokens, 0, nullptr, request, start, result, on_delta));
  } else {
    // Each chunk's KV computed alone, as its owner computes its shard, and placed where FedRAG
    // places it: the plaintext computation of FedRAG's KV.
    SILO_RETURN_IF_ERROR(PrefillPrefix(cache, sequence, prompt.prefix));
    std::vector<int32_t> positions;
    const engine::Tokenizer& tokenizer = corpus_->decoder().tokenizer();
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::vector<int32_t> tokens = tokenizer.Encode(texts[i], /*parse_special=*/false);
      SILO_ASSIGN_OR_RETURN(const engine::KvShard shard,
                            engine::PrefillKvShard(transformer_, tokens));
      const int32_t first = static_cast<int32_t>(request.sources[i].virtual_start());
      if (shard.n_tokens != static_cast<int32_t>(request.sources[i].n_tokens())) {
        return absl::FailedPreconditionError(
            StrCat("chunk ", i, " has ", shard.n_tokens, " tokens here and ",
                   request.sources[i].n_tokens(), " at its owner"));
      }
      positions.resize(static_cast<size_t>(shard.n_tokens));
      std::iota(positions.begin(), positions.end(), first);
      SILO_RETURN_IF_ERROR(cache.AppendShard(sequence, shard, positions, transformer_.rope()));
    }
    const v1::Source* last = request.sources.empty() ? nullptr : &request.sources.back();
    const int32_t question_start =
        last == nullptr ? static_cast<int32_t>(prompt.prefix.size())
                        : static_cast<int32_t>(last->virtual_start() + last->n_tokens());
    result.stats.set_setup_ns(NanosSince(start));
    SILO_RETURN_IF_ERROR(Decode(cache, sequence, prompt.suffix, question_start, nullptr, request,
                                start, result, on_delta));
  }
  result.stats.set_total_ns(NanosSince(start));
  result.sources = std::move(request.sources);
  return result;
}

}  // namespace silo::node
