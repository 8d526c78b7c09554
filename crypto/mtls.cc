#include "crypto/mtls.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>
#include <openssl/crypto.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "common/strings.h"

namespace silo::crypto {
namespace {

// A std::string that is wiped when it goes out of scope, for the copies of the private key that
// gRPC's option structs need.
class WipedString {
 public:
  explicit WipedString(std::string* text) : text_(text) {}
  WipedString(const WipedString&) = delete;
  WipedString& operator=(const WipedString&) = delete;
  ~WipedString() { OPENSSL_cleanse(text_->data(), text_->size()); }

 private:
  std::string* text_;
};

std::string_view AsText(const SecretBytes& bytes) {
  return {reinterpret_cast<const char*>(bytes.span().data()), bytes.size()};
}

// `status` with the paths of `files` appended, so that the file at fault can be found.
absl::Status WithFiles(const absl::Status& status, const TlsFiles& files) {
  return absl::Status(status.code(),
                      StrCat(status.message(), " [CA file ", files.ca_file, ", certificate file ",
                             files.cert_file, ", key file ", files.key_file, "]"));
}

}  // namespace

absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files) {
  TlsMaterial material;
  SILO_ASSIGN_OR_RETURN(material.ca_pem, ReadPemFile(files.ca_file));
  SILO_ASSIGN_OR_RETURN(material.cert_pem, ReadPemFile(files.cert_file));
  {
    SILO_ASSIGN_OR_RETURN(std::string key_text, ReadPemFile(files.key_file));
    WipedString wipe(&key_text);
    material.key_pem = SecretBytes::FromBytes(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(key_text.data()), key_text.size()));
  }
  if (absl::Status status =
          CheckCertificateFiles(material.ca_pem, material.cert_pem, AsText(material.key_pem));
      !status.ok()) {
    return WithFiles(status, files);
  }
  absl::StatusOr<PeerIdentity> identity = PeerIdentityFromCertificatePem(material.cert_pem);
  if (!identity.ok()) return WithFiles(identity.status(), files);
  material.identity = *std::move(identity);
  return material;
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsMaterial& material) {
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = material.ca_pem;
  options.pem_key_cert_pairs.push_back({std::string(AsText(material.key_pem)), material.cert_pem});
  WipedString wipe(&options.pem_key_cert_pairs.front().private_key);
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(const TlsMaterial& material) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = material.ca_pem;
  options.pem_private_key = std::string(AsText(material.key_pem));
  WipedString wipe(&options.pem_private_key);
  options.pem_cert_chain = material.cert_pem;
  return grpc::SslCredentials(options);
}

grpc::ChannelArguments FederationChannelArguments() {
  grpc::ChannelArguments arguments;
  arguments.SetMaxSendMessageSize(kMaxFederationMessageBytes);
  arguments.SetMaxReceiveMessageSize(kMaxFederationMessageBytes);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs / 4);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  return arguments;
}

void ApplyFederationServerLimits(grpc::ServerBuilder& builder) {
  builder.SetMaxSendMessageSize(kMaxFederationMessageBytes);
  builder.SetMaxReceiveMessageSize(kMaxFederationMessageBytes);
}

namespace {

// The silo identity of the peer certificate of an authenticated connection; `side` names the
// peer in messages ("caller", "server").
absl::StatusOr<PeerIdentity> PeerIdentityOf(const grpc::AuthContext* auth, std::string_view side) {
  if (auth == nullptr || !auth->IsPeerAuthenticated()) {
    return absl::UnauthenticatedError(
        StrCat(side, " is not authenticated (no verified TLS certificate)"));
  }
  const std::vector<grpc::string_ref> certificates =
      auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (certificates.empty()) {
    return absl::UnauthenticatedError(StrCat(side, " presented no certificate"));
  }
  const std::string_view pem(certificates.front().data(), certificates.front().size());
  absl::StatusOr<PeerIdentity> identity = PeerIdentityFromCertificatePem(pem);
  if (!identity.ok()) {
    return absl::UnauthenticatedError(
        StrCat(side, "'s certificate names no silo identity: ", identity.status().message()));
  }
  return identity;
}

}  // namespace

absl::StatusOr<PeerIdentity> CallerIdentity(const grpc::ServerContextBase& context) {
  return PeerIdentityOf(context.auth_context().get(), "caller");
}

absl::StatusOr<PeerIdentity> ServerIdentity(const grpc::ClientContext& context) {
  return PeerIdentityOf(context.auth_context().get(), "server");
}

}  // namespace silo::crypto
