// Tests of common/rpc against a real Thrift server on loopback, using the test-only Echo IDL.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <thrift/TOutput.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "Echo.h"
#include "common/clock.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/rpc/server.h"
#include "common/rpc/thrift_logging.h"
#include "tests/support/poll.h"

namespace tx::rpc {
namespace {

using namespace std::chrono_literals;
using rpc_test::EchoClient;
using rpc_test::EchoError;

class EchoHandler final : public rpc_test::EchoIf {
 public:
  void Echo(std::string& reply, const std::string& message) override { reply = message; }
  void Blob(std::string& reply, int32_t size) override { reply.assign(size, 'b'); }
  void Sleep(int32_t ms) override {
    sleeping_.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    sleeping_.fetch_sub(1);
  }
  void Fail(const std::string& message) override {
    EchoError error;
    error.message = message;
    throw error;
  }
  void Crash() override { throw std::runtime_error("handler bug"); }

  int sleeping() const { return sleeping_.load(); }

 private:
  std::atomic<int> sleeping_{0};
};

bool PollUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 10s) {
  return tx::testing::PollUntil(condition, timeout);
}

class RpcTest : public ::testing::Test {
 protected:
  std::unique_ptr<RpcServer> StartServer(uint16_t port = 0, RpcServerOptions options = {}) {
    options.name = "echo";
    options.listen = {"127.0.0.1", port};
    auto server = RpcServer::Start(std::make_shared<rpc_test::EchoProcessor>(handler_), options);
    TX_CHECK(server.ok(), "{}", server.status().ToString());
    return std::move(server).value();
  }

  static Status Echo(ClientPool<EchoClient>& pool, const std::string& message,
                     bool* maybe_sent = nullptr) {
    std::string reply;
    Status s = pool.Call([&](EchoClient& c) { c.Echo(reply, message); }, maybe_sent);
    if (s.ok() && reply != message) return Status::Internal("echo mismatch");
    return s;
  }

  std::shared_ptr<EchoHandler> handler_ = std::make_shared<EchoHandler>();
};

// Connects a raw TCP socket to 127.0.0.1:port; -1 on failure.
int RawConnect(uint16_t port) {
  StatusOr<int> fd = ConnectTcp({"127.0.0.1", port}, std::chrono::seconds(10));
  return fd.ok() ? *fd : -1;
}

// True if the server closes the connection (EOF or reset) before the 10 s receive timeout.
bool ServerCloses(int fd) {
  char buf[256];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

TEST_F(RpcTest, RoundTrip) {
  auto server = StartServer();
  ASSERT_NE(0, server->address().port);
  ClientPool<EchoClient> pool(server->address());
  EXPECT_TRUE(Echo(pool, "hello").ok());
  EXPECT_TRUE(Echo(pool, std::string(100000, 'x')).ok());
  EXPECT_TRUE(Echo(pool, "").ok());
  EXPECT_EQ(1u, pool.connects());  // one connection, reused
  EXPECT_EQ(1, pool.idle_connections());
  EXPECT_EQ(1u, server->accepted_connections());
}

TEST_F(RpcTest, DeclaredExceptionIsAReplyAndKeepsTheConnection) {
  auto server = StartServer();
  ClientPool<EchoClient> pool(server->address());
  std::string caught;
  Status s = pool.Call([&](EchoClient& c) {
    try {
      c.Fail("no such txid");
    } catch (const EchoError& e) {
      caught = e.message;
    }
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ("no such txid", caught);
  EXPECT_TRUE(Echo(pool, "after").ok());
  EXPECT_EQ(1u, pool.connects());
}

TEST_F(RpcTest, HandlerBugBecomesInternalAndServerKeepsServing) {
  auto server = StartServer();
  ClientPool<EchoClient> pool(server->address());
  bool maybe_sent = false;
  Status s = pool.Call([](EchoClient& c) { c.Crash(); }, &maybe_sent);
  EXPECT_EQ(Status::Code::kInternal, s.code()) << s.ToString();
  EXPECT_NE(std::string::npos, s.message().find("handler bug")) << s.ToString();
  EXPECT_TRUE(maybe_sent);
  EXPECT_TRUE(Echo(pool, "still here").ok());
}

TEST_F(RpcTest, ServerDownIsUnavailableAndNothingWasSent) {
  uint16_t port;
  {
    auto server = StartServer();
    port = server->address().port;
  }
  ClientPool<EchoClient> pool({"127.0.0.1", port});
  bool maybe_sent = true;
  Status s = Echo(pool, "anyone?", &maybe_sent);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_NE(std::string::npos,
            s.message().find(fmt::format("cannot connect to 127.0.0.1:{}", port)))
      << s.ToString();
  EXPECT_FALSE(maybe_sent);
  EXPECT_EQ(0, pool.open_connections());
}

TEST_F(RpcTest, ConnectFailuresBackOffAndFailFastUntilTheDelayPasses) {
  uint16_t port;
  {
    auto server = StartServer();
    port = server->address().port;
  }
  FakeClock clock;
  RpcClientOptions options;
  options.backoff = {100ms, 400ms, /*seed=*/5};
  ClientPool<EchoClient> pool({"127.0.0.1", port}, options, &clock);

  Status first = Echo(pool, "x");
  EXPECT_NE(std::string::npos, first.message().find("cannot connect")) << first.ToString();
  // Within the back-off delay: no connect is tried.
  Status fast = Echo(pool, "x");
  EXPECT_TRUE(fast.IsUnavailable());
  EXPECT_NE(std::string::npos, fast.message().find("unreachable after 1 failed connect(s)"))
      << fast.ToString();
  clock.Advance(49ms);  // jitter keeps the first delay in [50, 100] ms
  EXPECT_NE(std::string::npos, Echo(pool, "x").message().find("unreachable after 1"));
  clock.Advance(51ms);
  Status second = Echo(pool, "x");
  EXPECT_NE(std::string::npos, second.message().find("cannot connect")) << second.ToString();
  EXPECT_NE(std::string::npos, Echo(pool, "x").message().find("unreachable after 2"));

  // The server comes back: after the delay the next call connects and the back-off resets.
  auto server = StartServer(port);
  clock.Advance(400ms);
  EXPECT_TRUE(Echo(pool, "back").ok());
  { auto stopped = std::move(server); }
  // A fresh failure starts from the initial delay again.
  EXPECT_NE(std::string::npos, Echo(pool, "x").message().find("cannot connect"));
  EXPECT_NE(std::string::npos, Echo(pool, "x").message().find("unreachable after 1 failed"));
}

TEST_F(RpcTest, ReceiveTimeoutIsTimedOutAndTheConnectionIsReplaced) {
  auto server = StartServer();
  RpcClientOptions options;
  options.recv_timeout = 50ms;
  ClientPool<EchoClient> pool(server->address(), options);
  bool maybe_sent = false;
  Status s = pool.Call([](EchoClient& c) { c.Sleep(500); }, &maybe_sent);
  EXPECT_TRUE(s.IsTimedOut()) << s.ToString();
  EXPECT_TRUE(maybe_sent);
  EXPECT_EQ(0, pool.open_connections());  // out of sync: discarded
  EXPECT_TRUE(Echo(pool, "next").ok());
  EXPECT_EQ(2u, pool.connects());
}

TEST_F(RpcTest, ReconnectsAfterServerRestartWithoutAFailedCall) {
  auto server = StartServer();
  uint16_t port = server->address().port;
  ClientPool<EchoClient> pool(server->address());
  ASSERT_TRUE(Echo(pool, "one").ok());
  server->Stop();
  server = StartServer(port);
  // The pooled connection was closed by the old server; it is noticed before use.
  bool maybe_sent = false;
  EXPECT_TRUE(Echo(pool, "two", &maybe_sent).ok());
  EXPECT_EQ(2u, pool.connects());
}

TEST_F(RpcTest, ReconnectsAfterServerWasDownForAWhile) {
  FakeClock clock;
  auto server = StartServer();
  uint16_t port = server->address().port;
  ClientPool<EchoClient> pool(server->address(), {}, &clock);
  ASSERT_TRUE(Echo(pool, "one").ok());
  server->Stop();
  bool maybe_sent = true;
  EXPECT_TRUE(Echo(pool, "down", &maybe_sent).IsUnavailable());
  EXPECT_FALSE(maybe_sent);
  server = StartServer(port);
  clock.Advance(2s);  // past any back-off delay
  EXPECT_TRUE(Echo(pool, "up again").ok());
}

TEST_F(RpcTest, OversizeRequestClosesThatConnectionOnly) {
  RpcServerOptions server_options;
  server_options.max_message_bytes = 1024;
  auto server = StartServer(0, server_options);
  ClientPool<EchoClient> big(server->address());
  ClientPool<EchoClient> other(server->address());
  ASSERT_TRUE(Echo(other, "warm").ok());
  Status s = Echo(big, std::string(4096, 'x'));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();  // the server hung up
  // Neither the server nor the other client's pooled connection noticed anything.
  EXPECT_TRUE(Echo(other, "fine").ok());
  EXPECT_EQ(1u, other.connects());
  EXPECT_TRUE(Echo(big, std::string(512, 'y')).ok());
}

TEST_F(RpcTest, OversizeReplyIsRejectedByTheClient) {
  auto server = StartServer();
  RpcClientOptions options;
  options.max_message_bytes = 1024;
  ClientPool<EchoClient> pool(server->address(), options);
  std::string reply;
  Status s = pool.Call([&](EchoClient& c) { c.Blob(reply, 4096); });
  EXPECT_EQ(Status::Code::kInternal, s.code()) << s.ToString();
  EXPECT_NE(std::string::npos, s.message().find("oversized frame")) << s.ToString();
  EXPECT_TRUE(pool.Call([&](EchoClient& c) { c.Blob(reply, 100); }).ok());
  EXPECT_EQ(100u, reply.size());
}

TEST_F(RpcTest, GarbageBytesAreDroppedAndTheServerKeepsServing) {
  auto server = StartServer();
  uint16_t port = server->address().port;
  ClientPool<EchoClient> pool(server->address());
  ASSERT_TRUE(Echo(pool, "before").ok());

  std::mt19937 rng(12345);
  std::vector<std::string> payloads = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      std::string("\x7f\xff\xff\xff", 4) + "huge frame length",      // 2 GiB frame
      std::string("\x00\x00\x00\x10", 4) + std::string(16, '\xee'),  // a frame of junk
      std::string("\xff\xff\xff\xff", 4),                            // negative frame length
  };
  std::string random_bytes(4096, '\0');
  for (char& c : random_bytes) c = static_cast<char>(rng());
  payloads.push_back(random_bytes);

  for (const std::string& payload : payloads) {
    int fd = RawConnect(port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(static_cast<ssize_t>(payload.size()),
              ::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL));
    EXPECT_TRUE(ServerCloses(fd)) << "payload of " << payload.size() << " bytes";
    ::close(fd);
  }
  EXPECT_TRUE(Echo(pool, "after").ok());
  EXPECT_EQ(1u, pool.connects());
  // Every garbage connection was let go.
  EXPECT_TRUE(PollUntil([&] { return server->open_connections() == 1; }));
}

TEST_F(RpcTest, StalledPartialFrameIsClosedAfterIdleTimeout) {
  RpcServerOptions options;
  options.idle_timeout = 200ms;
  auto server = StartServer(0, options);
  int fd = RawConnect(server->address().port);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(2, ::send(fd, "\x00\x00", 2, MSG_NOSIGNAL));  // half a frame header, then nothing
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(ServerCloses(fd));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  ::close(fd);
}

TEST_F(RpcTest, ConcurrentCallsShareABoundedPool) {
  auto server = StartServer();
  RpcClientOptions options;
  options.max_connections = 4;
  options.max_idle_connections = 4;
  ClientPool<EchoClient> pool(server->address(), options);
  constexpr int kThreads = 8;
#if defined(TX_SANITIZE_BUILD)
  constexpr int kCallsPerThread = 100;
#else
  constexpr int kCallsPerThread = 500;
#endif
  std::atomic<int> failures{0};
  std::atomic<int> max_open{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        if (!Echo(pool, fmt::format("{}-{}", t, i)).ok()) failures.fetch_add(1);
        int open = pool.open_connections();
        int seen = max_open.load();
        while (open > seen && !max_open.compare_exchange_weak(seen, open)) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(0, failures.load());
  EXPECT_LE(max_open.load(), 4);
  EXPECT_LE(pool.connects(), 4u);
  EXPECT_LE(server->accepted_connections(), 4u);
}

TEST_F(RpcTest, AllConnectionsBusyIsResourceExhaustedAfterAcquireTimeout) {
  auto server = StartServer();
  RpcClientOptions options;
  options.max_connections = 1;
  options.acquire_timeout = 50ms;
  ClientPool<EchoClient> pool(server->address(), options);
  std::thread holder([&] { ASSERT_TRUE(pool.Call([](EchoClient& c) { c.Sleep(500); }).ok()); });
  ASSERT_TRUE(PollUntil([&] { return handler_->sleeping() == 1; }));
  Status s = Echo(pool, "waiting");
  EXPECT_EQ(Status::Code::kResourceExhausted, s.code()) << s.ToString();
  holder.join();
  EXPECT_TRUE(Echo(pool, "free again").ok());
}

TEST_F(RpcTest, ServerConnectionCapMakesExtraClientsTimeOutNotCrash) {
  RpcServerOptions server_options;
  server_options.max_connections = 1;
  auto server = StartServer(0, server_options);
  ClientPool<EchoClient> first(server->address());
  ASSERT_TRUE(Echo(first, "holding the only slot").ok());  // stays open, idle in the pool

  RpcClientOptions options;
  options.recv_timeout = 200ms;
  ClientPool<EchoClient> second(server->address(), options);
  Status s = Echo(second, "no room");
  EXPECT_TRUE(s.IsTimedOut()) << s.ToString();
  EXPECT_EQ(1, server->open_connections());

  first.Reset();  // gives the slot back
  EXPECT_TRUE(PollUntil([&] { return Echo(second, "room now").ok(); }));
}

// Regression (found by txchaos's overload scenario): idle pooled client connections at the cap
// locked a server's peers out (txcoord's Raft peers could not reach each other to elect a
// leader). Slots above the cap serve only the calls the owner keeps them for ("Echo" here).
TEST_F(RpcTest, IdleClientConnectionsAtTheCapDoNotLockPeersOut) {
  RpcServerOptions server_options;
  server_options.max_connections = 1;
  server_options.reserved = {
      {"echoers", 1, [](const std::string& name) { return name == "Echo"; }}};
  auto server = StartServer(0, server_options);
  ClientPool<EchoClient> client(server->address());
  ASSERT_TRUE(client
                  .Call([](EchoClient& c) {
                    std::string reply;
                    c.Blob(reply, 1);
                  })
                  .ok());  // holds the only ordinary slot, idle in the pool

  // Another client lands on the reserved slot: its call is not one kept for peers, so the
  // connection is closed (Unavailable: retried later like any overload) and the slot freed.
  RpcClientOptions options;
  options.recv_timeout = 5s;
  ClientPool<EchoClient> other_client(server->address(), options);
  bool maybe_sent = false;
  Status s = other_client.Call(
      [](EchoClient& c) {
        std::string reply;
        c.Blob(reply, 1);
      },
      &maybe_sent);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_EQ(1u, server->refused_connections());

  // The peer gets the reserved slot, and keeps its connection between calls.
  ClientPool<EchoClient> peer(server->address(), options);
  EXPECT_TRUE(Echo(peer, "peer call").ok());
  EXPECT_TRUE(Echo(peer, "another").ok());
  EXPECT_EQ(1u, peer.connects());
  EXPECT_EQ(1u, server->refused_connections());

  // Both slots taken: beyond them connections wait in the backlog, as without reserved slots.
  options.recv_timeout = 200ms;
  ClientPool<EchoClient> second_peer(server->address(), options);
  s = Echo(second_peer, "no room");
  EXPECT_TRUE(s.IsTimedOut()) << s.ToString();
  EXPECT_EQ(2, server->open_connections());
}

// The remaining open point of the connection-cap finding: txcoord's participants (Resolve) had
// no reserved slots of their own, and giving them the Raft peers' would let them use those up.
// Each class of reserved slots has its own room: one class full does not refuse another's
// calls, nor lend it slots; a connection admitted to a class may make that class's calls only.
TEST_F(RpcTest, EachClassOfReservedSlotsHasItsOwnRoom) {
  RpcServerOptions server_options;
  server_options.max_connections = 1;
  server_options.reserved = {
      {"echoers", 1, [](const std::string& name) { return name == "Echo"; }},
      {"blobbers", 1, [](const std::string& name) { return name == "Blob"; }}};
  auto server = StartServer(0, server_options);
  auto blob = [](ClientPool<EchoClient>& pool) {
    return pool.Call([](EchoClient& c) {
      std::string reply;
      c.Blob(reply, 1);
    });
  };
  ClientPool<EchoClient> client(server->address());
  ASSERT_TRUE(Echo(client, "holding the ordinary slot").ok());

  RpcClientOptions options;
  options.recv_timeout = 5s;
  ClientPool<EchoClient> echoer(server->address(), options);
  ASSERT_TRUE(Echo(echoer, "on the echoers' slot").ok());
  // The echoers' class is full: a second echoer is refused though the blobbers' slot is free.
  ClientPool<EchoClient> second_echoer(server->address(), options);
  Status s = Echo(second_echoer, "no room for echoers");
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_EQ(1u, server->refused_connections());
  // The blobbers' slot is still there for a blobber.
  ClientPool<EchoClient> blobber(server->address(), options);
  EXPECT_TRUE(blob(blobber).ok());
  EXPECT_EQ(1u, blobber.connects());
  // An admitted echoer may not make the blobbers' calls on its slot: refused, and the slot is
  // given back (the next echoer gets in).
  s = blob(echoer);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_EQ(2u, server->refused_connections());
  EXPECT_TRUE(PollUntil([&] { return Echo(second_echoer, "room now").ok(); }));
}

TEST_F(RpcTest, ReservedSlotIsNotHeldByAConnectionThatNeverSendsARequest) {
  RpcServerOptions server_options;
  server_options.max_connections = 1;
  server_options.reserved = {
      {"echoers", 1, [](const std::string& name) { return name == "Echo"; }}};
  server_options.reserved_admission_timeout = 200ms;
  server_options.idle_timeout = 30s;
  auto server = StartServer(0, server_options);
  ClientPool<EchoClient> client(server->address());
  ASSERT_TRUE(Echo(client, "holding the ordinary slot").ok());

  int fd = RawConnect(server->address().port);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(2, ::send(fd, "\x00\x00", 2, MSG_NOSIGNAL));  // half a frame header, then nothing
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(ServerCloses(fd));  // within its 10 s receive timeout, not the 30 s idle timeout
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  ::close(fd);

  // An admitted peer gets the reserved slots' idle timeout: idle past the admission timeout, it
  // keeps its connection.
  ClientPool<EchoClient> peer(server->address());
  ASSERT_TRUE(Echo(peer, "peer").ok());
  std::this_thread::sleep_for(400ms);  // longer than the admission timeout, on purpose
  EXPECT_TRUE(Echo(peer, "still connected").ok());
  EXPECT_EQ(1u, peer.connects());
}

// A peer's pool that grew in a burst must not keep the reserved slots for the whole idle timeout
// (5 minutes by default): then nobody else's protocol calls get in. Suspected in an overload run
// (txchaos seed 112, one run in seven), where a participant answered no one for over a minute
// after the clients had left, with the coordinator's pool (up to 128 idle connections per
// participant) the likely holder. An idle peer on a reserved slot gives it back after
// reserved_idle_timeout; its pool reconnects without a failed call.
TEST_F(RpcTest, IdlePeerGivesItsReservedSlotBackSoon) {
  RpcServerOptions server_options;
  server_options.max_connections = 1;
  server_options.reserved = {
      {"echoers", 1, [](const std::string& name) { return name == "Echo"; }}};
  server_options.reserved_idle_timeout = 300ms;
  server_options.idle_timeout = 30s;
  auto server = StartServer(0, server_options);
  ClientPool<EchoClient> client(server->address());
  ASSERT_TRUE(Echo(client, "holding the ordinary slot").ok());
  ClientPool<EchoClient> peer(server->address());
  ASSERT_TRUE(Echo(peer, "on the reserved slot").ok());
  ASSERT_EQ(2, server->open_connections());

  // The ordinary slot stays taken (idle timeout 30 s); the reserved one is given back.
  EXPECT_TRUE(PollUntil([&] { return server->open_connections() == 1; }, 5s));
  ClientPool<EchoClient> other_peer(server->address());
  EXPECT_TRUE(Echo(other_peer, "the slot is free again").ok());
  other_peer.Reset();
  EXPECT_TRUE(PollUntil([&] { return server->open_connections() == 1; }, 5s));
  EXPECT_TRUE(Echo(peer, "reconnects without a failed call").ok());
  EXPECT_EQ(2u, peer.connects());
}

TEST_F(RpcTest, StopReturnsWhileClientsHoldIdleConnections) {
  auto server = StartServer();
  ClientPool<EchoClient> pool(server->address());
  ASSERT_TRUE(Echo(pool, "x").ok());
  int raw = RawConnect(server->address().port);
  ASSERT_GE(raw, 0);
  ASSERT_EQ(1, ::send(raw, "\x00", 1, MSG_NOSIGNAL));  // mid-frame, blocked in read
  auto start = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  server->Stop();  // idempotent
  EXPECT_TRUE(ServerCloses(raw));
  ::close(raw);
  EXPECT_EQ(-1, RawConnect(server->address().port));
}

TEST_F(RpcTest, BusyPortIsAnError) {
  auto server = StartServer();
  RpcServerOptions options;
  options.listen = server->address();
  auto second = RpcServer::Start(std::make_shared<rpc_test::EchoProcessor>(handler_), options);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(second.status().IsIOError()) << second.status().ToString();
  EXPECT_NE(std::string::npos, second.status().message().find(ToString(server->address())))
      << second.status().ToString();
}

TEST(ThriftLogging, GlobalOutputGoesToSpdlog) {
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured));
  logger->set_level(spdlog::level::debug);
  logger->set_pattern("%l %v");
  spdlog::set_default_logger(logger);
  RouteThriftLoggingToSpdlog();
  apache::thrift::GlobalOutput("TConnectedClient died: something");
  apache::thrift::GlobalOutput("TSocket::open() connect() refused");
  spdlog::set_default_logger(previous);
  EXPECT_NE(std::string::npos, captured.str().find("warning thrift: TConnectedClient died"))
      << captured.str();
  EXPECT_NE(std::string::npos, captured.str().find("debug thrift: TSocket::open()"))
      << captured.str();
}

}  // namespace
}  // namespace tx::rpc
