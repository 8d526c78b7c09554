#include "crypto/certificate.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/strings.h"
#include "crypto/signing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::crypto {
namespace {

using ::silo::testing::CommandResult;
using ::silo::testing::DevTlsFiles;
using ::silo::testing::IsOkAndHolds;
using ::silo::testing::MakeDevCertificates;
using ::silo::testing::RunMakeDevCa;
using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// Fixtures that make-dev-ca cannot make, each made once with
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500
//       -subj /CN=<name> [-addext subjectAltName=<names>]
// (the expired certificate with `openssl ca`, see below). Their keys were thrown away.

// No subjectAltName at all.
constexpr char kNoSanCertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBejCCASCgAwIBAgIBATAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBzaWxvLXRl\n"
    "c3Qtbm8tc2FuMCAXDTI2MTEzMDE0MjMwNVoYDzIxMjYxMTA2MTQyMzA1WjAbMRkw\n"
    "FwYDVQQDDBBzaWxvLXRlc3Qtbm8tc2FuMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD\n"
    "QgAE+r9C1QU6RrkCPPgRKDazkzj2F+EioCX86eHXd53xS8E5P6i0OHmWDt0iKnln\n"
    "/AnJrOuF7y+dNYHHB3YYu54J/qNTMFEwHQYDVR0OBBYEFDKFXYlXcmsQ0uuveIUf\n"
    "Qt1gPqL3MB8GA1UdIwQYMBaAFDKFXYlXcmsQ0uuveIUfQt1gPqL3MA8GA1UdEwEB\n"
    "/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgcKJIeXCYQ3foO7vRuSqXJxsUKvg2\n"
    "0P/DX/75qbb7LfICIQCOGGacBYdJo+5lif4uLkS9/zzbTApIJrNNjCN4EPfJWw==\n"
    "-----END CERTIFICATE-----\n";

// subjectAltName DNS:localhost, IP:127.0.0.1: no URI.
constexpr char kDnsOnlyCertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBmzCCAUCgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJzaWxvLXRl\n"
    "c3QtZG5zLW9ubHkwIBcNMjYxMTMwMTQyMzA1WhgPMjEyNjExMDYxNDIzMDVaMB0x\n"
    "GzAZBgNVBAMMEnNpbG8tdGVzdC1kbnMtb25seTBZMBMGByqGSM49AgEGCCqGSM49\n"
    "AwEHA0IABMDp1hXGR/Y2jYZ2TcARS0w916DBWVxXXolGtTJj3vBiv9HmkJKoCMaq\n"
    "1Jw5tjyCskmrWii4L8oLiFS12IXJ11SjbzBtMB0GA1UdDgQWBBQjuW0I/It+3lSw\n"
    "G31LPJQFhR45lzAfBgNVHSMEGDAWgBQjuW0I/It+3lSwG31LPJQFhR45lzAPBgNV\n"
    "HRMBAf8EBTADAQH/MBoGA1UdEQQTMBGCCWxvY2FsaG9zdIcEfwAAATAKBggqhkjO\n"
    "PQQDAgNJADBGAiEA/PVh4vaDEgdj5h37Yec+AhMDqQ3MWX7ABU001CTCvAYCIQDk\n"
    "Fw9+3tgfSfGZZT9mT1X/9+jtrto6WlmNpJ1zGSd9eg==\n"
    "-----END CERTIFICATE-----\n";

// subjectAltName URI:spiffe://silo/compute/c1, URI:spiffe://silo/institution/i1.
constexpr char kTwoSiloUrisCertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBwjCCAWmgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJzaWxvLXRl\n"
    "c3QtdHdvLXVyaXMwIBcNMjYxMTMwMTQyMzA1WhgPMjEyNjExMDYxNDIzMDVaMB0x\n"
    "GzAZBgNVBAMMEnNpbG8tdGVzdC10d28tdXJpczBZMBMGByqGSM49AgEGCCqGSM49\n"
    "AwEHA0IABJOe2XXU4Urwkfbm3yU4JfvHaDRoZwG2qXOaDxA7NUih0CyToh8doA67\n"
    "owvzXJMctwfyMztSTx6TgwxxSJeyK8ajgZcwgZQwHQYDVR0OBBYEFFY+HytFMPGf\n"
    "jpLZE7ng+LBdOcHGMB8GA1UdIwQYMBaAFFY+HytFMPGfjpLZE7ng+LBdOcHGMA8G\n"
    "A1UdEwEB/wQFMAMBAf8wQQYDVR0RBDowOIYYc3BpZmZlOi8vc2lsby9jb21wdXRl\n"
    "L2MxhhxzcGlmZmU6Ly9zaWxvL2luc3RpdHV0aW9uL2kxMAoGCCqGSM49BAMCA0cA\n"
    "MEQCIEGUtW5/jQdh2pDMHNM02vndACzkZ9PNoOU1+lEMIWSLAiA3Qb1SHyPdnTjZ\n"
    "tvckfwNJCfDw/dhLTSnupaD6JkVBvg==\n"
    "-----END CERTIFICATE-----\n";

// subjectAltName URI:https://example.org/x, URI:spiffe://other/compute/c1,
// URI:spiffe://silo/device/phone-7, DNS:localhost.
constexpr char kMixedUrisCertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIB6jCCAZCgAwIBAgIBATAKBggqhkjOPQQDAjAfMR0wGwYDVQQDDBRzaWxvLXRl\n"
    "c3QtbWl4ZWQtdXJpczAgFw0yNjExMzAxNDIzMDVaGA8yMTI2MTEwNjE0MjMwNVow\n"
    "HzEdMBsGA1UEAwwUc2lsby10ZXN0LW1peGVkLXVyaXMwWTATBgcqhkjOPQIBBggq\n"
    "hkjOPQMBBwNCAAQCdViHH8Du4hHYd8EWGxvrZ+OJxac+BDtj2EM/Mjc4qEemjYMQ\n"
    "PNYN9aFZeYg6LJD/HnCxHgXshygqN4mRAa8uo4G6MIG3MB0GA1UdDgQWBBRKQOkd\n"
    "dl8PNUPnCLGQmLnr4koy2zAfBgNVHSMEGDAWgBRKQOkddl8PNUPnCLGQmLnr4koy\n"
    "2zAPBgNVHRMBAf8EBTADAQH/MGQGA1UdEQRdMFuGFWh0dHBzOi8vZXhhbXBsZS5v\n"
    "cmcveIYZc3BpZmZlOi8vb3RoZXIvY29tcHV0ZS9jMYYcc3BpZmZlOi8vc2lsby9k\n"
    "ZXZpY2UvcGhvbmUtN4IJbG9jYWxob3N0MAoGCCqGSM49BAMCA0gAMEUCIBMLiucz\n"
    "y+xc+VMWGDd87CtM4sJhAHyHWevx8G6Gd5lIAiEA/Fg8ae58CHwIpy5EsjTqxONA\n"
    "8NxXxMLgP2PlEREARCQ=\n"
    "-----END CERTIFICATE-----\n";

// subjectAltName URI:spiffe://silo/admin/root (no such role).
constexpr char kBadSiloUriCertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBoTCCAUegAwIBAgIBATAKBggqhkjOPQQDAjAcMRowGAYDVQQDDBFzaWxvLXRl\n"
    "c3QtYmFkLXVyaTAgFw0yNjExMzAxNDIzMDVaGA8yMTI2MTEwNjE0MjMwNVowHDEa\n"
    "MBgGA1UEAwwRc2lsby10ZXN0LWJhZC11cmkwWTATBgcqhkjOPQIBBggqhkjOPQMB\n"
    "BwNCAATWTMpaWHCBpAne22L0fxFS8350qa7FGPIzCtvHc9uALlQA/IsVYn0+MDYp\n"
    "N88l3VUUnbCfpAM+sbpzwtYf9v66o3gwdjAdBgNVHQ4EFgQURTEKAa8qYe2R6C2q\n"
    "Cnt26P/Y5K4wHwYDVR0jBBgwFoAURTEKAa8qYe2R6C2qCnt26P/Y5K4wDwYDVR0T\n"
    "AQH/BAUwAwEB/zAjBgNVHREEHDAahhhzcGlmZmU6Ly9zaWxvL2FkbWluL3Jvb3Qw\n"
    "CgYIKoZIzj0EAwIDSAAwRQIgDAIE3IBNOzp2ZzSH4vkFMT2iK2nll9SIVY1yAWfC\n"
    "LgwCIQDTBUn8J7KgpN/iNPti6wP+Yg+hw0atUR/ImipqFC4MnQ==\n"
    "-----END CERTIFICATE-----\n";

// A CA valid for 100 years, whose key was thrown away after it signed kExpiredCertificatePem.
constexpr char kExpiredFixtureCaPem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBwDCCAWagAwIBAgIBATAKBggqhkjOPQQDAjA2MQ0wCwYDVQQKDARzaWxvMSUw\n"
    "IwYDVQQDDBxzaWxvIHRlc3QgZXhwaXJlZC1maXh0dXJlIENBMCAXDTI2MTEzMDE0\n"
    "MjMwMloYDzIxMjYxMTA2MTQyMzAyWjA2MQ0wCwYDVQQKDARzaWxvMSUwIwYDVQQD\n"
    "DBxzaWxvIHRlc3QgZXhwaXJlZC1maXh0dXJlIENBMFkwEwYHKoZIzj0CAQYIKoZI\n"
    "zj0DAQcDQgAEOvpxEBG1b3n9MHhoQbf63TM7lXu9fQivwIWqASmWXhkIZaeL8CBl\n"
    "nbMmX3uCtFIC/aRL4GA0SgWCEVDX0DZrm6NjMGEwHQYDVR0OBBYEFPsiv0xl7V00\n"
    "jfxEKt+J2iAOi3uDMB8GA1UdIwQYMBaAFPsiv0xl7V00jfxEKt+J2iAOi3uDMA8G\n"
    "A1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgIEMAoGCCqGSM49BAMCA0gAMEUC\n"
    "IQCLF7fQHehvS9x4MNkRqjT+0bKcu4VJS54KVV6vLH0OSwIgXAjX8oVs4e6qzH4T\n"
    "5wmSmpN+MH/9egCR0U9EK2q84Kg=\n"
    "-----END CERTIFICATE-----\n";

// spiffe://silo/compute/expired-node, signed by kExpiredFixtureCaPem, valid only on
// 2020-01-01 (openssl ca -startdate 20200101000000Z -enddate 20200102000000Z).
constexpr char kExpiredCertificatePem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIB/TCCAaOgAwIBAgIBATAKBggqhkjOPQQDAjA2MQ0wCwYDVQQKDARzaWxvMSUw\n"
    "IwYDVQQDDBxzaWxvIHRlc3QgZXhwaXJlZC1maXh0dXJlIENBMB4XDTIwMDEwMTAw\n"
    "MDAwMFoXDTIwMDEwMjAwMDAwMFowFzEVMBMGA1UEAwwMZXhwaXJlZC1ub2RlMFkw\n"
    "EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErsoF701qV/UZjq27Y9NsiKslzNAS5ULR\n"
    "1vFKvkxc0rUTwYSo3mEDpWK2rc4Zm0ENa6/jdn8n1OXwE84gmqMMTaOBwDCBvTAM\n"
    "BgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIHgDAdBgNVHSUEFjAUBggrBgEFBQcD\n"
    "AQYIKwYBBQUHAwIwPgYDVR0RBDcwNYYic3BpZmZlOi8vc2lsby9jb21wdXRlL2V4\n"
    "cGlyZWQtbm9kZYIJbG9jYWxob3N0hwR/AAABMB0GA1UdDgQWBBSdOSxLa8+cRC/N\n"
    "rLBQ9k56ie0A6jAfBgNVHSMEGDAWgBT7Ir9MZe1dNI38RCrfidogDot7gzAKBggq\n"
    "hkjOPQQDAgNIADBFAiBhGansakrCsJbiArxpZ0rH/CxNjbFh8G26JobEPHjyuQIh\n"
    "AIZ2NAGRMETqpnQNfuU2XyFLfq1DO9TOxRzo0AByPFqR\n"
    "-----END CERTIFICATE-----\n";

// The private key of kExpiredCertificatePem (a test key, used nowhere else).
constexpr char kExpiredCertificateKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+7Wbl8OVMVCmtDpk\n"
    "amN/zZAMztPuq1VTn0GoPTI7eXmhRANCAASuygXvTWpX9RmOrbtj02yIqyXM0BLl\n"
    "QtHW8Uq+TFzStRPBhKjeYQOlYratzhmbQQ1rr+N2fyfU5fATziCaowxN\n"
    "-----END PRIVATE KEY-----\n";

// The PEM texts of one node's files.
struct NodePems {
  std::string ca;
  std::string cert;
  std::string key;
};

NodePems ReadNode(const std::filesystem::path& dir, std::string_view id) {
  const TlsFiles files = DevTlsFiles(dir, id);
  NodePems pems;
  for (auto [path, text] :
       {std::pair{&files.ca_file, &pems.ca}, std::pair{&files.cert_file, &pems.cert},
        std::pair{&files.key_file, &pems.key}}) {
    absl::StatusOr<std::string> read = ReadPemFile(*path);
    EXPECT_OK(read);
    if (read.ok()) *text = *std::move(read);
  }
  return pems;
}

// The base64 body of a PEM block: what must never appear in a message about it.
std::string PemBody(const std::string& pem) {
  const size_t begin = pem.find('\n') + 1;
  return pem.substr(begin, pem.find('\n', begin) - begin);
}

TEST(PeerRoleTest, NamesRoundTrip) {
  for (PeerRole role : {PeerRole::kInstitution, PeerRole::kDevice, PeerRole::kCompute,
                        PeerRole::kCoordinator, PeerRole::kOperator}) {
    EXPECT_THAT(ParsePeerRole(PeerRoleName(role)), IsOkAndHolds(role)) << PeerRoleName(role);
  }
  EXPECT_EQ(PeerRoleName(PeerRole::kInstitution), "institution");
  EXPECT_EQ(PeerRoleName(PeerRole::kCoordinator), "coordinator");
}

TEST(PeerRoleTest, RejectsUnknownNames) {
  for (std::string_view name : {"", "Institution", "admin", "compute ", "node"}) {
    EXPECT_THAT(ParsePeerRole(name), StatusIs(absl::StatusCode::kInvalidArgument)) << name;
  }
}

TEST(NodeIdTest, FollowsTheScriptsRule) {
  EXPECT_OK(CheckNodeId("a"));
  EXPECT_OK(CheckNodeId("Inst-A_1.eu"));
  EXPECT_OK(CheckNodeId(std::string(kMaxNodeIdLength, 'x')));
  for (const std::string& id :
       {std::string(), std::string(kMaxNodeIdLength + 1, 'x'), std::string("a b"),
        std::string("a/b"), std::string("a:b"), std::string("é"), std::string("a\0b", 3),
        std::string("."), std::string("..")}) {
    EXPECT_THAT(CheckNodeId(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
  }
}

TEST(SpiffeIdTest, RoundTrips) {
  const PeerIdentity identity{PeerRole::kCompute, "gpu-0.eu_west"};
  EXPECT_EQ(SpiffeId(identity), "spiffe://silo/compute/gpu-0.eu_west");
  EXPECT_THAT(ParseSpiffeId(SpiffeId(identity)), IsOkAndHolds(identity));
  EXPECT_THAT(ParseSpiffeId("spiffe://silo/operator/alice"),
              IsOkAndHolds(PeerIdentity{PeerRole::kOperator, "alice"}));
}

TEST(SpiffeIdTest, RejectsOtherUris) {
  for (const std::string& uri : {
           std::string(),
           std::string("https://silo/compute/c1"),           // scheme
           std::string("SPIFFE://silo/compute/c1"),          // scheme's case
           std::string("spiffe://other/compute/c1"),         // trust domain
           std::string("spiffe://silo.example/compute/c1"),  // trust domain
           std::string("spiffe://SILO/compute/c1"),          // trust domain's case
           std::string("spiffe://silo:443/compute/c1"),      // port
           std::string("spiffe://silo/admin/c1"),            // role
           std::string("spiffe://silo/Compute/c1"),          // role's case
           std::string("spiffe://silo//c1"),                 // no role
           std::string("spiffe://silo/compute"),             // no id
           std::string("spiffe://silo/compute/"),            // empty id
           std::string("spiffe://silo/compute/c1/extra"),    // further segment
           std::string("spiffe://silo/compute/c1?x=1"),      // query
           std::string("spiffe://silo/compute/c1#f"),        // fragment
           std::string("spiffe://silo/compute/c%31"),
           std::string("spiffe://silo/compute/.."),  // dot segment                     // escapes
           std::string("spiffe://silo/compute/") + std::string(65, 'a'),  // id too long
           std::string("spiffe://silo/compute/c1") + '\0' + "x",          // NUL inside
       }) {
    EXPECT_THAT(ParseSpiffeId(uri), StatusIs(absl::StatusCode::kInvalidArgument)) << uri;
  }
}

TEST(PeerIdentityFromCertificatePemTest, ScriptMadeCertificatesNameTheirIdentity) {
  TempDir dir;
  const std::vector<std::pair<std::string, PeerIdentity>> nodes = {
      {"institution/inst-a", {PeerRole::kInstitution, "inst-a"}},
      {"device/phone.7", {PeerRole::kDevice, "phone.7"}},
      {"compute/gpu_0", {PeerRole::kCompute, "gpu_0"}},
      {"coordinator/coord", {PeerRole::kCoordinator, "coord"}},
      {"operator/Alice-Ops", {PeerRole::kOperator, "Alice-Ops"}},
  };
  std::vector<std::string> role_ids;
  role_ids.reserve(nodes.size());
  for (const auto& [role_id, identity] : nodes) role_ids.push_back(role_id);
  ASSERT_OK(MakeDevCertificates(dir.path(), role_ids));

  for (const auto& [role_id, identity] : nodes) {
    SCOPED_TRACE(role_id);
    const NodePems pems = ReadNode(dir.path(), identity.node_id);
    EXPECT_THAT(PeerIdentityFromCertificatePem(pems.cert), IsOkAndHolds(identity));
    EXPECT_OK(CheckCertificateFiles(pems.ca, pems.cert, pems.key));
  }
  // The CA has no silo identity.
  ASSERT_OK_AND_ASSIGN(std::string ca_pem, ReadPemFile((dir.path() / "ca.pem").string()));
  EXPECT_THAT(PeerIdentityFromCertificatePem(ca_pem), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A node's certificate key is Ed25519, so it also signs the node's half of the FedRAG key
// exchange, and a peer verifies that signature with the key in the certificate.
TEST(MakeDevCaTest, NodeKeysSignAndCertificatesVerify) {
  TempDir dir;
  ASSERT_OK(MakeDevCertificates(dir.path(), {"institution/inst-a", "institution/inst-b"}));
  const NodePems a = ReadNode(dir.path(), "inst-a");
  const NodePems b = ReadNode(dir.path(), "inst-b");
  ASSERT_OK_AND_ASSIGN(const SigningKey signing, SigningKey::FromPem(a.key));
  ASSERT_OK_AND_ASSIGN(const VerifyingKey verifying, VerifyingKey::FromCertificatePem(a.cert));
  ASSERT_OK_AND_ASSIGN(const VerifyingKey other, VerifyingKey::FromCertificatePem(b.cert));
  const std::vector<uint8_t> message = {1, 2, 3, 4};
  ASSERT_OK_AND_ASSIGN(const std::vector<uint8_t> signature, signing.Sign(message));
  EXPECT_OK(verifying.Verify(message, signature));
  EXPECT_THAT(other.Verify(message, signature), StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(PeerIdentityFromCertificatePemTest, IgnoresUrisOfOtherTrustDomains) {
  EXPECT_THAT(PeerIdentityFromCertificatePem(kMixedUrisCertificatePem),
              IsOkAndHolds(PeerIdentity{PeerRole::kDevice, "phone-7"}));
}

TEST(PeerIdentityFromCertificatePemTest, RejectsCertificatesWithoutExactlyOneIdentity) {
  EXPECT_THAT(PeerIdentityFromCertificatePem(kNoSanCertificatePem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no subjectAltName")));
  EXPECT_THAT(PeerIdentityFromCertificatePem(kDnsOnlyCertificatePem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no spiffe://silo/ URI")));
  EXPECT_THAT(PeerIdentityFromCertificatePem(kTwoSiloUrisCertificatePem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 spiffe://silo/ URIs")));
  EXPECT_THAT(PeerIdentityFromCertificatePem(kBadSiloUriCertificatePem),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown role 'admin'")));
}

TEST(PeerIdentityFromCertificatePemTest, RejectsWhatIsNoCertificate) {
  for (const std::string& pem : {
           std::string(), std::string("not PEM at all"),
           std::string("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
           std::string("-----BEGIN CERTIFICATE-----\nnot base64 !\n-----END CERTIFICATE-----\n"),
           std::string(kExpiredCertificateKeyPem),  // a key, not a certificate
       }) {
    EXPECT_THAT(PeerIdentityFromCertificatePem(pem), StatusIs(absl::StatusCode::kInvalidArgument))
        << pem;
  }
}

TEST(PeerIdentityFromCertificatePemTest, UsesTheFirstCertificate) {
  const std::string two = std::string(kMixedUrisCertificatePem) + kExpiredCertificatePem;
  EXPECT_THAT(PeerIdentityFromCertificatePem(two),
              IsOkAndHolds(PeerIdentity{PeerRole::kDevice, "phone-7"}));
}

TEST(ReadPemFileTest, ReadsAPemFile) {
  TempDir dir;
  const std::string path = dir.WriteFile("a.pem", kMixedUrisCertificatePem);
  EXPECT_THAT(ReadPemFile(path), IsOkAndHolds(std::string(kMixedUrisCertificatePem)));
}

TEST(ReadPemFileTest, RejectsMissingOddAndLargeFiles) {
  TempDir dir;
  EXPECT_THAT(ReadPemFile((dir.path() / "missing.pem").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.pem")));
  EXPECT_THAT(ReadPemFile((dir.path() / "no-dir" / "a.pem").string()),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ReadPemFile(dir.path().string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
  EXPECT_THAT(ReadPemFile(dir.WriteFile("empty.pem", "")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not PEM")));
  EXPECT_THAT(ReadPemFile(dir.WriteFile("text.pem", "hello\n")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not PEM")));
  const std::string large =
      std::string(kMixedUrisCertificatePem) + std::string(kMaxPemFileBytes, '\n');
  EXPECT_THAT(ReadPemFile(dir.WriteFile("large.pem", large)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than")));
  const std::string fifo = (dir.path() / "fifo.pem").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THAT(ReadPemFile(fifo), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ReadPemFileTest, UnreadableFileIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  TempDir dir;
  const std::string path = dir.WriteFile("secret.key", kExpiredCertificateKeyPem);
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  EXPECT_THAT(ReadPemFile(path), StatusIs(absl::StatusCode::kPermissionDenied));
}

class CheckCertificateFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(MakeDevCertificates(federation_.path(), {"institution/inst-a", "compute/c1"}));
    ASSERT_OK(MakeDevCertificates(other_.path(), {"institution/inst-a"}));
    inst_a_ = ReadNode(federation_.path(), "inst-a");
    c1_ = ReadNode(federation_.path(), "c1");
    other_inst_a_ = ReadNode(other_.path(), "inst-a");
  }

  TempDir federation_;
  TempDir other_;  // a second federation, of another CA
  NodePems inst_a_;
  NodePems c1_;
  NodePems other_inst_a_;
};

TEST_F(CheckCertificateFilesTest, AcceptsMatchingFiles) {
  EXPECT_OK(CheckCertificateFiles(inst_a_.ca, inst_a_.cert, inst_a_.key));
  EXPECT_OK(CheckCertificateFiles(other_inst_a_.ca, other_inst_a_.cert, other_inst_a_.key));
}

TEST_F(CheckCertificateFilesTest, RejectsTheKeyOfAnotherCertificate) {
  const absl::Status status = CheckCertificateFiles(inst_a_.ca, inst_a_.cert, c1_.key);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("private key"), HasSubstr("certificate"))));
  EXPECT_THAT(StrCat(status.message()), Not(HasSubstr(PemBody(c1_.key))));
}

TEST_F(CheckCertificateFilesTest, RejectsACertificateOfAnotherCa) {
  EXPECT_THAT(CheckCertificateFiles(inst_a_.ca, other_inst_a_.cert, other_inst_a_.key),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not verify against the CA certificate")));
  // The CA certificate is no node certificate either.
  EXPECT_THAT(CheckCertificateFiles(other_inst_a_.ca, inst_a_.cert, inst_a_.key),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(CheckCertificateFilesTest, RejectsFilesThatDoNotDecode) {
  EXPECT_THAT(CheckCertificateFiles("garbage", inst_a_.cert, inst_a_.key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CA certificate")));
  EXPECT_THAT(CheckCertificateFiles(inst_a_.ca, "garbage", inst_a_.key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("certificate")));
  EXPECT_THAT(CheckCertificateFiles(inst_a_.ca, inst_a_.key, inst_a_.key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("certificate")));
  const absl::Status status = CheckCertificateFiles(inst_a_.ca, inst_a_.cert, inst_a_.cert);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("private key")));
  // A damaged key: its body is never echoed.
  std::string damaged = inst_a_.key;
  damaged[damaged.find('\n') + 5] ^= 0x01;
  const absl::Status damaged_status = CheckCertificateFiles(inst_a_.ca, inst_a_.cert, damaged);
  EXPECT_THAT(damaged_status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(StrCat(damaged_status.message()), Not(HasSubstr(PemBody(damaged))));
}

TEST(CheckCertificateFilesExpiryTest, RejectsAnExpiredCertificate) {
  EXPECT_THAT(PeerIdentityFromCertificatePem(kExpiredCertificatePem),
              IsOkAndHolds(PeerIdentity{PeerRole::kCompute, "expired-node"}));
  EXPECT_THAT(CheckCertificateFiles(kExpiredFixtureCaPem, kExpiredCertificatePem,
                                    kExpiredCertificateKeyPem),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("certificate"), HasSubstr("expired"))));
}

TEST(MakeDevCaTest, WritesPrivateKeysForTheOwnerOnly) {
  TempDir dir;
  ASSERT_OK(MakeDevCertificates(dir.path(), {"device/d1"}));
  for (const char* name : {"ca.key", "d1.key"}) {
    struct stat info;
    ASSERT_EQ(::stat((dir.path() / name).c_str(), &info), 0) << name;
    EXPECT_EQ(info.st_mode & 0777, 0600) << name;
  }
  // Nothing but the certificates and keys is left behind.
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("ca.pem", "ca.key", "d1.pem", "d1.key"));
}

TEST(MakeDevCaTest, ReusesTheCaToAddNodes) {
  TempDir dir;
  ASSERT_OK(MakeDevCertificates(dir.path(), {"institution/inst-a"}));
  const NodePems before = ReadNode(dir.path(), "inst-a");
  ASSERT_OK_AND_ASSIGN(CommandResult result,
                       RunMakeDevCa({dir.path().string(), "institution/inst-a", "compute/c2"}));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_THAT(result.output,
              AllOf(HasSubstr("c2.pem"), HasSubstr("c2.key"),
                    Not(HasSubstr("wrote " + (dir.path() / "ca.pem").string())),
                    Not(HasSubstr("wrote " + (dir.path() / "inst-a.pem").string()))));
  const NodePems inst_a = ReadNode(dir.path(), "inst-a");
  const NodePems c2 = ReadNode(dir.path(), "c2");
  EXPECT_EQ(inst_a.ca, before.ca);
  EXPECT_EQ(inst_a.cert, before.cert);
  EXPECT_OK(CheckCertificateFiles(c2.ca, c2.cert, c2.key));
  EXPECT_THAT(PeerIdentityFromCertificatePem(c2.cert),
              IsOkAndHolds(PeerIdentity{PeerRole::kCompute, "c2"}));
}

TEST(MakeDevCaTest, RejectsABadRoleWithStatus2) {
  TempDir dir;
  const std::filesystem::path out = dir.path() / "certs";
  ASSERT_OK_AND_ASSIGN(CommandResult result,
                       RunMakeDevCa({out.string(), "compute/c1", "admin/root"}));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_THAT(result.output, HasSubstr("unknown role 'admin'"));
  EXPECT_FALSE(std::filesystem::exists(out));  // checked before anything is written
}

TEST(MakeDevCaTest, RejectsABadIdWithStatus2) {
  TempDir dir;
  const std::filesystem::path out = dir.path() / "certs";
  for (const std::string& role_id :
       {std::string("compute/a b"), std::string("compute/../x"), std::string("compute/.."),
        std::string("compute/"), std::string("compute"),
        std::string("compute/") + std::string(65, 'a'), std::string("compute/ca")}) {
    ASSERT_OK_AND_ASSIGN(CommandResult result, RunMakeDevCa({out.string(), role_id}));
    EXPECT_EQ(result.exit_code, 2) << role_id << ": " << result.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(MakeDevCaTest, HelpExitsZero) {
  ASSERT_OK_AND_ASSIGN(CommandResult result, RunMakeDevCa({"--help"}));
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_THAT(result.output, HasSubstr("Usage: make-dev-ca"));
}

}  // namespace
}  // namespace silo::crypto
