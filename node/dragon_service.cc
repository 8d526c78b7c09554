#include "node/dragon_service.h"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "node/dragon_events.h"
#include "node/dragon_side.h"
#include "node/federated_retrieval.h"
#include "node/grpc_status.h"
#include "node/rpc_roles.h"

namespace silo::node {

using absl::StrCat;

grpc::Status DragonService::StartSession(grpc::ServerContext* context,
                                         const v1::StartSessionRequest* request,
                                         v1::StartSessionResponse* response) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.DragonService/StartSession");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (request->session().value().size() != 16) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the session id must be 16 bytes"};
  }
  if (request->model().sha256() != model_.sha256()) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            StrCat("this node decodes with '", model_.name(), "', the device with '",
                   request->model().name(), "': DRAGON needs the same model and tokenizer")};
  }
  if (request->question().empty() || request->question().size() > kMaxQuestionBytes) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the question must have 1 to 32 KiB"};
  }
  if (request->top_k() < 1 || request->top_k() > static_cast<uint32_t>(kMaxQueryTopK)) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            StrCat("top_k must be in [1, ", kMaxQueryTopK, "]")};
  }
  if (absl::StatusOr<DragonPeerOptions> options =
          DragonPeerOptionsOf(*request, v1::DRAGON_SIDE_CLOUD);
      !options.ok()) {
    return ToGrpcStatus(options.status());
  }
  absl::StatusOr<std::vector<retrieval::SearchHit>> hits =
      RetrieveDragonChunks(*corpus_, request->question(), static_cast<int32_t>(request->top_k()));
  if (!hits.ok()) return ToGrpcStatus(hits.status());
  // The streams' KV (f32) and prefill must fit: every chunk's stream holds its chunk, the
  // prompt around it (bounded by the question) and the whole answer.
  int64_t rows = 0;
  for (const retrieval::SearchHit& hit : *hits) {
    rows += hit.n_tokens + kDragonPromptRows + static_cast<int64_t>(request->max_tokens());
  }
  const int64_t row_bytes =
      int64_t{model_.n_layers()} * model_.n_kv_heads() * model_.head_dim() * 2 * 4;
  if (rows * row_bytes > kMaxDragonCacheBytes) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            StrCat("the session would need ", rows * row_bytes >> 20,
                   " MiB of KV cache; this "
                   "node allows ",
                   kMaxDragonCacheBytes >> 20,
                   " MiB: ask for fewer chunks or "
                   "tokens")};
  }
  response->set_n_chunks(static_cast<uint32_t>(hits->size()));

  std::lock_guard lock(mutex_);
  const absl::Time now = absl::Now();
  std::erase_if(pending_,
                [&](const auto& entry) { return now - entry.second.started > kDragonSessionTtl; });
  if (pending_.size() >= kMaxPendingDragonSessions) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, "too many DRAGON sessions wait to decode"};
  }
  if (!pending_
           .emplace(request->session().value(), Pending{.request = *request,
                                                        .hits = *std::move(hits),
                                                        .device = *std::move(caller),
                                                        .started = now})
           .second) {
    return {grpc::StatusCode::ALREADY_EXISTS, "the session was started already"};
  }
  return grpc::Status::OK;
}

grpc::Status DragonService::Decode(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.DragonService/Decode");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  v1::DecodeRequest first;
  if (!stream->Read(&first)) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the stream ended before naming a session"};
  }
  Pending session;
  {
    std::lock_guard lock(mutex_);
    auto found = pending_.find(first.session().value());
    if (found == pending_.end() || absl::Now() - found->second.started > kDragonSessionTtl) {
      return {grpc::StatusCode::NOT_FOUND, "no DRAGON session with this id awaits decoding"};
    }
    if (!(found->second.device == *caller)) {
      return {grpc::StatusCode::PERMISSION_DENIED, "the session was started by another node"};
    }
    session = std::move(found->second);
    pending_.erase(found);
  }
  absl::StatusOr<DragonPeerOptions> options =
      DragonPeerOptionsOf(session.request, v1::DRAGON_SIDE_CLOUD);
  if (!options.ok()) return ToGrpcStatus(options.status());

  DragonInbox inbox;
  if (std::optional<DragonMessage> event = TakeEvent(first); event.has_value()) {
    inbox.Push(*std::move(event));
  }
  options->continue_alone = false;  // without the device nobody reads this side's tokens
  // The device's messages arrive on this thread while the decode loop runs on the handler's.
  std::mutex reader_mutex;
  std::condition_variable reader_ended;
  bool reader_done = false;
  std::thread reader([&] {
    while (true) {
      v1::DecodeRequest request;
      if (!stream->Read(&request)) break;
      if (std::optional<DragonMessage> event = TakeEvent(request); event.has_value()) {
        inbox.Push(*std::move(event));
      }
    }
    inbox.Close(absl::UnavailableError("the device closed the stream"));
    std::lock_guard lock(reader_mutex);
    reader_done = true;
    reader_ended.notify_one();
  });
  absl::StatusOr<DragonSideResult> result = engine_->RunDragonSide(
      session.request.question(), session.hits, *options, inbox,
      [&](const DragonMessage& message) {
        if (context->IsCancelled() || !stream->Write(EnvelopeOf<v1::DecodeResponse>(message))) {
          return absl::UnavailableError("the device stream is gone");
        }
        return absl::OkStatus();
      },
      [](int32_t) {});
  // The reader ends when the device half-closes (it has the last verdict then) or the call is
  // cancelled; a device that does neither is cut off after a while.
  if (!result.ok()) context->TryCancel();
  {
    std::unique_lock lock(reader_mutex);
    if (!reader_ended.wait_for(lock, absl::ToChronoNanoseconds(kDragonHalfCloseWait),
                               [&] { return reader_done; })) {
      context->TryCancel();
    }
  }
  reader.join();
  return ToGrpcStatus(result.status());
}

}  // namespace silo::node
