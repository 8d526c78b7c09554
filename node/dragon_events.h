// DRAGON's messages (node/dragon_peer.h) in and out of the `event` oneof of the
// DragonService.Decode stream: DecodeRequest (device → cloud) and DecodeResponse (cloud → device)
// carry the same three events.
//
// Thread-safety: free functions.
#ifndef SILO_NODE_DRAGON_EVENTS_H_
#define SILO_NODE_DRAGON_EVENTS_H_

#include <optional>
#include <utility>
#include <variant>

#include "node/dragon_peer.h"
#include "silo/v1/node.pb.h"

namespace silo::node {

// A DecodeRequest or DecodeResponse whose event is `message`.
template <typename Envelope>
Envelope EnvelopeOf(const DragonMessage& message) {
  Envelope envelope;
  if (const auto* draft = std::get_if<v1::Draft>(&message)) {
    *envelope.mutable_draft() = *draft;
  } else if (const auto* verdict = std::get_if<v1::Verdict>(&message)) {
    *envelope.mutable_verdict() = *verdict;
  } else {
    *envelope.mutable_handoff() = std::get<v1::AggregatorHandoff>(message);
  }
  return envelope;
}

// The event of a DecodeRequest or DecodeResponse, moved out; nullopt when it carries none.
template <typename Envelope>
std::optional<DragonMessage> TakeEvent(Envelope& envelope) {
  switch (envelope.event_case()) {
    case Envelope::kDraft:
      return std::move(*envelope.mutable_draft());
    case Envelope::kVerdict:
      return std::move(*envelope.mutable_verdict());
    case Envelope::kHandoff:
      return std::move(*envelope.mutable_handoff());
    default:
      return std::nullopt;
  }
}

}  // namespace silo::node

#endif  // SILO_NODE_DRAGON_EVENTS_H_
