// Mutual TLS for every federation channel (DESIGN §9): a node loads its CA, certificate and key
// once (LoadTlsMaterial), builds its gRPC server and channel credentials from them, and each RPC
// learns who called it from the caller's client certificate (CallerIdentity).
//
// Only the federation CA is trusted, on both ends, never the system's roots; servers require and
// verify a client certificate. A client checks that the server's certificate names the host it
// dialled (a DNS or IP subjectAltName: make-dev-ca --host), as gRPC always does.
//
// Thread-safety: LoadTlsMaterial and the factories are free functions without shared state.
// TlsMaterial is a move-only value; its const uses may run concurrently. CallerIdentity may run
// on any RPC's context from the thread that handles that RPC.
#ifndef SILO_CRYPTO_MTLS_H_
#define SILO_CRYPTO_MTLS_H_

#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/channel_arguments.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/certificate.h"
#include "crypto/secret_bytes.h"

namespace silo::crypto {

// Largest message on a federation channel, either way: 128 MiB (proto/silo/v1/common.proto).
inline constexpr int kMaxFederationMessageBytes = 134217728;

// Where a node's TLS files are.
struct TlsFiles {
  std::string ca_file;    // federation CA certificate(s), PEM
  std::string cert_file;  // this node's certificate (then any intermediates), PEM
  std::string key_file;   // this node's unencrypted private key, PEM
};

// A node's checked TLS files in memory and the identity its certificate names.
//
// The private key's PEM text is held in SecretBytes, so it is wiped when the material is
// destroyed and TlsMaterial cannot be copied by accident; the credentials factories wipe the
// temporary copies they hand to gRPC (gRPC keeps its own copy inside the credentials).
struct TlsMaterial {
  std::string ca_pem;
  std::string cert_pem;
  SecretBytes key_pem;
  PeerIdentity identity;  // from cert_pem's spiffe://silo/<role>/<id> URI
};

// Reads the three files (ReadPemFile), checks them (CheckCertificateFiles) and extracts the
// node's identity (PeerIdentityFromCertificatePem). The key file's text is wiped from every
// buffer but the returned SecretBytes. Codes as those functions return them; messages name the
// file at fault and never hold key bytes.
absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files);

// Server credentials that present `material`'s certificate, and require every client to present
// a certificate that verifies against `material`'s CA
// (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY): a client without one, or with
// one of another CA, fails in the handshake.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsMaterial& material);

// Channel credentials that trust only `material`'s CA for the server and present `material`'s
// certificate as client certificate.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TlsMaterial& material);

// gRPC retries a lost connection after a backoff that grows up to 120 s, and a call meanwhile
// fails at once: a peer that restarted (a cloud back at its address) would stay unreachable from
// this process for minutes. A federation channel retries at most this far apart.
inline constexpr int kMaxReconnectBackoffMs = 2000;

// Channel arguments of a federation channel: max send and receive message size
// kMaxFederationMessageBytes, and a lost connection retried at most kMaxReconnectBackoffMs apart.
// Pass them to grpc::CreateCustomChannel.
grpc::ChannelArguments FederationChannelArguments();

// Sets a federation server's max send and receive message size to kMaxFederationMessageBytes.
void ApplyFederationServerLimits(grpc::ServerBuilder& builder);

// The identity of the caller of an RPC, from the client certificate of its TLS connection
// (the auth context's "x509_pem_cert" property) parsed with PeerIdentityFromCertificatePem.
// Works for sync (grpc::ServerContext) and callback (grpc::CallbackServerContext) services.
//   Unauthenticated  the connection is not TLS with a verified client certificate, or the
//                    certificate names no valid silo identity
absl::StatusOr<PeerIdentity> CallerIdentity(const grpc::ServerContextBase& context);

// The identity of the server of a finished client call, from its TLS certificate; a node checks
// it before it sends a peer what only that peer may see. Unauthenticated as CallerIdentity.
absl::StatusOr<PeerIdentity> ServerIdentity(const grpc::ClientContext& context);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_MTLS_H_
