// Federation identities and certificates (DESIGN §9).
//
// Every node holds an X.509 certificate signed by the federation CA
// (deploy/certs/make-dev-ca makes development ones). Its one subjectAltName URI
// "spiffe://silo/<role>/<id>" is the node's identity: the role decides which RPCs it may call,
// the id names it in the federation. This file parses those identities and checks a node's own
// certificate files before a server or channel is built on them (crypto/mtls.h).
//
// Messages never contain key bytes: a private key is named, never echoed.
//
// Thread-safety: free functions without shared state; safe to call concurrently.
#ifndef SILO_CRYPTO_CERTIFICATE_H_
#define SILO_CRYPTO_CERTIFICATE_H_

#include <cstddef>
#include <iosfwd>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace silo::crypto {

// What a federation member is (proto silo.v1.NodeRole without UNSPECIFIED).
enum class PeerRole { kInstitution, kDevice, kCompute, kCoordinator, kOperator };

// "institution", "device", "compute", "coordinator" or "operator": the role's name in
// certificates and configuration files.
std::string_view PeerRoleName(PeerRole role);

// The role named `name` (exactly as PeerRoleName writes it). InvalidArgument otherwise.
absl::StatusOr<PeerRole> ParsePeerRole(std::string_view name);

// A node id is 1 to 64 characters of [A-Za-z0-9._-], and not "." or ".." (SPIFFE forbids them
// as path segments): the rule of make-dev-ca.
inline constexpr size_t kMaxNodeIdLength = 64;

// OK when `node_id` follows the rule above; InvalidArgument otherwise.
absl::Status CheckNodeId(std::string_view node_id);

// Who a federation member is, as its certificate says.
struct PeerIdentity {
  PeerRole role;
  std::string node_id;

  friend bool operator==(const PeerIdentity&, const PeerIdentity&) = default;
  // GoogleTest's printer: the SPIFFE id.
  friend void PrintTo(const PeerIdentity& identity, std::ostream* os);
};

// "spiffe://silo/<role>/<node_id>".
std::string SpiffeId(const PeerIdentity& identity);

// The identity of a URI "spiffe://silo/<role>/<node_id>" (lower-case scheme and trust domain,
// a role of PeerRoleName, a node id of CheckNodeId, nothing else: no port, query, fragment or
// further path segment). InvalidArgument for anything else.
absl::StatusOr<PeerIdentity> ParseSpiffeId(std::string_view uri);

// The identity in the first X.509 "CERTIFICATE" PEM block of `pem`: its one subjectAltName URI
// that starts with "spiffe://silo/" (other URIs are ignored). The certificate is not verified
// here (CheckCertificateFiles and the TLS handshake do that). InvalidArgument when `pem` holds
// no certificate, the certificate has no such URI or two of them, or the URI does not parse
// with ParseSpiffeId.
absl::StatusOr<PeerIdentity> PeerIdentityFromCertificatePem(std::string_view pem);

// Largest PEM file ReadPemFile accepts.
inline constexpr size_t kMaxPemFileBytes = size_t{1} << 20;  // 1 MiB

// The contents of the PEM file at `path`. The text is read into one allocation of the file's
// size and never copied, so a caller reading a private key can wipe the returned string
// (OPENSSL_cleanse) and leave no other copy in memory.
//   NotFound          no such file
//   PermissionDenied  the file cannot be read
//   InvalidArgument   not a regular file, larger than kMaxPemFileBytes, or holds no
//                     "-----BEGIN " line
//   Internal          another I/O error
absl::StatusOr<std::string> ReadPemFile(const std::string& path);

// Checks the PEM texts of a node's TLS files before they are used: the private key belongs to
// the certificate, the certificate chains to a certificate of `ca_pem` (only those are trusted,
// never the system's roots; certificates after the first one of `cert_pem` are its intermediate
// chain), every certificate of the chain is within its validity period, and the certificate may
// serve as TLS server and TLS client (extendedKeyUsage serverAuth and clientAuth, or none).
//   InvalidArgument     a text holds no certificate or key or does not decode (an encrypted key
//                       included), the key is another certificate's, the chain does not verify,
//                       or the certificate is not for TLS server and client
//   FailedPrecondition  the certificate or its CA has expired or is not valid yet
// Each message names the file it is about ("CA certificate", "certificate", "private key").
absl::Status CheckCertificateFiles(std::string_view ca_pem, std::string_view cert_pem,
                                   std::string_view key_pem);

// The identity of a peer's certificate (`cert_pem`: the certificate, then its intermediates)
// after checking that it chains to a certificate of `ca_pem` and is within its validity
// period; a FedRAG key exchange checks the signer's certificate this way. The codes of
// CheckCertificateFiles for the chain, then those of PeerIdentityFromCertificatePem.
absl::StatusOr<PeerIdentity> VerifyPeerCertificate(std::string_view ca_pem,
                                                   std::string_view cert_pem);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_CERTIFICATE_H_
