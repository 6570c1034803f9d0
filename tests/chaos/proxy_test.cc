// NetworkProxy (tools/txchaos/proxy.h) on real loopback sockets: frames pass whole; a cut is a
// blackhole healed by resetting the connections that lost frames; drops reset the connection;
// delays hold frames in order; duplicates reach the server again, on their own connection, only
// for methods safe to repeat, without disturbing the caller's connection.

#include "tools/txchaos/proxy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include "tests/chaos/frame_server.h"
#include "tests/support/poll.h"

namespace tx::chaos {
namespace {

using namespace std::chrono_literals;
using testing::ConnectTo;
using testing::FrameServer;
using testing::MakeFrame;
using testing::ReadFrame;
using testing::SendAll;

bool PollUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 5s) {
  return tx::testing::PollUntil(condition, timeout);
}

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NetworkProxy::Options options;
    options.seed = 42;
    options.on_event = [this](const ProxyEvent& e) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(e);
    };
    auto proxy = NetworkProxy::Start(options);
    ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
    proxy_ = std::move(proxy).value();
    auto via = proxy_->AddLink("a", "b", server_.address());
    ASSERT_TRUE(via.ok()) << via.status().ToString();
    via_ = *via;
  }

  // One call on `fd`: the reply frame, or nullopt (closed / no answer within `timeout`).
  std::optional<std::string> Call(int fd, const std::string& method, int32_t seqid,
                                  std::chrono::milliseconds timeout = 2s, bool* closed = nullptr) {
    if (!SendAll(fd, MakeFrame(MessageType::kCall, method, seqid))) {
      if (closed != nullptr) *closed = true;
      return std::nullopt;
    }
    return ReadFrame(fd, timeout, closed);
  }

  std::vector<ProxyEvent> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

  FrameServer server_;
  std::unique_ptr<NetworkProxy> proxy_;
  HostPort via_;
  std::mutex mu_;
  std::vector<ProxyEvent> events_;
};

TEST_F(ProxyTest, ForwardsWholeFramesBothWays) {
  int fd = ConnectTo(via_);
  ASSERT_GE(fd, 0);
  for (int i = 1; i <= 20; ++i) {
    std::optional<std::string> reply = Call(fd, "Prepare", i);
    ASSERT_TRUE(reply.has_value()) << i;
    std::optional<MessageHeader> h = ParseMessageHeader(std::string_view(*reply).substr(4));
    ASSERT_TRUE(h.has_value());
    EXPECT_EQ(MessageType::kReply, h->type);
    EXPECT_EQ(i, h->seqid);
  }
  EXPECT_EQ(20, server_.received("Prepare"));
  ::close(fd);
  std::vector<LinkInfo> links = proxy_->Links();
  ASSERT_EQ(1u, links.size());
  EXPECT_EQ(40u, links[0].stats.frames);
  EXPECT_EQ(1u, links[0].stats.connections);
}

TEST_F(ProxyTest, CutIsABlackholeAndHealingResetsTheConnectionsThatLostFrames) {
  int fd = ConnectTo(via_);
  ASSERT_TRUE(Call(fd, "Commit", 1).has_value());
  LinkFaults cut;
  cut.cut = true;
  ASSERT_TRUE(proxy_->SetFaults("a", "b", cut).ok());
  bool closed = false;
  EXPECT_FALSE(Call(fd, "Commit", 2, 300ms, &closed).has_value());
  EXPECT_FALSE(closed) << "a cut must look like silence, not a reset";
  // New connections are accepted and swallowed too.
  int fd2 = ConnectTo(via_);
  ASSERT_GE(fd2, 0);
  EXPECT_FALSE(Call(fd2, "Commit", 3, 300ms, &closed).has_value());
  EXPECT_FALSE(closed);
  EXPECT_EQ(1, server_.received("Commit"));

  ASSERT_TRUE(proxy_->SetFaults("a", "b", LinkFaults()).ok());
  // Both connections lost frames: reset now, so their callers reconnect at once.
  EXPECT_FALSE(ReadFrame(fd, 2s, &closed).has_value());
  EXPECT_TRUE(closed);
  EXPECT_FALSE(ReadFrame(fd2, 2s, &closed).has_value());
  EXPECT_TRUE(closed);
  ::close(fd);
  ::close(fd2);
  int fd3 = ConnectTo(via_);
  EXPECT_TRUE(Call(fd3, "Commit", 4).has_value());
  ::close(fd3);
  EXPECT_EQ(2, server_.received("Commit"));
}

TEST_F(ProxyTest, DropDiscardsTheFrameAndResetsTheConnection) {
  LinkFaults drop;
  drop.drop_probability = 1.0;
  ASSERT_TRUE(proxy_->SetFaults("a", "b", drop).ok());
  int fd = ConnectTo(via_);
  bool closed = false;
  EXPECT_FALSE(Call(fd, "Prepare", 1, 2s, &closed).has_value());
  EXPECT_TRUE(closed);
  ::close(fd);
  EXPECT_EQ(0, server_.received("Prepare"));
  ASSERT_TRUE(PollUntil([&] { return !events().empty(); }));
  EXPECT_EQ("drop", events()[0].what);
  EXPECT_EQ("Prepare", events()[0].method);
  EXPECT_EQ(1u, proxy_->TotalStats().dropped_frames);
}

TEST_F(ProxyTest, DelayHoldsFramesAndKeepsTheirOrder) {
  LinkFaults delay;
  delay.delay_min = 60ms;
  delay.delay_max = 60ms;
  ASSERT_TRUE(proxy_->SetFaults("a", "b", delay).ok());
  int fd = ConnectTo(via_);
  auto start = std::chrono::steady_clock::now();
  // Three requests at once (the server answers each): every reply comes back in order, each
  // frame held 60 ms each way.
  ASSERT_TRUE(SendAll(fd, MakeFrame(MessageType::kCall, "Status", 1) +
                              MakeFrame(MessageType::kCall, "Status", 2) +
                              MakeFrame(MessageType::kCall, "Status", 3)));
  std::string buffer;
  std::vector<int32_t> seqids;
  for (int i = 0; i < 3; ++i) {
    std::optional<std::string> reply = ReadFrame(fd, &buffer, 2s);
    ASSERT_TRUE(reply.has_value()) << i;
    seqids.push_back(ParseMessageHeader(std::string_view(*reply).substr(4))->seqid);
  }
  EXPECT_EQ((std::vector<int32_t>{1, 2, 3}), seqids);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 120ms);
  ::close(fd);
}

TEST_F(ProxyTest, DuplicatesReachTheServerOnTheirOwnConnection) {
  LinkFaults dup;
  dup.duplicate_probability = 1.0;
  dup.duplicate_after = 10ms;
  ASSERT_TRUE(proxy_->SetFaults("a", "b", dup).ok());
  int fd = ConnectTo(via_);
  for (int i = 1; i <= 5; ++i) {
    std::optional<std::string> reply = Call(fd, "Commit", i);
    ASSERT_TRUE(reply.has_value());
    // The caller's connection stays in step: each reply answers its own request.
    EXPECT_EQ(i, ParseMessageHeader(std::string_view(*reply).substr(4))->seqid);
  }
  EXPECT_TRUE(PollUntil([&] { return server_.received("Commit") == 10; }))
      << server_.received("Commit");
  EXPECT_GE(server_.connections(), 2);
  EXPECT_EQ(5u, proxy_->TotalStats().duplicated_frames);
  ::close(fd);
}

TEST_F(ProxyTest, MethodsUnsafeToRepeatAreNeverDuplicated) {
  LinkFaults dup;
  dup.duplicate_probability = 1.0;
  ASSERT_TRUE(proxy_->SetFaults("a", "b", dup).ok());
  int fd = ConnectTo(via_);
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(Call(fd, "Execute", i).has_value());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(5, server_.received("Execute"));
  EXPECT_EQ(0u, proxy_->TotalStats().duplicated_frames);
  ::close(fd);
}

TEST_F(ProxyTest, MultiplexedNamesAreMatchedByMethod) {
  LinkFaults dup;
  dup.duplicate_probability = 1.0;
  dup.duplicate_after = 1ms;
  ASSERT_TRUE(proxy_->SetFaults("a", "b", dup).ok());
  int fd = ConnectTo(via_);
  ASSERT_TRUE(Call(fd, "raft:Deliver", 1).has_value());
  EXPECT_TRUE(PollUntil([&] { return server_.received("raft:Deliver") == 2; }));
  ::close(fd);
}

TEST_F(ProxyTest, OversizeFrameResetsTheConnection) {
  int fd = ConnectTo(via_);
  std::string header;
  AppendFrameLength(&header, (32u << 20) + 1);
  ASSERT_TRUE(SendAll(fd, header + "xxxx"));
  bool closed = false;
  EXPECT_FALSE(ReadFrame(fd, 2s, &closed).has_value());
  EXPECT_TRUE(closed);
  ::close(fd);
}

TEST_F(ProxyTest, DestinationDownResetsTheCaller) {
  auto via = proxy_->AddLink("a", "nowhere", HostPort{"127.0.0.1", 1});
  ASSERT_TRUE(via.ok());
  int fd = ConnectTo(*via);
  ASSERT_GE(fd, 0);
  bool closed = false;
  EXPECT_FALSE(Call(fd, "Prepare", 1, 2s, &closed).has_value());
  EXPECT_TRUE(closed);
  ::close(fd);
}

TEST_F(ProxyTest, RefusesBadFaultsAndUnknownLinks) {
  LinkFaults bad;
  bad.drop_probability = 1.5;
  EXPECT_EQ(Status::Code::kInvalidArgument, proxy_->SetFaults("a", "b", bad).code());
  bad = LinkFaults();
  bad.delay_min = 10ms;
  bad.delay_max = 5ms;
  EXPECT_EQ(Status::Code::kInvalidArgument, proxy_->SetFaults("a", "b", bad).code());
  EXPECT_EQ(Status::Code::kNotFound, proxy_->SetFaults("b", "a", LinkFaults()).code());
  EXPECT_EQ(Status::Code::kAlreadyExists,
            proxy_->AddLink("a", "b", server_.address()).status().code());
}

TEST(LinkFaults, DescribesItself) {
  LinkFaults f;
  EXPECT_EQ("none", f.ToString());
  f.drop_probability = 0.05;
  f.delay_max = 20ms;
  f.duplicate_probability = 0.1;
  EXPECT_EQ("drop=0.050 delay=0-20ms dup=0.100", f.ToString());
  f.cut = true;
  EXPECT_EQ("cut", f.ToString());
}

}  // namespace
}  // namespace tx::chaos
