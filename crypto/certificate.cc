#include "crypto/certificate.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <ostream>
#include <system_error>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/internal/openssl.h"

namespace silo::crypto {
namespace {

using internal::OpenSslPtr;

constexpr std::string_view kSpiffePrefix = "spiffe://silo/";

constexpr std::array<PeerRole, 5> kAllRoles = {PeerRole::kInstitution, PeerRole::kDevice,
                                               PeerRole::kCompute, PeerRole::kCoordinator,
                                               PeerRole::kOperator};

// At most this many characters of a peer-supplied string are echoed in a message.
constexpr size_t kMaxQuotedLength = 100;

// `text` in single quotes for a message: bytes outside printable ASCII become '?', and long
// text is cut. Only for identities and names, never for key material.
std::string Quoted(std::string_view text) {
  std::string quoted = "'";
  for (size_t i = 0; i < text.size() && i < kMaxQuotedLength; ++i) {
    const char c = text[i];
    quoted += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (text.size() > kMaxQuotedLength) quoted += "...";
  quoted += "'";
  return quoted;
}

// Frees the OpenSSL objects that only this file uses.
struct CertificateFree {
  void operator()(GENERAL_NAMES* names) const { GENERAL_NAMES_free(names); }
  void operator()(STACK_OF(X509) * certificates) const {
    sk_X509_pop_free(certificates, X509_free);
  }
  void operator()(X509_STORE* store) const { X509_STORE_free(store); }
  void operator()(X509_STORE_CTX* context) const { X509_STORE_CTX_free(context); }
};
template <typename T>
using CertificatePtr = std::unique_ptr<T, CertificateFree>;

// Every "CERTIFICATE" PEM block of `pem`, in order. InvalidArgument naming `what` when there is
// none or one does not decode.
absl::StatusOr<CertificatePtr<STACK_OF(X509)>> ReadCertificates(std::string_view pem,
                                                                std::string_view what) {
  SILO_ASSIGN_OR_RETURN(OpenSslPtr<BIO> bio, internal::NewMemoryBio(pem));
  CertificatePtr<STACK_OF(X509)> certificates(sk_X509_new_null());
  if (certificates == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "sk_X509_new_null failed");
  }
  while (true) {
    OpenSslPtr<X509> certificate(
        PEM_read_bio_X509(bio.get(), nullptr, internal::NoPassword, nullptr));
    if (certificate == nullptr) {
      // The end of the input reads as "no start line"; anything else is a damaged block.
      if (sk_X509_num(certificates.get()) > 0 &&
          internal::LastOpenSslErrorIs(ERR_LIB_PEM, PEM_R_NO_START_LINE)) {
        internal::ClearOpenSslErrors();
        return certificates;
      }
      return internal::OpenSslError(
          absl::StatusCode::kInvalidArgument,
          StrCat(what, ": ",
                 sk_X509_num(certificates.get()) == 0 ? "no PEM X.509 certificate"
                                                      : "a PEM certificate block does not decode"));
    }
    if (sk_X509_push(certificates.get(), certificate.get()) == 0) {
      return internal::OpenSslError(absl::StatusCode::kInternal, "sk_X509_push failed");
    }
    (void)certificate.release();  // owned by the stack now
  }
}

// The name of the certificate at `depth` of a verified chain of `chain_length` certificates.
std::string ChainMember(int depth, int chain_length) {
  if (depth <= 0) return "certificate";
  if (depth == chain_length - 1) return "CA certificate";
  return StrCat("intermediate certificate at depth ", depth);
}

}  // namespace

std::string_view PeerRoleName(PeerRole role) {
  switch (role) {
    case PeerRole::kInstitution:
      return "institution";
    case PeerRole::kDevice:
      return "device";
    case PeerRole::kCompute:
      return "compute";
    case PeerRole::kCoordinator:
      return "coordinator";
    case PeerRole::kOperator:
      return "operator";
  }
  return "unknown";
}

absl::StatusOr<PeerRole> ParsePeerRole(std::string_view name) {
  for (PeerRole role : kAllRoles) {
    if (PeerRoleName(role) == name) return role;
  }
  return absl::InvalidArgumentError(
      StrCat("unknown role ", Quoted(name),
             " (one of institution, device, compute, coordinator, operator)"));
}

absl::Status CheckNodeId(std::string_view node_id) {
  if (node_id.empty() || node_id.size() > kMaxNodeIdLength) {
    return absl::InvalidArgumentError(StrCat("node id ", Quoted(node_id), " must be 1 to ",
                                             kMaxNodeIdLength, " characters long"));
  }
  for (char c : node_id) {
    const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!allowed) {
      return absl::InvalidArgumentError(
          StrCat("node id ", Quoted(node_id), " may only hold the characters [A-Za-z0-9._-]"));
    }
  }
  if (node_id == "." || node_id == "..") {
    return absl::InvalidArgumentError(StrCat("node id ", Quoted(node_id), " is not allowed"));
  }
  return absl::OkStatus();
}

std::string SpiffeId(const PeerIdentity& identity) {
  return StrCat(kSpiffePrefix, PeerRoleName(identity.role), "/", identity.node_id);
}

void PrintTo(const PeerIdentity& identity, std::ostream* os) { *os << SpiffeId(identity); }

absl::StatusOr<PeerIdentity> ParseSpiffeId(std::string_view uri) {
  if (!uri.starts_with(kSpiffePrefix)) {
    return absl::InvalidArgumentError(
        StrCat(Quoted(uri), " is not a silo identity (spiffe://silo/<role>/<id>)"));
  }
  const std::string_view path = uri.substr(kSpiffePrefix.size());
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos) {
    return absl::InvalidArgumentError(
        StrCat(Quoted(uri), " has no node id (spiffe://silo/<role>/<id>)"));
  }
  PeerIdentity identity;
  SILO_ASSIGN_OR_RETURN(identity.role, ParsePeerRole(path.substr(0, slash)));
  const std::string_view node_id = path.substr(slash + 1);
  SILO_RETURN_IF_ERROR(CheckNodeId(node_id));
  identity.node_id = std::string(node_id);
  return identity;
}

absl::StatusOr<PeerIdentity> PeerIdentityFromCertificatePem(std::string_view pem) {
  SILO_ASSIGN_OR_RETURN(OpenSslPtr<BIO> bio, internal::NewMemoryBio(pem));
  OpenSslPtr<X509> certificate(
      PEM_read_bio_X509(bio.get(), nullptr, internal::NoPassword, nullptr));
  if (certificate == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                  "not a PEM X.509 certificate");
  }
  int critical = 0;
  CertificatePtr<GENERAL_NAMES> names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(certificate.get(), NID_subject_alt_name, &critical, nullptr)));
  if (names == nullptr) {
    // critical: -1 the extension is absent, -2 it occurs twice, otherwise it does not decode.
    if (critical == -1) {
      return absl::InvalidArgumentError("certificate has no subjectAltName, so no silo identity");
    }
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                  "certificate subjectAltName is malformed or repeated");
  }
  std::string_view found;
  int n_found = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri_string = name->d.uniformResourceIdentifier;
    const std::string_view uri(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri_string)),
                               static_cast<size_t>(ASN1_STRING_length(uri_string)));
    if (!uri.starts_with(kSpiffePrefix)) continue;
    found = uri;
    ++n_found;
  }
  if (n_found == 0) {
    return absl::InvalidArgumentError(
        "certificate has no spiffe://silo/ URI in its subjectAltName, so no silo identity");
  }
  if (n_found > 1) {
    return absl::InvalidArgumentError(StrCat("certificate has ", n_found,
                                             " spiffe://silo/ URIs in its subjectAltName; a "
                                             "silo identity needs exactly one"));
  }
  return ParseSpiffeId(found);  // `found` points into `names`, which is still alive
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      return absl::NotFoundError(StrCat("PEM file ", path, " does not exist"));
    }
    if (error == EACCES || error == EPERM) {
      return absl::PermissionDeniedError(StrCat("PEM file ", path, " cannot be read"));
    }
    return absl::InternalError(
        StrCat("cannot open PEM file ", path, ": ", std::generic_category().message(error)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};

  struct stat info;
  if (::fstat(fd, &info) != 0) {
    return absl::InternalError(
        StrCat("cannot stat PEM file ", path, ": ", std::generic_category().message(errno)));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(StrCat("PEM file ", path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(info.st_size) > kMaxPemFileBytes) {
    return absl::InvalidArgumentError(StrCat("PEM file ", path, " holds ", info.st_size,
                                             " bytes, more than the ", kMaxPemFileBytes,
                                             " a PEM file may have"));
  }
  // One allocation, never grown: no stale copy of the text is left behind in freed memory.
  std::string text(static_cast<size_t>(info.st_size), '\0');
  size_t n_read = 0;
  while (n_read < text.size()) {
    const ssize_t n = ::read(fd, text.data() + n_read, text.size() - n_read);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      OPENSSL_cleanse(text.data(), text.size());
      if (error == EACCES || error == EPERM) {
        return absl::PermissionDeniedError(StrCat("PEM file ", path, " cannot be read"));
      }
      return absl::InternalError(
          StrCat("cannot read PEM file ", path, ": ", std::generic_category().message(error)));
    }
    if (n == 0) break;  // the file shrank since fstat
    n_read += static_cast<size_t>(n);
  }
  text.resize(n_read);  // shrinking keeps the allocation
  if (text.find("-----BEGIN ") == std::string::npos) {
    OPENSSL_cleanse(text.data(), text.size());
    return absl::InvalidArgumentError(StrCat("file ", path, " is not PEM (no -----BEGIN line)"));
  }
  return text;
}

namespace {

// Verifies `certificate` with the intermediates `chain` against `ca_certificates` alone.
absl::Status VerifyChain(STACK_OF(X509) & ca_certificates, X509* certificate,
                         STACK_OF(X509) * chain) {
  // Trust the CA file's certificates and nothing else: no default paths, no system roots.
  CertificatePtr<X509_STORE> store(X509_STORE_new());
  CertificatePtr<X509_STORE_CTX> context(X509_STORE_CTX_new());
  if (store == nullptr || context == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "X509_STORE_new failed");
  }
  for (int i = 0; i < sk_X509_num(&ca_certificates); ++i) {
    if (X509_STORE_add_cert(store.get(), sk_X509_value(&ca_certificates, i)) != 1) {
      return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                    "CA certificate: cannot be added to the trust store");
    }
  }
  if (X509_STORE_CTX_init(context.get(), store.get(), certificate, chain) != 1) {
    return internal::OpenSslError(absl::StatusCode::kInternal, "X509_STORE_CTX_init failed");
  }
  if (X509_verify_cert(context.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(context.get());
    const int depth = X509_STORE_CTX_get_error_depth(context.get());
    STACK_OF(X509)* verified = X509_STORE_CTX_get0_chain(context.get());
    const int chain_length = verified != nullptr ? sk_X509_num(verified) : 1;
    internal::ClearOpenSslErrors();
    const std::string reason = X509_verify_cert_error_string(error);
    if (error == X509_V_ERR_CERT_HAS_EXPIRED || error == X509_V_ERR_CERT_NOT_YET_VALID) {
      return absl::FailedPreconditionError(
          StrCat(ChainMember(depth, chain_length), " is outside its validity period: ", reason));
    }
    const std::string where =
        depth <= 0 ? std::string() : StrCat(" (", ChainMember(depth, chain_length), ")");
    return absl::InvalidArgumentError(
        StrCat("certificate does not verify against the CA certificate: ", reason, where));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckCertificateFiles(std::string_view ca_pem, std::string_view cert_pem,
                                   std::string_view key_pem) {
  SILO_ASSIGN_OR_RETURN(CertificatePtr<STACK_OF(X509)> ca_certificates,
                        ReadCertificates(ca_pem, "CA certificate"));
  // The first certificate is ours; any further ones are the intermediates of its chain.
  SILO_ASSIGN_OR_RETURN(CertificatePtr<STACK_OF(X509)> chain,
                        ReadCertificates(cert_pem, "certificate"));
  OpenSslPtr<X509> certificate(sk_X509_shift(chain.get()));

  OpenSslPtr<EVP_PKEY> key;
  {
    SILO_ASSIGN_OR_RETURN(OpenSslPtr<BIO> bio, internal::NewMemoryBio(key_pem));
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, internal::NoPassword, nullptr));
  }
  if (key == nullptr) {
    return internal::OpenSslError(absl::StatusCode::kInvalidArgument,
                                  "private key: not an unencrypted PEM private key");
  }
  if (X509_check_private_key(certificate.get(), key.get()) != 1) {
    internal::ClearOpenSslErrors();
    return absl::InvalidArgumentError(
        "private key does not belong to the certificate (its public key differs)");
  }

  SILO_RETURN_IF_ERROR(VerifyChain(*ca_certificates, certificate.get(), chain.get()));
  // A node's certificate serves both ends of a connection.
  if (X509_check_purpose(certificate.get(), X509_PURPOSE_SSL_SERVER, 0) != 1 ||
      X509_check_purpose(certificate.get(), X509_PURPOSE_SSL_CLIENT, 0) != 1) {
    internal::ClearOpenSslErrors();
    return absl::InvalidArgumentError(
        "certificate is not valid for both TLS server and TLS client authentication "
        "(extendedKeyUsage must allow serverAuth and clientAuth)");
  }
  return absl::OkStatus();
}

absl::StatusOr<PeerIdentity> VerifyPeerCertificate(std::string_view ca_pem,
                                                   std::string_view cert_pem) {
  SILO_ASSIGN_OR_RETURN(CertificatePtr<STACK_OF(X509)> ca_certificates,
                        ReadCertificates(ca_pem, "CA certificate"));
  SILO_ASSIGN_OR_RETURN(CertificatePtr<STACK_OF(X509)> chain,
                        ReadCertificates(cert_pem, "certificate"));
  OpenSslPtr<X509> certificate(sk_X509_shift(chain.get()));
  SILO_RETURN_IF_ERROR(VerifyChain(*ca_certificates, certificate.get(), chain.get()));
  return PeerIdentityFromCertificatePem(cert_pem);
}

}  // namespace silo::crypto
