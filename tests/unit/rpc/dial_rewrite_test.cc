// Tests of the dial-rewrite table (common/rpc/dial_rewrite.h): parsing, bounds, and that a
// pooled connection really goes to the rewritten address.

#include "common/rpc/dial_rewrite.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>

#include "Echo.h"
#include "common/rpc/client.h"
#include "common/rpc/server.h"

namespace tx::rpc {
namespace {

using namespace std::chrono_literals;

class EchoHandler final : public rpc_test::EchoIf {
 public:
  void Echo(std::string& reply, const std::string& message) override { reply = message; }
  void Blob(std::string& reply, int32_t size) override { reply.assign(size, 'b'); }
  void Sleep(int32_t) override {}
  void Fail(const std::string& message) override {
    rpc_test::EchoError error;
    error.message = message;
    throw error;
  }
  void Crash() override { throw std::runtime_error("handler bug"); }
};

// A loopback port nothing listens on (bound, then released).
uint16_t UnusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(0, ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  socklen_t len = sizeof(addr);
  EXPECT_EQ(0, ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len));
  ::close(fd);
  return ntohs(addr.sin_port);
}

class DialRewriteTest : public ::testing::Test {
 protected:
  void TearDown() override { ASSERT_TRUE(SetDialRewrites({}).ok()); }
};

TEST_F(DialRewriteTest, ParsesPairsOfAddresses) {
  StatusOr<DialRewrites> r = ParseDialRewrites("127.0.0.1:7001=127.0.0.1:40001, [::1]:7=h:8");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(2u, r->size());
  EXPECT_EQ((HostPort{"127.0.0.1", 40001}), r->at(HostPort{"127.0.0.1", 7001}));
  EXPECT_EQ((HostPort{"h", 8}), r->at(HostPort{"::1", 7}));
  EXPECT_TRUE(ParseDialRewrites("")->empty());
}

TEST_F(DialRewriteTest, RejectsMalformedItems) {
  for (const char* bad : {"127.0.0.1:7001", "127.0.0.1:7001=", "=127.0.0.1:1", "a:1=b:0", "a:0=b:1",
                          "a:1=b:2,a:1=c:3", "a:1=b:2,", "a:x=b:2"}) {
    StatusOr<DialRewrites> r = ParseDialRewrites(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(Status::Code::kInvalidArgument, r.status().code()) << bad;
  }
}

TEST_F(DialRewriteTest, RefusesMoreThanTheBoundAndKeepsTheOldTable) {
  ASSERT_TRUE(SetDialRewrites({{HostPort{"a", 1}, HostPort{"b", 2}}}).ok());
  DialRewrites big;
  for (size_t i = 0; i <= kMaxDialRewrites; ++i) {
    big[HostPort{"h", static_cast<uint16_t>(i + 1)}] = HostPort{"x", 1};
  }
  EXPECT_EQ(Status::Code::kInvalidArgument, SetDialRewrites(big).code());
  EXPECT_EQ((HostPort{"b", 2}), DialAddress(HostPort{"a", 1}));
}

TEST_F(DialRewriteTest, UnlistedAddressesAreDialledAsGiven) {
  EXPECT_EQ((HostPort{"a", 1}), DialAddress(HostPort{"a", 1}));
  ASSERT_TRUE(SetDialRewrites({{HostPort{"a", 1}, HostPort{"b", 2}}}).ok());
  EXPECT_EQ((HostPort{"c", 3}), DialAddress(HostPort{"c", 3}));
  EXPECT_EQ((HostPort{"b", 2}), DialAddress(HostPort{"a", 1}));
}

TEST_F(DialRewriteTest, PoolConnectsToTheRewrittenAddress) {
  RpcServerOptions options;
  options.name = "echo";
  options.listen = {"127.0.0.1", 0};
  auto server = RpcServer::Start(
      std::make_shared<rpc_test::EchoProcessor>(std::make_shared<EchoHandler>()), options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const HostPort nowhere{"127.0.0.1", UnusedPort()};

  RpcClientOptions client_options;
  client_options.connect_timeout = 500ms;
  client_options.backoff.initial = 1ms;
  client_options.backoff.max = 1ms;
  auto echo = [&] {
    ClientPool<rpc_test::EchoClient> pool(nowhere, client_options);
    std::string reply;
    Status s = pool.Call([&](rpc_test::EchoClient& c) { c.Echo(reply, "hi"); });
    return s.ok() && reply == "hi";
  };
  EXPECT_FALSE(echo()) << "something listens on " << ToString(nowhere);
  ASSERT_TRUE(SetDialRewrites({{nowhere, (*server)->address()}}).ok());
  EXPECT_TRUE(echo());
  ASSERT_TRUE(SetDialRewrites({}).ok());
  EXPECT_FALSE(echo());
}

TEST_F(DialRewriteTest, LoadsTheTableFromTheEnvironment) {
  ASSERT_EQ(0, ::setenv(kDialRewriteEnv, "127.0.0.1:5=127.0.0.1:6", 1));
  EXPECT_TRUE(LoadDialRewritesFromEnv().ok());
  EXPECT_EQ((HostPort{"127.0.0.1", 6}), DialAddress(HostPort{"127.0.0.1", 5}));
  ASSERT_EQ(0, ::setenv(kDialRewriteEnv, "nonsense", 1));
  EXPECT_EQ(Status::Code::kInvalidArgument, LoadDialRewritesFromEnv().code());
  EXPECT_EQ((HostPort{"127.0.0.1", 6}), DialAddress(HostPort{"127.0.0.1", 5}));
  ASSERT_EQ(0, ::unsetenv(kDialRewriteEnv));
}

}  // namespace
}  // namespace tx::rpc
