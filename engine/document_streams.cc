#include "engine/document_streams.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "attention/backend.h"
#include "common/status_macros.h"

namespace silo::engine {
namespace {

// Adds no partials; stops the forward pass at the next layer once `cancel` is set.
class CancelAtLayerBoundary final : public AttentionHook {
 public:
  explicit CancelAtLayerBoundary(const std::atomic<bool>* cancel) : cancel_(cancel) {}

  absl::Status AddPartials(int32_t layer, std::span<const float> /*q*/,
                           std::span<const int32_t> /*positions*/,
                           AttentionPartials& /*partials*/) override {
    if (cancel_->load(std::memory_order_relaxed)) {
      return absl::CancelledError(absl::StrCat("forward pass cancelled at layer ", layer));
    }
    return absl::OkStatus();
  }

 private:
  const std::atomic<bool>* cancel_;
};

std::vector<int32_t> Iota(int32_t first, int64_t n) {
  std::vector<int32_t> positions(n);
  for (int64_t i = 0; i < n; ++i) positions[i] = first + static_cast<int32_t>(i);
  return positions;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DocumentStreams>> DocumentStreams::Start(
    Transformer& transformer, const DocumentStreamsPrompt& prompt, int32_t max_answer_tokens,
    std::span<const int32_t> answer) {
  const ModelConfig& config = transformer.model().config();
  if (prompt.documents.empty()) return absl::InvalidArgumentError("no document streams");
  if (max_answer_tokens < 1 || static_cast<size_t>(max_answer_tokens) <= answer.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_answer_tokens must be at least 1 and above ", answer.size(),
                     " resumed tokens, got ", max_answer_tokens));
  }
  for (const int32_t token : answer) {
    if (token < 0 || token >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("resumed token ", token, " out of range"));
    }
  }
  const auto n_prefix = static_cast<int64_t>(prompt.prefix.size());
  int64_t total_rows = n_prefix;
  for (const std::vector<int32_t>& document : prompt.documents) {
    const int64_t rows =
        static_cast<int64_t>(document.size() + prompt.suffix.size()) + max_answer_tokens;
    if (n_prefix + static_cast<int64_t>(document.size() + prompt.suffix.size()) == 0) {
      return absl::InvalidArgumentError("a stream has no prompt token");
    }
    if (config.n_ctx_train > 0 && n_prefix + rows > config.n_ctx_train) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a stream needs ", n_prefix + rows, " positions; the model has ", config.n_ctx_train));
    }
    total_rows += rows;
  }

  KvCache cache(config, attention::KvDType::kF32, total_rows);
  std::unique_ptr<DocumentStreams> streams(
      new DocumentStreams(transformer, std::move(cache), max_answer_tokens));
  const SequenceId root = streams->cache_.NewSequence();
  std::vector<float> logits;
  if (n_prefix > 0) {
    const std::vector<int32_t> positions = Iota(0, n_prefix);
    const SequenceInput input{.sequence = root,
                              .tokens = prompt.prefix,
                              .positions = positions,
                              .logits = LogitsWanted::kNone};
    SILO_RETURN_IF_ERROR(transformer.Forward({&input, 1}, streams->cache_, logits));
  }

  // Every stream's document and suffix in one batch.
  const size_t n_documents = prompt.documents.size();
  std::vector<std::vector<int32_t>> tokens(n_documents);
  std::vector<std::vector<int32_t>> positions(n_documents);
  std::vector<SequenceInput> batch;
  batch.reserve(n_documents);
  for (size_t k = 0; k < n_documents; ++k) {
    SILO_ASSIGN_OR_RETURN(const SequenceId sequence, streams->cache_.Fork(root));
    streams->sequences_.push_back(sequence);
    tokens[k] = prompt.documents[k];
    tokens[k].insert(tokens[k].end(), prompt.suffix.begin(), prompt.suffix.end());
    streams->prompt_lengths_.push_back(static_cast<int32_t>(n_prefix + tokens[k].size()));
    tokens[k].insert(tokens[k].end(), answer.begin(), answer.end());
    positions[k] = Iota(static_cast<int32_t>(n_prefix), static_cast<int64_t>(tokens[k].size()));
    batch.push_back({.sequence = sequence,
                     .tokens = tokens[k],
                     .positions = positions[k],
                     .logits = LogitsWanted::kLast});
  }
  SILO_RETURN_IF_ERROR(transformer.Forward(batch, streams->cache_, streams->logits_));
  streams->n_answer_tokens_ = static_cast<int32_t>(answer.size());
  return streams;
}

absl::Status DocumentStreams::Append(int32_t token, const std::atomic<bool>* cancel) {
  if (token < 0 || token >= vocab_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, " outside the vocabulary of ", vocab_size_));
  }
  if (n_answer_tokens_ >= max_answer_tokens_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the streams hold at most ", max_answer_tokens_, " answer tokens"));
  }
  CancelAtLayerBoundary hook(cancel);
  const size_t n = sequences_.size();
  std::vector<int32_t> positions(n);
  std::vector<SequenceInput> batch;
  batch.reserve(n);
  for (size_t k = 0; k < n; ++k) {
    positions[k] = prompt_lengths_[k] + n_answer_tokens_;
    batch.push_back({.sequence = sequences_[k],
                     .tokens = {&token, 1},
                     .positions = {&positions[k], 1},
                     .logits = LogitsWanted::kLast,
                     .hook = cancel != nullptr ? &hook : nullptr});
  }
  std::vector<float> logits;
  SILO_RETURN_IF_ERROR(transformer_.Forward(batch, cache_, logits));
  logits_ = std::move(logits);
  ++n_answer_tokens_;
  return absl::OkStatus();
}

absl::Status DocumentStreams::Truncate(int32_t n_answer_tokens) {
  if (n_answer_tokens < 0 || n_answer_tokens > n_answer_tokens_) {
    return absl::InvalidArgumentError(absl::StrCat("cannot truncate to ", n_answer_tokens,
                                                   " answer tokens of ", n_answer_tokens_));
  }
  if (n_answer_tokens == n_answer_tokens_) return absl::OkStatus();
  for (size_t k = 0; k < sequences_.size(); ++k) {
    // The prefix is shared; a stream's own rows are its document, suffix and answer.
    SILO_RETURN_IF_ERROR(
        cache_.Truncate(sequences_[k], prompt_lengths_[k] + int64_t{n_answer_tokens}));
  }
  n_answer_tokens_ = n_answer_tokens;
  logits_.clear();
  return absl::OkStatus();
}

}  // namespace silo::engine
