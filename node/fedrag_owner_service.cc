#include "node/fedrag_owner_service.h"

#include <algorithm>
#include <limits>

#include "common/half.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "common/strings.h"
#include "crypto/mtls.h"
#include "node/fedrag_scrambler.h"
#include "node/grpc_status.h"
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

void FedRagOwnerService::DropExpired(absl::Time now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->second.expires < now && !it->second.preparing) {
      it = sessions_.erase(it);
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
                                        .preparing = false});
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
  if (session->preparing) {
    return Error(grpc::StatusCode::FAILED_PRECONDITION, "the session is being prepared");
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
  if (privacy.protect_layers() > 0 && privacy.protect_mode() != v1::PROTECT_MODE_SKIP) {
    return Error(grpc::StatusCode::UNIMPLEMENTED,
                 "only protect_mode SKIP is implemented for protected layers");
  }
  const v1::NodeRef& compute = request->compute();
  if (absl::Status valid = CheckHostPort(compute.address()); !valid.ok()) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT, StrCat("compute address: ", valid.message()));
  }
  if (compute.node_id() == caller->node_id) {
    return Error(grpc::StatusCode::PERMISSION_DENIED,
                 "the querier cannot be the compute node of its own session");
  }

  std::vector<SelectedChunk> chunks;
  crypto::SecretBytes secret;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    Session* session = nullptr;
    if (grpc::Status found = FindSession(id, *caller, &session); !found.ok()) return found;
    if (session->preparing) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION, "the session is being prepared");
    }
    if (session->chunks.empty()) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION, "no chunks were selected");
    }
    session->preparing = true;
    chunks = session->chunks;
    secret = crypto::SecretBytes::FromBytes(session->secret.span());
  }
  // Whatever happens next, the session (and its secret) ends with this call.
  struct EraseSession {
    FedRagOwnerService* service;
    const std::string& id;
    ~EraseSession() {
      const std::lock_guard<std::mutex> lock(service->mutex_);
      service->sessions_.erase(id);
    }
  } erase{this, id};

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

  // Only the named compute node may receive K'/V'.
  const std::shared_ptr<grpc::Channel> channel = peers_->Get(compute.address());
  {
    grpc::ClientContext health_context;
    health_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
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
  const absl::Time upload_start = absl::Now();

  grpc::ClientContext upload_context;
  upload_context.set_deadline(absl::ToChronoTime(absl::Now() + limits_.upload_deadline));
  v1::UploadScrambledKvResponse uploaded;
  std::unique_ptr<grpc::ClientWriter<v1::UploadScrambledKvRequest>> writer =
      v1::ScrambledAttentionService::NewStub(channel)->UploadScrambledKv(&upload_context,
                                                                         &uploaded);
  absl::Status scrambled = absl::OkStatus();
  bool written = true;
  std::vector<float> k, v;
  std::vector<int32_t> positions;
  const int32_t n_kv_heads = static_cast<int32_t>(model_.n_kv_heads());
  for (int32_t layer = static_cast<int32_t>(privacy.protect_layers());
       layer < n_layers && scrambled.ok() && written; ++layer) {
    for (int32_t kv_head = 0; kv_head < n_kv_heads && scrambled.ok() && written; ++kv_head) {
      GatherRows(shards, starts, layer, kv_head, *rope_, k, v, positions);
      absl::StatusOr<std::vector<v1::UploadScrambledKvRequest>> messages = scrambler->ScrambleKv(
          static_cast<uint32_t>(layer), static_cast<uint32_t>(kv_head), k, v, request->kv_dtype());
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
  for (const uint32_t rows : scrambler->key_rows()) response->add_key_rows(rows);
  response->set_upload_bytes(uploaded.n_bytes());
  response->set_prepare_ns(absl::ToInt64Nanoseconds(upload_start - start));
  response->set_upload_ns(absl::ToInt64Nanoseconds(absl::Now() - upload_start));
  return grpc::Status::OK;
}

grpc::Status FedRagOwnerService::OwnerAttend(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::OwnerAttendResponse, v1::OwnerAttendRequest>* /*stream*/) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.FedRagOwnerService/OwnerAttend");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (corpus_ == nullptr) return NoCorpus();
  return Error(grpc::StatusCode::UNIMPLEMENTED,
               "protect_mode OWNER is not implemented yet; use SKIP");
}

}  // namespace silo::node
