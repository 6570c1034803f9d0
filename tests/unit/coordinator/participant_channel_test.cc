// ThriftParticipantChannel against a real participant service on loopback: the connections
// its pools keep, and giving them back.

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "ParticipantService.h"
#include "common/clock.h"
#include "common/rpc/server.h"
#include "coordinator/server.h"
#include "coordinator/thread_pool.h"
#include "tests/support/poll.h"

namespace tx::coordinator {
namespace {

using namespace std::chrono_literals;
using tx::testing::PollUntil;

// A participant that answers every call with an empty response, and holds Prepare until the
// test lets it go, so that a test can keep several calls (and connections) open at once.
class HeldParticipant final : public api::ParticipantServiceNull {
 public:
  explicit HeldParticipant(std::shared_future<void> release) : release_(std::move(release)) {}
  void Prepare(api::PrepareResponse&, const api::PrepareRequest&) override { release_.wait(); }

 private:
  std::shared_future<void> release_;
};

class ParticipantChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rpc::RpcServerOptions o;
    o.name = "participant";
    o.listen = HostPort{"127.0.0.1", 0};
    auto handler = std::make_shared<HeldParticipant>(release_.get_future().share());
    auto server =
        rpc::RpcServer::Start(std::make_shared<api::ParticipantServiceProcessor>(handler), o);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    address_ = ToString(server_->address());
  }
  void TearDown() override {
    if (!released_) release_.set_value();
  }

  // Starts `n` Prepare calls; each future holds whether the call was answered.
  std::vector<std::future<bool>> StartPrepares(ThriftParticipantChannel* channel, int n) {
    std::vector<std::future<bool>> answered;
    for (int i = 0; i < n; ++i) {
      auto promise = std::make_shared<std::promise<bool>>();
      answered.push_back(promise->get_future());
      channel->Prepare(address_, api::PrepareRequest{},
                       [promise](ParticipantReply<api::PrepareResponse> reply) {
                         promise->set_value(reply.answered());
                       });
    }
    return answered;
  }
  void Release() {
    released_ = true;
    release_.set_value();
  }

  std::promise<void> release_;
  bool released_ = false;
  std::unique_ptr<rpc::RpcServer> server_;
  std::string address_;
};

TEST_F(ParticipantChannelTest, CloseIdleConnectionsGivesTheParticipantItsConnectionsBack) {
  ThreadPool threads(8, 100);
  ThriftParticipantChannel channel(&threads, rpc::RpcClientOptions{}, Clock::Real());
  // Four calls at once need four connections; once answered, the pool keeps them idle.
  std::vector<std::future<bool>> calls = StartPrepares(&channel, 4);
  ASSERT_TRUE(PollUntil([&] { return server_->open_connections() == 4; }, 10s));
  Release();
  for (auto& call : calls) EXPECT_TRUE(call.get());
  EXPECT_EQ(4, server_->open_connections());  // pooled, not closed

  channel.CloseIdleConnections();
  EXPECT_TRUE(PollUntil([&] { return server_->open_connections() == 0; }, 10s))
      << server_->open_connections() << " connections still open";

  // The channel connects again when it is used again.
  std::vector<std::future<bool>> again = StartPrepares(&channel, 1);
  EXPECT_TRUE(again[0].get());
  EXPECT_EQ(1, server_->open_connections());
}

}  // namespace
}  // namespace tx::coordinator
