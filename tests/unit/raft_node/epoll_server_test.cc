// EpollServer (raft/node/example/epoll_server.h): framing, one request at a time per
// connection with replies from other threads, the bounds (frame size, connection cap, bytes
// sent ahead, idle time), and Responders that outlive their connection or the server. Clients
// are raw loopback sockets; every wait has a deadline (socket receive timeouts or polling).

#include "raft/node/example/epoll_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/poll.h"

namespace tx::raft::example {
namespace {

using namespace std::chrono_literals;
using tx::testing::PollUntil;

// Requests the server dispatched, for the test thread to answer.
class Inbox {
 public:
  void Push(std::string frame, EpollServer::Responder r) {
    {
      std::lock_guard lock(mu_);
      items_.emplace_back(std::move(frame), std::move(r));
      ++dispatched_;
    }
    cv_.notify_all();
  }
  // The next request, or nullopt after `timeout`.
  std::optional<std::pair<std::string, EpollServer::Responder>> Pop(
      std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !items_.empty(); })) return std::nullopt;
    auto item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  int dispatched() {
    std::lock_guard lock(mu_);
    return dispatched_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, EpollServer::Responder>> items_;  // GUARDED_BY(mu_)
  int dispatched_ = 0;                                                // GUARDED_BY(mu_)
};

std::unique_ptr<EpollServer> StartServer(Inbox* inbox, EpollServerOptions o = {}) {
  o.listen = {"127.0.0.1", 0};
  StatusOr<std::unique_ptr<EpollServer>> s =
      EpollServer::Start(o, [inbox](std::string frame, EpollServer::Responder r) {
        inbox->Push(std::move(frame), std::move(r));
      });
  TX_CHECK(s.ok(), "{}", s.status().ToString());
  return std::move(s).value();
}

// A blocking client socket with a 5 s receive timeout (so a missing reply fails the test
// instead of hanging it).
class RawClient {
 public:
  explicit RawClient(const HostPort& server) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    TX_CHECK(fd_ >= 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server.port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    TX_CHECK(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0, "connect: {}",
             std::strerror(errno));
  }
  ~RawClient() { ::close(fd_); }

  void SendRaw(const std::string& bytes) {
    TX_CHECK(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
             static_cast<ssize_t>(bytes.size()));
  }
  void SendFrame(const std::string& body) { SendRaw(Frame(body)); }

  static std::string Frame(const std::string& body) {
    uint32_t len = htonl(static_cast<uint32_t>(body.size()));
    return std::string(reinterpret_cast<const char*>(&len), 4) + body;
  }

  // One reply body; nullopt on end of stream or timeout.
  std::optional<std::string> ReadFrame() {
    std::string header = ReadExactly(4);
    if (header.size() != 4) return std::nullopt;
    uint32_t len;
    std::memcpy(&len, header.data(), 4);
    len = ntohl(len);
    std::string body = ReadExactly(len);
    if (body.size() != len) return std::nullopt;
    return body;
  }

  // True if the server closed the connection (end of stream) within the receive timeout.
  bool SeesEndOfStream() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  std::string ReadExactly(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::recv(fd_, out.data() + got, n - got, 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return out;
  }

  int fd_ = -1;
};

TEST(EpollServer, ReplySentFromAnotherThreadReachesTheClient) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  client.SendFrame("hello");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ("hello", request->first);
  std::thread([r = request->second] { r.Send("world"); }).join();
  EXPECT_EQ("world", client.ReadFrame().value_or("<none>"));
}

TEST(EpollServer, PipelinedFramesAreDispatchedOneAtATimeAndAnsweredInOrder) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  // Three requests in one write: the server must hold the second until the first is answered.
  client.SendRaw(RawClient::Frame("a") + RawClient::Frame("b") + RawClient::Frame("c"));
  for (const char* name : {"a", "b", "c"}) {
    auto request = inbox.Pop();
    ASSERT_TRUE(request.has_value()) << name;
    EXPECT_EQ(name, request->first);
    // Nothing else was dispatched while this one is unanswered.
    EXPECT_FALSE(inbox.Pop(50ms).has_value()) << "dispatched ahead of the reply to " << name;
    request->second.Send(std::string("re:") + name);
    EXPECT_EQ(std::string("re:") + name, client.ReadFrame().value_or("<none>"));
  }
}

TEST(EpollServer, OnlyTheFirstSendOfAResponderIsDelivered) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  client.SendFrame("q1");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  EpollServer::Responder copy = request->second;
  request->second.Send("first");
  copy.Send("second");  // ignored: the request is answered
  client.SendFrame("q2");
  auto next = inbox.Pop();
  ASSERT_TRUE(next.has_value());
  copy.Send("stale");  // an old Responder cannot answer the new request
  next->second.Send("answer2");
  EXPECT_EQ("first", client.ReadFrame().value_or("<none>"));
  EXPECT_EQ("answer2", client.ReadFrame().value_or("<none>"));
}

TEST(EpollServer, ReplyLargerThanTheSocketBufferArrivesWhole) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  client.SendFrame("big please");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  std::string big(8 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  // The client is not reading yet, so this send cannot finish: the I/O thread completes it.
  request->second.Send(big);
  std::optional<std::string> reply = client.ReadFrame();
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(*reply == big);
  // The connection is usable afterwards.
  client.SendFrame("again");
  auto again = inbox.Pop();
  ASSERT_TRUE(again.has_value());
  again->second.Send("ok");
  EXPECT_EQ("ok", client.ReadFrame().value_or("<none>"));
}

TEST(EpollServer, OversizeFrameClosesTheConnectionWithoutDispatch) {
  Inbox inbox;
  EpollServerOptions o;
  o.max_frame_bytes = 1024;
  auto server = StartServer(&inbox, o);
  RawClient client(server->address());
  uint32_t len = htonl(1025);
  client.SendRaw(std::string(reinterpret_cast<const char*>(&len), 4));
  EXPECT_TRUE(client.SeesEndOfStream());
  EXPECT_EQ(0, inbox.dispatched());
  // Other connections are unaffected.
  RawClient other(server->address());
  other.SendFrame(std::string(1024, 'x'));
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(1024u, request->first.size());
}

TEST(EpollServer, ZeroLengthFrameClosesTheConnection) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  client.SendRaw(std::string(4, '\0'));
  EXPECT_TRUE(client.SeesEndOfStream());
  EXPECT_EQ(0, inbox.dispatched());
}

TEST(EpollServer, ClientSendingMoreThanAFrameAheadOfItsReplyIsClosed) {
  Inbox inbox;
  EpollServerOptions o;
  o.max_frame_bytes = 1024;
  auto server = StartServer(&inbox, o);
  RawClient client(server->address());
  client.SendFrame("first");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  // Unanswered, and the client keeps sending: past two frames' worth the server gives up.
  std::string flood;
  for (int i = 0; i < 4; ++i) flood += RawClient::Frame(std::string(1000, 'f'));
  client.SendRaw(flood);
  EXPECT_TRUE(client.SeesEndOfStream());
  request->second.Send("too late");  // harmless
  EXPECT_TRUE(PollUntil([&] { return server->open_connections() == 0; }, 5s));
}

TEST(EpollServer, ConnectionsOverTheCapAreClosedAtOnce) {
  Inbox inbox;
  EpollServerOptions o;
  o.max_connections = 2;
  auto server = StartServer(&inbox, o);
  RawClient a(server->address());
  RawClient b(server->address());
  ASSERT_TRUE(PollUntil([&] { return server->open_connections() == 2; }, 5s));
  RawClient c(server->address());
  EXPECT_TRUE(c.SeesEndOfStream());
  EXPECT_EQ(1u, server->refused_connections());
  // The admitted ones still work.
  b.SendFrame("b");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  request->second.Send("ok");
  EXPECT_EQ("ok", b.ReadFrame().value_or("<none>"));
}

TEST(EpollServer, IdleConnectionIsClosedAfterTheIdleTimeout) {
  Inbox inbox;
  EpollServerOptions o;
  o.idle_timeout = 10ms;  // the sweep runs once a second
  auto server = StartServer(&inbox, o);
  RawClient client(server->address());
  EXPECT_TRUE(client.SeesEndOfStream());
  EXPECT_TRUE(PollUntil([&] { return server->open_connections() == 0; }, 5s));
}

TEST(EpollServer, ConnectionWithARequestInProgressIsNotIdle) {
  Inbox inbox;
  EpollServerOptions o;
  o.idle_timeout = 10ms;
  auto server = StartServer(&inbox, o);
  RawClient client(server->address());
  client.SendFrame("slow");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  // A control connection, opened after the request: once a sweep closes it for being idle, the
  // busy connection, silent for longer, has been through that sweep too and must still be open.
  RawClient idle(server->address());
  ASSERT_TRUE(PollUntil([&] { return server->open_connections() == 2; }, 5s));
  ASSERT_TRUE(PollUntil([&] { return server->open_connections() == 1; }, 10s));
  EXPECT_FALSE(idle.ReadFrame().has_value());  // the idle one was closed
  request->second.Send("done");
  EXPECT_EQ("done", client.ReadFrame().value_or("<none>"));
}

TEST(EpollServer, ResponderOutlivingItsClientAndTheServerIsHarmless) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  std::optional<std::pair<std::string, EpollServer::Responder>> request;
  {
    RawClient client(server->address());
    client.SendFrame("bye");
    request = inbox.Pop();
    ASSERT_TRUE(request.has_value());
  }  // the client hangs up
  ASSERT_TRUE(PollUntil([&] { return server->open_connections() == 0; }, 5s));
  request->second.Send("nobody listens");
  request->second.Close();
  server->Stop();
  request->second.Send("server gone");
}

TEST(EpollServer, CloseEndsTheConnectionInsteadOfReplying) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  client.SendFrame("malformed");
  auto request = inbox.Pop();
  ASSERT_TRUE(request.has_value());
  request->second.Close();
  EXPECT_TRUE(client.SeesEndOfStream());
}

TEST(EpollServer, StopClosesEveryConnection) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  RawClient client(server->address());
  ASSERT_TRUE(PollUntil([&] { return server->open_connections() == 1; }, 5s));
  server->Stop();
  EXPECT_TRUE(client.SeesEndOfStream());
  server->Stop();  // idempotent
}

TEST(EpollServer, ManyClientsEachGetTheirOwnReply) {
  Inbox inbox;
  auto server = StartServer(&inbox);
  constexpr int kClients = 32;
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<RawClient>(server->address()));
    clients.back()->SendFrame(std::to_string(i));
  }
  // Answer from a thread, in arrival order, echoing each request.
  std::thread answerer([&] {
    for (int i = 0; i < kClients; ++i) {
      auto request = inbox.Pop();
      if (!request.has_value()) return;
      request->second.Send("re:" + request->first);
    }
  });
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ("re:" + std::to_string(i), clients[i]->ReadFrame().value_or("<none>"));
  }
  answerer.join();
}

}  // namespace
}  // namespace tx::raft::example
