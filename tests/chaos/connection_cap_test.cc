// Regression tests for what the chaos runs found, on real txcoord processes (LocalCluster, no
// proxy). Each test is named after the finding; docs/reliability.md ("Findings") tells the story.

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <thrift/transport/TSocket.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "common/rpc/transport.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tools/txchaos/control.h"
#include "tools/txchaos/local_cluster.h"

namespace tx::chaos {
namespace {

using namespace std::chrono_literals;

// A client connection that made a call and is kept open: a pooled connection between calls.
// (A connection that never sends does not take a slot: Thrift's listener defers the accept
// until the first bytes arrive.)
class Connection {
 public:
  explicit Connection(const HostPort& at) {
    auto socket = std::make_shared<apache::thrift::transport::TSocket>(
        at.host, at.port, rpc::MakeThriftConfiguration(1 << 20));
    socket->setRecvTimeout(5000);
    protocol_ = rpc::MakeClientProtocol(socket, 1 << 20);
    protocol_->getTransport()->open();
    client_ = std::make_unique<api::CoordinatorServiceClient>(protocol_);
  }
  // Whether the call was answered (then the connection stays open and served).
  bool Call() {
    api::ClusterStatusResponse s;
    try {
      client_->GetClusterStatus(s, api::ClusterStatusRequest());
    } catch (const std::exception& e) {
      return false;
    }
    return true;
  }

 private:
  std::shared_ptr<apache::thrift::protocol::TProtocol> protocol_;
  std::unique_ptr<api::CoordinatorServiceClient> client_;
};

// Three replicas and one participant in a fresh directory, with the given flags.
class CapCluster {
 public:
  explicit CapCluster(std::vector<std::string> txcoord_flags,
                      std::vector<std::string> txpart_flags = {}) {
    spec_.bin_dir = testing::BinaryDir();
    spec_.work_dir = dir_.path() + "/cluster";
    spec_.replicas = 3;
    spec_.participants = 1;
    spec_.txcoord_flags = std::move(txcoord_flags);
    spec_.txpart_flags = std::move(txpart_flags);
    cluster_ = std::make_unique<LocalCluster>(spec_);
  }
  Status Start() {
    TX_RETURN_IF_ERROR(cluster_->Plan());
    return cluster_->Start();
  }
  LocalCluster& cluster() { return *cluster_; }
  const std::string& work_dir() const { return spec_.work_dir; }

 private:
  testing::TempDir dir_;
  ClusterSpec spec_;
  std::unique_ptr<LocalCluster> cluster_;
};

// A replica's Raft role as its metrics port reports it (that port has no connection cap to
// fill, so the test watches the replicas without a slot of theirs): "tx_raft_role{...} 3" is a
// leader.
bool IsLeader(const NodeInfo& node) {
  std::string body;
  StatusOr<int> code = HttpGet(node.metrics, "/metrics", 2s, &body);
  if (!code.ok() || *code != 200) return false;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.starts_with("tx_raft_role{")) return line.ends_with(" 3");
  }
  return false;
}

// Found by the overload scenario (seed 1, 150 clients against --max-connections 96): once the
// clients' pooled connections filled a replica's connection slots, its Raft peers could not
// connect to it either ("raft node 2: dropped 5 message(s) to node 1: TimedOut"), for as long
// as the clients kept their idle connections (up to the server's 5-minute idle timeout). Raft
// shares the coordinator's port and its --max-connections cap (a thread per connection), so
// clients can lock the replicas out of each other: after a leader dies, the survivors cannot
// reach each other to elect a new one.
//
// Fixed by slots above the cap that only Raft calls may use (rpc::RpcServerOptions::
// reserved_connections; coordinator/server.cc).
TEST(CoordinatorConnectionCap, IdleClientConnectionsDoNotLockRaftPeersOut) {
  CapCluster setup({"--max-connections", "4", "--election-ticks", "20", "--log-level", "warn"});
  ASSERT_TRUE(setup.Start().ok());
  LocalCluster& cluster = setup.cluster();
  StatusOr<std::string> leader = cluster.AwaitLeader(10s);
  ASSERT_TRUE(leader.ok()) << leader.status().ToString();
  std::vector<std::string> followers;
  for (const std::string& c : cluster.Coordinators()) {
    if (c != *leader) followers.push_back(c);
  }
  ASSERT_EQ(2u, followers.size());
  const std::string a = followers[0], b = followers[1];

  // Idle client connections take every free slot of a replica: opened (each making one call)
  // until a new connection is no longer served.
  std::vector<std::unique_ptr<Connection>> idle;
  auto fill = [&](const std::string& node) {
    for (int i = 0; i < 16; ++i) {
      idle.push_back(std::make_unique<Connection>(cluster.Info(node).address));
      if (!idle.back()->Call()) return;  // refused, or waits in the backlog: full
    }
    FAIL() << node << " still answers with 16 client connections open";
  };
  // The followers' connections to each other must be made anew: restart one of them while the
  // other is full, then fill it too.
  cluster.Kill(a);
  fill(b);
  ASSERT_TRUE(cluster.StartNode(a).ok());
  fill(a);

  cluster.Kill(*leader);
  bool elected = false;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (!elected && std::chrono::steady_clock::now() < deadline) {
    elected = IsLeader(cluster.Info(a)) || IsLeader(cluster.Info(b));
    if (!elected) std::this_thread::sleep_for(100ms);
  }
  // What a says about reaching b, for the failure message.
  std::ifstream log(setup.work_dir() + "/" + a + ".log");
  const std::string to_b = fmt::format("to node {}:", cluster.Info(b).index);
  std::string line;
  std::vector<std::string> about_b;
  while (std::getline(log, line)) {
    if (line.find(to_b) != std::string::npos) about_b.push_back(line);
  }
  if (about_b.size() > 3) about_b.erase(about_b.begin(), about_b.end() - 3);
  EXPECT_TRUE(elected) << "no new leader within 15 s while clients hold the survivors' "
                          "connection slots; "
                       << a << " about " << b << ":\n"
                       << fmt::format("{}", fmt::join(about_b, "\n"));
}

// The open point of the finding above: a participant in doubt asks the coordinator for the
// outcome (Resolve), and with clients holding every ordinary slot of every replica that call was
// refused (seen in overload runs: "cannot resolve transaction 3702 yet: Unavailable"). txcoord
// now keeps separate slots for participants' calls (and for operators'), which neither clients
// nor each other can take.
TEST(CoordinatorConnectionCap, IdleClientConnectionsDoNotLockParticipantsResolveOut) {
  CapCluster setup({"--max-connections", "4", "--log-level", "warn"});
  ASSERT_TRUE(setup.Start().ok());
  LocalCluster& cluster = setup.cluster();
  StatusOr<std::string> leader = cluster.AwaitLeader(10s);
  ASSERT_TRUE(leader.ok()) << leader.status().ToString();
  const HostPort at = cluster.Info(*leader).address;

  // Idle client connections (GetClusterStatus, the call txctl makes) take every slot they may:
  // the ordinary ones and the operators'.
  std::vector<std::unique_ptr<Connection>> idle;
  bool refused = false;
  for (int i = 0; i < 16 && !refused; ++i) {
    idle.push_back(std::make_unique<Connection>(at));
    refused = !idle.back()->Call();
  }
  ASSERT_TRUE(refused) << "the leader still answers with 16 client connections open";

  // A participant's Resolve on a new connection is answered (a TxError is an answer: the txid
  // was never issued).
  auto socket = std::make_shared<apache::thrift::transport::TSocket>(
      at.host, at.port, rpc::MakeThriftConfiguration(1 << 20));
  socket->setRecvTimeout(5000);
  auto protocol = rpc::MakeClientProtocol(socket, 1 << 20);
  protocol->getTransport()->open();
  api::CoordinatorServiceClient participant(protocol);
  api::ResolveRequest request;
  request.txid = 987654321;
  request.participant = "p1";
  api::ResolveResponse response;
  std::string outcome = "answered";
  try {
    participant.Resolve(response, request);
  } catch (const api::TxError& e) {
    outcome = "answered with an error";
  } catch (const std::exception& e) {
    outcome = std::string("not answered: ") + e.what();
  }
  EXPECT_TRUE(outcome.starts_with("answered")) << outcome;
}

// The same lock-out at a participant: applications' idle pooled connections (Execute) at
// txpart's --max-connections would keep out the calls the protocol needs to finish prepared
// transactions (the coordinator's Prepare, Commit and Abort, other participants' Status).
// txpart keeps slots above the cap for every call but Execute.
TEST(ParticipantConnectionCap, IdleClientConnectionsDoNotLockProtocolCallsOut) {
  CapCluster setup({"--log-level", "warn"}, {"--max-connections", "4", "--log-level", "warn"});
  ASSERT_TRUE(setup.Start().ok());
  LocalCluster& cluster = setup.cluster();
  const HostPort p1 = cluster.Info("p1").address;

  using Client = api::ParticipantServiceClient;
  auto open = [&] {
    auto socket = std::make_shared<apache::thrift::transport::TSocket>(
        p1.host, p1.port, rpc::MakeThriftConfiguration(1 << 20));
    socket->setRecvTimeout(2000);
    auto protocol = rpc::MakeClientProtocol(socket, 1 << 20);
    protocol->getTransport()->open();
    return std::make_unique<Client>(protocol);
  };
  // An Execute for a transaction the participant does not know is answered with a TxError:
  // the connection was served and stays open, idle, like a pooled application connection.
  auto execute = [](Client& c) {
    api::ExecuteRequest request;
    request.txid = 123456789;
    api::ExecuteResponse response;
    try {
      c.Execute(response, request);
    } catch (const api::TxError&) {
      return true;
    } catch (const std::exception&) {
      return false;
    }
    return true;
  };
  std::vector<std::unique_ptr<Client>> idle;
  bool refused = false;
  for (int i = 0; i < 16 && !refused; ++i) {
    idle.push_back(open());
    refused = !execute(*idle.back());
  }
  ASSERT_TRUE(refused) << "p1 still serves Execute on 16 connections with --max-connections 4";

  // A protocol call on a new connection is still served.
  std::unique_ptr<Client> peer = open();
  api::GetInfoResponse info;
  api::TransactionStatus status;
  EXPECT_NO_THROW(peer->GetInfo(info, api::GetInfoRequest()));
  EXPECT_EQ("p1", info.name);
  api::StatusRequest status_request;
  status_request.txid = 42;
  EXPECT_NO_THROW(peer->Status(status, status_request));
}

}  // namespace
}  // namespace tx::chaos
