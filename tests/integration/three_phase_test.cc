// 3PC with real processes: three txcoord replicas and two txpart agents on loopback, real
// SQLite files, real fsync. Every coordinator replica dies (a crash failpoint, which _exits like
// kill -9, on the leader; SIGKILL for the others) at a point of the protocol past PRECOMMIT; the
// participants, with no coordinator to ask, finish the transaction between themselves within the
// termination timeout (checked on the files with SQLite directly); the coordinators, restarted,
// agree with what they did.

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>

#include "common/failpoint.h"
#include "tests/integration/coordinator_harness.h"

namespace tx::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// txpart's default --termination-timeout-ms and --termination-probe-after-ms: the harness
// starts the agents with the defaults.
constexpr milliseconds kTerminationTimeout{5000};
constexpr milliseconds kProbeAfter{1000};

// Calls one replica directly (the 3PC Begin and Commit: the test client speaks 2PC only).
class OneReplica {
 public:
  explicit OneReplica(const HostPort& at) : pool_(at, Options()) {}

  StatusOr<int64_t> Begin3pc() {
    api::BeginResponse out;
    Status s = Call([&](api::CoordinatorServiceClient& c) {
      api::BeginRequest req;
      req.options.protocol = api::Protocol::THREE_PHASE;
      c.Begin(out, req);
    });
    if (!s.ok()) return s;
    return out.txid;
  }
  // Returns when the replica answers or dies.
  Status Commit3pc(int64_t txid, std::vector<std::string> participants) {
    return Call([&](api::CoordinatorServiceClient& c) {
      api::CommitTransactionRequest req;
      req.txid = txid;
      req.participants = std::move(participants);
      req.protocol = api::Protocol::THREE_PHASE;
      api::CommitTransactionResponse out;
      c.Commit(out, req);
    });
  }

 private:
  static rpc::RpcClientOptions Options() {
    rpc::RpcClientOptions o;
    o.recv_timeout = seconds(60);
    return o;
  }
  Status Call(const std::function<void(api::CoordinatorServiceClient&)>& fn) {
    std::optional<api::TxError> error;
    Status s = pool_.Call([&](api::CoordinatorServiceClient& c) {
      try {
        fn(c);
      } catch (const api::TxError& e) {
        error = e;
      }
    });
    if (!s.ok()) return s;
    if (error.has_value()) return Status::Unavailable(error->message);
    return Status::OK();
  }
  rpc::ClientPool<api::CoordinatorServiceClient> pool_;
};

class ThreePhaseCrashTest : public ::testing::Test {
 protected:
  // Starts the cluster with `failpoint` armed to crash on every replica (whichever leads when
  // the transaction gets there dies there; one that takes over dies at the same point).
  void StartWithCrashAt(const std::string& failpoint) {
    ClusterOptions o;
    for (int id = 1; id <= Cluster::kReplicas; ++id) {
      o.coordinator_env[id] = {"TX_FAILPOINTS=" + failpoint + "=crash"};
    }
    cluster_ = std::make_unique<Cluster>(o);
    Status s = cluster_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // Moves 7 from account 1 at p0 to account 1 at p1 in a 3PC transaction, committed at the
  // leader, which must die (at the armed failpoint) before answering; then kills the other
  // replicas. Returns the txid.
  int64_t TransferUntilEveryCoordinatorIsDead() {
    const int leader = cluster_->LeaderId();
    EXPECT_NE(0, leader);
    OneReplica coord(cluster_->endpoints()[leader - 1]);
    StatusOr<int64_t> txid = coord.Begin3pc();
    EXPECT_TRUE(txid.ok()) << txid.status().ToString();
    if (!txid.ok()) return 0;
    ParticipantClient a(cluster_->participant_address(0)), b(cluster_->participant_address(1));
    EXPECT_TRUE(a.Execute(*txid, "UPDATE accounts SET balance = balance - 7 WHERE id = 1").ok());
    EXPECT_TRUE(b.Execute(*txid, "UPDATE accounts SET balance = balance + 7 WHERE id = 1").ok());
    auto commit = std::async(std::launch::async, [&] {
      return coord.Commit3pc(*txid, {cluster_->name(0), cluster_->name(1)});
    });
    std::optional<int> exit = cluster_->WaitCoordinatorExit(leader, seconds(30));
    EXPECT_TRUE(exit.has_value()) << "the leader did not reach the crash point";
    if (exit.has_value()) {
      EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == kFailPointCrashExitCode)
          << "wait status " << *exit;
    }
    for (int id = 1; id <= Cluster::kReplicas; ++id) cluster_->KillCoordinator(id);
    EXPECT_FALSE(commit.get().ok()) << "the client got an answer from a replica that crashed";
    return *txid;
  }

  // Polls the files until txid has an outcome at both participants; returns it (0: none in
  // time) and how long it took.
  int64_t WaitForOutcomeInTheFiles(int64_t txid, milliseconds timeout, milliseconds* took) {
    const auto start = std::chrono::steady_clock::now();
    int64_t outcome = 0;
    PollUntil(
        [&] {
          std::map<int64_t, int64_t> o0 = cluster_->Outcomes(0), o1 = cluster_->Outcomes(1);
          if (o0.count(txid) == 0 || o1.count(txid) == 0) return false;
          EXPECT_EQ(o0[txid], o1[txid]) << "split outcome for txid " << txid;
          outcome = o0[txid];
          return true;
        },
        timeout);
    *took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    return outcome;
  }

  // Restarts every replica without the failpoint; polls GetOutcome until it is final.
  api::Decision::type RestartCoordinatorsAndAsk(int64_t txid) {
    for (int id = 1; id <= Cluster::kReplicas; ++id) {
      Status s = cluster_->StartCoordinator(id, std::vector<std::string>{});
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    CoordinatorClient client(cluster_->endpoints(), seconds(30));
    api::Decision::type decision = api::Decision::PENDING;
    PollUntil(
        [&] {
          CoordReply<api::GetOutcomeResponse> r = client.GetOutcome(txid);
          if (!r.ok()) return false;
          decision = r.value.decision;
          return decision == api::Decision::COMMITTED || decision == api::Decision::ABORTED;
        },
        seconds(60));
    return decision;
  }

  std::unique_ptr<Cluster> cluster_;
};

TEST_F(ThreePhaseCrashTest, ParticipantsCommitOnTheirOwnWhenEveryCoordinatorDiesAfterPreCommit) {
  StartWithCrashAt("coordinator.after_precommit_acknowledged");
  const int64_t before = cluster_->TotalBalance();
  const int64_t txid = TransferUntilEveryCoordinatorIsDead();
  ASSERT_NE(0, txid);
  // Both participants are PRECOMMITTED and nobody has committed: COMMIT is not in the log.
  for (int i = 0; i < 2; ++i) {
    ParticipantClient p(cluster_->participant_address(i));
    Reply<api::TransactionStatus> s = p.Status(txid);
    ASSERT_TRUE(s.ok()) << s.Describe();
    EXPECT_EQ(api::TxState::PRECOMMITTED, s.value.state) << cluster_->name(i);
  }
  milliseconds took{0};
  const int64_t outcome =
      WaitForOutcomeInTheFiles(txid, kTerminationTimeout + kProbeAfter + seconds(20), &took);
  ASSERT_EQ(1, outcome) << "txid " << txid << " not committed by the participants in time";
  std::printf(
      "three_phase_test: participants committed without coordinators %lld ms after the "
      "last one died (termination timeout %lld ms)\n",
      static_cast<long long>(took.count()), static_cast<long long>(kTerminationTimeout.count()));
  // The money moved, exactly once, at both (read with SQLite directly).
  EXPECT_EQ(before, cluster_->TotalBalance());
  EXPECT_EQ(993, DirectDb(cluster_->db_path(0)).Int("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(1007, DirectDb(cluster_->db_path(1)).Int("SELECT balance FROM accounts WHERE id = 1"));

  EXPECT_EQ(api::Decision::COMMITTED, RestartCoordinatorsAndAsk(txid));
  EXPECT_TRUE(cluster_->WaitAllResolved(seconds(60))) << cluster_->DescribeUnresolved();
  cluster_->ExpectNoSplitOutcomes();
}

TEST_F(ThreePhaseCrashTest, ParticipantsAbortWhenEveryCoordinatorDiesBeforeAnyPreCommit) {
  // PRECOMMIT is logged, but no participant heard of it: all only PREPARED, so the round aborts,
  // and the coordinators, when back, adopt that (never COMMIT).
  StartWithCrashAt("coordinator.after_precommit_logged");
  const int64_t before = cluster_->TotalBalance();
  const int64_t txid = TransferUntilEveryCoordinatorIsDead();
  ASSERT_NE(0, txid);
  milliseconds took{0};
  const int64_t outcome =
      WaitForOutcomeInTheFiles(txid, kTerminationTimeout + kProbeAfter + seconds(20), &took);
  ASSERT_EQ(2, outcome) << "txid " << txid << " not aborted by the participants in time";
  EXPECT_EQ(before, cluster_->TotalBalance());
  EXPECT_EQ(1000, DirectDb(cluster_->db_path(0)).Int("SELECT balance FROM accounts WHERE id = 1"));

  EXPECT_EQ(api::Decision::ABORTED, RestartCoordinatorsAndAsk(txid));
  EXPECT_TRUE(cluster_->WaitAllResolved(seconds(60))) << cluster_->DescribeUnresolved();
  cluster_->ExpectNoSplitOutcomes();
}

}  // namespace
}  // namespace tx::testing
