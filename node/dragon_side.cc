#include "node/dragon_side.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/document_streams.h"

namespace silo::node {

absl::StatusOr<std::vector<retrieval::SearchHit>> RetrieveDragonChunks(
    const retrieval::KnowledgeBase& corpus, std::string_view question, int32_t top_k) {
  if (top_k == 0) return std::vector<retrieval::SearchHit>{};
  return corpus.Search(question, top_k);
}

absl::StatusOr<DragonPeerOptions> DragonPeerOptionsOf(const v1::StartSessionRequest& session,
                                                      v1::DragonSide side) {
  DragonPeerOptions options;
  options.side = side;
  options.aggregator = session.aggregator();
  if (session.max_tokens() < 1 || session.max_tokens() > kMaxDragonTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be in [1, ", kMaxDragonTokens, "]"));
  }
  options.max_tokens = static_cast<int32_t>(session.max_tokens());
  const v1::SamplingParams& sampling = session.sampling();
  if ((sampling.top_p() != 0 && sampling.top_p() != 1) || sampling.top_k() != 0) {
    return absl::InvalidArgumentError(
        "DRAGON samples the mixture at the temperature; top_k and top_p sampling are not offered");
  }
  options.temperature = sampling.temperature();
  options.seed = sampling.seed();
  const float top_p = session.distribution_top_p();
  if (!(top_p >= 0 && top_p <= 1)) {
    return absl::InvalidArgumentError("distribution_top_p must be in [0, 1]");
  }
  options.distribution_top_p = top_p == 0 ? 1 : top_p;
  const v1::DragonSettings& settings = session.settings();
  if (settings.has_max_lookahead()) {
    if (settings.max_lookahead() > kMaxDragonLookahead) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_lookahead must be at most ", kMaxDragonLookahead));
    }
    options.max_lookahead = static_cast<int32_t>(settings.max_lookahead());
  }
  switch (settings.policy()) {
    case v1::DRAGON_POLICY_UNSPECIFIED:
    case v1::DRAGON_POLICY_SCHEDULED:
      options.policy = AggregatorPolicy::kScheduled;
      break;
    case v1::DRAGON_POLICY_FIXED:
      options.policy = AggregatorPolicy::kFixed;
      break;
    case v1::DRAGON_POLICY_ALTERNATE:
      if (settings.alternate_every() < 1 || settings.alternate_every() > kMaxDragonAlternateEvery) {
        return absl::InvalidArgumentError(
            absl::StrCat("alternate_every must be in [1, ", kMaxDragonAlternateEvery, "]"));
      }
      options.policy = AggregatorPolicy::kAlternate;
      options.alternate_every = static_cast<int32_t>(settings.alternate_every());
      break;
    default:
      return absl::InvalidArgumentError("unknown DRAGON policy");
  }
  if (session.resume_tokens_size() >= options.max_tokens) {
    return absl::InvalidArgumentError("a resumed session must leave tokens to generate");
  }
  options.confirmed_prefix.assign(session.resume_tokens().begin(), session.resume_tokens().end());
  SILO_RETURN_IF_ERROR(ValidateDragonPeerOptions(options));
  return options;
}

std::vector<int32_t> StopTokensOf(const engine::Tokenizer& tokenizer) {
  std::vector<int32_t> stops;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.IsEndOfGeneration(id)) stops.push_back(id);
  }
  return stops;
}

absl::StatusOr<DragonSideResult> RunDragonSide(
    engine::Transformer& transformer, const engine::RagPromptBuilder& prompts,
    std::string_view question, std::span<const retrieval::SearchHit> hits,
    DragonPeerOptions options, DragonInbox& inbox, const DragonSend& send,
    const std::function<void(int32_t)>& on_token,
    const std::function<absl::Status()>& streams_started) {
  const absl::Time start = absl::Now();
  const engine::RagPrompt frame = prompts.Build(question, {});
  engine::DocumentStreamsPrompt prompt{
      .prefix = frame.prefix, .documents = {}, .suffix = frame.suffix};
  std::vector<float> scores;
  for (const retrieval::SearchHit& hit : hits) {
    prompt.documents.push_back(prompts.EncodeChunk(hit.text));
    scores.push_back(hit.score);
  }
  if (hits.empty()) {
    // No chunk: one stream over the question alone.
    prompt.documents.emplace_back();
    scores.push_back(0);
  }
  DragonSideResult result;
  result.n_prompt_tokens = static_cast<int32_t>(prompt.prefix.size());
  for (const std::vector<int32_t>& document : prompt.documents) {
    result.n_prompt_tokens += static_cast<int32_t>(document.size() + prompt.suffix.size());
  }
  SILO_ASSIGN_OR_RETURN(std::unique_ptr<engine::DocumentStreams> streams,
                        engine::DocumentStreams::Start(transformer, prompt, options.max_tokens,
                                                       options.confirmed_prefix));
  result.prefill = absl::Now() - start;
  if (streams_started) SILO_RETURN_IF_ERROR(streams_started());
  if (options.stop_tokens.empty()) options.stop_tokens = StopTokensOf(prompts.tokenizer());
  SILO_ASSIGN_OR_RETURN(result.peer,
                        RunDragonPeer(*streams, scores, options, inbox, send, on_token));
  return result;
}

}  // namespace silo::node
