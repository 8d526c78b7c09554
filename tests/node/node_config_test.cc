// node.yaml: the knowledge base's options, the serve section, paths resolved against the file's
// folder, and a clear InvalidArgument (naming the key) for whatever is wrong.
#include "node/node_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

using ::silo::testing::StatusIs;
using ::silo::testing::TempDir;
using ::testing::HasSubstr;

constexpr char kInstitution[] = R"(node_id: hospital-a
role: institution
data_dir: data/hospital-a
node_key_file: keys/a.key
models:
  decoder: /models/decoder.gguf
  embedder: ../embedder
serve:
  listen: 127.0.0.1:0
  advertise: hospital-a.example.org:7101
  coordinator: coordinator.example.org:7000
  citations: true
  tls: {ca: certs/ca.pem, cert: certs/a.pem, key: /etc/silo/a.key}
)";

TEST(LoadNodeConfig, ReadsAnInstitutionAndResolvesPathsAgainstItsFolder) {
  TempDir dir;
  const std::string path = dir.WriteFile("node.yaml", kInstitution);
  ASSERT_OK_AND_ASSIGN(const NodeConfig config, LoadNodeConfig(path));
  const std::string base = dir.path().string();
  EXPECT_EQ(config.node_id, "hospital-a");
  EXPECT_EQ(config.role, "institution");
  EXPECT_EQ(config.knowledge_base.data_dir, base + "/data/hospital-a");
  EXPECT_EQ(config.node_key_file, base + "/keys/a.key");
  EXPECT_EQ(config.knowledge_base.decoder_model, "/models/decoder.gguf");
  EXPECT_EQ(config.knowledge_base.embedder_model, dir.path().parent_path().string() + "/embedder");
  EXPECT_EQ(config.serve.listen, "127.0.0.1:0");
  EXPECT_EQ(config.serve.advertise, "hospital-a.example.org:7101");
  EXPECT_EQ(config.serve.coordinator, "coordinator.example.org:7000");
  EXPECT_TRUE(config.serve.citations);
  EXPECT_EQ(config.serve.tls.ca_file, base + "/certs/ca.pem");
  EXPECT_EQ(config.serve.tls.cert_file, base + "/certs/a.pem");
  EXPECT_EQ(config.serve.tls.key_file, "/etc/silo/a.key");
}

TEST(LoadNodeConfig, ServeIsOptionalAndCitationsAreOffByDefault) {
  TempDir dir;
  const std::string path = dir.WriteFile(
      "node.yaml", "node_id: a\nrole: device\ndata_dir: d\nmodels: {decoder: m, embedder: e}\n");
  ASSERT_OK_AND_ASSIGN(const NodeConfig config, LoadNodeConfig(path));
  EXPECT_TRUE(config.serve.listen.empty());
  EXPECT_FALSE(config.serve.citations);
}

TEST(LoadNodeConfig, AComputeNodeNeedsNoCorpus) {
  TempDir dir;
  const std::string path = dir.WriteFile(
      "node.yaml",
      "node_id: c1\nrole: compute\nserve:\n  listen: 0.0.0.0:7200\n  advertise: c1:7200\n");
  ASSERT_OK_AND_ASSIGN(const NodeConfig config, LoadNodeConfig(path));
  EXPECT_TRUE(config.knowledge_base.data_dir.empty());
  EXPECT_EQ(config.serve.listen, "0.0.0.0:7200");
}

struct BadConfig {
  std::string yaml;
  std::string key;  // named in the error
};

class LoadNodeConfigError : public ::testing::TestWithParam<BadConfig> {};

TEST_P(LoadNodeConfigError, NamesWhatIsWrong) {
  TempDir dir;
  const std::string path = dir.WriteFile("node.yaml", GetParam().yaml);
  EXPECT_THAT(LoadNodeConfig(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(GetParam().key)));
}

constexpr char kCorpus[] = "data_dir: d\nmodels: {decoder: m, embedder: e}\n";

INSTANTIATE_TEST_SUITE_P(
    Cases, LoadNodeConfigError,
    ::testing::Values(
        BadConfig{std::string("node_id: a/b\nrole: institution\n") + kCorpus, "node_id"},
        BadConfig{std::string("node_id: ..\nrole: institution\n") + kCorpus, "node_id"},
        BadConfig{std::string("node_id: a\nrole: coordinator\n") + kCorpus, "role"},
        BadConfig{"node_id: a\nrole: institution\n", "data_dir"},
        BadConfig{std::string("node_id: a\nrole: institution\n") + kCorpus +
                      "serve: {listen: localhost}\n",
                  "serve.listen"},
        BadConfig{std::string("node_id: a\nrole: institution\n") + kCorpus +
                      "serve: {listen: 'localhost:0', advertise: 'localhost:0'}\n",
                  "serve.advertise"},
        BadConfig{std::string("node_id: a\nrole: institution\n") + kCorpus +
                      "serve: {coordinator: 'my host:7000'}\n",
                  "serve.coordinator"},
        BadConfig{std::string("node_id: a\nrole: institution\n") + kCorpus +
                      "serve: {citations: maybe}\n",
                  "citations"},
        BadConfig{std::string("node_id: a\nrole: institution\n") + kCorpus +
                      "serve: {tls: {ca: x, certificate: y}}\n",
                  "certificate"},
        BadConfig{std::string("node_id: a\nrole: institution\n") + kCorpus + "colour: blue\n",
                  "colour"}));

}  // namespace
}  // namespace silo::node
