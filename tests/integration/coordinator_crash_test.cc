// Crashes with real processes: the coordinating replica killed (kill -9, or a crash failpoint,
// which _exits like kill -9) during prepare, right after the decision is logged and during phase
// two; a participant killed after its YES vote. Concurrent bank transfers run throughout. Each
// test ends with every transaction resolved (no participant holds a prepared transaction, the
// leader no decided, unfinished one), the total balance unchanged, no txid committed at one
// participant and aborted at the other, and every answer a client got matching the files.

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "common/failpoint.h"
#include "tests/integration/coordinator_harness.h"

namespace tx::testing {
namespace {

constexpr int kClients = 4;

// Transfers from kClients threads until stopped; remembers what each client was told.
class Workload {
 public:
  explicit Workload(Cluster* cluster) : cluster_(cluster) {}
  ~Workload() { Stop(); }

  void Start() {
    for (int c = 0; c < kClients; ++c) {
      threads_.emplace_back([this, c] {
        CoordinatorClient client(cluster_->endpoints(), std::chrono::seconds(30));
        ParticipantClient a(cluster_->participant_address(0));
        ParticipantClient b(cluster_->participant_address(1));
        std::mt19937 rng(c + 1);
        while (!stop_.load()) {
          Transfer t = RunTransfer(*cluster_, client, a, b, static_cast<int>(rng() % 10),
                                   static_cast<int>(rng() % 10), 1 + rng() % 20);
          std::lock_guard<std::mutex> lock(mu_);
          if (t.txid != 0) told_[t.txid] = t;
          ++done_;
        }
      });
    }
  }

  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  int done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

  // Waits until `n` more transfers have finished.
  bool WaitForMore(int n, std::chrono::milliseconds timeout) {
    const int target = done() + n;
    return PollUntil([&] { return done() >= target; }, timeout);
  }

  // Asks again about every transfer whose Commit ended without an answer (the client library's
  // job: repeat Commit, which completes or reports the transaction).
  void SettleUnknown() {
    CoordinatorClient client(cluster_->endpoints(), std::chrono::seconds(30));
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [txid, t] : told_) {
      if (t.result != TransferResult::kUnknown) continue;
      CoordReply<api::CommitTransactionResponse> c =
          client.Commit(txid, {cluster_->name(0), cluster_->name(1)});
      ASSERT_TRUE(c.ok()) << "txid " << txid << ": " << c.Describe();
      t.result = c.value.decision == api::Decision::COMMITTED ? TransferResult::kCommitted
                                                              : TransferResult::kAborted;
    }
  }

  // Every transfer a client was told COMMITTED is committed at both participants; every one
  // told ABORTED is committed at neither.
  void ExpectAnswersMatchTheFiles() {
    std::map<int64_t, int64_t> o0 = cluster_->Outcomes(0), o1 = cluster_->Outcomes(1);
    std::lock_guard<std::mutex> lock(mu_);
    int committed = 0;
    for (const auto& [txid, t] : told_) {
      const int64_t at0 = o0.count(txid) ? o0[txid] : 0;
      const int64_t at1 = o1.count(txid) ? o1[txid] : 0;
      if (t.result == TransferResult::kCommitted) {
        ++committed;
        EXPECT_EQ(1, at0) << "txid " << txid << " told COMMITTED, not committed at p0";
        EXPECT_EQ(1, at1) << "txid " << txid << " told COMMITTED, not committed at p1";
      } else if (t.result == TransferResult::kAborted) {
        EXPECT_NE(1, at0) << "txid " << txid << " told ABORTED, committed at p0";
        EXPECT_NE(1, at1) << "txid " << txid << " told ABORTED, committed at p1";
      }
    }
    EXPECT_GT(committed, 0);
  }

 private:
  Cluster* const cluster_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::map<int64_t, Transfer> told_;  // GUARDED_BY(mu_)
  int done_ = 0;                      // GUARDED_BY(mu_)
};

void ExpectEverythingResolvedAndIntact(Cluster& cluster, Workload& workload) {
  workload.SettleUnknown();
  ASSERT_TRUE(cluster.WaitAllResolved(std::chrono::seconds(60)))
      << "transactions left in doubt after the faults healed: " << cluster.DescribeUnresolved();
  EXPECT_EQ(cluster.ExpectedTotal(), cluster.TotalBalance());
  cluster.ExpectNoSplitOutcomes();
  workload.ExpectAnswersMatchTheFiles();
}

// Replica 1 (the first leader) crashes at `failpoint`'s nth hit while transfers run; the others
// take over; replica 1 comes back; everything must settle.
void RunLeaderCrashAt(const std::string& failpoint) {
  ClusterOptions options;
  options.coordinator_env[1] = {"TX_FAILPOINTS=" + failpoint + "=crash,nth=25"};
  Cluster cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  // Replica 1 campaigns first (its election timeout is much the shortest), but on a loaded
  // machine a status call may time out, or a slow heartbeat cost it the lead for a moment: it
  // wins it back at the next election.
  ASSERT_TRUE(PollUntil([&] { return cluster.LeaderId() == 1; }, std::chrono::seconds(20)))
      << "replica " << cluster.LeaderId() << " leads, not replica 1 (armed with " << failpoint
      << ")";
  Workload workload(&cluster);
  workload.Start();
  std::optional<int> status = cluster.WaitCoordinatorExit(1, std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << failpoint << " never fired";
  ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == kFailPointCrashExitCode)
      << "replica 1 ended otherwise: " << *status;
  // The survivors elect a leader and carry on.
  ASSERT_TRUE(workload.WaitForMore(20, std::chrono::seconds(60)))
      << "no progress after the leader crashed";
  ASSERT_TRUE(cluster.StartCoordinator(1, std::vector<std::string>{}).ok());
  ASSERT_TRUE(workload.WaitForMore(10, std::chrono::seconds(60)));
  workload.Stop();
  ExpectEverythingResolvedAndIntact(cluster, workload);
}

TEST(CoordinatorCrashTest, LeaderKilledDuringPrepare) {
  RunLeaderCrashAt("coordinator.after_prepare_sent");
}

TEST(CoordinatorCrashTest, LeaderKilledRightAfterTheDecisionIsLogged) {
  RunLeaderCrashAt("coordinator.after_decision_logged");
}

TEST(CoordinatorCrashTest, LeaderKilledDuringPhaseTwo) {
  RunLeaderCrashAt("coordinator.before_phase_two");
}

TEST(CoordinatorCrashTest, LeaderKilledWithSigkillUnderLoad) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  Workload workload(&cluster);
  workload.Start();
  ASSERT_TRUE(workload.WaitForMore(30, std::chrono::seconds(60)));
  const int leader = cluster.LeaderId();
  ASSERT_NE(0, leader);
  cluster.KillCoordinator(leader);
  ASSERT_TRUE(workload.WaitForMore(20, std::chrono::seconds(60)))
      << "no progress after the leader was killed";
  ASSERT_TRUE(cluster.StartCoordinator(leader).ok());
  ASSERT_TRUE(workload.WaitForMore(10, std::chrono::seconds(60)));
  workload.Stop();
  ExpectEverythingResolvedAndIntact(cluster, workload);
}

TEST(CoordinatorCrashTest, ParticipantKilledAfterItsYesVote) {
  // p1 dies once its prepared record is durable and before its YES leaves: it comes back
  // prepared, with its locks, and the transaction must still end the same everywhere.
  ClusterOptions options;
  options.participant_env[1] = {"TX_FAILPOINTS=participant.after_prepare_durable=crash,nth=15"};
  Cluster cluster(options);
  ASSERT_TRUE(cluster.Start().ok());
  Workload workload(&cluster);
  workload.Start();
  std::optional<int> status = cluster.WaitParticipantExit(1, std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "the participant's failpoint never fired";
  ASSERT_TRUE(cluster.StartParticipant(1, std::vector<std::string>{}).ok());
  ASSERT_TRUE(workload.WaitForMore(20, std::chrono::seconds(60)));
  workload.Stop();
  ExpectEverythingResolvedAndIntact(cluster, workload);
}

TEST(CoordinatorCrashTest, ParticipantKilledWithSigkillUnderLoad) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  Workload workload(&cluster);
  workload.Start();
  ASSERT_TRUE(workload.WaitForMore(30, std::chrono::seconds(60)));
  cluster.KillParticipant(1);
  // Transfers keep finishing (as aborts) while p1 is down.
  ASSERT_TRUE(workload.WaitForMore(10, std::chrono::seconds(60)));
  ASSERT_TRUE(cluster.StartParticipant(1).ok());
  ASSERT_TRUE(workload.WaitForMore(20, std::chrono::seconds(60)));
  workload.Stop();
  ExpectEverythingResolvedAndIntact(cluster, workload);
}

}  // namespace
}  // namespace tx::testing
