#include "node/dragon_service.h"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "node/dragon_events.h"
#include "node/dragon_side.h"
#include "node/federated_retrieval.h"
#include "node/grpc_status.h"
#include "node/rpc_roles.h"

namespace silo::node {

using absl::StrCat;

absl::StatusOr<std::vector<retrieval::SearchHit>> DragonService::Admit(
    const v1::StartSessionRequest& request) const {
  if (request.session().value().size() != 16) {
    return absl::InvalidArgumentError("the session id must be 16 bytes");
  }
  if (request.model().sha256() != model_.sha256()) {
    return absl::FailedPreconditionError(StrCat("this node decodes with '", model_.name(),
                                                "', the device with '", request.model().name(),
                                                "': DRAGON needs the same model and tokenizer"));
  }
  if (request.question().empty() || request.question().size() > kMaxQuestionBytes) {
    return absl::InvalidArgumentError("the question must have 1 to 32 KiB");
  }
  if (request.top_k() < 1 || request.top_k() > static_cast<uint32_t>(kMaxQueryTopK)) {
    return absl::InvalidArgumentError(StrCat("top_k must be in [1, ", kMaxQueryTopK, "]"));
  }
  SILO_ASSIGN_OR_RETURN(
      std::vector<retrieval::SearchHit> hits,
      RetrieveDragonChunks(*corpus_, request.question(), static_cast<int32_t>(request.top_k())));
  // The streams' KV (f32) and prefill must fit: every chunk's stream holds its chunk, the
  // prompt around it (bounded by the question) and the whole answer.
  int64_t rows = 0;
  for (const retrieval::SearchHit& hit : hits) {
    rows += hit.n_tokens + kDragonPromptRows + static_cast<int64_t>(request.max_tokens());
  }
  const int64_t row_bytes =
      int64_t{model_.n_layers()} * model_.n_kv_heads() * model_.head_dim() * 2 * 4;
  if (rows * row_bytes > kMaxDragonCacheBytes) {
    return absl::ResourceExhaustedError(StrCat(
        "the session would need ", rows * row_bytes >> 20, " MiB of KV cache; this node allows ",
        kMaxDragonCacheBytes >> 20, " MiB: ask for fewer chunks or tokens"));
  }
  return hits;
}

grpc::Status DragonService::Decode(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) {
  absl::StatusOr<crypto::PeerIdentity> caller =
      AuthorizeCall(*context, Server::kNode, "/silo.v1.DragonService/Decode");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  v1::DecodeRequest first;
  if (!stream->Read(&first)) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the stream ended before starting a session"};
  }
  if (!first.has_start()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "the first message must start the session"};
  }
  const v1::StartSessionRequest& session = first.start();
  absl::StatusOr<DragonPeerOptions> options = DragonPeerOptionsOf(session, v1::DRAGON_SIDE_CLOUD);
  if (!options.ok()) return ToGrpcStatus(options.status());
  absl::StatusOr<std::vector<retrieval::SearchHit>> hits = Admit(session);
  if (!hits.ok()) return ToGrpcStatus(hits.status());
  v1::DecodeResponse started;
  started.mutable_started()->set_n_chunks(static_cast<uint32_t>(hits->size()));
  if (!stream->Write(started)) return {grpc::StatusCode::CANCELLED, "the device went away"};

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
    absl::Status end = absl::UnavailableError("the device closed the stream");
    while (true) {
      v1::DecodeRequest request;
      if (!stream->Read(&request)) break;
      if (request.has_start()) {
        end = absl::InvalidArgumentError("only the stream's first message starts the session");
        context->TryCancel();
        break;
      }
      if (std::optional<DragonMessage> event = TakeEvent(request); event.has_value()) {
        inbox.Push(*std::move(event));
      }
    }
    inbox.Close(std::move(end));
    std::lock_guard lock(reader_mutex);
    reader_done = true;
    reader_ended.notify_one();
  });
  absl::StatusOr<DragonSideResult> result = engine_->RunDragonSide(
      session.question(), *hits, *options, inbox,
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
