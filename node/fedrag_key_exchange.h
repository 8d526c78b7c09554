// Both halves of FedRAG's per-session key exchange on the wire (DESIGN.md §6, Keys): the querier
// sends a signed ephemeral X25519 half with its certificate, the owner checks the certificate
// against the federation CA and against the mTLS caller, answers with its own signed half, and
// both derive the session secret that seeds every Φ, Ψ and Π of the session. Neither the
// coordinator nor the compute node takes part, so neither ever holds the secret.
//
//   querier: QuerierKeyExchange exchange = Start(signer, session_id)
//            ... send exchange.request(), receive the response ...
//            secret = exchange.Finish(response, owner_id)
//   owner:   {response, secret} = AnswerKeyExchange(signer, request, caller, session_id)
//
// Thread-safe: pure functions; a QuerierKeyExchange is used by one thread.
#ifndef SILO_NODE_FEDRAG_KEY_EXCHANGE_H_
#define SILO_NODE_FEDRAG_KEY_EXCHANGE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/certificate.h"
#include "crypto/key_exchange.h"
#include "crypto/secret_bytes.h"
#include "crypto/signing.h"
#include "silo/v1/node.pb.h"

namespace silo::node {

// What a node signs with and what it trusts: its certificate key, its certificate chain (sent
// to the peer) and the federation CA (the peer's chain must lead to it).
struct KeyExchangeSigner {
  crypto::SigningKey key;
  std::string certificate_pem;
  std::string ca_pem;
};

class QuerierKeyExchange {
 public:
  // InvalidArgument for a session id that is not 16 bytes; Internal when OpenSSL fails.
  static absl::StatusOr<QuerierKeyExchange> Start(const KeyExchangeSigner& signer,
                                                  std::string_view session_id);

  const v1::ExchangeKeysRequest& request() const { return request_; }

  // The session secret, once the owner's answer checks out: its certificate chains to the CA
  // and names the institution or device `owner_id`, and its half is signed by that certificate for
  // this session. InvalidArgument for a malformed answer, PermissionDenied for a certificate of
  // another node, Unauthenticated for a bad signature.
  absl::StatusOr<crypto::SecretBytes> Finish(const KeyExchangeSigner& signer,
                                             const v1::ExchangeKeysResponse& response,
                                             std::string_view owner_id) const;

 private:
  QuerierKeyExchange(crypto::OwnEphemeral own, std::string session_id,
                     v1::ExchangeKeysRequest request)
      : own_(std::move(own)), session_id_(std::move(session_id)), request_(std::move(request)) {}

  crypto::OwnEphemeral own_;
  std::string session_id_;
  v1::ExchangeKeysRequest request_;
};

struct OwnerKeyExchange {
  v1::ExchangeKeysResponse response;
  crypto::SecretBytes session_secret;
};

// The owner's answer to `request` from the mTLS peer `caller`, and the session secret. The
// request's certificate must chain to the CA and name `caller` (an institution or device); its half
// must be signed by it for `request.session()`. InvalidArgument (malformed), PermissionDenied (a
// certificate of another node than the caller), Unauthenticated (bad signature), Internal
// (OpenSSL).
absl::StatusOr<OwnerKeyExchange> AnswerKeyExchange(const KeyExchangeSigner& signer,
                                                   const v1::ExchangeKeysRequest& request,
                                                   const crypto::PeerIdentity& caller);

}  // namespace silo::node

#endif  // SILO_NODE_FEDRAG_KEY_EXCHANGE_H_
