// The real-process Raft test: three raft_example_server processes on loopback (real Thrift,
// real WAL files, real fdatasync), a stream of proposals from several client threads, kill -9
// of the leader. Checks that a new leader is elected, that every proposal acknowledged to a
// client is present on the surviving replicas at the position it was acknowledged with (so in
// the same order everywhere), that the killed replica comes back with all of it after a restart
// and rejoins as a follower. Every wait polls with a deadline.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "raft/node/example/example_client.h"
#include "tests/support/poll.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace tx::raft {
namespace {

using namespace std::chrono_literals;
using example::ExampleClusterClient;
using tx::testing::PollUntil;

#ifdef TX_SANITIZE_BUILD
constexpr int kAckedBeforeKill = 500;
constexpr int kAckedAfterKill = 250;
#else
constexpr int kAckedBeforeKill = 3000;
constexpr int kAckedAfterKill = 1500;
#endif
constexpr int kWriterThreads = 4;

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TX_CHECK(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  TX_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  TX_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Which server the clients call: the Raft port's RpcServer (one thread per connection, the
// RaftExample service multiplexed next to RaftService) or the client port's EpollServer
// (raft_example_server --client-listen; RaftExample only, no thread held per waiting call).
enum class ClientPort { kRaftPort, kEpollPort };

std::string PortName(const ::testing::TestParamInfo<ClientPort>& info) {
  return info.param == ClientPort::kRaftPort ? "ThreadedRaftPort" : "EpollClientPort";
}

class Replicas {
 public:
  explicit Replicas(ClientPort port) : port_(port) {
    for (uint64_t id = 1; id <= 3; ++id) {
      addresses_[id] = {"127.0.0.1", FreePort()};
      client_addresses_[id] =
          port == ClientPort::kEpollPort ? HostPort{"127.0.0.1", FreePort()} : addresses_[id];
    }
    for (const auto& [id, hp] : addresses_) {
      peers_ += fmt::format("{}{}={}", peers_.empty() ? "" : ",", id, ToString(hp));
    }
  }

  void Start(uint64_t id) {
    std::vector<std::string> argv = {testing::BinaryDir() + "/raft_example_server", "--id",
                                     std::to_string(id), "--listen", ToString(addresses_.at(id)),
                                     "--peers", peers_, "--data-dir",
                                     fmt::format("{}/r{}", dir_.path(), id), "--tick-ms", "10",
                                     "--election-ticks", "15", "--heartbeat-ticks", "3",
                                     // Snapshots and compaction happen during the run, so the
                                     // restart recovers from a snapshot plus the WAL.
                                     "--snapshot-every", "150", "--log-level", "warn"};
    if (port_ == ClientPort::kEpollPort) {
      argv.push_back("--client-listen");
      argv.push_back(ToString(client_addresses_.at(id)));
    }
    StatusOr<testing::Subprocess> p = testing::Subprocess::Start(argv);
    TX_CHECK(p.ok(), "{}", p.status().ToString());
    std::optional<std::string> line = p->ReadLine(20s);
    TX_CHECK(line.has_value() && line->rfind("listening on ", 0) == 0,
             "replica {} did not start (got '{}')", id, line.value_or("<nothing>"));
    procs_.erase(id);
    procs_.emplace(id, std::move(p).value());
  }

  void Kill(uint64_t id) {
    procs_.at(id).Signal(SIGKILL);
    procs_.at(id).Kill();  // reaps
    procs_.erase(id);
  }

  // Where clients call RaftExample.
  const std::map<uint64_t, HostPort>& addresses() const { return client_addresses_; }

 private:
  const ClientPort port_;
  testing::TempDir dir_;
  std::map<uint64_t, HostPort> addresses_;
  std::map<uint64_t, HostPort> client_addresses_;
  std::string peers_;
  std::map<uint64_t, testing::Subprocess> procs_;
};

struct Acked {
  std::string item;
  int64_t position = 0;
};

class RaftFailover : public ::testing::TestWithParam<ClientPort> {};

TEST_P(RaftFailover, AcknowledgedProposalsSurviveKillOfTheLeaderWhichRejoinsAsFollower) {
  const auto test_deadline = std::chrono::steady_clock::now() + 60s;
  Replicas replicas(GetParam());
  for (uint64_t id = 1; id <= 3; ++id) replicas.Start(id);
  rpc::RpcClientOptions client_options;
  client_options.connect_timeout = 300ms;
  client_options.recv_timeout = 3000ms;
  client_options.backoff.max = 100ms;
  ExampleClusterClient client(replicas.addresses(), client_options);

  uint64_t old_leader = 0;
  ASSERT_TRUE(PollUntil([&] { return (old_leader = client.FindLeader()) != 0; }, 20s))
      << "no leader elected";

  std::mutex mu;
  std::vector<Acked> acked;          // GUARDED_BY(mu)
  std::map<uint64_t, int> acked_by;  // GUARDED_BY(mu): acknowledgements per leader id
  std::atomic<int> ambiguous{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriterThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int seq = 0; !stop.load(); ++seq) {
        std::string item = fmt::format("w{}-{}", t, seq);
        example::ProposeOutcome r = client.Propose(item, 3s);
        if (r.status.ok()) {
          std::lock_guard lock(mu);
          acked.push_back({item, r.position});
          ++acked_by[r.leader];
        } else if (r.maybe_committed) {
          ++ambiguous;  // may or may not be in the log; never re-sent
        }
      }
    });
  }
  auto acked_count = [&] {
    std::lock_guard lock(mu);
    return static_cast<int>(acked.size());
  };
  ASSERT_TRUE(PollUntil([&] { return acked_count() >= kAckedBeforeKill; }, 30s))
      << "only " << acked_count() << " proposals acknowledged before the kill";

  // kill -9 the leader under the stream of proposals.
  uint64_t leader_now = client.FindLeader();
  if (leader_now != 0) old_leader = leader_now;
  replicas.Kill(old_leader);
  const int acked_at_kill = acked_count();
  const auto killed_at = std::chrono::steady_clock::now();

  // A new leader takes over and commits.
  uint64_t new_leader = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        std::lock_guard lock(mu);
        for (const auto& [id, n] : acked_by) {
          if (id != old_leader && n > 0) new_leader = id;
        }
        return new_leader != 0;
      },
      20s))
      << "no proposal acknowledged by a new leader after the kill";
  auto failover = std::chrono::steady_clock::now() - killed_at;
  ASSERT_TRUE(PollUntil([&] { return acked_count() >= acked_at_kill + kAckedAfterKill; }, 30s));
  stop.store(true);
  for (auto& w : writers) w.join();
  std::vector<Acked> all;
  {
    std::lock_guard lock(mu);
    all = acked;
  }
  std::printf(
      "acknowledged %zu proposals (%d ambiguous); first commit by the new leader %lld ms "
      "after the kill\n",
      all.size(), ambiguous.load(),
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(failover).count()));

  // The survivors converge on one list holding every acknowledged item at its position.
  std::vector<uint64_t> survivors;
  for (uint64_t id = 1; id <= 3; ++id) {
    if (id != old_leader) survivors.push_back(id);
  }
  auto converged = [&](const std::vector<uint64_t>& ids, std::vector<std::string>* list) {
    int64_t checksum0 = 0;
    StatusOr<std::vector<std::string>> first = client.ReadAll(ids[0], &checksum0);
    if (!first.ok()) return false;
    for (size_t i = 1; i < ids.size(); ++i) {
      int64_t checksum = 0;
      StatusOr<std::vector<std::string>> other = client.ReadAll(ids[i], &checksum);
      if (!other.ok() || checksum != checksum0 || *other != *first) return false;
    }
    *list = std::move(first).value();
    return true;
  };
  std::vector<std::string> list;
  ASSERT_TRUE(PollUntil([&] { return converged(survivors, &list); }, 20s))
      << "survivors did not converge";
  auto check_all_present = [&](const std::vector<std::string>& l) {
    for (const Acked& a : all) {
      ASSERT_GE(a.position, 1);
      ASSERT_LE(a.position, static_cast<int64_t>(l.size()))
          << a.item << " missing (list too short)";
      EXPECT_EQ(a.item, l[a.position - 1]) << "acknowledged item not at its position";
    }
  };
  check_all_present(list);

  // The old leader restarts from its snapshot and WAL, catches up and follows.
  ASSERT_LT(std::chrono::steady_clock::now(), test_deadline);
  replicas.Start(old_leader);
  std::vector<uint64_t> everyone = {1, 2, 3};
  std::vector<std::string> list_after;
  ASSERT_TRUE(PollUntil([&] { return converged(everyone, &list_after); }, 20s))
      << "the restarted replica did not catch up";
  EXPECT_EQ(list, list_after);
  check_all_present(list_after);
  ASSERT_TRUE(PollUntil(
      [&] {
        StatusOr<raft_example::NodeInfo> info = client.Info(old_leader);
        return info.ok() && info->role == "follower" && info->leader_id != 0 &&
               static_cast<uint64_t>(info->leader_id) != old_leader;
      },
      10s))
      << "the old leader did not rejoin as a follower";
  EXPECT_LT(std::chrono::steady_clock::now(), test_deadline);
}

class RaftExampleProposeMany : public ::testing::TestWithParam<ClientPort> {};

TEST_P(RaftExampleProposeMany, ItemsSentTogetherToAFollowerCommitOnceEachInOrderOnTheLeader) {
  Replicas replicas(GetParam());
  for (uint64_t id = 1; id <= 3; ++id) replicas.Start(id);
  rpc::RpcClientOptions client_options;
  client_options.connect_timeout = 300ms;
  client_options.recv_timeout = 5000ms;
  ExampleClusterClient admin(replicas.addresses(), client_options);
  uint64_t leader = 0;
  ASSERT_TRUE(PollUntil([&] { return (leader = admin.FindLeader()) != 0; }, 20s));
  // A fresh client starts at replica 1: make that a follower, so the call is refused there as
  // not-leader and has to follow the hint.
  if (leader == 1) {
    ASSERT_TRUE(admin.TransferLeadership(1, 2, 5000ms).ok());
    ASSERT_TRUE(PollUntil([&] { return (leader = admin.FindLeader()) != 0 && leader != 1; }, 20s));
  }
  ExampleClusterClient client(replicas.addresses(), client_options);
  std::vector<std::string> items;
  for (int i = 0; i < 200; ++i) items.push_back(fmt::format("many-{}", i));
  // Over the server's item bound (kMaxItemBytes, 1 MiB, in raft/node/example/append_log.h):
  // refused alone, the rest of the call goes ahead.
  items[7] = std::string((1 << 20) + 1, 'x');

  std::vector<example::ProposeOutcome> out = client.ProposeMany(items, 10s);
  ASSERT_EQ(items.size(), out.size());
  EXPECT_TRUE(out[7].status.IsInvalidArgument()) << out[7].status.ToString();
  int64_t previous = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (i == 7) continue;
    ASSERT_TRUE(out[i].status.ok()) << i << ": " << out[i].status.ToString();
    EXPECT_EQ(leader, out[i].leader);
    EXPECT_EQ(previous + 1, out[i].position) << "item " << i << " out of order";
    previous = out[i].position;
  }
  // Every replica holds each item once, where it was acknowledged.
  ASSERT_TRUE(PollUntil(
      [&] {
        for (uint64_t id = 1; id <= 3; ++id) {
          int64_t checksum = 0;
          StatusOr<std::vector<std::string>> list = client.ReadAll(id, &checksum);
          if (!list.ok() || list->size() != items.size() - 1) return false;
          for (size_t i = 0; i < out.size(); ++i) {
            if (i != 7 && (*list)[out[i].position - 1] != items[i]) return false;
          }
        }
        return true;
      },
      20s));

  // A call over the item bound is refused whole: nothing of it may have entered the log.
  std::vector<std::string> too_many(example::kMaxProposeManyItems + 1, "y");
  std::vector<example::ProposeOutcome> refused = client.ProposeMany(too_many, 5s);
  ASSERT_EQ(too_many.size(), refused.size());
  EXPECT_TRUE(refused[0].status.IsInvalidArgument()) << refused[0].status.ToString();
  EXPECT_FALSE(refused[0].maybe_committed);
  StatusOr<raft_example::ReadResponse> head = client.ReadHead(leader);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(static_cast<int64_t>(items.size() - 1), head->total);
}

// Sends `body` as one frame to `server` on a fresh connection; returns the reply frame's body,
// or nullopt if the server closed the connection first (5 s receive timeout).
std::optional<std::string> RawCall(const HostPort& server, const std::string& body) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TX_CHECK(fd >= 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  TX_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  uint32_t len = htonl(static_cast<uint32_t>(body.size()));
  std::string frame = std::string(reinterpret_cast<const char*>(&len), 4) + body;
  TX_CHECK(::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(frame.size()));
  auto read_exactly = [&](size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::recv(fd, out.data() + got, n - got, 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    out.resize(got);
    return out;
  };
  std::optional<std::string> reply;
  std::string header = read_exactly(4);
  if (header.size() == 4) {
    std::memcpy(&len, header.data(), 4);
    std::string reply_body = read_exactly(ntohl(len));
    if (reply_body.size() == ntohl(len)) reply = std::move(reply_body);
  }
  ::close(fd);
  return reply;
}

TEST(RaftExampleClientPort, UnknownMethodIsAnsweredAndMalformedRequestsCloseOnlyTheirConnection) {
  using apache::thrift::protocol::TBinaryProtocol;
  using apache::thrift::transport::TMemoryBuffer;
  Replicas replicas(ClientPort::kEpollPort);
  for (uint64_t id = 1; id <= 3; ++id) replicas.Start(id);
  const HostPort port = replicas.addresses().at(1);

  // Not Thrift at all (no version word): the connection is closed, nothing is answered.
  EXPECT_FALSE(RawCall(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").has_value());

  // A well-formed call of a method the service does not have.
  auto request = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol out(request);
  out.writeMessageBegin("example:Nope", apache::thrift::protocol::T_CALL, 42);
  out.writeStructBegin("args");
  out.writeFieldStop();
  out.writeStructEnd();
  out.writeMessageEnd();
  std::optional<std::string> reply = RawCall(port, request->getBufferAsString());
  ASSERT_TRUE(reply.has_value());
  auto reply_buffer = std::make_shared<TMemoryBuffer>(reinterpret_cast<uint8_t*>(reply->data()),
                                                      static_cast<uint32_t>(reply->size()));
  TBinaryProtocol in(reply_buffer);
  std::string name;
  apache::thrift::protocol::TMessageType type;
  int32_t seqid = 0;
  in.readMessageBegin(name, type, seqid);
  EXPECT_EQ(apache::thrift::protocol::T_EXCEPTION, type);
  EXPECT_EQ(42, seqid);
  apache::thrift::TApplicationException error;
  error.read(&in);
  EXPECT_EQ(apache::thrift::TApplicationException::UNKNOWN_METHOD, error.getType());

  // A Propose whose arguments are cut short.
  auto truncated = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol t(truncated);
  t.writeMessageBegin("example:Propose", apache::thrift::protocol::T_CALL, 1);
  t.writeStructBegin("args");
  t.writeFieldBegin("item", apache::thrift::protocol::T_STRING, 1);
  t.writeI32(1000);  // a 1000-byte string, of which nothing follows
  EXPECT_FALSE(RawCall(port, truncated->getBufferAsString()).has_value());

  // The replica carries on serving.
  rpc::RpcClientOptions client_options;
  client_options.connect_timeout = 300ms;
  client_options.recv_timeout = 5000ms;
  ExampleClusterClient client(replicas.addresses(), client_options);
  StatusOr<raft_example::NodeInfo> info = client.Info(1);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(1, info->id);
  uint64_t leader = 0;
  ASSERT_TRUE(PollUntil([&] { return (leader = client.FindLeader()) != 0; }, 20s));
  EXPECT_TRUE(client.Propose("after the garbage", 5000ms).status.ok());
}

INSTANTIATE_TEST_SUITE_P(BothPorts, RaftFailover,
                         ::testing::Values(ClientPort::kRaftPort, ClientPort::kEpollPort),
                         PortName);
INSTANTIATE_TEST_SUITE_P(BothPorts, RaftExampleProposeMany,
                         ::testing::Values(ClientPort::kRaftPort, ClientPort::kEpollPort),
                         PortName);

}  // namespace
}  // namespace tx::raft
