#include "node/fedrag_owner_service.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "common/half.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "common/strings.h"
#include "crypto/mtls.h"
#include "node/fedrag_scrambler.h"
#include "node/grpc_status.h"
#include "node/internal/attention_rows.h"
#include "node/rpc_roles.h"

namespace silo::node {
namespace {

constexpr int kMaxSelections = 256;
constexpr size_t kSessionIdBytes = 16;

grpc::Status Error(grpc::StatusCode code, const std::string& message) { return {code, message}; }

grpc::Status NoCorpus() {
  return Error(grpc::StatusCode::FAILED_PRECONDITION, "this node holds no corpus");
}

// The upload layout of one (layer, kv_head): K rotated to the assigned positions and V, rows of
// every selected chunk in virtual-position order, [total rows, head_dim] f32 each.
void GatherRows(const std::vector<engine::KvShard>& shards, const std::vector<int64_t>& starts,
                int32_t layer, int32_t kv_head, const engine::Rope& rope, std::vector<float>& k,
                std::vector<float>& v, std::vector<int32_t>& positions) {
  k.clear();
  v.clear();
  positions.clear();
  for (size_t c = 0; c < shards.size(); ++c) {
    const engine::KvShard& shard = shards[c];
    const int64_t offset = shard.Offset(layer, kv_head, 0);
    const int64_t n = static_cast<int64_t>(shard.n_tokens) * shard.head_dim;
    for (int64_t i = 0; i < n; ++i) {
      k.push_back(HalfToFloat(shard.k[static_cast<size_t>(offset + i)]));
      v.push_back(HalfToFloat(shard.v[static_cast<size_t>(offset + i)]));
    }
    for (int32_t t = 0; t < shard.n_tokens; ++t) {
      positions.push_back(static_cast<int32_t>(starts[c] + t));
    }
  }
  rope.Rotate(positions.data(), static_cast<int64_t>(positions.size()), 1, k.data());
}

}  // namespace

FedRagOwnerService::FedRagOwnerService(retrieval::KnowledgeBase* corpus,
                                       const ChunkHandles* handles, KeyExchangeSigner signer,
                                       PeerChannels* peers, v1::ModelFingerprint model,
                                       FedRagOwnerLimits limits)
    : corpus_(corpus),
      handles_(handles),
      signer_(std::move(signer)),
      peers_(peers),
      model_(std::move(model)),
      limits_(limits),
      rope_(corpus == nullptr ? std::nullopt
                              : std::optional<engine::Rope>(corpus->decoder().model().config())) {}

FedRagOwnerService::Sessions::iterator FedRagOwnerService::EraseSession(Sessions::iterator it) {
  owner_kv_bytes_ -= it->second.owner_kv_bytes;
  return sessions_.erase(it);
}

void FedRagOwnerService::DropExpired(absl::Time now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const Session& session = it->second;
    if (session.expires < now && session.state != State::kPreparing && !session.attending) {
      it = EraseSession(it);
    } else {
      ++it;
    }
  }
}

grpc::Status FedRagOwnerService::FindSession(const std::string& id,
                                             const crypto::PeerIdentity& caller,
                                             Session** session) {
  if (corpus_ == nullptr) return NoCorpus();
  if (id.size() != kSessionIdBytes) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, "the session id must be 16 bytes");
  }
  DropExpired(absl::Now());
  const auto found = sessions_.find(id);
  if (found == sessions_.end()) {
    return Error(grpc::StatusCode::NOT_FOUND, "no key exchange for this session");
  }
  if (!(found->second.querier == caller)) {
    return Error(grpc::StatusCode::PERMISSION_DENIED,
                 StrCat(crypto::SpiffeId(caller), " is not the querier of this session"));
  }
  *session = &found->second;
  return grpc::Status::OK;
}

grpc::Status FedRagOwnerService::ExchangeKeys(grpc::ServerContext* context,
                                              const v1::ExchangeKeysRequest* request,
                                              v1::ExchangeKeysResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.FedRagOwnerService/ExchangeKeys");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (corpus_ == nullptr) return NoCorpus();
  const std::string& id = request->session().value();
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    DropExpired(absl::Now());
    if (sessions_.contains(id)) {
      return Error(grpc::StatusCode::ALREADY_EXISTS, "keys of this session were exchanged");
    }
    if (static_cast<int32_t>(sessions_.size()) >= limits_.max_sessions) {
      return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   StrCat("this owner holds ", limits_.max_sessions, " sessions in setup"));
    }
  }
  absl::StatusOr<OwnerKeyExchange> answer = AnswerKeyExchange(signer_, *request, *caller);
  if (!answer.ok()) return ToGrpcStatus(answer.status());
  const std::lock_guard<std::mutex> lock(mutex_);
  const auto [it, inserted] =
      sessions_.try_emplace(id, Session{.querier = *caller,
                                        .secret = std::move(answer->session_secret),
                                        .chunks = {},
                                        .expires = absl::Now() + limits_.session_ttl,
                                        .state = State::kSetup,
                                        .owner_kv_bytes = 0,
                                        .owner_kv = nullptr,
                                        .attending = false});
  if (!inserted) {
    return Error(grpc::StatusCode::ALREADY_EXISTS, "keys of this session were exchanged");
  }
  *response = std::move(answer->response);
  return grpc::Status::OK;
}

grpc::Status FedRagOwnerService::SelectChunks(grpc::ServerContext* context,
                                              const v1::SelectChunksRequest* request,
                                              v1::SelectChunksResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.FedRagOwnerService/SelectChunks");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (corpus_ == nullptr) return NoCorpus();
  const std::string& id = request->session().value();
  if (request->selections_size() < 1 || request->selections_size() > kMaxSelections) {
    return Error(
        grpc::StatusCode::INVALID_ARGUMENT,
        StrCat("select 1 to ", kMaxSelections, " chunks, not ", request->selections_size()));
  }
  const int64_t n_ctx = model_.n_ctx() > 0 ? model_.n_ctx() : std::numeric_limits<int32_t>::max();
  std::vector<SelectedChunk> chunks;
  for (const v1::ChunkSelection& selection : request->selections()) {
    absl::StatusOr<int64_t> vector_id = handles_->Open(id, selection.handle());
    if (!vector_id.ok()) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   StrCat("selection: ", vector_id.status().message()));
    }
    absl::StatusOr<retrieval::ChunkRecord> chunk = corpus_->store().GetChunkByVectorId(*vector_id);
    if (!chunk.ok()) return ToGrpcStatus(chunk.status());
    if (selection.virtual_start() < 0 || selection.virtual_start() + chunk->n_tokens > n_ctx) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   StrCat("a chunk at position ", selection.virtual_start(),
                          " does not fit the model's context of ", n_ctx, " tokens"));
    }
    chunks.push_back({.chunk_id = std::move(chunk->chunk_id),
                      .virtual_start = selection.virtual_start(),
                      .n_tokens = chunk->n_tokens});
  }
  std::sort(chunks.begin(), chunks.end(), [](const SelectedChunk& a, const SelectedChunk& b) {
    return a.virtual_start < b.virtual_start;
  });
  uint32_t n_tokens = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i > 0 && chunks[i].virtual_start < chunks[i - 1].virtual_start + chunks[i - 1].n_tokens) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT, "selected chunks overlap");
    }
    n_tokens += static_cast<uint32_t>(chunks[i].n_tokens);
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  Session* session = nullptr;
  if (grpc::Status found = FindSession(id, *caller, &session); !found.ok()) return found;
  if (session->state != State::kSetup) {
    return Error(grpc::StatusCode::FAILED_PRECONDITION, "the session is being or was prepared");
  }
  session->chunks = std::move(chunks);
  response->set_n_tokens(n_tokens);
  return grpc::Status::OK;
}

grpc::Status FedRagOwnerService::PrepareSession(grpc::ServerContext* context,
                                                const v1::PrepareSessionRequest* request,
                                                v1::PrepareSessionResponse* response) {
  const absl::Time start = absl::Now();
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.FedRagOwnerService/PrepareSession");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (corpus_ == nullptr) return NoCorpus();
  const std::string& id = request->session().value();

  // Settings first: a bad request leaves the session as it was.
  if (request->model().sha256() != model_.sha256()) {
    return Error(grpc::StatusCode::FAILED_PRECONDITION,
                 StrCat("the session's model is not this owner's (", model_.name(), ")"));
  }
  const bool prefill = request->kv_mode() == v1::KV_MODE_PREFILL;
  if (!prefill && request->kv_mode() != v1::KV_MODE_POSITION_INDEPENDENT) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, "kv_mode must be resolved");
  }
  if (request->kv_dtype() != v1::DTYPE_F32 && request->kv_dtype() != v1::DTYPE_F16 &&
      request->kv_dtype() != v1::DTYPE_BF16) {
    return Error(grpc::StatusCode::UNIMPLEMENTED, "K'/V' travel as F32, F16 or BF16");
  }
  const v1::PrivacySettings& privacy = request->privacy();
  const int32_t n_layers = static_cast<int32_t>(model_.n_layers());
  if (privacy.protect_layers() > static_cast<uint32_t>(n_layers)) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, "protect_layers exceeds n_layers");
  }
  // protect_mode OWNER: this owner attends its chunks itself in the protected layers.
  const int32_t protect_layers = static_cast<int32_t>(privacy.protect_layers());
  const bool owner_attends = protect_layers > 0 && privacy.protect_mode() == v1::PROTECT_MODE_OWNER;
  if (protect_layers > 0 && !owner_attends && privacy.protect_mode() != v1::PROTECT_MODE_SKIP) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, "protect_mode must be resolved");
  }
  const v1::NodeRef& compute = request->compute();
  if (absl::Status valid = CheckHostPort(compute.address()); !valid.ok()) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, StrCat("compute address: ", valid.message()));
  }
  if (compute.node_id() == caller->node_id) {
    return Error(grpc::StatusCode::PERMISSION_DENIED,
                 "the querier cannot be the compute node of its own session");
  }

  const int32_t n_kv_heads = static_cast<int32_t>(model_.n_kv_heads());
  const int32_t head_dim = static_cast<int32_t>(model_.head_dim());
  std::vector<SelectedChunk> chunks;
  crypto::SecretBytes secret;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    Session* session = nullptr;
    if (grpc::Status found = FindSession(id, *caller, &session); !found.ok()) return found;
    if (session->state != State::kSetup) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION, "the session is being or was prepared");
    }
    if (session->chunks.empty()) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION, "no chunks were selected");
    }
    int64_t n_rows = 0;
    for (const SelectedChunk& chunk : session->chunks) n_rows += chunk.n_tokens;
    // K and V as f32, so that the owner's partials are as exact as the compute node's with F32.
    const int64_t kv_bytes = owner_attends ? int64_t{2} * protect_layers * n_kv_heads * n_rows *
                                                 head_dim * static_cast<int64_t>(sizeof(float))
                                           : 0;
    if (owner_kv_bytes_ + kv_bytes > limits_.max_owner_kv_bytes) {
      return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                   StrCat("protect_mode OWNER would keep ", kv_bytes, " bytes of KV; ",
                          limits_.max_owner_kv_bytes - owner_kv_bytes_, " are free"));
    }
    owner_kv_bytes_ += kv_bytes;
    session->owner_kv_bytes = kv_bytes;
    session->state = State::kPreparing;
    chunks = session->chunks;
    secret = crypto::SecretBytes::FromBytes(session->secret.span());
  }
  // Whatever happens next, the secret ends with this call, and so does the session, unless it
  // succeeds with protect_mode OWNER: then it stays, with `owner_kv`, for OwnerAttend.
  struct EndSetup {
    FedRagOwnerService* service;
    const std::string& id;
    std::shared_ptr<const OwnerKv> owner_kv;
    ~EndSetup() {
      const std::lock_guard<std::mutex> lock(service->mutex_);
      const auto it = service->sessions_.find(id);
      if (it == service->sessions_.end()) return;
      if (owner_kv == nullptr) {
        service->EraseSession(it);
        return;
      }
      Session& session = it->second;
      session.secret = crypto::SecretBytes();
      session.owner_kv = std::move(owner_kv);
      session.state = State::kPrepared;
      session.expires = absl::Now() + service->limits_.session_ttl;
    }
  } end_setup{.service = this, .id = id, .owner_kv = nullptr};

  std::vector<int32_t> chunk_rows;
  std::vector<int64_t> starts;
  for (const SelectedChunk& chunk : chunks) {
    chunk_rows.push_back(chunk.n_tokens);
    starts.push_back(chunk.virtual_start);
  }
  absl::StatusOr<FedRagScramblerOptions> options =
      ScramblerOptionsOf(privacy, id, static_cast<int32_t>(model_.head_dim()), chunk_rows);
  if (!options.ok()) return ToGrpcStatus(options.status());
  absl::StatusOr<FedRagScrambler> scrambler = FedRagScrambler::Create(secret, *std::move(options));
  if (!scrambler.ok()) return ToGrpcStatus(scrambler.status());

  // Only the named compute node may receive K'/V'; with every layer protected it gets none.
  const bool uploads = protect_layers < n_layers;
  const absl::Time health_deadline = absl::Now() + absl::Seconds(10);
  const std::shared_ptr<grpc::Channel> channel =
      uploads ? peers_->GetConnected(compute.address(), health_deadline) : nullptr;
  if (uploads) {
    grpc::ClientContext health_context;
    health_context.set_deadline(absl::ToChronoTime(health_deadline));
    v1::HealthResponse health;
    const grpc::Status reached = v1::NodeControlService::NewStub(channel)->Health(
        &health_context, v1::HealthRequest(), &health);
    if (!reached.ok()) {
      return Error(reached.error_code(),
                   StrCat("compute node ", compute.node_id(), ": ", reached.error_message()));
    }
    absl::StatusOr<crypto::PeerIdentity> server = crypto::ServerIdentity(health_context);
    const crypto::PeerIdentity expected{crypto::PeerRole::kCompute, compute.node_id()};
    if (!server.ok() || !(*server == expected)) {
      return Error(
          grpc::StatusCode::PERMISSION_DENIED,
          StrCat("the server at ", compute.address(), " is not ", crypto::SpiffeId(expected)));
    }
  }

  std::vector<engine::KvShard> shards;
  for (const SelectedChunk& chunk : chunks) {
    absl::StatusOr<engine::KvShard> shard =
        prefill ? corpus_->PrefillKvShard(chunk.chunk_id) : corpus_->KvShardOf(chunk.chunk_id);
    if (!shard.ok()) return ToGrpcStatus(shard.status());
    if (shard->n_tokens != chunk.n_tokens) {
      return Error(grpc::StatusCode::INTERNAL, "a chunk's KV shard disagrees with its length");
    }
    shards.push_back(*std::move(shard));
  }
  std::vector<float> k, v;
  std::vector<int32_t> positions;
  std::shared_ptr<OwnerKv> owner_kv;
  if (owner_attends) {
    owner_kv = std::make_shared<OwnerKv>();
    owner_kv->n_layers = protect_layers;
    owner_kv->n_kv_heads = n_kv_heads;
    owner_kv->head_dim = head_dim;
    for (int32_t layer = 0; layer < protect_layers; ++layer) {
      for (int32_t kv_head = 0; kv_head < n_kv_heads; ++kv_head) {
        GatherRows(shards, starts, layer, kv_head, *rope_, k, v, positions);
        owner_kv->k.insert(owner_kv->k.end(), k.begin(), k.end());
        owner_kv->v.insert(owner_kv->v.end(), v.begin(), v.end());
      }
    }
    owner_kv->n_rows = static_cast<int64_t>(positions.size());
  }
  const absl::Time upload_start = absl::Now();

  int64_t upload_bytes = 0;
  if (uploads) {
    grpc::ClientContext upload_context;
    upload_context.set_deadline(absl::ToChronoTime(absl::Now() + limits_.upload_deadline));
    v1::UploadScrambledKvResponse uploaded;
    std::unique_ptr<grpc::ClientWriter<v1::UploadScrambledKvRequest>> writer =
        v1::ScrambledAttentionService::NewStub(channel)->UploadScrambledKv(&upload_context,
                                                                           &uploaded);
    absl::Status scrambled = absl::OkStatus();
    bool written = true;
    for (int32_t layer = protect_layers; layer < n_layers && scrambled.ok() && written; ++layer) {
      for (int32_t kv_head = 0; kv_head < n_kv_heads && scrambled.ok() && written; ++kv_head) {
        GatherRows(shards, starts, layer, kv_head, *rope_, k, v, positions);
        absl::StatusOr<std::vector<v1::UploadScrambledKvRequest>> messages =
            scrambler->ScrambleKv(static_cast<uint32_t>(layer), static_cast<uint32_t>(kv_head), k,
                                  v, request->kv_dtype());
        if (!messages.ok()) {
          scrambled = messages.status();
          break;
        }
        for (const v1::UploadScrambledKvRequest& message : *messages) {
          if (!writer->Write(message)) {
            written = false;
            break;
          }
        }
      }
    }
    if (!scrambled.ok()) {
      upload_context.TryCancel();
      writer->Finish().IgnoreError();
      return ToGrpcStatus(scrambled);
    }
    writer->WritesDone();
    const grpc::Status finished = writer->Finish();
    if (!finished.ok()) {
      return Error(finished.error_code(), StrCat("upload to compute node ", compute.node_id(), ": ",
                                                 finished.error_message()));
    }
    upload_bytes = uploaded.n_bytes();
  }
  for (const uint32_t rows : scrambler->key_rows()) response->add_key_rows(rows);
  response->set_upload_bytes(upload_bytes);
  response->set_prepare_ns(absl::ToInt64Nanoseconds(upload_start - start));
  response->set_upload_ns(absl::ToInt64Nanoseconds(absl::Now() - upload_start));
  end_setup.owner_kv = std::move(owner_kv);
  return grpc::Status::OK;
}

grpc::Status FedRagOwnerService::OwnerAttend(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::OwnerAttendResponse, v1::OwnerAttendRequest>* stream) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.FedRagOwnerService/OwnerAttend");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (corpus_ == nullptr) return NoCorpus();
  std::shared_ptr<const OwnerKv> kv;  // of the bound session
  std::string bound_id;
  // The session (and its plain KV) ends with the stream that bound it, however the stream ends.
  struct EndSession {
    FedRagOwnerService* service;
    const std::string& id;
    ~EndSession() {
      if (id.empty()) return;
      const std::lock_guard<std::mutex> lock(service->mutex_);
      const auto it = service->sessions_.find(id);
      if (it != service->sessions_.end()) service->EraseSession(it);
    }
  } end_session{.service = this, .id = bound_id};
  std::unique_ptr<attention::AttentionBackend> backend;
  std::optional<std::pair<uint32_t, uint32_t>> last;  // (step, layer) of the last message
  const float scale = 1.0f / std::sqrt(static_cast<float>(model_.head_dim()));
  v1::OwnerAttendRequest request;
  while (stream->Read(&request)) {
    const std::string& id = request.session().value();
    if (kv == nullptr) {
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        Session* session = nullptr;
        if (grpc::Status found = FindSession(id, *caller, &session); !found.ok()) return found;
        if (session->state != State::kPrepared || session->owner_kv == nullptr) {
          return Error(grpc::StatusCode::FAILED_PRECONDITION,
                       "the session was not prepared with protect_mode OWNER");
        }
        if (session->attending) {
          return Error(grpc::StatusCode::FAILED_PRECONDITION, "the session has a stream");
        }
        session->attending = true;
        kv = session->owner_kv;
        bound_id = id;
      }
      absl::StatusOr<std::unique_ptr<attention::AttentionBackend>> cpu =
          attention::CreateBackend(attention::BackendKind::kCpu);
      if (!cpu.ok()) return ToGrpcStatus(cpu.status());
      backend = *std::move(cpu);
    } else if (!id.empty() && id != bound_id) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   "every message of a stream names the same session");
    }
    if (request.layer() >= static_cast<uint32_t>(kv->n_layers)) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   StrCat("layer ", request.layer(), " is not protected in this session"));
    }
    const std::pair<uint32_t, uint32_t> at{request.step(), request.layer()};
    if (last.has_value() && at <= *last) {
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   "(step, layer) must increase from message to message");
    }
    last = at;
    if (request.queries_size() != kv->n_kv_heads) {
      return Error(
          grpc::StatusCode::INVALID_ARGUMENT,
          StrCat("one query per KV head (", kv->n_kv_heads, "), not ", request.queries_size()));
    }
    v1::OwnerAttendResponse response;
    response.set_step(request.step());
    response.set_layer(request.layer());
    for (int32_t kv_head = 0; kv_head < kv->n_kv_heads; ++kv_head) {
      const v1::HeadQuery& query = request.queries(kv_head);
      if (query.kv_head() != static_cast<uint32_t>(kv_head) || query.owner_index() != 0 ||
          query.key_index() != 0) {
        return Error(grpc::StatusCode::INVALID_ARGUMENT,
                     "query i is of KV head i, with owner_index and key_index 0");
      }
      int64_t n_rows = 0;
      absl::StatusOr<std::vector<uint8_t>> q = internal::DecodeRows(
          query.q(), v1::DTYPE_F32, -1, internal::kMaxQueryRows, kv->head_dim, "q", &n_rows);
      if (!q.ok()) return ToGrpcStatus(q.status());
      // [n_rows, head_dim] of (layer, kv_head) in OwnerKv's layout.
      const size_t offset = static_cast<size_t>(request.layer() * kv->n_kv_heads + kv_head) *
                            static_cast<size_t>(kv->n_rows) * static_cast<size_t>(kv->head_dim);
      v1::AttentionPartial& partial = *response.add_partials();
      partial.set_kv_head(static_cast<uint32_t>(kv_head));
      if (absl::Status attended = internal::AttendRows(
              *backend, reinterpret_cast<const float*>(q->data()), n_rows, kv->k.data() + offset,
              kv->v.data() + offset, attention::KvDType::kF32, kv->n_rows, kv->head_dim, scale,
              partial);
          !attended.ok()) {
        return ToGrpcStatus(attended);
      }
    }
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

}  // namespace silo::node
