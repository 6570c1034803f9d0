// The coordinator with real processes: three txcoord replicas, two txpart agents, Thrift over
// loopback, SQLite files read back directly.

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "common/net.h"
#include "tests/integration/coordinator_harness.h"

namespace tx::testing {
namespace {

// The error code a call ended with (0 if it succeeded).
template <typename T>
int ErrorOf(const CoordReply<T>& r) {
  return r.error.has_value() ? static_cast<int>(r.error->code) : 0;
}

class CoordinatorBasicTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.Start().ok()); }
  Cluster cluster_;
};

TEST_F(CoordinatorBasicTest, TwoPhaseTransactionCommitsAtBothParticipants) {
  CoordinatorClient& client = cluster_.client();
  ParticipantClient a(cluster_.participant_address(0)), b(cluster_.participant_address(1));
  CoordReply<api::BeginResponse> begin = client.Begin();
  ASSERT_TRUE(begin.ok()) << begin.Describe();
  ASSERT_TRUE(begin.value.__isset.participants);
  EXPECT_EQ(2u, begin.value.participants.size()) << "Begin hands out the directory";
  const int64_t txid = begin.value.txid;
  ASSERT_TRUE(a.Execute(txid, "INSERT INTO ledger(id, note) VALUES (1, 'left')").ok());
  ASSERT_TRUE(b.Execute(txid, "INSERT INTO ledger(id, note) VALUES (1, 'right')").ok());
  CoordReply<api::CommitTransactionResponse> c = client.Commit(txid, {"p0", "p1"});
  ASSERT_TRUE(c.ok()) << c.Describe();
  EXPECT_EQ(api::Decision::COMMITTED, c.value.decision);

  // The client hears COMMITTED once the decision is in the log; phase two follows.
  ASSERT_TRUE(cluster_.WaitAllResolved(std::chrono::seconds(10)));
  EXPECT_EQ(1, DirectDb(cluster_.db_path(0)).Int("SELECT count(*) FROM ledger WHERE id = 1"));
  EXPECT_EQ(1, DirectDb(cluster_.db_path(1)).Int("SELECT count(*) FROM ledger WHERE id = 1"));
  EXPECT_EQ(1, cluster_.Outcomes(0).at(txid));
  EXPECT_EQ(1, cluster_.Outcomes(1).at(txid));
  CoordReply<api::GetOutcomeResponse> outcome = client.GetOutcome(txid);
  ASSERT_TRUE(outcome.ok()) << outcome.Describe();
  EXPECT_EQ(api::Decision::COMMITTED, outcome.value.decision);
}

TEST_F(CoordinatorBasicTest, ANoVoteAbortsTheTransactionAtEveryParticipant) {
  CoordinatorClient& client = cluster_.client();
  ParticipantClient a(cluster_.participant_address(0)), b(cluster_.participant_address(1));
  const int64_t txid = client.Begin().value.txid;
  ASSERT_TRUE(a.Execute(txid, "UPDATE accounts SET balance = balance - 5 WHERE id = 0").ok());
  ASSERT_TRUE(b.Execute(txid, "UPDATE accounts SET balance = balance + 5 WHERE id = 0").ok());
  // a aborts on its own before the vote (as an idle timeout or a deadlock would): it votes NO.
  ASSERT_TRUE(a.Abort(txid).ok());
  CoordReply<api::CommitTransactionResponse> c = client.Commit(txid, {"p0", "p1"});
  ASSERT_TRUE(c.ok()) << c.Describe();
  EXPECT_EQ(api::Decision::ABORTED, c.value.decision);
  EXPECT_NE(std::string::npos, c.value.reason.find("p0")) << c.value.reason;
  ASSERT_TRUE(cluster_.WaitAllResolved(std::chrono::seconds(10)));
  EXPECT_EQ(1000, DirectDb(cluster_.db_path(1)).Int("SELECT balance FROM accounts WHERE id = 0"))
      << "b applied the half of an aborted transfer";
  EXPECT_EQ(cluster_.ExpectedTotal(), cluster_.TotalBalance());
}

TEST_F(CoordinatorBasicTest, ClientAbortUndoesBothParticipants) {
  CoordinatorClient& client = cluster_.client();
  ParticipantClient a(cluster_.participant_address(0)), b(cluster_.participant_address(1));
  const int64_t txid = client.Begin().value.txid;
  ASSERT_TRUE(a.Execute(txid, "INSERT INTO ledger(id, note) VALUES (2, 'x')").ok());
  ASSERT_TRUE(b.Execute(txid, "INSERT INTO ledger(id, note) VALUES (2, 'y')").ok());
  CoordReply<api::AbortTransactionResponse> r = client.Abort(txid, {"p0", "p1"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(api::Decision::ABORTED, r.value.decision);
  // The transaction ends at both participants (phase two), which then refuse more work.
  EXPECT_TRUE(PollUntil(
      [&] {
        return a.Status(txid).value.state == api::TxState::ABORTED &&
               b.Status(txid).value.state == api::TxState::ABORTED;
      },
      std::chrono::seconds(10)));
  EXPECT_FALSE(a.Execute(txid, "SELECT 1").ok());
  EXPECT_EQ(0, DirectDb(cluster_.db_path(0)).Int("SELECT count(*) FROM ledger WHERE id = 2"));
  EXPECT_EQ(0, DirectDb(cluster_.db_path(1)).Int("SELECT count(*) FROM ledger WHERE id = 2"));
}

TEST_F(CoordinatorBasicTest, SingleParticipantAndReadOnlyTransactionsCommit) {
  CoordinatorClient& client = cluster_.client();
  ParticipantClient a(cluster_.participant_address(0)), b(cluster_.participant_address(1));
  const int64_t one = client.Begin().value.txid;
  ASSERT_TRUE(a.Execute(one, "INSERT INTO ledger(id, note) VALUES (3, 'solo')").ok());
  CoordReply<api::CommitTransactionResponse> c = client.Commit(one, {"p0"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(api::Decision::COMMITTED, c.value.decision);
  EXPECT_EQ(1, DirectDb(cluster_.db_path(0)).Int("SELECT count(*) FROM ledger WHERE id = 3"));

  const int64_t ro = client.Begin().value.txid;
  ASSERT_TRUE(a.Execute(ro, "SELECT count(*) FROM accounts").ok());
  ASSERT_TRUE(b.Execute(ro, "SELECT count(*) FROM accounts").ok());
  CoordReply<api::CommitTransactionResponse> r = client.Commit(ro, {"p0", "p1"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(api::Decision::COMMITTED, r.value.decision);
  // Neither wrote the log: GetOutcome says so, truthfully.
  CoordReply<api::GetOutcomeResponse> g = client.GetOutcome(ro);
  ASSERT_TRUE(g.ok()) << g.Describe();
  EXPECT_EQ(api::Decision::UNDECIDED, g.value.decision);
}

TEST_F(CoordinatorBasicTest, FollowersAnswerNotLeaderWithTheLeadersAddress) {
  int leader = cluster_.LeaderId();
  ASSERT_NE(0, leader);
  const HostPort leader_at = cluster_.endpoints()[leader - 1];
  for (int id = 1; id <= Cluster::kReplicas; ++id) {
    if (id == leader) continue;
    rpc::ClientPool<api::CoordinatorServiceClient> pool(cluster_.endpoints()[id - 1]);
    std::optional<api::TxError> error;
    Status s = pool.Call([&](api::CoordinatorServiceClient& c) {
      try {
        api::BeginResponse out;
        c.Begin(out, api::BeginRequest{});
      } catch (const api::TxError& e) {
        error = e;
      }
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(error.has_value()) << "follower " << id << " answered Begin";
    EXPECT_EQ(api::ErrorCode::NOT_LEADER, error->code);
    EXPECT_EQ(ToString(leader_at), error->leader_hint);
    // Operators may ask any replica for the cluster's status.
    CoordReply<api::ClusterStatusResponse> st =
        cluster_.client().Status(cluster_.endpoints()[id - 1]);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ("follower", st.value.role);
    EXPECT_EQ(leader, st.value.leader_id);
    EXPECT_EQ(2u, st.value.participants.size());
  }
}

TEST_F(CoordinatorBasicTest, BadRequestsGetTypedErrorsAndTheReplicaCarriesOn) {
  CoordinatorClient& client = cluster_.client();
  const int64_t txid = client.Begin().value.txid;
  std::vector<std::string> many(65, "p0");
  EXPECT_EQ(int{api::ErrorCode::TOO_LARGE}, ErrorOf(client.Commit(txid, many)));
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.Commit(txid, {"p0", "nobody"})));
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.Commit(txid, {"p0", "p0"})));
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.Commit(-3, {"p0"})));
  EXPECT_EQ(api::ErrorCode::INVALID_ARGUMENT,
            ErrorOf(client.Commit(int64_t{1} << 60, {"p0"})));  // never issued
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.Resolve(0)));
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.GetOutcome(-1)));
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.Register("bad name", "h:1")));
  EXPECT_EQ(int{api::ErrorCode::INVALID_ARGUMENT}, ErrorOf(client.Register("ok", "no-port")));
  EXPECT_EQ(int{api::ErrorCode::UNKNOWN_TRANSACTION}, ErrorOf(client.GetTransaction(txid + 1000)));
  // Bytes that are not a Thrift frame: the connection is closed, the replica serves on.
  const HostPort leader = cluster_.endpoints()[cluster_.LeaderId() - 1];
  StatusOr<int> connected = ConnectTcp(leader, std::chrono::seconds(10));
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  const int fd = *connected;
  const std::string junk = "GET / HTTP/1.1\r\n\r\n\xff\xff\xff\xff garbage";
  ASSERT_EQ(static_cast<ssize_t>(junk.size()), ::write(fd, junk.data(), junk.size()));
  char buf[64];
  EXPECT_LE(::read(fd, buf, sizeof(buf)), 0) << "the server answered garbage";
  ::close(fd);
  CoordReply<api::CommitTransactionResponse> ok = client.Commit(txid, {});
  ASSERT_TRUE(ok.ok()) << ok.Describe();
  EXPECT_EQ(api::Decision::COMMITTED, ok.value.decision);
}

TEST_F(CoordinatorBasicTest, BankInvariantHoldsUnderConcurrentTransfers) {
#ifdef TX_SANITIZE_BUILD
  constexpr int kTransfersPerClient = 15;
#else
  constexpr int kTransfersPerClient = 60;
#endif
  constexpr int kClients = 6;
  std::atomic<int> committed{0}, aborted{0}, other{0};
  std::vector<std::thread> threads;
  std::mutex mu;
  std::map<int64_t, TransferResult> told;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      CoordinatorClient client(cluster_.endpoints());
      ParticipantClient a(cluster_.participant_address(0)), b(cluster_.participant_address(1));
      std::mt19937 rng(c);
      for (int i = 0; i < kTransfersPerClient; ++i) {
        Transfer t = RunTransfer(cluster_, client, a, b, static_cast<int>(rng() % 10),
                                 static_cast<int>(rng() % 10), 1 + rng() % 20);
        if (t.result == TransferResult::kCommitted) {
          ++committed;
        } else if (t.result == TransferResult::kAborted) {
          ++aborted;
        } else {
          ++other;
        }
        std::lock_guard<std::mutex> lock(mu);
        told[t.txid] = t.result;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(0, other.load()) << "no faults here: every Commit gets an answer";
  EXPECT_GT(committed.load(), kClients * kTransfersPerClient / 3);
  ASSERT_TRUE(cluster_.WaitAllResolved(std::chrono::seconds(20)));
  EXPECT_EQ(cluster_.ExpectedTotal(), cluster_.TotalBalance());
  cluster_.ExpectNoSplitOutcomes();
  // What clients were told agrees with what the participants hold.
  std::map<int64_t, int64_t> o0 = cluster_.Outcomes(0), o1 = cluster_.Outcomes(1);
  for (const auto& [txid, result] : told) {
    if (result == TransferResult::kCommitted) {
      EXPECT_EQ(1, o0.count(txid) ? o0[txid] : 0) << txid;
      EXPECT_EQ(1, o1.count(txid) ? o1[txid] : 0) << txid;
    } else if (result == TransferResult::kAborted) {
      EXPECT_NE(1, o0.count(txid) ? o0[txid] : 0) << txid;
      EXPECT_NE(1, o1.count(txid) ? o1[txid] : 0) << txid;
    }
  }
}

}  // namespace
}  // namespace tx::testing
