#include "node/fedrag_key_exchange.h"

#include <algorithm>
#include <cstring>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::node {
namespace {

constexpr size_t kSessionIdBytes = 16;
constexpr size_t kMaxSignatureBytes = 512;
constexpr size_t kMaxCertificateChainBytes = size_t{16} * 1024;

std::span<const uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::string ToString(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The signed half carried in a message, with its sizes checked.
absl::StatusOr<crypto::SignedEphemeral> SignedHalfOf(const std::string& public_key,
                                                     const std::string& signature,
                                                     const std::string& chain_pem) {
  if (public_key.size() != crypto::kX25519KeySize) {
    return absl::InvalidArgumentError(
        StrCat("the ephemeral public key must be ", crypto::kX25519KeySize, " bytes"));
  }
  if (signature.empty() || signature.size() > kMaxSignatureBytes) {
    return absl::InvalidArgumentError(
        StrCat("the signature must be 1 to ", kMaxSignatureBytes, " bytes"));
  }
  if (chain_pem.empty() || chain_pem.size() > kMaxCertificateChainBytes) {
    return absl::InvalidArgumentError(
        StrCat("the certificate chain must be 1 to ", kMaxCertificateChainBytes, " bytes"));
  }
  crypto::SignedEphemeral half;
  std::memcpy(half.public_key.data(), public_key.data(), public_key.size());
  half.signature.assign(signature.begin(), signature.end());
  return half;
}

// The peer's verified half: its chain leads to the CA and names the institution or device
// `expected_id`, and the half is signed by that certificate's key.
absl::StatusOr<crypto::VerifiedPeerEphemeral> VerifyPeerHalf(const KeyExchangeSigner& signer,
                                                             const std::string& chain_pem,
                                                             std::string_view expected_id,
                                                             std::string_view session_id,
                                                             std::string_view peer_role_label,
                                                             const crypto::SignedEphemeral& half) {
  SILO_ASSIGN_OR_RETURN(const crypto::PeerIdentity identity,
                        crypto::VerifyPeerCertificate(signer.ca_pem, chain_pem));
  if (identity.node_id != expected_id || (identity.role != crypto::PeerRole::kInstitution &&
                                          identity.role != crypto::PeerRole::kDevice)) {
    return absl::PermissionDeniedError(StrCat("the key exchange is signed by ",
                                              crypto::SpiffeId(identity), ", not by node '",
                                              expected_id, "'"));
  }
  SILO_ASSIGN_OR_RETURN(const crypto::VerifyingKey key,
                        crypto::VerifyingKey::FromCertificatePem(chain_pem));
  return crypto::VerifyPeerEphemeral(key, Bytes(session_id), peer_role_label, half);
}

}  // namespace

absl::StatusOr<QuerierKeyExchange> QuerierKeyExchange::Start(const KeyExchangeSigner& signer,
                                                             std::string_view session_id) {
  if (session_id.size() != kSessionIdBytes) {
    return absl::InvalidArgumentError(StrCat("the session id must be ", kSessionIdBytes, " bytes"));
  }
  SILO_ASSIGN_OR_RETURN(
      crypto::OwnEphemeral own,
      crypto::CreateSignedEphemeral(signer.key, Bytes(session_id), crypto::kQuerierRole));
  v1::ExchangeKeysRequest request;
  request.mutable_session()->set_value(std::string(session_id));
  request.set_ephemeral_public_key(ToString(own.signed_half.public_key));
  request.set_signature(ToString(own.signed_half.signature));
  request.set_certificate_chain_pem(signer.certificate_pem);
  return QuerierKeyExchange(std::move(own), std::string(session_id), std::move(request));
}

absl::StatusOr<crypto::SecretBytes> QuerierKeyExchange::Finish(
    const KeyExchangeSigner& signer, const v1::ExchangeKeysResponse& response,
    std::string_view owner_id) const {
  SILO_ASSIGN_OR_RETURN(const crypto::SignedEphemeral half,
                        SignedHalfOf(response.ephemeral_public_key(), response.signature(),
                                     response.certificate_chain_pem()));
  SILO_ASSIGN_OR_RETURN(const crypto::VerifiedPeerEphemeral peer,
                        VerifyPeerHalf(signer, response.certificate_chain_pem(), owner_id,
                                       session_id_, crypto::kOwnerRole, half));
  return crypto::DeriveSessionSecret(own_.key_pair, peer, Bytes(session_id_));
}

absl::StatusOr<OwnerKeyExchange> AnswerKeyExchange(const KeyExchangeSigner& signer,
                                                   const v1::ExchangeKeysRequest& request,
                                                   const crypto::PeerIdentity& caller) {
  const std::string& session_id = request.session().value();
  if (session_id.size() != kSessionIdBytes) {
    return absl::InvalidArgumentError(StrCat("the session id must be ", kSessionIdBytes, " bytes"));
  }
  SILO_ASSIGN_OR_RETURN(const crypto::SignedEphemeral half,
                        SignedHalfOf(request.ephemeral_public_key(), request.signature(),
                                     request.certificate_chain_pem()));
  SILO_ASSIGN_OR_RETURN(const crypto::VerifiedPeerEphemeral peer,
                        VerifyPeerHalf(signer, request.certificate_chain_pem(), caller.node_id,
                                       session_id, crypto::kQuerierRole, half));
  SILO_ASSIGN_OR_RETURN(
      const crypto::OwnEphemeral own,
      crypto::CreateSignedEphemeral(signer.key, Bytes(session_id), crypto::kOwnerRole));
  SILO_ASSIGN_OR_RETURN(crypto::SecretBytes secret,
                        crypto::DeriveSessionSecret(own.key_pair, peer, Bytes(session_id)));
  OwnerKeyExchange answer{.response = {}, .session_secret = std::move(secret)};
  answer.response.set_ephemeral_public_key(ToString(own.signed_half.public_key));
  answer.response.set_signature(ToString(own.signed_half.signature));
  answer.response.set_certificate_chain_pem(signer.certificate_pem);
  return answer;
}

}  // namespace silo::node
