// DRAGON over real processes and mTLS (DESIGN.md §7): silo-coordinator, a device node holding a
// few personal notes and a cloud institution holding the Python FAQ, both with the default
// model. Questions go in through the coordinator, as siloctl sends them.
//   1. The coordinator places the session on the cloud with the device's model; the answer
//      (greedy, the aggregator moving every 3 tokens) is token for token the mixture over all
//      four chunks computed in this process from the two stores, and the device reports how
//      many of its drafts were accepted.
//   2. A cloud that decodes with another model refuses the session the stream starts.
//   3. The cloud dying mid-answer: the device finishes alone and says so, and keeps serving.
//   4. The cloud dying mid-answer and coming back at its address: the device resumes aggregation
//      with the new process, and from there the answer is the mixture again.
//   5. The cloud stopped mid-answer (SIGSTOP: its connection stays, nothing answers): the device
//      gives up on it after peer_silence and finishes alone.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "engine/document_streams.h"
#include "engine/language_model.h"
#include "engine/rag_prompt.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "node/dragon_aggregation.h"
#include "node/dragon_side.h"
#include "retrieval/knowledge_base.h"
#include "retrieval/node_key.h"
#include "silo/v1/coordinator.grpc.pb.h"
#include "silo/v1/node.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/federation_processes.h"
#include "tests/testing/models.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using ::testing::HasSubstr;

constexpr char kFaqDir[] = "/usr/share/doc/python3.11/html/_sources/faq";
constexpr char kKeyHex[] = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
constexpr absl::Duration kStartTimeout = absl::Seconds(120);
constexpr uint32_t kMaxTokens = 40;
constexpr uint32_t kTopK = 2;
const std::vector<std::string> kQuestions = {
    "How do I make a Python script executable on Unix?",
    "Which Python version does my laptop use, and how was it installed?",
    "How do I copy an object in Python?",
};
// Part 4 asks kQuestions[2] for this many tokens: long enough for the device to answer alone
// while the cloud restarts.
constexpr uint32_t kResumeMaxTokens = 256;

class DragonEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::is_directory(kFaqDir)) << kFaqDir << " is missing (python3.11-doc)";
    ASSERT_OK_AND_ASSIGN(decoder_, silo::testing::DefaultModelPath());
    ASSERT_OK_AND_ASSIGN(embedder_, silo::testing::EmbedderDir());
    ASSERT_OK(silo::testing::MakeDevCertificates(certs(), {"coordinator/coord", "operator/op",
                                                           "device/phone", "institution/cloud"})
                  .status());
    std::ofstream(dir_.path() / "node.key") << kKeyHex << "\n";
    fs::permissions(dir_.path() / "node.key", fs::perms::owner_read | fs::perms::owner_write);
    fs::create_directories(dir_.path() / "notes");
    std::ofstream(dir_.path() / "notes" / "laptop.md")
        << "# My laptop\n\nMy laptop runs Python 3.11.4, installed with pyenv in my home "
           "folder. The system Python stays untouched; pyenv global is set to 3.11.4.\n";
    std::ofstream(dir_.path() / "notes" / "scripts.md")
        << "# Scripts I wrote\n\nMy backup script lives in ~/bin/backup.py. I made it "
           "executable with chmod +x and its first line is #!/usr/bin/env python3.\n";
    std::ofstream(dir_.path() / "notes" / "reading.md")
        << "# Reading list\n\nFluent Python, chapter 6: object references, mutability and "
           "recycling; copies are shallow by default.\n";

    coordinator_port_ = silo::testing::PickUnusedPort();
    ASSERT_GT(coordinator_port_, 0);
    // The cloud comes back at the same address in part 4.
    const int cloud_port = silo::testing::PickUnusedPort();
    ASSERT_GT(cloud_port, 0);
    std::ofstream(dir_.path() / "coordinator.yaml")
        << "listen: 127.0.0.1:" << coordinator_port_ << "\n"
        << "data_dir: coordinator-data\n"
        << "tls: {ca: certs/ca.pem, cert: certs/coord.pem, key: certs/coord.key}\n"
        << "heartbeat_interval_ms: 1000\nmissed_heartbeats: 3\nprobe_interval_ms: 5000\n";
    for (const auto& [id, role] :
         {std::pair<std::string, std::string>{"phone", "device"}, {"cloud", "institution"}}) {
      std::ofstream(dir_.path() / (id + ".yaml"))
          << "node_id: " << id << "\nrole: " << role << "\ndata_dir: data-" << id << "\n"
          << "node_key_file: node.key\nthreads: 1\n"
          << "models: {decoder: " << decoder_ << ", embedder: " << embedder_ << "}\n"
          << "retrieval: {kv_shards: lazy}\n"
          << "serve:\n  listen: 127.0.0.1:" << (id == "cloud" ? cloud_port : 0)
          << "\n  coordinator: 127.0.0.1:" << coordinator_port_
          << "\n  tls: {ca: certs/ca.pem, cert: certs/" << id << ".pem, key: certs/" << id
          << ".key}\n";
    }
  }

  fs::path certs() const { return dir_.path() / "certs"; }

  std::unique_ptr<ChildProcess> Start(const std::vector<std::string>& argv,
                                      const std::string& log) {
    return std::make_unique<ChildProcess>(argv, dir_.path() / log);
  }

  // Starts a node; its address from the log.
  std::unique_ptr<ChildProcess> StartNode(const std::string& id, std::string* address) {
    absl::StatusOr<silo::testing::ServingNode> node = silo::testing::StartServingNode(
        SILO_NODE_BINARY, dir_.path(), id, StrCat(id, "-", ++starts_, ".log"), kStartTimeout);
    EXPECT_OK(node.status());
    if (!node.ok()) return nullptr;
    if (address != nullptr) *address = node->address;
    return std::move(node->process);
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& address, const std::string& id) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        silo::testing::DevChannel(certs(), id, address);
    EXPECT_OK(channel.status());
    return channel.ok() ? *channel : nullptr;
  }

  std::shared_ptr<grpc::Channel> Operator() {
    return Channel(StrCat("127.0.0.1:", coordinator_port_), "op");
  }

  silo::testing::StreamedAnswer Ask(const std::string& question,
                                    const std::function<void()>& on_first_delta = nullptr,
                                    uint32_t max_tokens = kMaxTokens) {
    v1::QueryRequest request;
    request.set_question(question);
    request.set_mode(v1::GENERATION_MODE_DRAGON);
    request.set_querier_node_id("phone");
    request.set_top_k(kTopK);
    request.set_max_tokens(max_tokens);
    request.mutable_sampling()->set_temperature(0);
    request.mutable_dragon()->set_policy(v1::DRAGON_POLICY_ALTERNATE);
    request.mutable_dragon()->set_alternate_every(3);
    return silo::testing::StreamQuery(Operator(), request, absl::Seconds(120), on_first_delta);
  }

  // A question's top-k chunks from each store, in the order the mixture weighs them.
  struct Chunks {
    std::vector<std::string> texts;
    std::vector<float> scores;
  };

  // The chunks of `questions`, from the stores opened in this process (before the nodes start:
  // they lock them).
  std::map<std::string, Chunks> Retrieve(const std::vector<std::string>& questions) {
    std::map<std::string, Chunks> chunks;
    absl::StatusOr<crypto::SecretBytes> key = retrieval::ParseNodeKeyHex(kKeyHex);
    EXPECT_OK(key.status());
    for (const std::string id : {"phone", "cloud"}) {
      retrieval::KnowledgeBaseOptions options;
      options.data_dir = (dir_.path() / ("data-" + id)).string();
      options.decoder_model = decoder_;
      options.embedder_model = embedder_;
      options.threads = 1;
      absl::StatusOr<std::unique_ptr<retrieval::KnowledgeBase>> base =
          retrieval::KnowledgeBase::Open(options, *key);
      EXPECT_OK(base.status());
      if (!base.ok()) return {};
      for (const std::string& question : questions) {
        absl::StatusOr<std::vector<retrieval::SearchHit>> hits = (*base)->Search(question, kTopK);
        EXPECT_OK(hits.status());
        if (!hits.ok()) return {};
        for (const retrieval::SearchHit& hit : *hits) {
          chunks[question].texts.push_back(hit.text);
          chunks[question].scores.push_back(hit.score);
        }
      }
    }
    return chunks;
  }

  // Greedy decoding of the mixture over `chunks` in this process after `prefix`, max_tokens in
  // all, without the end-of-generation token (the answer's text never carries it).
  std::vector<int32_t> GreedyMixture(const engine::LanguageModel& decoder,
                                     const std::string& question, const Chunks& chunks,
                                     std::span<const int32_t> prefix, uint32_t max_tokens) {
    engine::ThreadPool pool(1);
    engine::Transformer transformer(decoder.model(), pool);
    absl::StatusOr<engine::RagPromptBuilder> prompts =
        engine::RagPromptBuilder::Create(&decoder.tokenizer());
    EXPECT_OK(prompts.status());
    if (!prompts.ok()) return {};
    const std::vector<int32_t> stops = node::StopTokensOf(decoder.tokenizer());
    const engine::RagPrompt frame = prompts->Build(question, {});
    engine::DocumentStreamsPrompt prompt{
        .prefix = frame.prefix, .documents = {}, .suffix = frame.suffix};
    for (const std::string& text : chunks.texts) {
      prompt.documents.push_back(prompts->EncodeChunk(text));
    }
    auto streams = engine::DocumentStreams::Start(transformer, prompt, max_tokens);
    EXPECT_OK(streams.status());
    if (!streams.ok()) return {};
    for (const int32_t token : prefix) EXPECT_OK((*streams)->Append(token));
    std::vector<int32_t> tokens;
    for (uint32_t step = prefix.size(); step < max_tokens; ++step) {
      absl::StatusOr<node::SideMixture> mixture =
          node::MixStreams((*streams)->logits(), chunks.scores, 0);
      EXPECT_OK(mixture.status());
      if (!mixture.ok()) break;
      std::mt19937_64 unused;
      const int32_t token = node::DraftToken(mixture->p, true, unused);
      if (std::find(stops.begin(), stops.end(), token) != stops.end()) break;
      tokens.push_back(token);
      if (step + 1 < max_tokens) {
        EXPECT_OK((*streams)->Append(token));
      }
    }
    return tokens;
  }

  silo::testing::TempDir dir_;
  std::string decoder_;
  std::string embedder_;
  int coordinator_port_ = 0;
  int starts_ = 0;
};

TEST_F(DragonEndToEndTest, AnswersAreTheMixtureOverBothSidesAndSurviveTheCloudDying) {
  auto coordinator =
      Start({SILO_COORDINATOR_BINARY, "--config", (dir_.path() / "coordinator.yaml").string()},
            "coordinator.log");
  ASSERT_OK(coordinator->WaitForLine("serving coordinator on", kStartTimeout).status());
  {
    auto phone = Start({SILO_NODE_BINARY, "ingest", "--config",
                        (dir_.path() / "phone.yaml").string(), (dir_.path() / "notes").string()},
                       "phone-ingest.log");
    auto cloud = Start(
        {SILO_NODE_BINARY, "ingest", "--config", (dir_.path() / "cloud.yaml").string(), kFaqDir},
        "cloud-ingest.log");
    for (ChildProcess* ingest : {phone.get(), cloud.get()}) {
      ASSERT_OK_AND_ASSIGN(const int code, ingest->Wait(absl::Minutes(10)));
      ASSERT_EQ(code, 0) << ingest->Log();
    }
  }
  const std::map<std::string, Chunks> chunks = Retrieve(kQuestions);
  ASSERT_EQ(chunks.size(), kQuestions.size());
  ASSERT_OK_AND_ASSIGN(const engine::LanguageModel decoder, engine::LanguageModel::Open(decoder_));

  std::string cloud_address;
  std::map<std::string, std::unique_ptr<ChildProcess>> nodes;
  nodes["phone"] = StartNode("phone", nullptr);
  nodes["cloud"] = StartNode("cloud", &cloud_address);
  ASSERT_OK(silo::testing::WaitForOnlineNodes(Operator(), 2, kStartTimeout));

  // 1. The answers are the mixture over both sides' chunks.
  for (const std::string& question : kQuestions) {
    SCOPED_TRACE(question);
    const silo::testing::StreamedAnswer answer = Ask(question);
    ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
    EXPECT_EQ(answer.placement.dragon_peer().node_id(), "cloud");
    EXPECT_EQ(answer.placement.aggregator(), v1::DRAGON_SIDE_DEVICE);
    EXPECT_EQ(answer.tokens, GreedyMixture(decoder, question, chunks.at(question), {}, kMaxTokens))
        << answer.text;
    EXPECT_EQ(answer.done.sources_size(), static_cast<int>(kTopK)) << "the device's own chunks";
    EXPECT_GT(answer.done.stats().dragon_acceptance(), 0);
    EXPECT_GT(answer.done.stats().aggregator_moves(), 0u);
    EXPECT_GT(answer.done.stats().bytes_sent(), 0);
    EXPECT_GT(answer.done.stats().bytes_received(), 0);
    EXPECT_EQ(answer.done.unanswered_size(), 0);
    std::cout << question << "\n  " << answer.text << "\n";
  }

  // 2. Another model is refused by the cloud.
  {
    const auto stub = v1::DragonService::NewStub(Channel(cloud_address, "phone"));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::DecodeRequest first;
    v1::StartSessionRequest& request = *first.mutable_start();
    request.mutable_session()->set_value(std::string(16, 'x'));
    request.mutable_model()->set_name("another-model");
    request.mutable_model()->set_sha256(std::string(32, 'm'));
    request.set_question("Anything?");
    request.set_top_k(2);
    request.set_max_tokens(8);
    request.set_aggregator(v1::DRAGON_SIDE_DEVICE);
    auto stream = stub->Decode(&context);
    ASSERT_TRUE(stream->Write(first));
    v1::DecodeResponse response;
    EXPECT_FALSE(stream->Read(&response)) << "no `started` for another model";
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("same model"));
  }
  // A stream that does not start with the session is refused too.
  {
    const auto stub = v1::DragonService::NewStub(Channel(cloud_address, "phone"));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub->Decode(&context);
    v1::DecodeRequest draft;
    draft.mutable_draft()->set_step(0);
    ASSERT_TRUE(stream->Write(draft));
    v1::DecodeResponse response;
    EXPECT_FALSE(stream->Read(&response));
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("start the session"));
  }

  // 3. The cloud dies after the first token: the device finishes alone and says so.
  {
    std::thread killer;
    const silo::testing::StreamedAnswer answer = Ask(kQuestions[0], [&] {
      killer = std::thread([&] {
        nodes["cloud"]->Signal(SIGKILL);
        EXPECT_OK(nodes["cloud"]->Wait(absl::Seconds(10)).status());
      });
    });
    if (killer.joinable()) killer.join();
    ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
    EXPECT_FALSE(answer.tokens.empty());
    ASSERT_EQ(answer.done.unanswered_size(), 1);
    EXPECT_EQ(answer.done.unanswered(0).node_id(), "cloud");
    EXPECT_THAT(answer.done.unanswered(0).message(), HasSubstr("finished alone"));
  }
  // The device still serves: with the cloud gone, placement finds no cloud.
  const silo::testing::StreamedAnswer after = Ask(kQuestions[1]);
  EXPECT_EQ(after.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << after.status.error_message();

  // 4. The cloud dies after the first token and a new cloud process starts at its address while
  // the device answers alone: the device resumes aggregation with it.
  nodes["cloud"] = StartNode("cloud", nullptr);
  ASSERT_NE(nodes["cloud"], nullptr);
  ASSERT_OK(silo::testing::WaitForOnlineNodes(Operator(), 2, kStartTimeout));
  const std::string& resume_question = kQuestions[2];
  std::thread restarter;
  absl::Duration restart_time;
  const silo::testing::StreamedAnswer resumed = Ask(
      resume_question,
      [&] {
        restarter = std::thread([&] {
          const absl::Time killed = absl::Now();
          nodes["cloud"]->Signal(SIGKILL);
          EXPECT_OK(nodes["cloud"]->Wait(absl::Seconds(10)).status());
          nodes["cloud"] = StartNode("cloud", nullptr);
          restart_time = absl::Now() - killed;
        });
      },
      kResumeMaxTokens);
  if (restarter.joinable()) restarter.join();
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  std::cout << "cloud restarted in " << restart_time << "; answer of " << resumed.tokens.size()
            << " tokens in " << resumed.elapsed << "\n";
  ASSERT_EQ(resumed.done.unanswered_size(), 1);
  const std::string& message = resumed.done.unanswered(0).message();
  std::cout << message << "\n";
  constexpr std::string_view kResumedAfter = "resumed aggregation with it after ";
  const size_t at = message.find(kResumedAfter);
  ASSERT_NE(at, std::string::npos) << message;
  int resumed_at = -1;
  ASSERT_EQ(std::sscanf(message.c_str() + at + kResumedAfter.size(), "%d", &resumed_at), 1);
  ASSERT_GT(resumed_at, 0);
  ASSERT_LT(resumed_at, static_cast<int>(resumed.tokens.size())) << message;
  // From the resumption on, the answer is the mixture over both stores' chunks again.
  const std::vector<int32_t> prefix(resumed.tokens.begin(), resumed.tokens.begin() + resumed_at);
  const std::vector<int32_t> rest(resumed.tokens.begin() + resumed_at, resumed.tokens.end());
  EXPECT_EQ(rest, GreedyMixture(decoder, resume_question, chunks.at(resume_question), prefix,
                                kResumeMaxTokens))
      << message;

  // 5. The cloud stops answering after the first token and its connection stays open (SIGSTOP):
  // the device gives up on it after peer_silence (10 s) rather than peer_timeout (30 s) and
  // finishes alone; meanwhile it asks the stopped cloud's Health off its decode thread.
  ASSERT_OK(silo::testing::WaitForOnlineNodes(Operator(), 2, kStartTimeout));
  {
    const silo::testing::StreamedAnswer answer =
        Ask(kQuestions[1], [&] { nodes["cloud"]->Signal(SIGSTOP); });
    nodes["cloud"]->Signal(SIGCONT);
    ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
    EXPECT_FALSE(answer.tokens.empty());
    ASSERT_EQ(answer.done.unanswered_size(), 1);
    const std::string& stopped = answer.done.unanswered(0).message();
    std::cout << stopped << "; answer in " << answer.elapsed << "\n";
    EXPECT_THAT(stopped, HasSubstr("finished alone"));
    EXPECT_THAT(stopped, HasSubstr("nothing from the other side for 10s"));
  }
}

}  // namespace
}  // namespace silo
