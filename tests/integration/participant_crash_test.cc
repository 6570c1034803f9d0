// Crash tests with the real txpart binary: SIGKILL (or a crash failpoint) around the prepare
// record and the vote, restart, and check that the transaction is still prepared with its
// rows locked, that its outcome applies exactly once, and that a restarted agent learns the
// outcome from the coordinator (a fake one here). The database is checked directly with the
// sqlite3 library, never only through the agent.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>

#include "common/failpoint.h"
#include "tests/integration/participant_harness.h"
#include "tests/support/temp_dir.h"

namespace tx::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kSchema[] =
    "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL);\n"
    "INSERT OR IGNORE INTO accounts VALUES (1, 100), (2, 100), (3, 100);\n";

class ParticipantProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = dir_.path() + "/p.db";
    schema_ = dir_.path() + "/schema.sql";
    std::ofstream(schema_) << kSchema;
  }

  // Starts txpart; `listen` is "127.0.0.1:0" the first time, the same address on restarts.
  std::unique_ptr<TxpartProcess> Start(std::vector<std::string> flags = {},
                                       std::vector<std::string> env = {}) {
    std::string listen = address_.port == 0 ? "127.0.0.1:0" : ToString(address_);
    flags.push_back("--lock-timeout-ms");
    flags.push_back("300");
    StatusOr<std::unique_ptr<TxpartProcess>> p =
        TxpartProcess::Start(db_, schema_, listen, std::move(flags), std::move(env));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (!p.ok()) return nullptr;
    address_ = (*p)->address();
    return std::move(p).value();
  }

  int64_t Balance(int id) {
    DirectDb db(db_);
    return db.Int("SELECT balance FROM accounts WHERE id = " + std::to_string(id));
  }
  int64_t PreparedRecords() {
    DirectDb db(db_);
    return db.Int("SELECT count(*) FROM _txpart_prepared");
  }

  // Checks, through a second transaction, that row `id` is locked (its update times out).
  void ExpectRowLocked(ParticipantClient& client, int64_t probe_txid, int id) {
    auto r = client.Execute(probe_txid, "UPDATE accounts SET balance = 0 WHERE id = ?", {Int(id)});
    ASSERT_TRUE(r.transport.ok()) << r.Describe();
    ASSERT_TRUE(r.error.has_value()) << "row " << id << " is not locked";
    EXPECT_EQ(api::ErrorCode::LOCK_TIMEOUT, r.error->code) << r.error->message;
  }

  TempDir dir_;
  std::string db_;
  std::string schema_;
  HostPort address_;
};

TEST_F(ParticipantProcessTest, CrashAfterThePrepareRecordIsDurableBeforeTheVote) {
  auto p = Start({}, {"TX_FAILPOINTS=participant.after_prepare_durable=crash"});
  ASSERT_NE(nullptr, p);
  {
    ParticipantClient client(p->address());
    auto e = client.Execute(7, "UPDATE accounts SET balance = balance + 10 WHERE id = 1");
    ASSERT_TRUE(e.ok()) << e.Describe();
    auto vote = client.Prepare(7);
    EXPECT_FALSE(vote.transport.ok()) << "the vote was sent: " << vote.Describe();
  }
  std::optional<int> status = p->WaitExit(seconds(10));
  ASSERT_TRUE(status.has_value()) << "txpart did not stop at the failpoint";
  ASSERT_TRUE(WIFEXITED(*status)) << *status;
  EXPECT_EQ(kFailPointCrashExitCode, WEXITSTATUS(*status));
  // The record is on disk; the change is not applied.
  EXPECT_EQ(1, PreparedRecords());
  EXPECT_EQ(100, Balance(1));

  p = Start();
  ASSERT_NE(nullptr, p);
  ParticipantClient client(p->address());
  auto s = client.Status(7);
  ASSERT_TRUE(s.ok()) << s.Describe();
  EXPECT_EQ(api::TxState::PREPARED, s.value.state);
  auto listed = client.ListPrepared();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(1u, listed.value.transactions.size());
  EXPECT_EQ(7, listed.value.transactions[0].txid);
  // The coordinator, never having heard the vote, asks again: same answer.
  auto vote = client.Prepare(7);
  ASSERT_TRUE(vote.ok()) << vote.Describe();
  EXPECT_EQ(api::Vote::YES, vote.value.vote);
  ExpectRowLocked(client, 100, 1);
  // Other rows are free.
  ASSERT_TRUE(client.Execute(101, "UPDATE accounts SET balance = 1 WHERE id = 2").ok());
  ASSERT_TRUE(client.Abort(101).ok());

  ASSERT_TRUE(client.Commit(7).ok());
  ASSERT_TRUE(client.Commit(7).ok());
  EXPECT_EQ(110, Balance(1));  // exactly once
  EXPECT_EQ(0, PreparedRecords());

  // And after another restart the outcome is still known and still applied once.
  p->Kill();
  p = Start();
  ASSERT_NE(nullptr, p);
  ParticipantClient again(p->address());
  ASSERT_TRUE(again.Commit(7).ok());
  auto after = again.Status(7);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(api::TxState::COMMITTED, after.value.state);
  EXPECT_EQ(110, Balance(1));
}

TEST_F(ParticipantProcessTest, SigkillAfterTheVoteKeepsThePromise) {
  auto p = Start();
  ASSERT_NE(nullptr, p);
  {
    ParticipantClient client(p->address());
    ASSERT_TRUE(client.Execute(7, "UPDATE accounts SET balance = balance - 30 WHERE id = 1").ok());
    ASSERT_TRUE(client.Execute(7, "UPDATE accounts SET balance = balance + 30 WHERE id = 2").ok());
    auto vote = client.Prepare(7);
    ASSERT_TRUE(vote.ok()) << vote.Describe();
    ASSERT_EQ(api::Vote::YES, vote.value.vote);
  }
  p->Kill();
  EXPECT_EQ(1, PreparedRecords());

  p = Start();
  ASSERT_NE(nullptr, p);
  ParticipantClient client(p->address());
  auto s = client.Status(7);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(api::TxState::PREPARED, s.value.state);
  EXPECT_EQ(2, s.value.rows_written);
  ExpectRowLocked(client, 100, 1);
  ExpectRowLocked(client, 101, 2);

  // This time the coordinator decided ABORT.
  ASSERT_TRUE(client.Abort(7).ok());
  ASSERT_TRUE(client.Abort(7).ok());
  auto commit = client.Commit(7);
  ASSERT_TRUE(commit.transport.ok());
  ASSERT_TRUE(commit.error.has_value());
  EXPECT_EQ(api::ErrorCode::WRONG_STATE, commit.error->code);
  EXPECT_EQ(100, Balance(1));
  EXPECT_EQ(100, Balance(2));
  EXPECT_EQ(0, PreparedRecords());
  // The locks went with the outcome.
  ASSERT_TRUE(client.Execute(102, "UPDATE accounts SET balance = 5 WHERE id = 1").ok());
  ASSERT_TRUE(client.Prepare(102).ok());
  ASSERT_TRUE(client.Commit(102).ok());
  EXPECT_EQ(5, Balance(1));
}

TEST_F(ParticipantProcessTest, RestartedAgentAsksTheCoordinatorForOutcomes) {
  FakeCoordinator coordinator;
  StatusOr<HostPort> at = coordinator.Serve();
  ASSERT_TRUE(at.ok()) << at.status().ToString();
  coordinator.Decide(11, api::Decision::COMMITTED);
  coordinator.Decide(12, api::Decision::ABORTED);
  // 13 stays PENDING for now: the coordinator is still collecting votes.

  // A long resolve-after: only recovery makes the agent ask.
  std::vector<std::string> flags = {"--coordinators", ToString(*at), "--resolve-after-ms",
                                    "600000"};
  auto p = Start(flags);
  ASSERT_NE(nullptr, p);
  {
    ParticipantClient client(p->address());
    for (int64_t txid : {11, 12, 13}) {
      auto e = client.Execute(txid, "UPDATE accounts SET balance = balance + 1 WHERE id = ?",
                              {Int(txid - 10)});
      ASSERT_TRUE(e.ok()) << e.Describe();
      auto v = client.Prepare(txid);
      ASSERT_TRUE(v.ok() && v.value.vote == api::Vote::YES) << v.Describe();
    }
  }
  EXPECT_EQ(0, coordinator.calls()) << "asked before any restart";
  p->Kill();

  p = Start(flags);
  ASSERT_NE(nullptr, p);
  ParticipantClient client(p->address());
  auto state = [&](int64_t txid) {
    auto s = client.Status(txid);
    return s.ok() ? s.value.state : api::TxState::UNKNOWN;
  };
  ASSERT_TRUE(PollUntil(
      [&] { return state(11) == api::TxState::COMMITTED && state(12) == api::TxState::ABORTED; },
      seconds(20)))
      << "outcomes not applied: 11 is " << state(11) << ", 12 is " << state(12);
  EXPECT_EQ(101, Balance(1));
  EXPECT_EQ(100, Balance(2));
  EXPECT_EQ(api::TxState::PREPARED, state(13));
  EXPECT_EQ(100, Balance(3));

  // Once the coordinator decides, the agent, still asking, applies it.
  coordinator.Decide(13, api::Decision::COMMITTED);
  ASSERT_TRUE(PollUntil([&] { return state(13) == api::TxState::COMMITTED; }, seconds(30)));
  EXPECT_EQ(101, Balance(3));
  EXPECT_EQ(0, PreparedRecords());
  coordinator.Stop();
}

TEST_F(ParticipantProcessTest, ResolveFollowsTheNotLeaderHint) {
  FakeCoordinator follower, leader;
  StatusOr<HostPort> leader_at = leader.Serve();
  ASSERT_TRUE(leader_at.ok());
  StatusOr<HostPort> follower_at = follower.Serve();
  ASSERT_TRUE(follower_at.ok());
  follower.RedirectTo(ToString(*leader_at));
  leader.Decide(21, api::Decision::COMMITTED);

  // Only the follower is configured; the leader is learned from its hint.
  std::vector<std::string> flags = {"--coordinators", ToString(*follower_at)};
  auto p = Start(flags);
  ASSERT_NE(nullptr, p);
  {
    ParticipantClient client(p->address());
    ASSERT_TRUE(client.Execute(21, "UPDATE accounts SET balance = 7 WHERE id = 1").ok());
    ASSERT_TRUE(client.Prepare(21).ok());
  }
  p->Kill();
  p = Start(flags);
  ASSERT_NE(nullptr, p);
  ParticipantClient client(p->address());
  ASSERT_TRUE(PollUntil(
      [&] {
        auto s = client.Status(21);
        return s.ok() && s.value.state == api::TxState::COMMITTED;
      },
      seconds(20)));
  EXPECT_EQ(7, Balance(1));
  EXPECT_GE(follower.calls(), 1);
  EXPECT_EQ(std::vector<int64_t>{21}, leader.asked());
  follower.Stop();
  leader.Stop();
}

TEST_F(ParticipantProcessTest, OverduePreparedTransactionIsResolvedWhileRunning) {
  FakeCoordinator coordinator;
  StatusOr<HostPort> at = coordinator.Serve();
  ASSERT_TRUE(at.ok());
  coordinator.Decide(31, api::Decision::ABORTED);
  auto p = Start({"--coordinators", ToString(*at), "--resolve-after-ms", "200"});
  ASSERT_NE(nullptr, p);
  ParticipantClient client(p->address());
  ASSERT_TRUE(client.Execute(31, "UPDATE accounts SET balance = 0 WHERE id = 1").ok());
  ASSERT_TRUE(client.Prepare(31).ok());
  // The coordinator's Abort never comes (lost); the agent asks once the outcome is overdue.
  ASSERT_TRUE(PollUntil(
      [&] {
        auto s = client.Status(31);
        return s.ok() && s.value.state == api::TxState::ABORTED;
      },
      seconds(20)));
  EXPECT_EQ(100, Balance(1));
  coordinator.Stop();
}

TEST_F(ParticipantProcessTest, OversizeRequestIsRefusedAndTheAgentCarriesOn) {
  auto p = Start({"--max-request-bytes", "65536"});
  ASSERT_NE(nullptr, p);
  ParticipantClient client(p->address());
  // Over the frame limit: the server drops the connection without reading it into memory.
  auto r = client.Execute(1, "SELECT 1 /*" + std::string(100000, 'x') + "*/");
  EXPECT_FALSE(r.transport.ok()) << r.Describe();
  // The agent is alive and serves the next call.
  auto ok = client.Execute(2, "SELECT count(*) FROM accounts");
  ASSERT_TRUE(ok.ok()) << ok.Describe();
  EXPECT_EQ(3, ok.value.results[0].rows[0].values[0].integer);
}

}  // namespace
}  // namespace tx::testing
