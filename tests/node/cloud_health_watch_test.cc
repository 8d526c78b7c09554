// CloudHealthWatch over real mTLS against a cloud whose Health calls the test holds: Answers()
// never waits for the call, is true once a call succeeded (once per success), and the watch's
// end cancels the call in flight.
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
