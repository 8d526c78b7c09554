// node/dragon_client.h over real mTLS against test clouds. DragonCloudLink::Open starts the
// session on the stream: it returns once the cloud answered `started`, with the cloud's error, or
// past its start deadline. CloudHealthWatch against a cloud whose Health calls the test holds:
// Answers() never waits for the call, is true once a call succeeded (once per success), and the
// watch's end cancels the call in flight.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/time/clock.h"
#include "crypto/mtls.h"
#include "gtest/gtest.h"
#include "node/dragon_client.h"
#include "node/peer_channels.h"
#include "silo/v1/node.grpc.pb.h"
#include "tests/testing/dev_certs.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace silo::node {
namespace {

// A cloud that holds every Health call until the test opens the gate or the caller cancels.
class GatedCloud : public v1::NodeControlService::Service {
 public:
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest*,
                      v1::HealthResponse* response) override {
    std::unique_lock lock(mutex_);
    ++calls_;
    changed_.notify_all();
    while (!open_ && !context->IsCancelled()) {
      changed_.wait_for(lock, std::chrono::milliseconds(10));
    }
    if (!open_) {
      ++cancelled_;
      changed_.notify_all();
      return {grpc::StatusCode::CANCELLED, "the caller went away"};
    }
    response->set_serving(true);
    return grpc::Status::OK;
  }

  void Open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  // Whether `calls` calls arrived (and `cancelled` of them were cancelled) within 20 s.
  bool WaitFor(int calls, int cancelled = 0) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(20),
                             [&] { return calls_ >= calls && cancelled_ >= cancelled; });
  }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
  int calls_ = 0;
  int cancelled_ = 0;
};

// A cloud whose Decode answers the first message as the test says: `started`, a draft (a broken
// protocol), or nothing until the call is cancelled.
class ScriptedCloud : public v1::DragonService::Service {
 public:
  enum class Reply { kStarted, kDraft, kNothing };
  explicit ScriptedCloud(Reply reply) : reply_(reply) {}

  grpc::Status Decode(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::DecodeResponse, v1::DecodeRequest>* stream) override {
    v1::DecodeRequest first;
    if (!stream->Read(&first) || !first.has_start()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "the first message must start the session"};
    }
    v1::DecodeResponse response;
    switch (reply_) {
      case Reply::kStarted:
        response.mutable_started()->set_n_chunks(first.start().top_k());
        break;
      case Reply::kDraft:
        response.mutable_draft()->set_step(0);
        break;
      case Reply::kNothing:
        while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
        return {grpc::StatusCode::CANCELLED, "cancelled"};
    }
    stream->Write(response);
    v1::DecodeRequest rest;
    while (stream->Read(&rest)) {
    }
    return grpc::Status::OK;
  }

 private:
  const Reply reply_;
};

class DragonCloudLinkTest : public ::testing::TestWithParam<ScriptedCloud::Reply> {};

TEST_P(DragonCloudLinkTest, OpensOnlyOnceTheCloudStartedTheSession) {
  silo::testing::TempDir dir;
  ASSERT_OK(silo::testing::MakeDevCertificates(dir.path(), {"institution/cloud", "device/phone"}));
  ScriptedCloud cloud(GetParam());
  ASSERT_OK_AND_ASSIGN(silo::testing::DevServer server,
                       silo::testing::StartDevServer(dir.path(), "cloud", {&cloud}));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<grpc::Channel> channel,
                       silo::testing::DevChannel(dir.path(), "phone", server.address));
  v1::StartSessionRequest request;
  request.mutable_session()->set_value(std::string(16, 's'));
  request.set_top_k(3);
  DragonInbox inbox;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<DragonCloudLink>> link = DragonCloudLink::Open(
      channel, request, start + absl::Seconds(2), start + absl::Seconds(60), &inbox);
  switch (GetParam()) {
    case ScriptedCloud::Reply::kStarted:
      ASSERT_OK(link.status());
      EXPECT_EQ((*link)->n_cloud_chunks(), 3u);
      EXPECT_OK((*link)->Finish());
      break;
    case ScriptedCloud::Reply::kDraft:
      EXPECT_EQ(link.status().code(), absl::StatusCode::kFailedPrecondition) << link.status();
      break;
    case ScriptedCloud::Reply::kNothing:
      EXPECT_EQ(link.status().code(), absl::StatusCode::kDeadlineExceeded) << link.status();
      EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << "the start deadline, not the stream's";
      break;
  }
  server.server->Shutdown();
}

INSTANTIATE_TEST_SUITE_P(Replies, DragonCloudLinkTest,
                         ::testing::Values(ScriptedCloud::Reply::kStarted,
                                           ScriptedCloud::Reply::kDraft,
                                           ScriptedCloud::Reply::kNothing));

class CloudHealthWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(
        silo::testing::MakeDevCertificates(dir_.path(), {"institution/cloud", "device/phone"}));
    ASSERT_OK_AND_ASSIGN(server_, silo::testing::StartDevServer(dir_.path(), "cloud", {&cloud_}));
    ASSERT_OK_AND_ASSIGN(crypto::TlsMaterial tls,
                         crypto::LoadTlsMaterial(silo::testing::DevTlsFiles(dir_.path(), "phone")));
    channels_ = std::make_unique<PeerChannels>(tls);
  }
  void TearDown() override {
    cloud_.Open();  // lets a held call end, so that the server can stop
    if (server_.server != nullptr) server_.server->Shutdown();
  }

  std::function<std::shared_ptr<grpc::Channel>()> Channel() {
    return [this] { return channels_->Get(server_.address); };
  }

  silo::testing::TempDir dir_;
  GatedCloud cloud_;
  silo::testing::DevServer server_;
  std::unique_ptr<PeerChannels> channels_;
};

TEST_F(CloudHealthWatchTest, AnswersWithoutWaitingForTheCallOncePerSuccess) {
  CloudHealthWatch watch(Channel(), absl::Seconds(60));
  // The first ask starts a call and returns while the cloud holds it.
  EXPECT_FALSE(watch.Answers());
  ASSERT_TRUE(cloud_.WaitFor(1));
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(watch.Answers());
  EXPECT_EQ(cloud_.calls(), 1) << "one call at a time";

  cloud_.Open();
  bool answered = false;
  for (const absl::Time until = absl::Now() + absl::Seconds(20); !answered && absl::Now() < until;
       absl::SleepFor(absl::Milliseconds(10))) {
    answered = watch.Answers();
  }
  EXPECT_TRUE(answered);
  // Used up: the next ask starts another call.
  EXPECT_FALSE(watch.Answers());
  EXPECT_TRUE(cloud_.WaitFor(2));
}

TEST_F(CloudHealthWatchTest, ItsEndCancelsTheCallInFlight) {
  // A call that would wait a minute: an end that waited it out would take that minute.
  auto watch = std::make_unique<CloudHealthWatch>(Channel(), absl::Minutes(1));
  EXPECT_FALSE(watch->Answers());
  ASSERT_TRUE(cloud_.WaitFor(1));
  const absl::Time start = absl::Now();
  watch.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_TRUE(cloud_.WaitFor(1, /*cancelled=*/1));
}

TEST_F(CloudHealthWatchTest, AnUnreachableCloudNeverAnswers) {
  CloudHealthWatch watch([&] { return channels_->Get("127.0.0.1:1"); }, absl::Milliseconds(200));
  for (const absl::Time until = absl::Now() + absl::Seconds(1); absl::Now() < until;
       absl::SleepFor(absl::Milliseconds(20))) {
    EXPECT_FALSE(watch.Answers());
  }
}

}  // namespace
}  // namespace silo::node
