#include "node/scrambled_attention_service.h"

#include <chrono>
#include <cmath>
#include <optional>
#include <set>
#include <vector>

#include "attention/backend.h"
#include "common/strings.h"
#include "crypto/certificate.h"
#include "node/grpc_status.h"
#include "node/internal/attention_rows.h"
#include "node/rpc_roles.h"

namespace silo::node {
namespace {

constexpr size_t kSessionIdBytes = 16;
constexpr uint32_t kMaxLayers = 1024;
constexpr uint32_t kMaxKvHeads = 256;
constexpr uint32_t kMaxOwners = 64;
constexpr int kMaxKeysPerOwner = 4096;
constexpr uint32_t kMaxKeyRows = 65536;

grpc::Status Invalid(const std::string& message) {
  return {grpc::StatusCode::INVALID_ARGUMENT, message};
}

}  // namespace

struct ScrambledAttentionService::Session {
  // Set at OpenSession, then read-only.
  std::string querier;
  std::vector<std::string> owners;
  std::vector<std::vector<uint32_t>> key_rows;  // [owner][key]
  std::vector<size_t> first_block;              // [owner]: index of its first block
  uint32_t n_layers = 0, first_layer = 0, n_kv_heads = 0;
  int head_dim = 0;
  v1::DType wire_dtype = v1::DTYPE_UNSPECIFIED;
  attention::KvDType stored_dtype = attention::KvDType::kF32;
  float scale = 0;
  int64_t reserved_bytes = 0;
  absl::Duration ttl;

  std::mutex mutex;  // guards the rest
  struct Block {
    std::vector<uint8_t> k, v;  // [rows, head_dim] of stored_dtype
  };
  std::vector<std::optional<Block>> blocks;  // [owner][layer - first_layer][kv_head][key]
  size_t n_received = 0;
  int64_t received_bytes = 0;
  absl::Time expires_at;
  bool attending = false;                             // an Attend stream is bound
  std::optional<std::pair<uint32_t, uint32_t>> last;  // (step, layer) of the last Attend
  std::unique_ptr<attention::AttentionBackend> backend;

  size_t BlockIndex(size_t owner, uint32_t layer, uint32_t kv_head, uint32_t key) const {
    return first_block[owner] + ((static_cast<size_t>(layer - first_layer) * n_kv_heads + kv_head) *
                                     key_rows[owner].size() +
                                 key);
  }
};

ScrambledAttentionService::ScrambledAttentionService(ScrambledAttentionLimits limits)
    : limits_(limits) {
  expiry_thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, std::chrono::seconds(1));
      lock.unlock();
      DropExpired();
      lock.lock();
    }
  });
}

ScrambledAttentionService::~ScrambledAttentionService() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  expiry_thread_.join();
}

int32_t ScrambledAttentionService::n_sessions() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int32_t>(sessions_.size());
}

void ScrambledAttentionService::DropExpired() {
  const absl::Time now = absl::Now();
  const std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& session = *it->second;
    // A session busy with a call is not idle: skip it rather than wait for it.
    const std::unique_lock<std::mutex> session_lock(session.mutex, std::try_to_lock);
    if (session_lock.owns_lock() && !session.attending && session.expires_at < now) {
      total_kv_bytes_ -= session.reserved_bytes;
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

grpc::Status ScrambledAttentionService::FindSession(const std::string& id,
                                                    std::shared_ptr<Session>* session) const {
  if (id.size() != kSessionIdBytes) {
    return Invalid(StrCat("the session id must be ", kSessionIdBytes, " bytes"));
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return {grpc::StatusCode::NOT_FOUND, "no such session here"};
  *session = it->second;
  return grpc::Status::OK;
}

grpc::Status ScrambledAttentionService::OpenSession(grpc::ServerContext* context,
                                                    const v1::OpenSessionRequest* request,
                                                    v1::OpenSessionResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.ScrambledAttentionService/OpenSession");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const std::string& id = request->session().value();
  if (id.size() != kSessionIdBytes) {
    return Invalid(StrCat("the session id must be ", kSessionIdBytes, " bytes"));
  }
  if (request->n_layers() < 1 || request->n_layers() > kMaxLayers ||
      request->first_layer() >= request->n_layers()) {
    return Invalid(StrCat("need 1 <= n_layers <= ", kMaxLayers, " and first_layer < n_layers"));
  }
  if (request->n_kv_heads() < 1 || request->n_kv_heads() > kMaxKvHeads) {
    return Invalid(StrCat("n_kv_heads must be in [1, ", kMaxKvHeads, "]"));
  }
  const uint32_t head_dim = request->head_dim();
  if (head_dim < 1 || head_dim > 512) return Invalid("head_dim must be in [1, 512]");
  const size_t wire_bytes = internal::KvElementBytes(request->kv_dtype());
  if (wire_bytes == 0) return Invalid("kv_dtype must be F32, F16, BF16 or I8");
  if (request->owners_size() < 1 || request->owners_size() > static_cast<int>(kMaxOwners)) {
    return Invalid(StrCat("a session has 1 to ", kMaxOwners, " owners"));
  }
  if (!std::isfinite(request->scale()) || request->scale() < 0) {
    return Invalid("scale must be finite and >= 0");
  }
  const absl::Duration ttl =
      request->ttl_ns() == 0 ? limits_.default_ttl : absl::Nanoseconds(request->ttl_ns());
  if (ttl < absl::Milliseconds(1) || ttl > limits_.max_ttl) {
    return Invalid(StrCat("ttl must be in [1 ms, ", absl::FormatDuration(limits_.max_ttl), "]"));
  }

  auto session = std::make_shared<Session>();
  session->querier = caller->node_id;
  session->n_layers = request->n_layers();
  session->first_layer = request->first_layer();
  session->n_kv_heads = request->n_kv_heads();
  session->head_dim = static_cast<int>(head_dim);
  session->wire_dtype = request->kv_dtype();
  session->stored_dtype = request->kv_dtype() == v1::DTYPE_F16    ? attention::KvDType::kF16
                          : request->kv_dtype() == v1::DTYPE_BF16 ? attention::KvDType::kBF16
                                                                  : attention::KvDType::kF32;
  session->scale =
      request->scale() > 0 ? request->scale() : 1.0F / std::sqrt(static_cast<float>(head_dim));
  session->ttl = ttl;
  const size_t stored_bytes = attention::KvDTypeBytes(session->stored_dtype);
  const uint32_t delegated = request->n_layers() - request->first_layer();
  std::set<std::string> seen;
  size_t n_blocks = 0;
  int64_t bytes = 0;
  for (const v1::OwnerSlot& owner : request->owners()) {
    if (!crypto::CheckNodeId(owner.node_id()).ok() || !seen.insert(owner.node_id()).second) {
      return Invalid(StrCat("owner \"", owner.node_id(), "\" is malformed or named twice"));
    }
    if (owner.key_rows_size() < 1 || owner.key_rows_size() > kMaxKeysPerOwner) {
      return Invalid(StrCat("an owner has 1 to ", kMaxKeysPerOwner, " keys"));
    }
    for (const uint32_t rows : owner.key_rows()) {
      if (rows < 1 || rows > kMaxKeyRows) {
        return Invalid(StrCat("a key has 1 to ", kMaxKeyRows, " rows"));
      }
      bytes += 2 * static_cast<int64_t>(rows) * head_dim * static_cast<int64_t>(stored_bytes) *
               delegated * request->n_kv_heads();
    }
    session->owners.push_back(owner.node_id());
    session->key_rows.emplace_back(owner.key_rows().begin(), owner.key_rows().end());
    session->first_block.push_back(n_blocks);
    n_blocks += static_cast<size_t>(owner.key_rows_size()) * delegated * request->n_kv_heads();
  }
  if (bytes > limits_.max_session_kv_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            StrCat("the session's K'/V' would take ", bytes, " bytes; at most ",
                   limits_.max_session_kv_bytes, " per session")};
  }
  session->reserved_bytes = bytes;
  session->blocks.resize(n_blocks);
  session->expires_at = absl::Now() + ttl;
  absl::StatusOr<std::unique_ptr<attention::AttentionBackend>> backend =
      attention::CreateBackend(attention::BackendKind::kCpu);
  if (!backend.ok()) return ToGrpcStatus(backend.status());
  session->backend = *std::move(backend);

  const std::lock_guard<std::mutex> lock(mutex_);
  if (sessions_.contains(id)) return {grpc::StatusCode::ALREADY_EXISTS, "the session is open"};
  if (total_kv_bytes_ + bytes > limits_.max_total_kv_bytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, "this compute node holds too much K'/V' now"};
  }
  total_kv_bytes_ += bytes;
  response->set_expires_at_unix_ns(absl::ToUnixNanos(session->expires_at));
  response->set_max_kv_bytes(bytes);
  sessions_.emplace(id, std::move(session));
  return grpc::Status::OK;
}

grpc::Status ScrambledAttentionService::UploadScrambledKv(
    grpc::ServerContext* context, grpc::ServerReader<v1::UploadScrambledKvRequest>* reader,
    v1::UploadScrambledKvResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller = AuthorizeCall(
      *context, Server::kNode, "/silo.v1.ScrambledAttentionService/UploadScrambledKv");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  v1::UploadScrambledKvRequest message;
  std::shared_ptr<Session> session;
  std::string bound_id;
  size_t owner = 0;
  while (reader->Read(&message)) {
    if (session == nullptr) {
      if (grpc::Status found = FindSession(message.session().value(), &session); !found.ok()) {
        return found;
      }
      bound_id = message.session().value();
      const auto it = std::find(session->owners.begin(), session->owners.end(), caller->node_id);
      if (it == session->owners.end()) {
        return {grpc::StatusCode::PERMISSION_DENIED,
                StrCat(caller->node_id, " is not an owner of this session")};
      }
      owner = static_cast<size_t>(it - session->owners.begin());
    } else if (message.session().value() != bound_id) {
      return Invalid("every message of an upload names the same session");
    }
    if (message.layer() < session->first_layer || message.layer() >= session->n_layers ||
        message.kv_head() >= session->n_kv_heads ||
        message.key_index() >= session->key_rows[owner].size()) {
      return Invalid(StrCat("no (layer ", message.layer(), ", kv_head ", message.kv_head(),
                            ", key ", message.key_index(), ") in this session's layout"));
    }
    const int64_t rows = session->key_rows[owner][message.key_index()];
    absl::StatusOr<std::vector<uint8_t>> k = internal::DecodeRows(
        message.k(), session->wire_dtype, rows, rows, session->head_dim, "k", nullptr);
    if (!k.ok()) return ToGrpcStatus(k.status());
    absl::StatusOr<std::vector<uint8_t>> v = internal::DecodeRows(
        message.v(), session->wire_dtype, rows, rows, session->head_dim, "v", nullptr);
    if (!v.ok()) return ToGrpcStatus(v.status());
    const std::lock_guard<std::mutex> lock(session->mutex);
    std::optional<Session::Block>& block = session->blocks[session->BlockIndex(
        owner, message.layer(), message.kv_head(), message.key_index())];
    if (block.has_value()) return Invalid("this (layer, kv_head, key) was uploaded already");
    const int64_t n_bytes = static_cast<int64_t>(k->size() + v->size());
    block = Session::Block{*std::move(k), *std::move(v)};
    ++session->n_received;
    session->received_bytes += n_bytes;
    session->expires_at = absl::Now() + session->ttl;
    response->set_n_blocks(response->n_blocks() + 1);
    response->set_n_bytes(response->n_bytes() + n_bytes);
  }
  if (session == nullptr) return Invalid("an upload carries at least one block");
  return grpc::Status::OK;
}

grpc::Status ScrambledAttentionService::Attend(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::AttendResponse, v1::AttendRequest>* stream) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.ScrambledAttentionService/Attend");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::shared_ptr<Session> session;
  std::string bound_id;
  v1::AttendRequest request;
  // Unbinds the stream however it ends, so that the session can expire.
  struct Unbind {
    std::shared_ptr<Session>* session;
    ~Unbind() {
      if (*session != nullptr) {
        const std::lock_guard<std::mutex> lock((*session)->mutex);
        (*session)->attending = false;
        (*session)->expires_at = absl::Now() + (*session)->ttl;
      }
    }
  } unbind{&session};
  while (stream->Read(&request)) {
    const auto start = std::chrono::steady_clock::now();
    if (session == nullptr) {
      std::shared_ptr<Session> found;
      if (grpc::Status status = FindSession(request.session().value(), &found); !status.ok()) {
        return status;
      }
      if (found->querier != caller->node_id) {
        return {grpc::StatusCode::PERMISSION_DENIED, "only the session's querier may attend"};
      }
      const std::lock_guard<std::mutex> lock(found->mutex);
      if (found->attending) {
        return {grpc::StatusCode::FAILED_PRECONDITION, "the session has an Attend stream"};
      }
      if (found->n_received != found->blocks.size()) {
        return {grpc::StatusCode::FAILED_PRECONDITION,
                StrCat("uploads incomplete: ", found->n_received, " of ", found->blocks.size())};
      }
      found->attending = true;
      session = found;
      bound_id = request.session().value();
    } else if (!request.session().value().empty() && request.session().value() != bound_id) {
      return Invalid("every message of a stream names the same session");
    }
    const std::lock_guard<std::mutex> lock(session->mutex);
    const std::pair<uint32_t, uint32_t> at{request.step(), request.layer()};
    if (request.layer() < session->first_layer || request.layer() >= session->n_layers) {
      return Invalid(StrCat("layer ", request.layer(), " is not delegated in this session"));
    }
    if (session->last.has_value() && at <= *session->last) {
      return Invalid("(step, layer) must increase from message to message");
    }
    session->last = at;
    v1::AttendResponse response;
    response.set_step(request.step());
    response.set_layer(request.layer());
    for (const v1::HeadQuery& query : request.queries()) {
      if (query.owner_index() >= session->owners.size() || query.kv_head() >= session->n_kv_heads ||
          query.key_index() >= session->key_rows[query.owner_index()].size()) {
        return Invalid("a query names no (owner, kv_head, key) of this session");
      }
      int64_t n_rows = 0;
      absl::StatusOr<std::vector<uint8_t>> q = internal::DecodeRows(
          query.q(), v1::DTYPE_F32, -1, internal::kMaxQueryRows, session->head_dim, "q", &n_rows);
      if (!q.ok()) return ToGrpcStatus(q.status());
      const Session::Block& block = *session->blocks[session->BlockIndex(
          query.owner_index(), request.layer(), query.kv_head(), query.key_index())];
      const int64_t key_rows = session->key_rows[query.owner_index()][query.key_index()];
      v1::AttentionPartial& partial = *response.add_partials();
      partial.set_owner_index(query.owner_index());
      partial.set_kv_head(query.kv_head());
      partial.set_key_index(query.key_index());
      if (absl::Status status =
              internal::AttendRows(*session->backend, reinterpret_cast<const float*>(q->data()),
                                   n_rows, block.k.data(), block.v.data(), session->stored_dtype,
                                   key_rows, session->head_dim, session->scale, partial);
          !status.ok()) {
        return ToGrpcStatus(status);
      }
    }
    session->expires_at = absl::Now() + session->ttl;
    response.set_compute_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count());
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

grpc::Status ScrambledAttentionService::CloseSession(grpc::ServerContext* context,
                                                     const v1::CloseSessionRequest* request,
                                                     v1::CloseSessionResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.ScrambledAttentionService/CloseSession");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::shared_ptr<Session> session;
  if (grpc::Status found = FindSession(request->session().value(), &session); !found.ok()) {
    return found;
  }
  if (session->querier != caller->node_id) {
    return {grpc::StatusCode::PERMISSION_DENIED, "only the session's querier may close it"};
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  if (sessions_.erase(request->session().value()) == 0) {
    return {grpc::StatusCode::NOT_FOUND, "no such session here"};
  }
  total_kv_bytes_ -= session->reserved_bytes;
  const std::lock_guard<std::mutex> session_lock(session->mutex);
  response->set_freed_bytes(session->received_bytes);
  return grpc::Status::OK;
}

}  // namespace silo::node
