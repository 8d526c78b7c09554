// The FedRAG scrambling of one layer and KV head through a real compute node over mTLS: two
// owners scramble their K (after RoPE) and V with keys from the session secret and upload them;
// the querier scrambles its query rows, attends, unscrambles the partials and merges them. The
// result equals plain attention over all the owners' rows, for every key scope and mixer and a
// head_dim that needs padding, and no plain key row travels to the compute node.
#include "node/fedrag_scrambler.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "crypto/mtls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/scrambled_attention_service.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

const std::string kSession = "fedrag-session-1";
constexpr uint32_t kLayer = 3;
constexpr uint32_t kKvHead = 1;

struct Setting {
  const char* name;
  attention::KeyScope scope;
  attention::Mixer mixer;
  int head_dim;
};

class FedRagScramblerTest : public ::testing::TestWithParam<Setting> {
 protected:
  void SetUp() override {
    ASSERT_OK(silo::testing::MakeDevCertificates(
                  dir_.path(), {"institution/querier", "institution/owner-a", "institution/owner-b",
                                "compute/c1"})
                  .status());
    ASSERT_OK_AND_ASSIGN(server_, silo::testing::StartDevServer(dir_.path(), "c1", {&service_}));
  }

  std::unique_ptr<v1::ScrambledAttentionService::Stub> Stub(const std::string& id) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        silo::testing::DevChannel(dir_.path(), id, server_.address);
    EXPECT_OK(channel.status());
    return v1::ScrambledAttentionService::NewStub(*channel);
  }

  std::vector<float> Random(size_t n, float sigma) {
    std::normal_distribution<float> normal(0.0F, sigma);
    std::vector<float> values(n);
    for (float& x : values) x = normal(rng_);
    return values;
  }

  silo::testing::TempDir dir_;
  ScrambledAttentionService service_;
  silo::testing::DevServer server_;
  std::mt19937 rng_{7};
};

TEST_P(FedRagScramblerTest, MergedPartialsEqualPlainAttentionOverEveryOwner) {
  const Setting setting = GetParam();
  const int d = setting.head_dim;
  const std::vector<std::vector<int32_t>> chunks = {{40, 25}, {70}};  // per owner
  ASSERT_OK_AND_ASSIGN(const crypto::SecretBytes secret, crypto::SecretBytes::Random(32));

  // Each owner's view and the querier's view of the same owner share the secret and options.
  std::vector<FedRagScrambler> scramblers;
  for (const std::vector<int32_t>& rows : chunks) {
    FedRagScramblerOptions options;
    options.session_id = kSession;
    options.head_dim = d;
    options.mixer.mixer = setting.mixer;
    options.key_scope = setting.scope;
    options.block_rows = 16;
    options.chunk_rows = rows;
    ASSERT_OK_AND_ASSIGN(FedRagScrambler scrambler, FedRagScrambler::Create(secret, options));
    scramblers.push_back(std::move(scrambler));
  }
  const float scale = 1.0F / std::sqrt(static_cast<float>(d));
  v1::OpenSessionRequest open;
  open.mutable_session()->set_value(kSession);
  open.set_n_layers(kLayer + 1);
  open.set_first_layer(kLayer);
  open.set_n_kv_heads(kKvHead + 1);
  open.set_head_dim(static_cast<uint32_t>(scramblers[0].padded_dim()));
  open.set_kv_dtype(v1::DTYPE_F32);
  open.set_scale(scale);
  for (size_t o = 0; o < chunks.size(); ++o) {
    v1::OwnerSlot& slot = *open.add_owners();
    slot.set_node_id(o == 0 ? "owner-a" : "owner-b");
    for (const uint32_t rows : scramblers[o].key_rows()) slot.add_key_rows(rows);
  }
  // Only this (layer, KV head) is delegated in the test; the other KV head gets dummies below.
  {
    grpc::ClientContext context;
    v1::OpenSessionResponse opened;
    ASSERT_TRUE(Stub("querier")->OpenSession(&context, open, &opened).ok());
  }

  std::vector<float> all_k, all_v;  // every owner's rows, for the plain reference
  for (size_t o = 0; o < chunks.size(); ++o) {
    int n = 0;
    for (const int32_t rows : chunks[o]) n += rows;
    const std::vector<float> k = Random(static_cast<size_t>(n) * d, 1.0F);
    const std::vector<float> v = Random(static_cast<size_t>(n) * d, 1.0F);
    all_k.insert(all_k.end(), k.begin(), k.end());
    all_v.insert(all_v.end(), v.begin(), v.end());
    ASSERT_OK_AND_ASSIGN(std::vector<v1::UploadScrambledKvRequest> messages,
                         scramblers[o].ScrambleKv(kLayer, kKvHead, k, v, v1::DTYPE_F32));
    ASSERT_OK_AND_ASSIGN(std::vector<v1::UploadScrambledKvRequest> other_head,
                         scramblers[o].ScrambleKv(kLayer, 0, k, v, v1::DTYPE_F32));
    messages.insert(messages.end(), other_head.begin(), other_head.end());
    // No plain key row is on the wire: every scrambled row differs from every plain one.
    for (const v1::UploadScrambledKvRequest& message : messages) {
      const int64_t rows = message.k().shape(0);
      const auto* wire = reinterpret_cast<const float*>(message.k().data().data());
      for (int64_t r = 0; r < rows; ++r) {
        for (size_t j = 0; j < k.size() / static_cast<size_t>(d); ++j) {
          double distance = 0;
          for (int c = 0; c < d; ++c) {
            distance += std::abs(wire[r * message.k().shape(1) + c] - k[j * d + c]);
          }
          ASSERT_GT(distance, 1e-3) << "a plain key row went to the compute node";
        }
      }
    }
    grpc::ClientContext context;
    v1::UploadScrambledKvResponse uploaded;
    auto writer = Stub(o == 0 ? "owner-a" : "owner-b")->UploadScrambledKv(&context, &uploaded);
    for (const v1::UploadScrambledKvRequest& message : messages)
      ASSERT_TRUE(writer->Write(message));
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  // The querier's 4 query rows of this KV head (e.g. 4 query heads sharing it).
  const int n_rows = 4;
  const std::vector<float> q = Random(static_cast<size_t>(n_rows) * d, 1.0F);
  v1::AttendRequest request;
  request.mutable_session()->set_value(kSession);
  request.set_step(0);
  request.set_layer(kLayer);
  for (size_t o = 0; o < scramblers.size(); ++o) {
    for (const attention::KeyBlock& block : scramblers[o].blocks()) {
      ASSERT_OK_AND_ASSIGN(*request.add_queries(),
                           scramblers[o].ScrambleQuery(static_cast<uint32_t>(o), kLayer, kKvHead,
                                                       block.key_index, q));
    }
  }
  grpc::ClientContext context;
  auto stream = Stub("querier")->Attend(&context);
  ASSERT_TRUE(stream->Write(request));
  v1::AttendResponse response;
  ASSERT_TRUE(stream->Read(&response));
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());

  // Unscramble and merge with the log-sum-exp rule.
  std::vector<double> top(n_rows, -std::numeric_limits<double>::infinity());
  std::vector<PlainPartial> partials;
  for (const v1::AttentionPartial& partial : response.partials()) {
    ASSERT_OK_AND_ASSIGN(PlainPartial plain,
                         scramblers[partial.owner_index()].Unscramble(kLayer, kKvHead, partial));
    for (int r = 0; r < n_rows; ++r) top[r] = std::max(top[r], static_cast<double>(plain.m[r]));
    partials.push_back(std::move(plain));
  }
  std::vector<double> merged(static_cast<size_t>(n_rows) * d, 0.0), total(n_rows, 0.0);
  for (const PlainPartial& part : partials) {
    for (int r = 0; r < n_rows; ++r) {
      const double w = part.l[r] * std::exp(part.m[r] - top[r]);
      total[r] += w;
      for (int c = 0; c < d; ++c) merged[r * d + c] += w * part.o[r * d + c];
    }
  }
  // Plain attention over every owner's rows.
  const size_t n_kv = all_k.size() / static_cast<size_t>(d);
  double error = 0, norm = 0;
  for (int r = 0; r < n_rows; ++r) {
    std::vector<double> s(n_kv);
    double best = -std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < n_kv; ++j) {
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += static_cast<double>(q[r * d + c]) * all_k[j * d + c];
      s[j] = dot * scale;
      best = std::max(best, s[j]);
    }
    double sum = 0;
    std::vector<double> o(d, 0.0);
    for (size_t j = 0; j < n_kv; ++j) {
      const double w = std::exp(s[j] - best);
      sum += w;
      for (int c = 0; c < d; ++c) o[c] += w * all_v[j * d + c];
    }
    for (int c = 0; c < d; ++c) {
      const double expected = o[c] / sum;
      const double actual = merged[r * d + c] / total[r];
      error += (actual - expected) * (actual - expected);
      norm += expected * expected;
    }
  }
  EXPECT_LE(std::sqrt(error / norm), 1e-5) << setting.name;
}

INSTANTIATE_TEST_SUITE_P(
    ScopesAndMixers, FedRagScramblerTest,
    ::testing::Values(
        Setting{"session_sphps", attention::KeyScope::kSession, attention::Mixer::kSphps, 64},
        Setting{"chunk_dense", attention::KeyScope::kChunk, attention::Mixer::kDense, 64},
        Setting{"block_sphps_padded", attention::KeyScope::kBlock, attention::Mixer::kSphps, 80},
        Setting{"session_dense_padded", attention::KeyScope::kSession, attention::Mixer::kDense,
                80}),
    [](const ::testing::TestParamInfo<Setting>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace silo::node
