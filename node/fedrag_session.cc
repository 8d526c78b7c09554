#include "node/fedrag_session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/mtls.h"
#include "node/grpc_status.h"
#include "node/internal/attention_rows.h"

namespace silo::node {
namespace {

constexpr size_t kMaxOwners = 64;

std::chrono::system_clock::time_point ChronoDeadline(absl::Time deadline) {
  return absl::ToChronoTime(deadline);
}

// `status` of a call to `peer`, its message naming the peer.
absl::Status PeerError(const grpc::Status& status, std::string_view what, std::string_view peer) {
  return {static_cast<absl::StatusCode>(status.error_code()),
          StrCat(what, " at ", peer, ": ", status.error_message())};
}

// Runs work(i) for i in [0, n) on n threads; the first error by index.
absl::Status RunInParallel(size_t n, const std::function<absl::Status(size_t)>& work) {
  std::vector<absl::Status> results(n);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] { results[i] = work(i); });
  }
  for (std::thread& thread : threads) thread.join();
  for (absl::Status& result : results) {
    if (!result.ok()) return result;
  }
  return absl::OkStatus();
}

}  // namespace

FedRagSession::FedRagSession(FedRagSessionOptions options, const engine::ModelConfig& config,
                             PeerChannels& peers)
    : options_(std::move(options)),
      n_heads_(config.n_heads),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      first_layer_(static_cast<int32_t>(options_.placement.privacy().protect_layers())),
      n_layers_(config.n_layers),
      owners_attend_(first_layer_ > 0 &&
                     options_.placement.privacy().protect_mode() == v1::PROTECT_MODE_OWNER),
      compute_channel_(peers.Get(options_.placement.compute().address())) {}

absl::StatusOr<std::unique_ptr<FedRagSession>> FedRagSession::Open(
    FedRagSessionOptions options, const engine::ModelConfig& config,
    const KeyExchangeSigner& signer, PeerChannels& peers) {
  const absl::Time start = absl::Now();
  if (options.owners.empty() || options.owners.size() > kMaxOwners) {
    return absl::InvalidArgumentError(StrCat("a session has 1 to ", kMaxOwners, " owners"));
  }
  const v1::Placement& requested = options.placement;
  if (requested.compute().node_id().empty()) {
    return absl::InvalidArgumentError("the placement names no compute node");
  }
  if (requested.privacy().protect_layers() > 0 &&
      requested.privacy().protect_mode() != v1::PROTECT_MODE_SKIP &&
      requested.privacy().protect_mode() != v1::PROTECT_MODE_OWNER) {
    return absl::InvalidArgumentError("protect_mode must be resolved (SKIP or OWNER)");
  }
  if (requested.privacy().protect_layers() > static_cast<uint32_t>(config.n_layers)) {
    return absl::InvalidArgumentError("protect_layers exceeds the model's layers");
  }
  for (const FedRagOwnerChunks& owner : options.owners) {
    if (owner.selections.empty() || owner.selections.size() != owner.n_tokens.size()) {
      return absl::InvalidArgumentError(
          StrCat("owner ", owner.owner.node_id(), " has no chunks or a bad layout"));
    }
    if (owner.owner.node_id() == requested.compute().node_id()) {
      return absl::InvalidArgumentError("an owner cannot be the session's compute node");
    }
  }
  std::unique_ptr<FedRagSession> session(new FedRagSession(std::move(options), config, peers));
  const FedRagSessionOptions& o = session->options_;
  const v1::Placement& placement = o.placement;
  const std::string& session_id = placement.session().value();
  FedRagSessionStats& stats = session->stats_;

  // 1–2. Keys and selection, every owner in parallel.
  std::vector<std::optional<FedRagScrambler>> scramblers(o.owners.size());
  std::vector<int64_t> sent(o.owners.size()), received(o.owners.size());
  SILO_RETURN_IF_ERROR(RunInParallel(o.owners.size(), [&](size_t i) -> absl::Status {
    const FedRagOwnerChunks& owner = o.owners[i];
    const auto stub =
        v1::FedRagOwnerService::NewStub(peers.GetConnected(owner.owner.address(), o.deadline));
    SILO_ASSIGN_OR_RETURN(const QuerierKeyExchange exchange,
                          QuerierKeyExchange::Start(signer, session_id));
    v1::ExchangeKeysResponse keys;
    {
      grpc::ClientContext context;
      context.set_deadline(ChronoDeadline(o.deadline));
      const grpc::Status status = stub->ExchangeKeys(&context, exchange.request(), &keys);
      if (!status.ok()) return PeerError(status, "ExchangeKeys", owner.owner.node_id());
    }
    SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes secret,
                          exchange.Finish(signer, keys, owner.owner.node_id()));
    v1::SelectChunksRequest select;
    *select.mutable_session() = placement.session();
    for (const v1::ChunkSelection& selection : owner.selections)
      *select.add_selections() = selection;
    v1::SelectChunksResponse selected;
    {
      grpc::ClientContext context;
      context.set_deadline(ChronoDeadline(o.deadline));
      const grpc::Status status = stub->SelectChunks(&context, select, &selected);
      if (!status.ok()) return PeerError(status, "SelectChunks", owner.owner.node_id());
    }
    const int64_t expected_tokens =
        std::accumulate(owner.n_tokens.begin(), owner.n_tokens.end(), int64_t{0});
    if (selected.n_tokens() != expected_tokens) {
      return absl::FailedPreconditionError(
          StrCat("owner ", owner.owner.node_id(), " counts ", selected.n_tokens(),
                 " tokens in its chunks, its Retrieve said ", expected_tokens));
    }
    SILO_ASSIGN_OR_RETURN(
        FedRagScramblerOptions scrambler_options,
        ScramblerOptionsOf(placement.privacy(), session_id, config.head_dim, owner.n_tokens));
    SILO_ASSIGN_OR_RETURN(scramblers[i],
                          FedRagScrambler::Create(secret, std::move(scrambler_options)));
    sent[i] = static_cast<int64_t>(exchange.request().ByteSizeLong() + select.ByteSizeLong());
    received[i] = static_cast<int64_t>(keys.ByteSizeLong() + selected.ByteSizeLong());
    return absl::OkStatus();
  }));
  for (size_t i = 0; i < o.owners.size(); ++i) {
    session->owners_.push_back(Owner{
        .scrambler = std::move(*scramblers[i]), .attend_context = nullptr, .attend = nullptr});
    stats.bytes_sent += sent[i];
    stats.bytes_received += received[i];
  }

  // 3. The compute node's layout, sent only to the placed compute node; with every layer
  // protected it has nothing to do and is not asked.
  const auto compute = v1::ScrambledAttentionService::NewStub(session->compute_channel_);
  if (session->delegates()) {
    v1::OpenSessionRequest layout;
    *layout.mutable_session() = placement.session();
    layout.set_n_layers(static_cast<uint32_t>(config.n_layers));
    layout.set_first_layer(static_cast<uint32_t>(session->first_layer_));
    layout.set_n_kv_heads(static_cast<uint32_t>(config.n_kv_heads));
    layout.set_head_dim(static_cast<uint32_t>(session->owners_.front().scrambler.padded_dim()));
    layout.set_kv_dtype(o.kv_dtype);
    layout.set_scale(1.0f / std::sqrt(static_cast<float>(config.head_dim)));
    for (size_t i = 0; i < o.owners.size(); ++i) {
      v1::OwnerSlot& slot = *layout.add_owners();
      slot.set_node_id(o.owners[i].owner.node_id());
      for (const uint32_t rows : session->owners_[i].scrambler.key_rows()) slot.add_key_rows(rows);
    }
    grpc::ClientContext context;
    context.set_deadline(ChronoDeadline(o.deadline));
    v1::OpenSessionResponse opened;
    const grpc::Status status = compute->OpenSession(&context, layout, &opened);
    if (!status.ok()) return PeerError(status, "OpenSession", placement.compute().node_id());
    const crypto::PeerIdentity expected{crypto::PeerRole::kCompute, placement.compute().node_id()};
    absl::StatusOr<crypto::PeerIdentity> server = crypto::ServerIdentity(context);
    if (!server.ok() || !(*server == expected)) {
      // Close it again before saying so: it must not keep a layout it should not have had.
      session->Close().IgnoreError();
      return absl::PermissionDeniedError(StrCat("the server at ", placement.compute().address(),
                                                " is not ", crypto::SpiffeId(expected)));
    }
    stats.bytes_sent += static_cast<int64_t>(layout.ByteSizeLong());
  }

  // 4. Owners upload K'/V' to the compute node (and with protect_mode OWNER keep the protected
  // layers' KV to attend themselves).
  std::vector<int64_t> uploaded(o.owners.size());
  absl::Status prepared = RunInParallel(o.owners.size(), [&](size_t i) -> absl::Status {
    const FedRagOwnerChunks& owner = o.owners[i];
    v1::PrepareSessionRequest prepare;
    *prepare.mutable_session() = placement.session();
    *prepare.mutable_compute() = placement.compute();
    *prepare.mutable_model() = o.model;
    prepare.set_kv_mode(o.kv_mode);
    *prepare.mutable_privacy() = placement.privacy();
    prepare.set_kv_dtype(o.kv_dtype);
    grpc::ClientContext context;
    context.set_deadline(ChronoDeadline(o.deadline));
    v1::PrepareSessionResponse response;
    const grpc::Status status = v1::FedRagOwnerService::NewStub(peers.Get(owner.owner.address()))
                                    ->PrepareSession(&context, prepare, &response);
    if (!status.ok()) return PeerError(status, "PrepareSession", owner.owner.node_id());
    const std::vector<uint32_t> expected = session->owners_[i].scrambler.key_rows();
    if (!std::equal(expected.begin(), expected.end(), response.key_rows().begin(),
                    response.key_rows().end())) {
      return absl::InternalError(
          StrCat("owner ", owner.owner.node_id(), " uploaded another key layout"));
    }
    uploaded[i] = response.upload_bytes();
    return absl::OkStatus();
  });
  if (!prepared.ok()) {
    session->Close().IgnoreError();
    return prepared;
  }
  stats.upload_bytes = std::accumulate(uploaded.begin(), uploaded.end(), int64_t{0});

  // 5. The streams every step's exchanges go over.
  if (session->delegates()) {
    session->attend_context_ = std::make_unique<grpc::ClientContext>();
    session->attend_context_->set_deadline(ChronoDeadline(o.deadline));
    session->attend_ = compute->Attend(session->attend_context_.get());
  }
  if (session->owners_attend_) {
    for (size_t i = 0; i < o.owners.size(); ++i) {
      Owner& owner = session->owners_[i];
      owner.attend_context = std::make_unique<grpc::ClientContext>();
      owner.attend_context->set_deadline(ChronoDeadline(o.deadline));
      owner.attend = v1::FedRagOwnerService::NewStub(peers.Get(o.owners[i].owner.address()))
                         ->OwnerAttend(owner.attend_context.get());
    }
  }
  SILO_ASSIGN_OR_RETURN(const crypto::SecretBytes seed, crypto::SecretBytes::Random(8));
  uint64_t seed_value = 0;
  std::memcpy(&seed_value, seed.span().data(), sizeof(seed_value));
  session->row_shuffle_.seed(seed_value);
  stats.setup_ns = absl::ToInt64Nanoseconds(absl::Now() - start);
  return session;
}

FedRagSession::~FedRagSession() { Close().IgnoreError(); }

absl::Status FedRagSession::AddPartials(int32_t layer, std::span<const float> q,
                                        std::span<const int32_t> /*positions*/,
                                        engine::AttentionPartials& partials) {
  if (layer <= last_layer_) ++step_;  // the first layer of the next forward step
  last_layer_ = layer;
  const bool protect = layer < first_layer_;
  if (protect && !owners_attend_) return absl::OkStatus();  // protect_mode SKIP: not attended
  if (!failure_.ok()) return absl::OkStatus();              // continuing without the remote chunks
  absl::Status exchanged =
      protect ? OwnerExchange(layer, q, partials) : Exchange(layer, q, partials);
  if (exchanged.ok() || !options_.continue_on_failure) return exchanged;
  failure_ = std::move(exchanged);
  partials = engine::AttentionPartials();
  closed_ = true;
  return absl::OkStatus();
}

FedRagSession::HeadRows FedRagSession::GatherHeadRows(std::span<const float> q, int32_t kv_head) {
  const int32_t group = n_heads_ / n_kv_heads_;
  const size_t d = static_cast<size_t>(head_dim_);
  const int64_t n_tokens = static_cast<int64_t>(q.size()) / (int64_t{n_heads_} * head_dim_);
  const int64_t n_rows = n_tokens * group;
  HeadRows head;
  head.order.resize(static_cast<size_t>(n_rows));
  std::iota(head.order.begin(), head.order.end(), 0);
  std::shuffle(head.order.begin(), head.order.end(), row_shuffle_);
  head.rows.resize(static_cast<size_t>(n_rows) * d);
  for (int64_t i = 0; i < n_rows; ++i) {
    const int64_t plain = head.order[static_cast<size_t>(i)];
    const int64_t token = plain / group;
    const int64_t h = int64_t{kv_head} * group + plain % group;
    std::memcpy(&head.rows[static_cast<size_t>(i) * d],
                &q[static_cast<size_t>((token * n_heads_ + h) * head_dim_)], d * 4);
  }
  return head;
}

void FedRagSession::ResetPartials(int32_t n_parts, int64_t n_tokens,
                                  engine::AttentionPartials& partials) const {
  const size_t heads_rows = static_cast<size_t>(n_tokens) * static_cast<size_t>(n_heads_);
  partials.n_parts = n_parts;
  partials.o.assign(static_cast<size_t>(n_parts) * heads_rows * static_cast<size_t>(head_dim_),
                    0.0f);
  partials.m.assign(static_cast<size_t>(n_parts) * heads_rows, 0.0f);
  partials.l.assign(static_cast<size_t>(n_parts) * heads_rows, 0.0f);
}

absl::Status FedRagSession::ScatterHeadRows(const PlainPartial& plain, const HeadRows& head,
                                            int32_t kv_head, size_t part, int64_t n_tokens,
                                            engine::AttentionPartials& partials) const {
  if (plain.m.size() != head.order.size()) {
    return absl::InternalError("a partial came back with another number of rows");
  }
  const int32_t group = n_heads_ / n_kv_heads_;
  const size_t d = static_cast<size_t>(head_dim_);
  const size_t heads_rows = static_cast<size_t>(n_tokens) * static_cast<size_t>(n_heads_);
  for (size_t i = 0; i < head.order.size(); ++i) {
    const int64_t plain_row = head.order[i];
    const int64_t token = plain_row / group;
    const int64_t h = int64_t{kv_head} * group + plain_row % group;
    const size_t at = part * heads_rows + static_cast<size_t>(token * n_heads_ + h);
    partials.m[at] = plain.m[i];
    partials.l[at] = plain.l[i];
    std::memcpy(&partials.o[at * d], &plain.o[i * d], d * 4);
  }
  return absl::OkStatus();
}

absl::Status FedRagSession::Exchange(int32_t layer, std::span<const float> q,
                                     engine::AttentionPartials& partials) {
  if (closed_ || attend_ == nullptr) {
    return absl::FailedPreconditionError("the FedRAG session is closed");
  }
  const absl::Time start = absl::Now();
  const int64_t n_tokens = static_cast<int64_t>(q.size()) / (int64_t{n_heads_} * head_dim_);

  std::vector<HeadRows> heads;
  heads.reserve(static_cast<size_t>(n_kv_heads_));
  v1::AttendRequest request;
  *request.mutable_session() = options_.placement.session();
  request.set_step(step_);
  request.set_layer(static_cast<uint32_t>(layer));
  for (int32_t kv_head = 0; kv_head < n_kv_heads_; ++kv_head) {
    const HeadRows& head = heads.emplace_back(GatherHeadRows(q, kv_head));
    for (size_t o = 0; o < owners_.size(); ++o) {
      const FedRagScrambler& scrambler = owners_[o].scrambler;
      for (const attention::KeyBlock& block : scrambler.blocks()) {
        SILO_ASSIGN_OR_RETURN(
            *request.add_queries(),
            scrambler.ScrambleQuery(static_cast<uint32_t>(o), static_cast<uint32_t>(layer),
                                    static_cast<uint32_t>(kv_head), block.key_index, head.rows));
      }
    }
  }
  if (!attend_->Write(request)) {
    return absl::UnavailableError(
        StrCat("compute node ", options_.placement.compute().node_id(), ": the stream broke"));
  }
  v1::AttendResponse response;
  if (!attend_->Read(&response)) {
    const grpc::Status status = attend_->Finish();
    attend_.reset();
    closed_ = true;
    return PeerError(
        status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream ended") : status,
        "Attend", options_.placement.compute().node_id());
  }
  if (response.step() != step_ || response.layer() != static_cast<uint32_t>(layer) ||
      response.partials_size() != request.queries_size()) {
    return absl::InternalError("the compute node answered another exchange");
  }
  stats_.bytes_sent += static_cast<int64_t>(request.ByteSizeLong());
  stats_.bytes_received += static_cast<int64_t>(response.ByteSizeLong());

  // Partial p = (owner, key) covers every head; its rows come back per KV head.
  int32_t n_parts = 0;
  std::vector<int32_t> first_part(owners_.size());
  for (size_t o = 0; o < owners_.size(); ++o) {
    first_part[o] = n_parts;
    n_parts += static_cast<int32_t>(owners_[o].scrambler.blocks().size());
  }
  ResetPartials(n_parts, n_tokens, partials);
  for (const v1::AttentionPartial& answer : response.partials()) {
    const size_t o = answer.owner_index();
    const int32_t kv_head = static_cast<int32_t>(answer.kv_head());
    if (o >= owners_.size() || kv_head >= n_kv_heads_ ||
        answer.key_index() >= owners_[o].scrambler.blocks().size()) {
      return absl::InternalError("the compute node answered for an unknown key");
    }
    SILO_ASSIGN_OR_RETURN(const PlainPartial plain,
                          owners_[o].scrambler.Unscramble(static_cast<uint32_t>(layer),
                                                          static_cast<uint32_t>(kv_head), answer));
    SILO_RETURN_IF_ERROR(ScatterHeadRows(plain, heads[static_cast<size_t>(kv_head)], kv_head,
                                         static_cast<size_t>(first_part[o]) + answer.key_index(),
                                         n_tokens, partials));
  }
  ++stats_.n_exchanges;
  stats_.exchange_ns += absl::ToInt64Nanoseconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::Status FedRagSession::OwnerExchange(int32_t layer, std::span<const float> q,
                                          engine::AttentionPartials& partials) {
  if (closed_) return absl::FailedPreconditionError("the FedRAG session is closed");
  const absl::Time start = absl::Now();
  const int64_t n_tokens = static_cast<int64_t>(q.size()) / (int64_t{n_heads_} * head_dim_);

  // The same plain rows for every owner: each sees them in full anyway.
  std::vector<HeadRows> heads;
  heads.reserve(static_cast<size_t>(n_kv_heads_));
  v1::OwnerAttendRequest request;
  *request.mutable_session() = options_.placement.session();
  request.set_step(step_);
  request.set_layer(static_cast<uint32_t>(layer));
  for (int32_t kv_head = 0; kv_head < n_kv_heads_; ++kv_head) {
    const HeadRows& head = heads.emplace_back(GatherHeadRows(q, kv_head));
    v1::HeadQuery& query = *request.add_queries();
    query.set_kv_head(static_cast<uint32_t>(kv_head));
    *query.mutable_q() = internal::F32Tensor(
        head.rows, {static_cast<int64_t>(head.order.size()), int64_t{head_dim_}});
  }
  // Once an exchange fails, answers may be left unread: cancel every stream, so that Close does
  // not wait for them, and so that each owner drops its session.
  const auto fail = [this](absl::Status status) {
    closed_ = true;
    for (Owner& owner : owners_) {
      if (owner.attend_context != nullptr) owner.attend_context->TryCancel();
    }
    return status;
  };
  // Every owner computes at once: all requests go out before the first answer is read.
  for (size_t o = 0; o < owners_.size(); ++o) {
    if (owners_[o].attend == nullptr || !owners_[o].attend->Write(request)) {
      return fail(absl::UnavailableError(
          StrCat("owner ", options_.owners[o].owner.node_id(), ": the OwnerAttend stream broke")));
    }
    stats_.bytes_sent += static_cast<int64_t>(request.ByteSizeLong());
  }
  ResetPartials(static_cast<int32_t>(owners_.size()), n_tokens, partials);
  for (size_t o = 0; o < owners_.size(); ++o) {
    Owner& owner = owners_[o];
    const std::string& owner_id = options_.owners[o].owner.node_id();
    v1::OwnerAttendResponse response;
    if (!owner.attend->Read(&response)) {
      const grpc::Status status = owner.attend->Finish();
      owner.attend.reset();
      return fail(PeerError(
          status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream ended") : status,
          "OwnerAttend", owner_id));
    }
    stats_.bytes_received += static_cast<int64_t>(response.ByteSizeLong());
    if (response.step() != step_ || response.layer() != static_cast<uint32_t>(layer) ||
        response.partials_size() != n_kv_heads_) {
      return fail(absl::InternalError(StrCat("owner ", owner_id, " answered another exchange")));
    }
    for (int32_t kv_head = 0; kv_head < n_kv_heads_; ++kv_head) {
      const v1::AttentionPartial& answer = response.partials(kv_head);
      if (answer.kv_head() != static_cast<uint32_t>(kv_head)) {
        return fail(
            absl::InternalError(StrCat("owner ", owner_id, " answered for another KV head")));
      }
      absl::StatusOr<PlainPartial> plain = DecodePartial(answer, head_dim_);
      if (!plain.ok()) return fail(plain.status());
      if (absl::Status scattered = ScatterHeadRows(*plain, heads[static_cast<size_t>(kv_head)],
                                                   kv_head, o, n_tokens, partials);
          !scattered.ok()) {
        return fail(std::move(scattered));
      }
    }
  }
  ++stats_.n_owner_exchanges;
  stats_.owner_exchange_ns += absl::ToInt64Nanoseconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::Status FedRagSession::Close() {
  closed_ = true;
  if (compute_closed_) return absl::OkStatus();
  compute_closed_ = true;
  if (attend_ != nullptr) {
    attend_->WritesDone();
    attend_->Finish().IgnoreError();  // the compute node's verdict on the stream; Close decides
    attend_.reset();
  }
  attend_context_.reset();
  for (Owner& owner : owners_) {
    if (owner.attend != nullptr) {
      owner.attend->WritesDone();
      owner.attend->Finish().IgnoreError();  // the owner's session ends with the stream
      owner.attend.reset();
    }
    owner.attend_context.reset();
  }
  if (!delegates()) return absl::OkStatus();  // no session was opened at the compute node
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::CloseSessionRequest request;
  *request.mutable_session() = options_.placement.session();
  v1::CloseSessionResponse response;
  const grpc::Status status = v1::ScrambledAttentionService::NewStub(compute_channel_)
                                  ->CloseSession(&context, request, &response);
  if (!status.ok()) {
    return PeerError(status, "CloseSession", options_.placement.compute().node_id());
  }
  return absl::OkStatus();
}

}  // namespace silo::node
