// The checkers (tools/txchaos/checker.h) against SQLite files written by the test: each check
// holds on consistent data and fails, naming the violation, on each kind of broken data.

#include "tools/txchaos/checker.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace tx::chaos {
namespace {

// A participant's file as txpart and the workload leave it: the workload tables and the agent's
// outcome and prepared tables (docs/participant.md, section 7).
class FakeParticipant {
 public:
  FakeParticipant(const std::string& dir, std::string name) : name_(std::move(name)) {
    path_ = dir + "/" + name_ + ".db";
    EXPECT_EQ(SQLITE_OK, sqlite3_open(path_.c_str(), &db_));
    Exec(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
        "CREATE TABLE ledger(id TEXT PRIMARY KEY, txid INTEGER NOT NULL, worker INTEGER NOT "
        "NULL, participants TEXT NOT NULL);"
        "CREATE TABLE _txpart_outcomes(seq INTEGER PRIMARY KEY, txid INTEGER UNIQUE, outcome "
        "INTEGER, finished_unix_ms INTEGER);"
        "CREATE TABLE _txpart_prepared(txid INTEGER PRIMARY KEY, state INTEGER, protocol "
        "INTEGER, info BLOB, changeset BLOB, locks BLOB, prepared_unix_ms INTEGER);");
  }
  ~FakeParticipant() { sqlite3_close(db_); }

  void Exec(const std::string& sql) {
    char* error = nullptr;
    EXPECT_EQ(SQLITE_OK, sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error))
        << (error ? error : "") << " in " << sql;
    sqlite3_free(error);
  }
  void Accounts(int n, int64_t balance) {
    for (int i = 0; i < n; ++i) {
      Exec(fmt::format("INSERT INTO accounts VALUES ({}, {})", i, balance));
    }
  }
  void Row(const std::string& key, int64_t txid) {
    Exec(fmt::format("INSERT INTO ledger VALUES ('{}', {}, 0, '')", key, txid));
  }
  void Outcome(int64_t txid, int outcome) {
    Exec(fmt::format("INSERT INTO _txpart_outcomes(txid, outcome) VALUES ({}, {})", txid, outcome));
  }
  // `state` as stored: 1 PREPARED, 2 PRECOMMITTED, + 16 in a 3PC termination round;
  // `protocol` 1 2PC, 2 3PC.
  void Prepared(int64_t txid, int state = 1, int protocol = 2) {
    Exec(fmt::format("INSERT INTO _txpart_prepared(txid, state, protocol) VALUES ({}, {}, {})",
                     txid, state, protocol));
  }
  void Unprepare(int64_t txid) {
    Exec(fmt::format("DELETE FROM _txpart_prepared WHERE txid = {}", txid));
  }
  ParticipantData Read() {
    StatusOr<ParticipantData> d = ReadParticipant(name_, path_);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? *d : ParticipantData();
  }

 private:
  std::string name_, path_;
  sqlite3* db_ = nullptr;
};

OpRecord LedgerOp(uint64_t id, int64_t txid, const std::string& key,
                  std::vector<std::string> written, OpResult result) {
  OpRecord op;
  op.id = id;
  op.workload = "ledger";
  op.txid = txid;
  op.key = key;
  op.written = std::move(written);
  op.result = result;
  return op;
}

// A copy: callers pass the checkers' result vectors as temporaries.
CheckResult Find(const std::vector<CheckResult>& checks, const std::string& name) {
  for (const CheckResult& c : checks) {
    if (c.name == name) return c;
  }
  ADD_FAILURE() << "no check named " << name;
  return CheckResult{"missing", false, "no such check"};
}

class CheckerTest : public ::testing::Test {
 protected:
  testing::TempDir dir_{testing::TempDir::Medium::kMemory};
  FakeParticipant p1_{dir_.path(), "p1"};
  FakeParticipant p2_{dir_.path(), "p2"};
  BankSpec bank_{3, 100, true};

  std::vector<ParticipantData> Data() { return {p1_.Read(), p2_.Read()}; }
};

TEST_F(CheckerTest, BankHoldsWhenTheTotalIsConserved) {
  p1_.Accounts(3, 100);
  p2_.Accounts(3, 100);
  p1_.Exec("UPDATE accounts SET balance = 40 WHERE id = 0");
  p2_.Exec("UPDATE accounts SET balance = 160 WHERE id = 2");
  std::vector<CheckResult> r = CheckBank(Data(), bank_);
  EXPECT_TRUE(Find(r, "bank.total").ok) << Find(r, "bank.total").detail;
  EXPECT_TRUE(Find(r, "bank.no_negative_balance").ok);
}

TEST_F(CheckerTest, BankCatchesMoneyCreatedByAHalfAppliedTransfer) {
  p1_.Accounts(3, 100);
  p2_.Accounts(3, 100);
  p2_.Exec("UPDATE accounts SET balance = 150 WHERE id = 1");  // credit without its debit
  CheckResult total = Find(CheckBank(Data(), bank_), "bank.total");
  EXPECT_FALSE(total.ok);
  EXPECT_NE(std::string::npos, total.detail.find("650")) << total.detail;
}

TEST_F(CheckerTest, BankCatchesANegativeBalanceEvenWhenTheTotalHolds) {
  p1_.Accounts(3, 100);
  p2_.Accounts(3, 100);
  p1_.Exec("UPDATE accounts SET balance = -10 WHERE id = 0");
  p1_.Exec("UPDATE accounts SET balance = 210 WHERE id = 1");
  std::vector<CheckResult> r = CheckBank(Data(), bank_);
  EXPECT_TRUE(Find(r, "bank.total").ok);
  CheckResult negative = Find(r, "bank.no_negative_balance");
  EXPECT_FALSE(negative.ok);
  EXPECT_NE(std::string::npos, negative.detail.find("p1 account 0 holds -10")) << negative.detail;
}

TEST_F(CheckerTest, BankCatchesALostAccount) {
  p1_.Accounts(3, 100);
  p2_.Accounts(2, 150);  // same total, one account short
  EXPECT_FALSE(Find(CheckBank(Data(), bank_), "bank.total").ok);
}

TEST_F(CheckerTest, LedgerHoldsForConsistentOutcomes) {
  p1_.Row("w0-1", 10);
  p2_.Row("w0-1", 10);
  p2_.Row("w0-3", 12);  // unknown outcome, committed at its only participant
  std::vector<OpRecord> ops = {
      LedgerOp(1, 10, "w0-1", {"p1", "p2"}, OpResult::kCommitted),
      LedgerOp(2, 11, "w0-2", {"p1", "p2"}, OpResult::kAborted),
      LedgerOp(3, 12, "w0-3", {"p2"}, OpResult::kUnknown),
      LedgerOp(4, 13, "w0-4", {"p1", "p2"}, OpResult::kUnknown),
      LedgerOp(5, 14, "w0-5", {"p1"}, OpResult::kAbandoned),
  };
  for (const CheckResult& c : CheckLedger(Data(), ops))
    EXPECT_TRUE(c.ok) << c.name << ": " << c.detail;
}

TEST_F(CheckerTest, LedgerCatchesAPartlyVisibleTransaction) {
  p1_.Row("w0-1", 10);
  std::vector<OpRecord> ops = {LedgerOp(1, 10, "w0-1", {"p1", "p2"}, OpResult::kUnknown)};
  CheckResult c = Find(CheckLedger(Data(), ops), "ledger.atomic_visibility");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("txid 10")) << c.detail;
}

TEST_F(CheckerTest, LedgerCatchesACommittedTransactionMissingSomewhere) {
  p1_.Row("w0-1", 10);
  std::vector<OpRecord> ops = {LedgerOp(1, 10, "w0-1", {"p1", "p2"}, OpResult::kCommitted)};
  EXPECT_FALSE(Find(CheckLedger(Data(), ops), "ledger.committed_present").ok);
}

TEST_F(CheckerTest, LedgerCatchesAnAbortedTransactionThatIsVisible) {
  p1_.Row("w0-1", 10);
  p2_.Row("w0-1", 10);
  for (OpResult r : {OpResult::kAborted, OpResult::kAbandoned, OpResult::kNoTxn}) {
    std::vector<OpRecord> ops = {LedgerOp(1, 10, "w0-1", {"p1", "p2"}, r)};
    EXPECT_FALSE(Find(CheckLedger(Data(), ops), "ledger.aborted_absent").ok) << OpResultName(r);
  }
}

TEST_F(CheckerTest, LedgerCatchesStrayRows) {
  p1_.Row("w9-9", 99);     // no operation wrote it
  p2_.Row("w0-1", 10);     // written where the operation did not write
  p1_.Row("w0-2", 12345);  // names another txid
  std::vector<OpRecord> ops = {LedgerOp(1, 10, "w0-1", {"p1"}, OpResult::kUnknown),
                               LedgerOp(2, 11, "w0-2", {"p1"}, OpResult::kCommitted)};
  CheckResult c = Find(CheckLedger(Data(), ops), "ledger.no_stray_rows");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("3 violation(s)")) << c.detail;
}

TEST_F(CheckerTest, OutcomesCatchASplitDecision) {
  p1_.Outcome(7, 1);
  p2_.Outcome(7, 2);
  CheckResult c = Find(CheckOutcomes(Data(), {}), "outcomes.no_split");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("txid 7: p1=committed p2=aborted")) << c.detail;
}

TEST_F(CheckerTest, OutcomesCatchAClientToldCommittedThatAParticipantAborted) {
  p1_.Outcome(7, 1);
  std::vector<OpRecord> ops = {LedgerOp(1, 7, "k", {"p1", "p2"}, OpResult::kCommitted)};
  CheckResult c = Find(CheckOutcomes(Data(), ops), "outcomes.client_agreement");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("p2 records no outcome")) << c.detail;
}

TEST_F(CheckerTest, OutcomesCatchAClientToldAbortedThatAParticipantCommitted) {
  p2_.Outcome(8, 1);
  std::vector<OpRecord> ops = {LedgerOp(1, 8, "k", {"p2"}, OpResult::kAborted)};
  EXPECT_FALSE(Find(CheckOutcomes(Data(), ops), "outcomes.client_agreement").ok);
}

TEST_F(CheckerTest, OutcomesAcceptEitherOutcomeWhenTheClientDoesNotKnow) {
  p1_.Outcome(9, 1);
  p2_.Outcome(9, 1);
  std::vector<OpRecord> ops = {LedgerOp(1, 9, "k", {"p1", "p2"}, OpResult::kUnknown),
                               LedgerOp(2, 10, "k2", {"p1", "p2"}, OpResult::kUnknown)};
  for (const CheckResult& c : CheckOutcomes(Data(), ops)) EXPECT_TRUE(c.ok) << c.detail;
}

TEST_F(CheckerTest, NothingPreparedNamesWhatIsStillPrepared) {
  EXPECT_TRUE(CheckNothingPrepared(Data()).ok);
  p2_.Prepared(41);
  CheckResult c = CheckNothingPrepared(Data());
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("p2 still holds prepared txids [41]")) << c.detail;
}

TEST_F(CheckerTest, ReadParticipantTellsPreCommittedFromPreparedAnd3PcFrom2Pc) {
  p1_.Prepared(7, 1, 1);
  p1_.Prepared(8, 2);
  p1_.Prepared(9, 2 + 16);  // PRECOMMITTED, and in a termination round
  ParticipantData d = p1_.Read();
  EXPECT_EQ((std::vector<int64_t>{7, 8, 9}), d.prepared);
  EXPECT_EQ((std::vector<int64_t>{8, 9}), d.precommitted);
  EXPECT_EQ((std::vector<int64_t>{8, 9}), d.prepared_three_phase);
}

// An outage of every coordinator: when they go down, 3PC txid 5 is PRECOMMITTED at p1 and
// PREPARED at p2, 3PC txid 6 PREPARED at p2 only (nobody pre-committed it: the participants
// must abort it), and 2PC txid 7 PREPARED at p1 (2PC blocks: not checked).
class CoordinatorOutageTest : public CheckerTest {
 protected:
  CoordinatorOutage Outage() {
    CoordinatorOutage o;
    o.down_ms = 1000;
    o.restart_ms = 4000;
    p1_.Prepared(5, 2);
    p2_.Prepared(5, 1);
    p2_.Prepared(6, 1);
    p1_.Prepared(7, 1, 1);
    o.at_down = Data();
    return o;
  }
  void Finish(FakeParticipant& p, int64_t txid, int outcome) {
    p.Unprepare(txid);
    p.Outcome(txid, outcome);
  }
};

TEST_F(CoordinatorOutageTest, HoldsWhenEvery3PcTransactionFinishedAsItMust) {
  CoordinatorOutage o = Outage();
  Finish(p1_, 5, 1);
  Finish(p2_, 5, 1);
  Finish(p2_, 6, 2);
  o.before_restart = Data();  // 2PC txid 7 still prepared: it waits for the coordinators
  CheckResult c = CheckThreePhaseFinishWithoutCoordinators({o});
  EXPECT_TRUE(c.ok) << c.detail;
  EXPECT_NE(std::string::npos,
            c.detail.find("2 3PC transaction(s) in doubt at their start (1 of them PRECOMMITTED"))
      << c.detail;
}

TEST_F(CoordinatorOutageTest, CatchesA3PcTransactionStillInDoubt) {
  CoordinatorOutage o = Outage();
  Finish(p1_, 5, 1);
  Finish(p2_, 6, 2);
  o.before_restart = Data();  // p2 still holds txid 5 prepared
  CheckResult c = CheckThreePhaseFinishWithoutCoordinators({o});
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("3PC txid 5 (PRECOMMITTED at p1,p2 when the "
                                             "coordinators went down at 1000 ms) still prepared "
                                             "at p2 3000 ms later"))
      << c.detail;
}

TEST_F(CoordinatorOutageTest, CatchesAPreCommittedTransactionAbortedSomewhere) {
  CoordinatorOutage o = Outage();
  Finish(p1_, 5, 1);
  Finish(p2_, 5, 2);
  Finish(p2_, 6, 2);
  o.before_restart = Data();
  CheckResult c = CheckThreePhaseFinishWithoutCoordinators({o});
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("recorded ABORTED at p2")) << c.detail;
  EXPECT_NE(std::string::npos, c.detail.find("committed at one and aborted at another"))
      << c.detail;
}

TEST_F(CoordinatorOutageTest, CatchesAPreparedRecordGoneWithoutAnOutcome) {
  CoordinatorOutage o = Outage();
  Finish(p1_, 5, 1);
  Finish(p2_, 5, 1);
  p2_.Unprepare(6);
  o.before_restart = Data();
  CheckResult c = CheckThreePhaseFinishWithoutCoordinators({o});
  EXPECT_FALSE(c.ok);
  EXPECT_NE(std::string::npos, c.detail.find("3PC txid 6 (PREPARED at p2 when the coordinators "
                                             "went down at 1000 ms) has no outcome at p2"))
      << c.detail;
}

TEST(ReadParticipant, ReportsAFileThatIsNotADatabase) {
  testing::TempDir dir(testing::TempDir::Medium::kMemory);
  EXPECT_FALSE(ReadParticipant("p1", dir.path() + "/missing.db").ok());
}

// A series of one sample a second over [0, 200 s): rss(t) and disk(t) in MiB.
template <typename Rss, typename Disk>
std::vector<ResourceSample> Series(Rss rss, Disk disk) {
  std::vector<ResourceSample> out;
  for (int64_t t = 0; t < 200'000; t += 1000) {
    out.push_back(
        {t, static_cast<uint64_t>(rss(t) * (1 << 20)), static_cast<uint64_t>(disk(t) * (1 << 20))});
  }
  return out;
}

GrowthBounds Windows() {
  GrowthBounds g;
  g.early_from_ms = 50'000;
  g.early_to_ms = 100'000;
  g.late_from_ms = 150'000;
  return g;
}

TEST(CheckNoGrowth, HoldsForProcessesThatLevelOffAfterWarmUpOrRestart) {
  std::map<std::string, std::vector<ResourceSample>> by_node;
  // Warm-up, then flat with noise; a WAL that grows and is compacted in a saw-tooth.
  by_node["c1"] = Series([](int64_t t) { return t < 20'000 ? t / 1000.0 : 40.0 + t % 3000 / 1000; },
                         [](int64_t t) { return 5.0 + (t % 30'000) / 3000.0; });
  // Killed at 120 s (nothing sampled while down) and restarted lower.
  by_node["p1"] = Series([](int64_t t) { return t < 120'000   ? 60.0
                                                : t < 125'000 ? 0.0
                                                              : 30.0; },
                         [](int64_t) { return 4.0; });
  CheckResult r = CheckNoGrowth(by_node, Windows());
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_NE(std::string::npos, r.detail.find("c1 rss")) << r.detail;
}

TEST(CheckNoGrowth, CatchesMemoryThatKeepsGrowingWithTheRun) {
  std::map<std::string, std::vector<ResourceSample>> by_node;
  by_node["c1"] = Series([](int64_t) { return 40.0; }, [](int64_t) { return 5.0; });
  by_node["c2"] = Series([](int64_t t) { return 20.0 + t / 1000.0; },  // 1 MiB a second
                         [](int64_t) { return 5.0; });
  CheckResult r = CheckNoGrowth(by_node, Windows());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, r.detail.find("c2 memory grew")) << r.detail;
  EXPECT_EQ(std::string::npos, r.detail.find("c1")) << r.detail;
}

TEST(CheckNoGrowth, CatchesALogThatIsNeverCompacted) {
  std::map<std::string, std::vector<ResourceSample>> by_node;
  by_node["c3"] = Series([](int64_t) { return 40.0; },
                         [](int64_t t) { return t / 500.0; });  // 2 MiB a second, never cut
  CheckResult r = CheckNoGrowth(by_node, Windows());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, r.detail.find("c3 disk grew")) << r.detail;
}

TEST(CheckNoGrowth, FailsWhenNothingWasSampledInBothWindows) {
  std::map<std::string, std::vector<ResourceSample>> by_node;
  by_node["c1"] = {{1000, 1 << 20, 1 << 20}};
  EXPECT_FALSE(CheckNoGrowth(by_node, Windows()).ok);
}

}  // namespace
}  // namespace tx::chaos
