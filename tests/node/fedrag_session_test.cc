// FedRAG over real mTLS servers in one process, with the default model and a small real corpus
// (DESIGN.md §6): two owners (FedRagOwnerService), a compute node (ScrambledAttentionService)
// and the querier (FedRagSession as the engine's attention hook).
//   - Exactness: for every key scope × mixer × wire type, the logits of the question's prefill
//     and of 8 greedy steps equal a single-process run over the same chunks' plaintext KV
//     (AppendShard at the same positions), and every step picks the same token.
//   - Wire audit: every message the owners send (their answers to the querier, recorded before
//     it is serialized for TLS, and their uploads, recorded where the compute node receives
//     them) holds no run of the chunks' text, no run of their token ids, and no row near a
//     plaintext K (after RoPE) or V row.
//   - The owner refuses to upload to the querier or to a node that is not the named compute
//     node, refuses handles of another session and a key exchange signed by another node, and
//     the compute node holds no session after Close.
//   - protect_mode OWNER: the owners attend their own chunks in the protected layers, and the
//     logits still equal the reference; OwnerAttend refuses other callers, unknown sessions,
//     unprotected layers and malformed queries, and the owner's session ends with its stream;
//     a querier whose owner lost the session goes on without the remote chunks if told to.
#include "node/fedrag_session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/mtls.h"
#include "engine/kv_cache.h"
#include "engine/rag_prompt.h"
#include "engine/transformer.h"
#include "gmock/gmock.h"
#include "grpcpp/support/server_interceptor.h"
#include "gtest/gtest.h"
#include "node/chunk_handles.h"
#include "node/control_service.h"
#include "node/fedrag_owner_service.h"
#include "node/node_info.h"
#include "node/peer_channels.h"
#include "node/scrambled_attention_service.h"
#include "retrieval/knowledge_base.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

namespace fs = std::filesystem;
using ::silo::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kFaqDir[] = "/usr/share/doc/python3.11/html/_sources/faq";
constexpr char kQuestion[] = "How do I install a Python module and build a GUI for it?";
constexpr int kSteps = 8;  // greedy steps compared after the question's prefill

// Every message a server sends, and the upload requests it receives, serialized.
struct WireLog {
  std::mutex mutex;
  std::vector<std::string> messages;  // guarded by mutex

  void Add(std::string bytes) {
    const std::lock_guard<std::mutex> lock(mutex);
    messages.push_back(std::move(bytes));
  }
};

class RecordingInterceptor final : public grpc::experimental::Interceptor {
 public:
  RecordingInterceptor(grpc::experimental::ServerRpcInfo* info, WireLog* log)
      : method_(info->method()), log_(log) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      std::vector<grpc::Slice> slices;
      if (methods->GetSerializedSendMessage()->Dump(&slices).ok()) {
        std::string bytes;
        for (const grpc::Slice& slice : slices) {
          bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
        }
        log_->Add(std::move(bytes));
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        method_ == "/silo.v1.ScrambledAttentionService/UploadScrambledKv" &&
        methods->GetRecvMessage() != nullptr) {
      log_->Add(static_cast<const google::protobuf::Message*>(methods->GetRecvMessage())
                    ->SerializeAsString());
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  WireLog* log_;
};

class RecordingFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RecordingFactory(WireLog* log) : log_(log) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RecordingInterceptor(info, log_);
  }

 private:
  WireLog* log_;
};

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> Recording(
    WireLog* log) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<RecordingFactory>(log));
  return factories;
}

struct Owner {
  std::string id;
  std::unique_ptr<retrieval::KnowledgeBase> corpus;
  std::unique_ptr<ChunkHandles> handles;
  std::unique_ptr<PeerChannels> peers;
  std::unique_ptr<FedRagOwnerService> service;
  std::unique_ptr<ControlService> control;
  silo::testing::DevServer server;
};

// A chunk of the virtual context: its owner, where it sits, and its KV shard and text.
struct ContextChunk {
  size_t owner;
  int64_t vector_id;
  int64_t virtual_start;
  engine::KvShard shard;
  std::string text;
};

struct RunResult {
  std::vector<std::vector<float>> logits;  // per step: [vocab_size]
  std::vector<int32_t> tokens;             // greedy picks, kSteps + 1
};

class FedRagSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::is_directory(kFaqDir)) << kFaqDir << " is missing (python3.11-doc)";
    certs_ = dir_.path() / "certs";
    ASSERT_OK(silo::testing::MakeDevCertificates(certs_, {"institution/own-a", "institution/own-b",
                                                          "institution/querier", "compute/comp"})
                  .status());
    ASSERT_OK_AND_ASSIGN(const std::string decoder, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(const std::string embedder, silo::testing::EmbedderDir());
    const std::vector<std::vector<std::string>> files = {
        {StrCat(kFaqDir, "/installed.rst.txt"), StrCat(kFaqDir, "/gui.rst.txt")},
        {StrCat(kFaqDir, "/extending.rst.txt")}};
    for (size_t i = 0; i < files.size(); ++i) {
      Owner& owner = owners_.emplace_back();
      owner.id = i == 0 ? "own-a" : "own-b";
      retrieval::KnowledgeBaseOptions options;
      options.decoder_model = decoder;
      options.embedder_model = embedder;
      options.data_dir = (dir_.path() / owner.id).string();
      options.chunking.max_tokens = 96;
      options.chunking.overlap_tokens = 0;
      options.kv_shards = retrieval::KvShardMode::kLazy;
      options.threads = 1;
      crypto::SecretBytes key(32);
      for (uint8_t& byte : key.mutable_span()) byte = static_cast<uint8_t>(0x40 + i);
      ASSERT_OK_AND_ASSIGN(owner.corpus, retrieval::KnowledgeBase::Open(options, key));
      ASSERT_OK(owner.corpus->Ingest(files[i]).status());
      ASSERT_OK_AND_ASSIGN(ChunkHandles handles, ChunkHandles::Create(key));
      owner.handles = std::make_unique<ChunkHandles>(std::move(handles));
      ASSERT_OK_AND_ASSIGN(const crypto::TlsMaterial tls, crypto::LoadTlsMaterial(Files(owner.id)));
      owner.peers = std::make_unique<PeerChannels>(tls);
      ASSERT_OK_AND_ASSIGN(
          const v1::NodeInfo info,
          MakeNodeInfo({crypto::PeerRole::kInstitution, owner.id}, "", owner.corpus.get()));
      model_ = info.model();
      ASSERT_OK_AND_ASSIGN(KeyExchangeSigner signer, Signer(owner.id));
      owner.service =
          std::make_unique<FedRagOwnerService>(owner.corpus.get(), owner.handles.get(),
                                               std::move(signer), owner.peers.get(), info.model());
      owner.control = std::make_unique<ControlService>(*owner.peers);
      ASSERT_OK_AND_ASSIGN(owner.server,
                           silo::testing::StartDevServer(certs_, owner.id,
                                                         {owner.service.get(), owner.control.get()},
                                                         Recording(&owner_wire_)));
    }
    ASSERT_OK_AND_ASSIGN(const crypto::TlsMaterial compute_tls,
                         crypto::LoadTlsMaterial(Files("comp")));
    compute_peers_ = std::make_unique<PeerChannels>(compute_tls);
    compute_control_ = std::make_unique<ControlService>(*compute_peers_);
    ASSERT_OK_AND_ASSIGN(compute_server_, silo::testing::StartDevServer(
                                              certs_, "comp", {&compute_, compute_control_.get()},
                                              Recording(&upload_wire_)));

    ASSERT_OK_AND_ASSIGN(const crypto::TlsMaterial querier_tls,
                         crypto::LoadTlsMaterial(Files("querier")));
    querier_peers_ = std::make_unique<PeerChannels>(querier_tls);
    ASSERT_OK_AND_ASSIGN(querier_signer_, Signer("querier"));
    const engine::LanguageModel& model = owners_[0].corpus->decoder();
    pool_ = std::make_unique<engine::ThreadPool>(2);
    transformer_ = std::make_unique<engine::Transformer>(model.model(), *pool_);
    ASSERT_OK_AND_ASSIGN(const engine::RagPromptBuilder builder,
                         engine::RagPromptBuilder::Create(&model.tokenizer()));
    prompt_ = builder.Build(kQuestion, {});

    // Two chunks of each owner, interleaved: a0 b0 a1 b1.
    int64_t position = static_cast<int64_t>(prompt_.prefix.size());
    std::vector<std::vector<retrieval::SearchHit>> hits;
    for (Owner& owner : owners_) {
      ASSERT_OK_AND_ASSIGN(hits.emplace_back(), owner.corpus->Search(kQuestion, 2));
      ASSERT_EQ(hits.back().size(), 2u);
    }
    for (size_t rank = 0; rank < 2; ++rank) {
      for (size_t o = 0; o < owners_.size(); ++o) {
        const retrieval::SearchHit& hit = hits[o][rank];
        ASSERT_OK_AND_ASSIGN(engine::KvShard shard, owners_[o].corpus->KvShardOf(hit.chunk_id));
        chunks_.push_back({.owner = o,
                           .vector_id = hit.vector_id,
                           .virtual_start = position,
                           .shard = std::move(shard),
                           .text = hit.text});
        position += hit.n_tokens;
      }
    }
    question_start_ = position;
  }

  crypto::TlsFiles Files(const std::string& id) const {
    return silo::testing::DevTlsFiles(certs_, id);
  }

  absl::StatusOr<KeyExchangeSigner> Signer(const std::string& id) const {
    SILO_ASSIGN_OR_RETURN(crypto::TlsMaterial tls, crypto::LoadTlsMaterial(Files(id)));
    const std::string_view pem(reinterpret_cast<const char*>(tls.key_pem.span().data()),
                               tls.key_pem.span().size());
    SILO_ASSIGN_OR_RETURN(crypto::SigningKey key, crypto::SigningKey::FromPem(pem));
    return KeyExchangeSigner{
        .key = std::move(key), .certificate_pem = tls.cert_pem, .ca_pem = tls.ca_pem};
  }

  v1::Placement Placement(const v1::PrivacySettings& privacy) {
    v1::Placement placement;
    std::string id(16, '\0');
    for (char& c : id) c = static_cast<char>(next_session_ * 7 + 1);
    ++next_session_;
    placement.mutable_session()->set_value(id);
    placement.set_mode(v1::GENERATION_MODE_FEDRAG);
    placement.set_querier_node_id("querier");
    placement.mutable_compute()->set_node_id("comp");
    placement.mutable_compute()->set_address(compute_server_.address);
    *placement.mutable_privacy() = privacy;
    return placement;
  }

  // The prefill of the question and kSteps greedy steps, over a cache holding the system prompt
  // and, when `hook` is null, the chunks' plaintext KV; `forced` (optional) fixes the tokens
  // fed back, so that two runs are compared on the same inputs.
  RunResult Generate(engine::AttentionHook* hook, const std::vector<int32_t>* forced) {
    RunResult run;
    engine::KvCache cache(transformer_->model().config(), attention::KvDType::kF32, 4096);
    const engine::SequenceId sequence = cache.NewSequence();
    std::vector<float> logits;
    std::vector<int32_t> positions(prompt_.prefix.size());
    std::iota(positions.begin(), positions.end(), 0);
    const engine::SequenceInput prefix{.sequence = sequence,
                                       .tokens = prompt_.prefix,
                                       .positions = positions,
                                       .logits = engine::LogitsWanted::kNone,
                                       .hook = nullptr,
                                       .capture = nullptr};
    EXPECT_OK(transformer_->Forward({&prefix, 1}, cache, logits));
    if (hook == nullptr) {
      for (const ContextChunk& chunk : chunks_) {
        std::vector<int32_t> chunk_positions(static_cast<size_t>(chunk.shard.n_tokens));
        std::iota(chunk_positions.begin(), chunk_positions.end(),
                  static_cast<int32_t>(chunk.virtual_start));
        EXPECT_OK(cache.AppendShard(sequence, chunk.shard, chunk_positions, transformer_->rope()));
      }
    }
    std::vector<int32_t> tokens = prompt_.suffix;
    int32_t position = static_cast<int32_t>(question_start_);
    for (int step = 0; step <= kSteps; ++step) {
      positions.resize(tokens.size());
      std::iota(positions.begin(), positions.end(), position);
      position += static_cast<int32_t>(tokens.size());
      const engine::SequenceInput input{.sequence = sequence,
                                        .tokens = tokens,
                                        .positions = positions,
                                        .logits = engine::LogitsWanted::kLast,
                                        .hook = hook,
                                        .capture = nullptr};
      const absl::Status forward = transformer_->Forward({&input, 1}, cache, logits);
      EXPECT_OK(forward);
      if (!forward.ok()) break;
      run.logits.push_back(logits);
      const int32_t best =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      run.tokens.push_back(best);
      tokens = {forced != nullptr ? (*forced)[static_cast<size_t>(step)] : best};
    }
    return run;
  }

  // A FedRAG run with these settings, compared with the plaintext reference; `stats`
  // (optional) receives the session's.
  void ExpectExact(const v1::PrivacySettings& privacy, v1::DType kv_dtype, double tolerance,
                   FedRagSessionStats* stats = nullptr) {
    const v1::Placement placement = Placement(privacy);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<FedRagSession> session, Open(placement, kv_dtype));
    const RunResult fedrag = Generate(session.get(), nullptr);
    ASSERT_OK(session->Close());
    if (stats != nullptr) *stats = session->stats();
    ASSERT_EQ(fedrag.tokens.size(), static_cast<size_t>(kSteps + 1));
    const RunResult plain = Generate(nullptr, &fedrag.tokens);
    ASSERT_EQ(plain.logits.size(), fedrag.logits.size());
    for (size_t step = 0; step < plain.logits.size(); ++step) {
      double diff = 0;
      double norm = 0;
      for (size_t i = 0; i < plain.logits[step].size(); ++i) {
        diff += std::pow(fedrag.logits[step][i] - plain.logits[step][i], 2);
        norm += std::pow(plain.logits[step][i], 2);
      }
      EXPECT_LE(std::sqrt(diff / norm), tolerance) << "step " << step;
      EXPECT_EQ(fedrag.tokens[step], plain.tokens[step]) << "step " << step;
    }
    EXPECT_EQ(compute_.n_sessions(), 0);
  }

  absl::StatusOr<std::unique_ptr<FedRagSession>> Open(const v1::Placement& placement,
                                                      v1::DType kv_dtype,
                                                      bool continue_on_failure = false) {
    FedRagSessionOptions options{.placement = placement,
                                 .owners = {},
                                 .model = model_,
                                 .kv_mode = v1::KV_MODE_POSITION_INDEPENDENT,
                                 .kv_dtype = kv_dtype,
                                 .deadline = absl::Now() + absl::Minutes(2),
                                 .continue_on_failure = continue_on_failure};
    // Handles sealed for this session, as the owners' Retrieve would have returned them.
    for (size_t o = 0; o < owners_.size(); ++o) {
      FedRagOwnerChunks& owner = options.owners.emplace_back();
      owner.owner.set_node_id(owners_[o].id);
      owner.owner.set_address(owners_[o].server.address);
      for (const ContextChunk& chunk : chunks_) {
        if (chunk.owner != o) continue;
        SILO_ASSIGN_OR_RETURN(
            std::string handle,
            owners_[o].handles->Seal(placement.session().value(), chunk.vector_id));
        v1::ChunkSelection& selection = owner.selections.emplace_back();
        selection.set_handle(std::move(handle));
        selection.set_virtual_start(chunk.virtual_start);
        owner.n_tokens.push_back(chunk.shard.n_tokens);
      }
    }
    return FedRagSession::Open(std::move(options), transformer_->model().config(), *querier_signer_,
                               *querier_peers_);
  }

  silo::testing::TempDir dir_;
  fs::path certs_;
  std::vector<Owner> owners_;
  v1::ModelFingerprint model_;
  WireLog owner_wire_;   // what the owners answer the querier
  WireLog upload_wire_;  // what the compute node receives (the owners' uploads) and sends
  ScrambledAttentionService compute_;
  std::unique_ptr<PeerChannels> compute_peers_;
  std::unique_ptr<ControlService> compute_control_;
  silo::testing::DevServer compute_server_;
  std::unique_ptr<PeerChannels> querier_peers_;
  std::optional<KeyExchangeSigner> querier_signer_;
  std::unique_ptr<engine::ThreadPool> pool_;
  std::unique_ptr<engine::Transformer> transformer_;
  engine::RagPrompt prompt_;
  std::vector<ContextChunk> chunks_;
  int64_t question_start_ = 0;
  int next_session_ = 1;
};

v1::PrivacySettings Privacy(v1::KeyScope scope, v1::Mixer mixer) {
  v1::PrivacySettings privacy;
  privacy.set_key_scope(scope);
  privacy.set_mixer(mixer);
  if (scope == v1::KEY_SCOPE_BLOCK) privacy.set_block_rows(64);
  return privacy;
}

// f32 on the wire: FedRAG's only difference from the reference is float rounding in the
// scrambler and the order of the merge.
TEST_F(FedRagSessionTest, LogitsEqualPlaintextKvForEveryKeyScopeAndMixerInF32) {
  for (const v1::KeyScope scope :
       {v1::KEY_SCOPE_SESSION, v1::KEY_SCOPE_CHUNK, v1::KEY_SCOPE_BLOCK}) {
    for (const v1::Mixer mixer : {v1::MIXER_SPHPS, v1::MIXER_DENSE}) {
      SCOPED_TRACE(StrCat(v1::KeyScope_Name(scope), " ", v1::Mixer_Name(mixer)));
      ExpectExact(Privacy(scope, mixer), v1::DTYPE_F32, 1e-4);
    }
  }
}

v1::PrivacySettings OwnerProtected(uint32_t protect_layers) {
  v1::PrivacySettings privacy = Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS);
  privacy.set_protect_layers(protect_layers);
  privacy.set_protect_mode(v1::PROTECT_MODE_OWNER);
  return privacy;
}

// protect_mode OWNER is exact, unlike SKIP: the owners' plain partials over their own chunks
// stand in for the compute node's in the protected layers.
TEST_F(FedRagSessionTest, OwnerModeLogitsEqualPlaintextKv) {
  const int32_t n_layers = transformer_->model().config().n_layers;
  // Every layer protected too: the compute node is then not needed at all.
  for (const uint32_t protect_layers : {1u, 2u, static_cast<uint32_t>(n_layers)}) {
    SCOPED_TRACE(StrCat("protect_layers ", protect_layers));
    FedRagSessionStats stats;
    ExpectExact(OwnerProtected(protect_layers), v1::DTYPE_F32, 1e-4, &stats);
    EXPECT_EQ(stats.n_owner_exchanges, int64_t{protect_layers} * (kSteps + 1));
    EXPECT_EQ(stats.n_exchanges, (n_layers - int64_t{protect_layers}) * (kSteps + 1));
  }
}

// f16 on the wire rounds K' and V' (about 5e-4 relative per element), bf16 more (4e-3).
TEST_F(FedRagSessionTest, LogitsStayCloseWithF16OrBf16OnTheWire) {
  ExpectExact(Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS), v1::DTYPE_F16, 2e-2);
  ExpectExact(Privacy(v1::KEY_SCOPE_BLOCK, v1::MIXER_DENSE), v1::DTYPE_F16, 2e-2);
  ExpectExact(Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS), v1::DTYPE_BF16, 5e-2);
}

// What of the chunks' plaintext `sent` (serialized messages) and `uploads` (their K'/V'
// tensors, F32) hold: a 12-byte window of a chunk's text, a run of 6 of its token ids (int32, or
// varint when that is at least 10 bytes: shorter runs turn up by chance in megabytes of floats),
// or a row within 5% (relative L2) of a plaintext K (after RoPE) or V row of the same layer and
// KV head. Empty when none.
std::string FindPlaintext(const std::vector<ContextChunk>& chunks,
                          const engine::Tokenizer& tokenizer, const engine::Rope& rope,
                          int32_t head_dim, const std::vector<std::string>& sent,
                          const std::vector<v1::UploadScrambledKvRequest>& uploads) {
  const auto contains = [&](const std::string& needle) {
    return std::any_of(sent.begin(), sent.end(), [&](const std::string& bytes) {
      return bytes.find(needle) != std::string::npos;
    });
  };
  for (const ContextChunk& chunk : chunks) {
    for (size_t at = 0; at + 12 <= chunk.text.size(); at += 6) {
      if (contains(chunk.text.substr(at, 12))) return "chunk text: " + chunk.text.substr(at, 12);
    }
    const std::vector<int32_t> ids = tokenizer.Encode(chunk.text, /*parse_special=*/false);
    for (size_t at = 0; at + 6 <= ids.size(); ++at) {
      std::string fixed, varint;
      for (size_t i = at; i < at + 6; ++i) {
        fixed.append(reinterpret_cast<const char*>(&ids[i]), 4);
        for (uint32_t v = static_cast<uint32_t>(ids[i]);; v >>= 7) {
          varint.push_back(static_cast<char>(v < 0x80 ? v : (v & 0x7f) | 0x80));
          if (v < 0x80) break;
        }
      }
      if (contains(fixed)) return StrCat("token ids (int32) at ", at);
      if (varint.size() >= 10 && contains(varint)) return StrCat("token ids (varint) at ", at);
    }
  }
  const int32_t d = head_dim;
  for (const v1::UploadScrambledKvRequest& upload : uploads) {
    const int32_t layer = static_cast<int32_t>(upload.layer());
    const int32_t kv_head = static_cast<int32_t>(upload.kv_head());
    std::vector<std::vector<float>> plain;  // K after RoPE and V rows of every chunk
    for (const ContextChunk& chunk : chunks) {
      const int32_t n = chunk.shard.n_tokens;
      std::vector<float> k(static_cast<size_t>(n) * d), v(k.size());
      std::vector<int32_t> positions(static_cast<size_t>(n));
      for (int32_t t = 0; t < n; ++t) {
        positions[static_cast<size_t>(t)] = static_cast<int32_t>(chunk.virtual_start + t);
        for (int32_t c = 0; c < d; ++c) {
          const size_t at = static_cast<size_t>(chunk.shard.Offset(layer, kv_head, t) + c);
          const size_t to =
              static_cast<size_t>(t) * static_cast<size_t>(d) + static_cast<size_t>(c);
          k[to] = HalfToFloat(chunk.shard.k[at]);
          v[to] = HalfToFloat(chunk.shard.v[at]);
        }
      }
      rope.Rotate(positions.data(), n, 1, k.data());
      for (int32_t t = 0; t < n; ++t) {
        plain.emplace_back(k.begin() + t * d, k.begin() + (t + 1) * d);
        plain.emplace_back(v.begin() + t * d, v.begin() + (t + 1) * d);
      }
    }
    for (const v1::Tensor* tensor : {&upload.k(), &upload.v()}) {
      const int64_t width = tensor->shape(1);
      for (int64_t r = 0; r < tensor->shape(0); ++r) {
        std::vector<float> row(static_cast<size_t>(d));
        std::memcpy(row.data(), tensor->data().data() + r * width * 4, static_cast<size_t>(d) * 4);
        for (const std::vector<float>& p : plain) {
          double diff = 0, norm = 0;
          for (int32_t c = 0; c < d; ++c) {
            diff += std::pow(row[static_cast<size_t>(c)] - p[static_cast<size_t>(c)], 2);
            norm += std::pow(p[static_cast<size_t>(c)], 2);
          }
          if (diff <= 0.0025 * norm) {
            return StrCat("a plaintext row at layer ", layer, ", KV head ", kv_head, ", row ", r);
          }
        }
      }
    }
  }
  return "";
}

// Everything the owners sent in a session holds none of their chunks' plaintext; the same
// detector finds each kind of plaintext when it is there (so that it can fail).
TEST_F(FedRagSessionTest, OwnersSendNoPlaintext) {
  const v1::Placement placement = Placement(Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS));
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<FedRagSession> session, Open(placement, v1::DTYPE_F32));
    Generate(session.get(), nullptr);
    ASSERT_OK(session->Close());
  }
  std::vector<std::string> sent = owner_wire_.messages;
  std::vector<v1::UploadScrambledKvRequest> uploads;
  for (const std::string& bytes : upload_wire_.messages) {
    v1::UploadScrambledKvRequest upload;
    if (upload.ParseFromString(bytes) && upload.has_k()) {
      ASSERT_EQ(upload.k().dtype(), v1::DTYPE_F32);
      uploads.push_back(upload);
      sent.push_back(bytes);
    }
  }
  const engine::ModelConfig& config = transformer_->model().config();
  // Session key scope: one upload per owner, layer and KV head.
  ASSERT_EQ(uploads.size(), size_t{2} * config.n_layers * config.n_kv_heads);
  const engine::Tokenizer& tokenizer = owners_[0].corpus->decoder().tokenizer();
  const engine::Rope& rope = transformer_->rope();
  EXPECT_EQ(FindPlaintext(chunks_, tokenizer, rope, config.head_dim, sent, uploads), "");

  // Controls: the chunk's text, its token ids, and one plaintext K row slipped into an upload.
  const ContextChunk& chunk = chunks_[1];
  EXPECT_THAT(FindPlaintext(chunks_, tokenizer, rope, config.head_dim,
                            {sent[0] + chunk.text.substr(20, 40)}, {}),
              HasSubstr("chunk text"));
  const std::vector<int32_t> ids = tokenizer.Encode(chunk.text, /*parse_special=*/false);
  EXPECT_THAT(FindPlaintext(chunks_, tokenizer, rope, config.head_dim,
                            {std::string(reinterpret_cast<const char*>(ids.data()), 40)}, {}),
              HasSubstr("token ids"));
  v1::UploadScrambledKvRequest leaky = uploads.front();
  std::vector<float> row(static_cast<size_t>(config.head_dim));
  std::vector<int32_t> position = {static_cast<int32_t>(chunk.virtual_start + 3)};
  for (int32_t c = 0; c < config.head_dim; ++c) {
    row[static_cast<size_t>(c)] = HalfToFloat(
        chunk.shard
            .k[static_cast<size_t>(chunk.shard.Offset(static_cast<int32_t>(leaky.layer()),
                                                      static_cast<int32_t>(leaky.kv_head()), 3) +
                                   c)]);
  }
  rope.Rotate(position.data(), 1, 1, row.data());
  const int64_t width = leaky.k().shape(1);
  std::string& data = *leaky.mutable_k()->mutable_data();
  std::memcpy(data.data() + 2 * width * 4, row.data(), row.size() * 4);
  EXPECT_THAT(FindPlaintext(chunks_, tokenizer, rope, config.head_dim, {}, {leaky}),
              HasSubstr("plaintext row"));
}

// The owner uploads only to the compute node the querier named, and only if that node's
// certificate says it is that compute node: the querier, which holds the keys, never gets K'/V'.
TEST_F(FedRagSessionTest, OwnersUploadOnlyToTheNamedComputeNode) {
  ASSERT_OK_AND_ASSIGN(const std::shared_ptr<grpc::Channel> channel,
                       silo::testing::DevChannel(certs_, "querier", owners_[0].server.address));
  const auto stub = v1::FedRagOwnerService::NewStub(channel);
  const auto prepare = [&](const std::string& compute_id, const std::string& address) {
    const v1::Placement placement = Placement(Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS));
    absl::StatusOr<QuerierKeyExchange> exchange =
        QuerierKeyExchange::Start(*querier_signer_, placement.session().value());
    EXPECT_OK(exchange.status());
    grpc::ClientContext keys_context;
    v1::ExchangeKeysResponse keys;
    EXPECT_TRUE(stub->ExchangeKeys(&keys_context, exchange->request(), &keys).ok());
    v1::SelectChunksRequest select;
    *select.mutable_session() = placement.session();
    v1::ChunkSelection& selection = *select.add_selections();
    absl::StatusOr<std::string> handle =
        owners_[0].handles->Seal(placement.session().value(), chunks_[0].vector_id);
    EXPECT_OK(handle.status());
    selection.set_handle(*handle);
    selection.set_virtual_start(chunks_[0].virtual_start);
    grpc::ClientContext select_context;
    v1::SelectChunksResponse selected;
    EXPECT_TRUE(stub->SelectChunks(&select_context, select, &selected).ok());
    v1::PrepareSessionRequest request;
    *request.mutable_session() = placement.session();
    request.mutable_compute()->set_node_id(compute_id);
    request.mutable_compute()->set_address(address);
    *request.mutable_model() = model_;
    request.set_kv_mode(v1::KV_MODE_POSITION_INDEPENDENT);
    *request.mutable_privacy() = placement.privacy();
    request.set_kv_dtype(v1::DTYPE_F32);
    grpc::ClientContext context;
    v1::PrepareSessionResponse response;
    return stub->PrepareSession(&context, request, &response).error_code();
  };
  // The querier names itself.
  EXPECT_EQ(prepare("querier", compute_server_.address), grpc::StatusCode::PERMISSION_DENIED);
  // The querier names the compute node but gives another node's address.
  EXPECT_EQ(prepare("comp", owners_[1].server.address), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(prepare("own-b", owners_[1].server.address), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(upload_wire_.messages.empty() ||
              std::none_of(upload_wire_.messages.begin(), upload_wire_.messages.end(),
                           [](const std::string& bytes) {
                             v1::UploadScrambledKvRequest upload;
                             return upload.ParseFromString(bytes) && upload.has_k();
                           }));

  // The querier checks the compute node's certificate too, before it sends the layout.
  v1::Placement misnamed = Placement(Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS));
  misnamed.mutable_compute()->set_node_id("comp-2");
  EXPECT_THAT(Open(misnamed, v1::DTYPE_F32), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(compute_.n_sessions(), 0);
}

// Handles of another session, a replayed key exchange and a half signed for another session are
// refused; the owner keeps serving.
TEST_F(FedRagSessionTest, OwnerRefusesForeignHandlesAndReplayedKeys) {
  const v1::Placement placement = Placement(Privacy(v1::KEY_SCOPE_SESSION, v1::MIXER_SPHPS));
  const std::string& session_id = placement.session().value();
  ASSERT_OK_AND_ASSIGN(const std::shared_ptr<grpc::Channel> channel,
                       silo::testing::DevChannel(certs_, "querier", owners_[0].server.address));
  const auto stub = v1::FedRagOwnerService::NewStub(channel);
  ASSERT_OK_AND_ASSIGN(const QuerierKeyExchange exchange,
                       QuerierKeyExchange::Start(*querier_signer_, session_id));
  {
    grpc::ClientContext context;
    v1::ExchangeKeysResponse response;
    ASSERT_TRUE(stub->ExchangeKeys(&context, exchange.request(), &response).ok());
    EXPECT_OK(exchange.Finish(*querier_signer_, response, "own-a").status());
    // The same owner's answer does not pass for another owner's.
    EXPECT_THAT(exchange.Finish(*querier_signer_, response, "own-b").status(),
                StatusIs(absl::StatusCode::kPermissionDenied));
  }
  {
    grpc::ClientContext context;
    v1::ExchangeKeysResponse response;
    EXPECT_EQ(stub->ExchangeKeys(&context, exchange.request(), &response).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
  }
  {
    // The half signed for this session, replayed into another one.
    v1::ExchangeKeysRequest replayed = exchange.request();
    replayed.mutable_session()->set_value(std::string(16, 'z'));
    grpc::ClientContext context;
    v1::ExchangeKeysResponse response;
    EXPECT_EQ(stub->ExchangeKeys(&context, replayed, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    // The querier's half with an owner's certificate: it is not the caller's.
    v1::ExchangeKeysRequest borrowed = exchange.request();
    borrowed.mutable_session()->set_value(std::string(16, 'y'));
    ASSERT_OK_AND_ASSIGN(const crypto::TlsMaterial other, crypto::LoadTlsMaterial(Files("own-b")));
    borrowed.set_certificate_chain_pem(other.cert_pem);
    grpc::ClientContext context;
    v1::ExchangeKeysResponse response;
    EXPECT_EQ(stub->ExchangeKeys(&context, borrowed, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    // A handle sealed for another session.
    v1::SelectChunksRequest select;
    *select.mutable_session() = placement.session();
    v1::ChunkSelection& selection = *select.add_selections();
    ASSERT_OK_AND_ASSIGN(const std::string handle,
                         owners_[0].handles->Seal(std::string(16, 'q'), chunks_[0].vector_id));
    selection.set_handle(handle);
    selection.set_virtual_start(100);
    grpc::ClientContext context;
    v1::SelectChunksResponse response;
    EXPECT_EQ(stub->SelectChunks(&context, select, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // The owner still serves a whole session.
  ExpectExact(Privacy(v1::KEY_SCOPE_CHUNK, v1::MIXER_SPHPS), v1::DTYPE_F32, 1e-4);
}

// One OwnerAttend message of `layer` at `step`: n_rows query rows per KV head.
v1::OwnerAttendRequest OwnerQuery(const std::string& session_id, uint32_t step, uint32_t layer,
                                  int32_t n_kv_heads, int32_t head_dim, int64_t n_rows = 6) {
  v1::OwnerAttendRequest request;
  request.mutable_session()->set_value(session_id);
  request.set_step(step);
  request.set_layer(layer);
  std::vector<float> q(static_cast<size_t>(n_rows * head_dim));
  for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.1f * static_cast<float>(i));
  for (int32_t kv_head = 0; kv_head < n_kv_heads; ++kv_head) {
    v1::HeadQuery& query = *request.add_queries();
    query.set_kv_head(static_cast<uint32_t>(kv_head));
    query.mutable_q()->set_dtype(v1::DTYPE_F32);
    query.mutable_q()->add_shape(n_rows);
    query.mutable_q()->add_shape(head_dim);
    query.mutable_q()->set_data(std::string(reinterpret_cast<const char*>(q.data()), q.size() * 4));
  }
  return request;
}

// OwnerAttend serves only the session's querier, only an OWNER session's protected layers, and
// only well-formed queries; a stream that binds a session ends it.
TEST_F(FedRagSessionTest, OwnerAttendRefusesOtherCallersAndBadMessages) {
  const engine::ModelConfig& config = transformer_->model().config();
  const int32_t heads = config.n_kv_heads;
  const int32_t d = config.head_dim;
  // Sends `messages` to owner a as `caller`, reading the answer to each; the stream's status.
  const auto attend = [&](const std::string& caller,
                          const std::vector<v1::OwnerAttendRequest>& messages) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        silo::testing::DevChannel(certs_, caller, owners_[0].server.address);
    EXPECT_OK(channel.status());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const auto stream = v1::FedRagOwnerService::NewStub(*channel)->OwnerAttend(&context);
    for (const v1::OwnerAttendRequest& message : messages) {
      v1::OwnerAttendResponse response;
      if (!stream->Write(message) || !stream->Read(&response)) return stream->Finish();
      EXPECT_EQ(response.partials_size(), heads);
      for (const v1::AttentionPartial& partial : response.partials()) {
        EXPECT_EQ(partial.o().shape_size(), 2);
        EXPECT_EQ(partial.o().shape(1), d);
        EXPECT_EQ(partial.m().shape(0), message.queries(0).q().shape(0));
      }
    }
    stream->WritesDone();
    return stream->Finish();
  };

  {
    const v1::Placement placement = Placement(OwnerProtected(2));
    const std::string& id = placement.session().value();
    ASSERT_OK_AND_ASSIGN(const std::unique_ptr<FedRagSession> session,
                         Open(placement, v1::DTYPE_F32));
    EXPECT_EQ(attend("own-b", {OwnerQuery(id, 0, 0, heads, d)}).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(attend("querier", {OwnerQuery(std::string(16, 'u'), 0, 0, heads, d)}).error_code(),
              grpc::StatusCode::NOT_FOUND);
    // The querier's stream is answered in order, then takes the session with it.
    EXPECT_TRUE(attend("querier", {OwnerQuery(id, 0, 0, heads, d), OwnerQuery(id, 0, 1, heads, d),
                                   OwnerQuery(id, 1, 0, heads, d, 1)})
                    .ok());
    EXPECT_EQ(attend("querier", {OwnerQuery(id, 2, 0, heads, d)}).error_code(),
              grpc::StatusCode::NOT_FOUND);
    ASSERT_OK(session->Close());
  }

  // Each refused message ends its stream, and the session with it: one session each.
  struct BadCase {
    std::string why;  // in the status message
    std::vector<v1::OwnerAttendRequest> messages;
  };
  const auto bad_cases = [&](const std::string& id) {
    v1::OwnerAttendRequest wrong_head = OwnerQuery(id, 0, 0, heads, d);
    wrong_head.mutable_queries(0)->set_kv_head(1);
    v1::OwnerAttendRequest bad_width = OwnerQuery(id, 0, 0, heads, d);
    bad_width.mutable_queries(2)->mutable_q()->set_shape(1, d + 1);
    v1::OwnerAttendRequest bad_size = OwnerQuery(id, 0, 0, heads, d);
    bad_size.mutable_queries(1)->mutable_q()->mutable_data()->append("1234");
    v1::OwnerAttendRequest not_finite = OwnerQuery(id, 0, 0, heads, d);
    const float nan = std::nanf("");
    not_finite.mutable_queries(0)->mutable_q()->mutable_data()->replace(
        8, 4, reinterpret_cast<const char*>(&nan), 4);
    return std::vector<BadCase>{
        {.why = "not protected", .messages = {OwnerQuery(id, 0, 2, heads, d)}},
        {.why = "one query per KV head", .messages = {OwnerQuery(id, 0, 0, heads - 1, d)}},
        {.why = "of KV head i", .messages = {wrong_head}},
        {.why = "shape must be", .messages = {bad_width}},
        {.why = "bytes of data", .messages = {bad_size}},
        {.why = "NaN or Inf", .messages = {not_finite}},
        {.why = "must increase",
         .messages = {OwnerQuery(id, 0, 1, heads, d), OwnerQuery(id, 0, 1, heads, d)}}};
  };
  const size_t n_cases = bad_cases("").size();
  for (size_t i = 0; i < n_cases; ++i) {
    const v1::Placement placement = Placement(OwnerProtected(2));
    const BadCase bad = bad_cases(placement.session().value())[i];
    SCOPED_TRACE(bad.why);
    ASSERT_OK_AND_ASSIGN(const std::unique_ptr<FedRagSession> session,
                         Open(placement, v1::DTYPE_F32));
    const grpc::Status refused = attend("querier", bad.messages);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(refused.error_message(), HasSubstr(bad.why));
    EXPECT_EQ(
        attend("querier", {OwnerQuery(placement.session().value(), 0, 0, heads, d)}).error_code(),
        grpc::StatusCode::NOT_FOUND);
    ASSERT_OK(session->Close());
  }

  // An owner that lost the session fails the querier's exchange; with continue_on_failure the
  // answer goes on without the remote chunks (and Close does not wait for the other owner).
  const v1::Placement placement = Placement(OwnerProtected(2));
  ASSERT_OK_AND_ASSIGN(const std::unique_ptr<FedRagSession> session,
                       Open(placement, v1::DTYPE_F32, /*continue_on_failure=*/true));
  ASSERT_TRUE(attend("querier", {OwnerQuery(placement.session().value(), 0, 0, heads, d)}).ok());
  EXPECT_EQ(Generate(session.get(), nullptr).tokens.size(), static_cast<size_t>(kSteps + 1));
  EXPECT_THAT(session->failure(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("own-a")));
  EXPECT_EQ(session->stats().n_owner_exchanges, 0);
  EXPECT_OK(session->Close());
}

}  // namespace
}  // namespace silo::node
