// One decode stream per retrieved document, all advanced by one batched forward pass per step
// (DRAGON, DESIGN.md §7). Stream k reads [prefix][document_k][suffix][generated...]: the prefix
// (system prompt) is computed once and shared by every stream through KvCache::Fork, each
// document and the suffix (question, assistant header) are prefilled per stream in one batch,
// and every generated token is fed to all streams at once. Truncate rolls all streams back to a
// shorter answer (a rejected draft); Append can be cancelled at a layer boundary.
//
// Thread-safety: one thread drives a DocumentStreams (it owns its cache and uses the
// Transformer); the cancel flag may be set from any thread.
#ifndef SILO_ENGINE_DOCUMENT_STREAMS_H_
#define SILO_ENGINE_DOCUMENT_STREAMS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/transformer.h"

namespace silo::engine {

struct DocumentStreamsPrompt {
  std::vector<int32_t> prefix;                  // shared by every stream (may be empty)
  std::vector<std::vector<int32_t>> documents;  // one stream each (a document may be empty)
  std::vector<int32_t> suffix;                  // after each document (may be empty)
};

class DocumentStreams {
 public:
  // Prefills the prompt for every document, followed by `answer`: answer tokens already final
  // (a resumed session), which count as answer tokens. `max_answer_tokens` bounds them and the
  // Append calls net of Truncate. InvalidArgument (no document, a stream without any token,
  // max_answer_tokens < 1 or not above answer.size(), a token out of range, a stream longer than
  // the model's n_ctx), or Transformer::Forward's errors. `transformer` must outlive the
  // streams.
  static absl::StatusOr<std::unique_ptr<DocumentStreams>> Start(
      Transformer& transformer, const DocumentStreamsPrompt& prompt, int32_t max_answer_tokens,
      std::span<const int32_t> answer = {});

  int32_t n_streams() const { return static_cast<int32_t>(sequences_.size()); }
  int32_t vocab_size() const { return vocab_size_; }
  // Answer tokens fed so far (net of Truncate).
  int32_t n_answer_tokens() const { return n_answer_tokens_; }

  // Next-token logits of every stream after the last Start or Append, [n_streams, vocab_size]
  // row-major. Empty after Truncate until the next Append.
  std::span<const float> logits() const { return logits_; }

  // Feeds `token` to every stream in one batched forward pass. If `cancel` is set (checked at
  // every layer) the pass stops with Cancelled and the streams are as before the call.
  // InvalidArgument (token out of range), ResourceExhausted (max_answer_tokens reached), or
  // Forward's errors.
  absl::Status Append(int32_t token, const std::atomic<bool>* cancel = nullptr);

  // Drops answer tokens from `n_answer_tokens` on. InvalidArgument beyond the current count.
  absl::Status Truncate(int32_t n_answer_tokens);

 private:
  DocumentStreams(Transformer& transformer, KvCache cache, int32_t max_answer_tokens)
      : transformer_(transformer),
        cache_(std::move(cache)),
        max_answer_tokens_(max_answer_tokens),
        vocab_size_(transformer.model().config().vocab_size) {}

  Transformer& transformer_;
  KvCache cache_;
  int32_t max_answer_tokens_;
  int32_t vocab_size_;
  std::vector<SequenceId> sequences_;    // one per document
  std::vector<int32_t> prompt_lengths_;  // rows of each stream before the answer
  int32_t n_answer_tokens_ = 0;
  std::vector<float> logits_;
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_DOCUMENT_STREAMS_H_
