// What a curious compute node holds at the layer it attacks, for the privacy harness: every
// key's K′ and V′ as uploaded and every step's query rows as received, made from plaintext
// states (privacy_states.h) by the production scrambler (node::FedRagScrambler, the code owners
// and the querier run), or by one of the baselines that each attack must visibly break:
//   plaintext     K, V and q as they are (one key per owner);
//   permutation   rows permuted and hidden dimensions permuted (permutation-based secure
//                 inference): K′ = ΠKP, q′ = qP, V′ = ΠVP';
//   orthogonal    rows permuted and a Haar-random orthogonal mix: K′ = ΠKQ, q′ = qQ, V′ = ΠVQ'.
// Query rows are shuffled afresh per message and KV head, as node::FedRagSession does. With
// protect_layers N the compute node sees no layer below N, so the view is of layer N.
//
// Beside each row the view keeps the ground truth (token and position) for scoring; attacks
// must not read it.
//
// Thread-safety: pure functions.
#ifndef SILO_EVAL_PRIVACY_VIEWS_H_
#define SILO_EVAL_PRIVACY_VIEWS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/privacy_states.h"
#include "silo/v1/common.pb.h"

namespace silo::eval {

enum class ViewKind { kPlaintext, kPermutation, kOrthogonal, kFedRag };

struct ObserverSetting {
  std::string name;
  ViewKind kind = ViewKind::kFedRag;
  // kFedRag: key scope, block rows and mixer. Every kind: protect_layers picks the layer seen.
  v1::PrivacySettings privacy;
  v1::DType wire = v1::DTYPE_F32;  // K′/V′ on the wire (kFedRag)
};

// One key as the compute node holds it.
struct ObservedKey {
  int32_t owner = 0, kv_head = 0, key_index = 0;
  int32_t n_rows = 0, dim = 0;
  std::vector<float> k, v;                // [n_rows, dim], decoded from the wire
  std::vector<int32_t> layout_positions;  // the key's virtual positions, ascending (see below)
  std::vector<std::vector<float>> q;      // [step]: [query rows, dim] as received
  // Ground truth, for scoring only: token and position of each received row, and its plain
  // K row (after RoPE) and V row, [n_rows, head_dim] each.
  std::vector<int32_t> row_token, row_position;
  std::vector<float> truth_k, truth_v;
};

// The attacker is granted the session's layout (which virtual positions each key's rows occupy,
// not their order, and the positions of the query tokens): a compute node can guess it from
// row counts and the prompt template, and granting it makes the attacks stronger, not weaker.
struct ObservedLayer {
  int32_t layer = 0;
  float scale = 0;    // of the scores, 1/sqrt(head_dim)
  int32_t group = 0;  // query heads per KV head
  std::vector<ObservedKey> keys;
  std::vector<std::vector<int32_t>> step_positions;  // [step]: query tokens' positions
  // Ground truth: [step] tokens; [step][kv_head] the query token index and the head in the group
  // of each received row.
  std::vector<std::vector<int32_t>> step_tokens;
  std::vector<std::vector<std::vector<int32_t>>> q_row_token, q_row_head;
};

// The view of `setting` over the states' layer protect_layers (which must be recorded).
// InvalidArgument for an unrecorded layer or bad settings; the scrambler's errors.
absl::StatusOr<ObservedLayer> ObserveLayer(const PlainSessionStates& states,
                                           const ObserverSetting& setting, uint64_t seed);

}  // namespace silo::eval

#endif  // SILO_EVAL_PRIVACY_VIEWS_H_
