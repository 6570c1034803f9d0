// The engine (participant.h) on real SQLite files: read-your-writes, isolation, per-row
// conflicts, locking, idempotency, YES-is-a-promise, recovery, bad input.

#include "participant/participant.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "common/failpoint.h"
#include "participant/sqlite_util.h"
#include "tests/support/temp_dir.h"

namespace tx::participant {
namespace {

using std::chrono::milliseconds;

constexpr char kSchema[] =
    "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL, "
    "  note TEXT);"
    "CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, email TEXT COLLATE NOCASE UNIQUE);"
    "CREATE TABLE IF NOT EXISTS parents(id INTEGER PRIMARY KEY);"
    "CREATE TABLE IF NOT EXISTS children(id INTEGER PRIMARY KEY, "
    "  parent INT REFERENCES parents(id));"
    "CREATE TABLE IF NOT EXISTS late_children(id INTEGER PRIMARY KEY, "
    "  parent INT REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED);"
    "CREATE TABLE IF NOT EXISTS nopk(v INT);"
    "CREATE TABLE IF NOT EXISTS audited(id INTEGER PRIMARY KEY, v INT);"
    "CREATE TRIGGER IF NOT EXISTS audited_to_nopk AFTER INSERT ON audited BEGIN "
    "  INSERT INTO nopk VALUES (new.v); END;"
    "INSERT OR IGNORE INTO accounts VALUES (1, 100, ''), (2, 100, ''), (3, 100, '');"
    "INSERT OR IGNORE INTO parents VALUES (7);";

Statement Sql(std::string sql, std::vector<Value> params = {}) {
  return Statement{std::move(sql), std::move(params), {}};
}

// Polls `cond` in real time, up to 10 s: for another thread to reach a wait.
void Eventually(const std::function<bool()>& cond, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!cond()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out waiting for " << what;
    std::this_thread::sleep_for(milliseconds(1));
  }
}

class ParticipantTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    Options o;
    o.name = "test";
    o.db_path = dir_.path() + "/p.db";
    o.clock = &clock_;
    o.init_sql = kSchema;
    o.lock_timeout_ms = 1000;
    o.idle_timeout_ms = 60000;
    o.max_result_bytes = 64 << 10;
    o.max_changeset_bytes = 64 << 10;
    o.max_statements_per_execute = 16;
    if (tweak_) tweak_(&o);
    auto p = Participant::Open(o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    p_ = std::move(p).value();
  }
  void Reopen() {
    p_.reset();
    Open();
  }

  Result<std::vector<ResultSet>> Exec(TxId txid, std::vector<Statement> stmts) {
    return p_->Execute(txid, stmts, nullptr, std::nullopt);
  }
  Result<std::vector<ResultSet>> Exec(TxId txid, const std::string& sql,
                                      std::vector<Value> params = {}) {
    return Exec(txid, {Sql(sql, std::move(params))});
  }
  void MustExec(TxId txid, const std::string& sql, std::vector<Value> params = {}) {
    auto r = Exec(txid, sql, std::move(params));
    ASSERT_TRUE(r.ok()) << r.error().ToString();
  }
  Vote::Kind MustPrepare(TxId txid) {
    Result<Vote> v = p_->Prepare(txid, nullptr);
    EXPECT_TRUE(v.ok()) << v.error().ToString();
    return v.ok() ? v.value().kind : Vote::Kind::kNo;
  }
  void MustCommit(TxId txid) {
    ASSERT_EQ(Vote::Kind::kYes, MustPrepare(txid));
    Result<> c = p_->Commit(txid);
    ASSERT_TRUE(c.ok()) << c.error().ToString();
  }
  // One value read through the engine in a fresh read-only transaction.
  Value Read(const std::string& sql) {
    auto r = Exec(next_reader_++, sql);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    if (!r.ok() || r.value()[0].rows.empty()) return std::monostate{};
    return r.value()[0].rows[0][0];
  }
  // One value read directly from the file, bypassing the agent.
  Value ReadDirect(const std::string& sql) {
    auto db = OpenConnection(dir_.path() + "/p.db", false);
    EXPECT_TRUE(db.ok());
    auto stmt = PrepareStmt(db->get(), sql);
    EXPECT_TRUE(stmt.ok()) << stmt.status().ToString();
    if (sqlite3_step(stmt->get()) != SQLITE_ROW) return std::monostate{};
    return ColumnValue(stmt->get(), 0);
  }
  Stats GetStats() { return p_->GetStats(); }

  testing::TempDir dir_;
  FakeClock clock_;
  std::function<void(Options*)> tweak_;
  std::unique_ptr<Participant> p_;
  TxId next_reader_ = 1000000;
};

// ---- read-your-writes and isolation

TEST_F(ParticipantTest, TransactionReadsItsOwnWrites) {
  MustExec(1, "UPDATE accounts SET balance = balance - 30 WHERE id = 1");
  MustExec(1, "INSERT INTO accounts VALUES (10, 5, 'new')");
  auto r = Exec(1, "SELECT balance FROM accounts WHERE id IN (1, 10) ORDER BY id");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  ASSERT_EQ(2u, r.value()[0].rows.size());
  EXPECT_EQ(Value(int64_t{70}), r.value()[0].rows[0][0]);
  EXPECT_EQ(Value(int64_t{5}), r.value()[0].rows[1][0]);
  EXPECT_EQ((std::vector<std::string>{"balance"}), r.value()[0].columns);
}

TEST_F(ParticipantTest, NobodyReadsUncommittedWritesNotEvenAfterPrepare) {
  MustExec(1, "UPDATE accounts SET balance = 0 WHERE id = 1");
  EXPECT_EQ(Value(int64_t{100}), Read("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(int64_t{100}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  EXPECT_EQ(Value(int64_t{100}), Read("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(int64_t{100}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  ASSERT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(Value(int64_t{0}), Read("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(int64_t{0}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, StatementsInOneExecuteAreAllOrNothing) {
  auto r = Exec(1, {Sql("UPDATE accounts SET balance = 1 WHERE id = 1"),
                    Sql("INSERT INTO accounts VALUES (1, 0, 'duplicate key')")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConstraintViolation, r.error().code);
  EXPECT_FALSE(r.error().transaction_aborted);
  EXPECT_NE(std::string::npos, r.error().message.find("statement 1"));
  // The first statement's update was discarded with the failed request...
  EXPECT_EQ(Value(int64_t{100}),
            Exec(1, "SELECT balance FROM accounts WHERE id = 1").value()[0].rows[0][0]);
  // ...and the transaction goes on.
  MustExec(1, "UPDATE accounts SET balance = 2 WHERE id = 1");
  MustCommit(1);
  EXPECT_EQ(Value(int64_t{2}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, ReadOnlyTransactionVotesReadOnlyAndNeedsNoPhaseTwo) {
  MustExec(1, "SELECT * FROM accounts");
  EXPECT_EQ(Vote::Kind::kReadOnly, MustPrepare(1));
  EXPECT_EQ(Vote::Kind::kReadOnly, MustPrepare(1));  // repeated: same answer
  EXPECT_TRUE(p_->Abort(1).ok());                    // a late Abort is harmless
  EXPECT_EQ(0, GetStats().durable_ops);              // nothing was written
}

TEST_F(ParticipantTest, NamedAndPositionalParametersBind) {
  MustExec(1, "INSERT INTO accounts VALUES (?, ?, ?)",
           {int64_t{20}, int64_t{5}, std::string("pos")});
  Statement named{"INSERT INTO accounts VALUES (:id, @balance, $note)",
                  {},
                  {{"id", int64_t{21}}, {"@balance", 6.0}, {"note", Blob{"\x01\x02"}}}};
  auto r = Exec(1, {named});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  auto rows = Exec(1, "SELECT id, balance, note FROM accounts WHERE id >= 20 ORDER BY id");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(2u, rows.value()[0].rows.size());
  EXPECT_EQ(Value(std::string("pos")), rows.value()[0].rows[0][2]);
  EXPECT_EQ(Value(int64_t{6}), rows.value()[0].rows[1][1]);  // INT affinity
  EXPECT_EQ(Value(Blob{"\x01\x02"}), rows.value()[0].rows[1][2]);
  EXPECT_EQ(1, r.value()[0].rows_changed);
}

// ---- per-row conflicts

TEST_F(ParticipantTest, UpdatesOfDifferentColumnsOfOneRowAreSerializedNotLost) {
  MustExec(1, "UPDATE accounts SET balance = balance + 1 WHERE id = 1");
  // Transaction 2 changes another column of the same row: it must wait for 1.
  auto second = std::async(
      std::launch::async, [&] { return Exec(2, "UPDATE accounts SET note = 'two' WHERE id = 1"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  MustCommit(1);
  auto r = second.get();
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  MustCommit(2);
  // Both changes survive: no lost update.
  EXPECT_EQ(Value(int64_t{101}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(std::string("two")), ReadDirect("SELECT note FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, FirstCommitterWinsOverATransactionThatReadTheRowEarlier) {
  // 2 reads the balance (and might compute a new one from it in the application)...
  ASSERT_EQ(Value(int64_t{100}),
            Exec(2, "SELECT balance FROM accounts WHERE id = 1").value()[0].rows[0][0]);
  // ...1 updates the row and commits first...
  MustExec(1, "UPDATE accounts SET balance = 50 WHERE id = 1");
  MustCommit(1);
  // ...so 2's write to that row would be a lost update: refused, and 2 is aborted.
  auto r = Exec(2, "UPDATE accounts SET balance = 90 WHERE id = 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConflict, r.error().code);
  EXPECT_TRUE(r.error().transaction_aborted);
  EXPECT_EQ(Vote::Kind::kNo, MustPrepare(2));
  EXPECT_EQ(Value(int64_t{50}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, BlindWriteOfTheValueAlreadyCommittedStillConflicts) {
  // Regression: the changeset omits an UPDATE that leaves a row as it is, so this write was
  // invisible to first-committer-wins and 2's debit was lost (found by the concurrency test).
  ASSERT_EQ(Value(int64_t{100}),
            Exec(2, "SELECT balance FROM accounts WHERE id = 1").value()[0].rows[0][0]);
  MustExec(1, "UPDATE accounts SET balance = 80 WHERE id = 1");
  MustCommit(1);
  // 2 computed 100 - 20 from its stale read: by chance the value now there.
  auto r = Exec(2, "UPDATE accounts SET balance = 80 WHERE id = 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConflict, r.error().code);
}

TEST_F(ParticipantTest, UpdateThatChangesNothingStillLocksTheRow) {
  MustExec(1, "UPDATE accounts SET balance = balance WHERE id = 1");
  EXPECT_EQ(0, p_->GetStatus(1).value().rows_written);
  EXPECT_EQ(1, p_->GetStatus(1).value().locks_held);
  auto second = std::async(std::launch::async,
                           [&] { return Exec(2, "UPDATE accounts SET balance = 5 WHERE id = 1"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  EXPECT_EQ(Vote::Kind::kReadOnly, MustPrepare(1));  // it changed nothing; its lock goes
  ASSERT_TRUE(second.get().ok());
  MustCommit(2);
}

TEST_F(ParticipantTest, WritesToOtherRowsDoNotConflict) {
  ASSERT_TRUE(Exec(2, "SELECT balance FROM accounts WHERE id = 2").ok());
  MustExec(1, "UPDATE accounts SET balance = 0 WHERE id = 1");
  MustCommit(1);
  MustExec(2, "UPDATE accounts SET balance = 0 WHERE id = 2");
  MustCommit(2);
}

TEST_F(ParticipantTest, ConcurrentInsertsWithGeneratedKeysBothCommit) {
  // Both captures pick the same next rowid; the second waits for the first, then runs again
  // and gets the next one.
  MustExec(1, "INSERT INTO accounts(balance) VALUES (1)");
  auto second = std::async(std::launch::async,
                           [&] { return Exec(2, "INSERT INTO accounts(balance) VALUES (2)"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  MustCommit(1);
  ASSERT_TRUE(second.get().ok());
  MustCommit(2);
  EXPECT_EQ(Value(int64_t{5}), ReadDirect("SELECT count(*) FROM accounts"));
}

TEST_F(ParticipantTest, LockWaitIsBoundedByTheLockTimeout) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  auto second = std::async(std::launch::async,
                           [&] { return Exec(2, "UPDATE accounts SET balance = 2 WHERE id = 1"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  clock_.Advance(milliseconds(1000));
  auto r = second.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kLockTimeout, r.error().code);
  EXPECT_TRUE(r.error().transaction_aborted);
  EXPECT_NE(std::string::npos, r.error().message.find("row accounts(1)")) << r.error().message;
  // The holder is unaffected.
  MustCommit(1);
}

TEST_F(ParticipantTest, DeadlockAbortsOneTransactionAndTheOtherProceeds) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  MustExec(2, "UPDATE accounts SET balance = 2 WHERE id = 2");
  auto first = std::async(std::launch::async,
                          [&] { return Exec(1, "UPDATE accounts SET balance = 1 WHERE id = 2"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 1 to wait");
  auto r = Exec(2, "UPDATE accounts SET balance = 2 WHERE id = 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kDeadlock, r.error().code);
  EXPECT_TRUE(r.error().transaction_aborted);
  auto r1 = first.get();
  ASSERT_TRUE(r1.ok()) << r1.error().ToString();
  MustCommit(1);
}

TEST_F(ParticipantTest, AbortInterruptsALockWait) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  auto second = std::async(std::launch::async,
                           [&] { return Exec(2, "UPDATE accounts SET balance = 2 WHERE id = 1"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  ASSERT_TRUE(p_->Abort(2).ok());
  auto r = second.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kAborted, r.error().code);
  EXPECT_EQ(Vote::Kind::kNo, MustPrepare(2));
  MustCommit(1);
}

TEST_F(ParticipantTest, NonConflictingPreparesShareOneFsync) {
  constexpr int kTxns = 8;
  for (int i = 0; i < kTxns; ++i) {
    MustExec(100 + i, "INSERT INTO accounts VALUES (?, 0, '')", {int64_t{100 + i}});
  }
  // Hold the writer inside the first batch until every other prepare has queued up behind
  // it: they then go to disk together.
  std::atomic<bool> first{true};
  ScopedFailPoint hold("participant.after_prepare_durable", [&] {
    if (first.exchange(false)) {
      Eventually([&] { return GetStats().queued_jobs == kTxns - 1; }, "prepares to queue");
    }
  });
  const int64_t batches_before = GetStats().durable_batches;
  std::vector<std::future<Vote::Kind>> votes;
  votes.push_back(std::async(std::launch::async, [&] { return MustPrepare(100); }));
  Eventually([&] { return !first.load(); }, "the first batch");
  for (int i = 1; i < kTxns; ++i) {
    votes.push_back(std::async(std::launch::async, [&, i] { return MustPrepare(100 + i); }));
  }
  for (auto& v : votes) EXPECT_EQ(Vote::Kind::kYes, v.get());
  EXPECT_EQ(2, GetStats().durable_batches - batches_before);
}

// ---- storage failures

TEST_F(ParticipantTest, FailedDurableWriteIsUnavailableAndChangesNothing) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  {
    ScopedFailPoint full("participant.batch_commit", "error(NoSpace)");
    Result<Vote> v = p_->Prepare(1, nullptr);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(ErrorCode::kUnavailable, v.error().code);
    EXPECT_FALSE(v.error().transaction_aborted);
  }
  EXPECT_EQ(TxnState::kActive, p_->GetStatus(1).value().state);
  EXPECT_EQ(Value(int64_t{0}), ReadDirect("SELECT count(*) FROM _txpart_prepared"));
  EXPECT_TRUE(p_->Health().ok());
  // The disk has room again: the same transaction prepares and commits.
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  {
    ScopedFailPoint full("participant.batch_commit", "error(NoSpace)");
    EXPECT_EQ(ErrorCode::kUnavailable, p_->Commit(1).error().code);
  }
  EXPECT_EQ(TxnState::kPrepared, p_->GetStatus(1).value().state);
  ASSERT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, IoErrorAtCommitStopsAllWritesUntilRestart) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  {
    ScopedFailPoint broken("participant.batch_commit", "error(IOError),times=1");
    EXPECT_EQ(ErrorCode::kUnavailable, p_->Commit(1).error().code);
  }
  // The page cache may no longer match the disk: nothing more is written...
  EXPECT_FALSE(p_->Health().ok());
  EXPECT_EQ(ErrorCode::kUnavailable, p_->Commit(1).error().code);
  EXPECT_EQ(ErrorCode::kUnavailable,
            Exec(2, "UPDATE accounts SET balance = 2 WHERE id = 2").error().code);
  MustExec(3, "SELECT balance FROM accounts WHERE id = 1");  // reads still work
  // ...until a restart recovers what is durable: 1 is still prepared and commits.
  Reopen();
  EXPECT_TRUE(p_->Health().ok());
  EXPECT_EQ(TxnState::kPrepared, p_->GetStatus(1).value().state);
  ASSERT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

// ---- idempotency and calls after the outcome

TEST_F(ParticipantTest, RepeatedCallsAnswerTheRecordedOutcome) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  EXPECT_EQ(Vote::Kind::kYes, MustPrepare(1));
  EXPECT_EQ(Vote::Kind::kYes, MustPrepare(1));
  ASSERT_TRUE(p_->Commit(1).ok());
  ASSERT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(Vote::Kind::kYes, MustPrepare(1));
  Result<> abort = p_->Abort(1);
  ASSERT_FALSE(abort.ok());
  EXPECT_EQ(ErrorCode::kWrongState, abort.error().code);
  auto exec = Exec(1, "SELECT 1");
  ASSERT_FALSE(exec.ok());
  EXPECT_EQ(ErrorCode::kWrongState, exec.error().code);
  // Applied exactly once.
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));

  MustExec(2, "UPDATE accounts SET balance = 2 WHERE id = 2");
  ASSERT_TRUE(p_->Abort(2).ok());
  ASSERT_TRUE(p_->Abort(2).ok());
  Result<Vote> v = p_->Prepare(2, nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Vote::Kind::kNo, v.value().kind);
  EXPECT_EQ(ErrorCode::kAborted, v.value().reason_code);
  Result<> commit = p_->Commit(2);
  ASSERT_FALSE(commit.ok());
  EXPECT_EQ(ErrorCode::kWrongState, commit.error().code);
  exec = Exec(2, "SELECT 1");
  ASSERT_FALSE(exec.ok());
  EXPECT_EQ(ErrorCode::kAborted, exec.error().code);
}

TEST_F(ParticipantTest, UnknownTransactionsFollowPresumedAbort) {
  Result<> commit = p_->Commit(42);
  ASSERT_FALSE(commit.ok());
  EXPECT_EQ(ErrorCode::kUnknownTransaction, commit.error().code);
  EXPECT_TRUE(p_->Abort(42).ok());
  Result<Vote> vote = p_->Prepare(43, nullptr);
  ASSERT_TRUE(vote.ok());
  EXPECT_EQ(Vote::Kind::kNo, vote.value().kind);
  EXPECT_EQ(ErrorCode::kUnknownTransaction, vote.value().reason_code);
  Result<OnePhaseOutcome> one = p_->CommitOnePhase(44);
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one.value().committed);
  EXPECT_EQ(TxnState::kUnknown, p_->GetStatus(45).value().state);
}

TEST_F(ParticipantTest, ExecuteOvertakenByItsAbortIsRefused) {
  // The coordinator gave up on 9 and aborted it everywhere; its Execute arrives late.
  ASSERT_TRUE(p_->Abort(9).ok());
  auto r = Exec(9, "UPDATE accounts SET balance = 0 WHERE id = 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kAborted, r.error().code);
  MustExec(10, "UPDATE accounts SET balance = 0 WHERE id = 1");  // no orphan holds the row
}

TEST_F(ParticipantTest, CommitAndAbortAnswerTheRecordedOutcomeAfterARestart) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  MustCommit(1);
  MustExec(2, "UPDATE accounts SET balance = 2 WHERE id = 2");
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(2));
  ASSERT_TRUE(p_->Abort(2).ok());
  MustExec(3, "UPDATE accounts SET balance = 3 WHERE id = 3");
  ASSERT_TRUE(p_->CommitOnePhase(3).value().committed);
  Reopen();
  EXPECT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(ErrorCode::kWrongState, p_->Abort(1).error().code);
  EXPECT_EQ(TxnState::kCommitted, p_->GetStatus(1).value().state);
  EXPECT_EQ(ErrorCode::kWrongState, p_->Commit(2).error().code);
  EXPECT_TRUE(p_->Abort(2).ok());
  EXPECT_EQ(TxnState::kAborted, p_->GetStatus(2).value().state);
  EXPECT_TRUE(p_->CommitOnePhase(3).value().committed);
  EXPECT_EQ(ErrorCode::kWrongState, Exec(1, "SELECT 1").error().code);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(int64_t{100}), ReadDirect("SELECT balance FROM accounts WHERE id = 2"));
  EXPECT_EQ(Value(int64_t{3}), ReadDirect("SELECT balance FROM accounts WHERE id = 3"));
}

TEST_F(ParticipantTest, CommitNeedsAYesVote) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  Result<> c = p_->Commit(1);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(ErrorCode::kWrongState, c.error().code);
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  auto r = Exec(1, "SELECT 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kWrongState, r.error().code);  // prepared: no more statements
}

TEST_F(ParticipantTest, CommitOnePhaseCommitsOrReportsWhyNot) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  Result<OnePhaseOutcome> one = p_->CommitOnePhase(1);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one.value().committed);
  EXPECT_TRUE(p_->CommitOnePhase(1).value().committed);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));

  // A deferred foreign key still unsatisfied at commit: not committed, nothing applied.
  MustExec(2, "INSERT INTO late_children VALUES (1, 99)");
  one = p_->CommitOnePhase(2);
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one.value().committed);
  EXPECT_EQ(ErrorCode::kConstraintViolation, one.value().reason_code);
  EXPECT_FALSE(p_->CommitOnePhase(2).value().committed);
  EXPECT_EQ(Value(int64_t{0}), ReadDirect("SELECT count(*) FROM late_children"));
}

// ---- a YES vote is a promise

TEST_F(ParticipantTest, YesVoteHoldsAgainstAUniqueValueTakenLater) {
  MustExec(1, "INSERT INTO users VALUES (1, 'Ann@example.com')");
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  // 2 claims the same address (in another case: NOCASE): it must wait for 1's outcome.
  auto second = std::async(std::launch::async, [&] {
    return Exec(2, "INSERT INTO users VALUES (2, 'ann@EXAMPLE.com')");
  });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  ASSERT_TRUE(p_->Commit(1).ok());
  auto r = second.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConstraintViolation, r.error().code);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT count(*) FROM users"));
}

TEST_F(ParticipantTest, UniqueValueFreedByAnAbortIsAvailable) {
  MustExec(1, "INSERT INTO users VALUES (1, 'a@x')");
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  auto second = std::async(std::launch::async,
                           [&] { return Exec(2, "INSERT INTO users VALUES (2, 'a@x')"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  ASSERT_TRUE(p_->Abort(1).ok());
  ASSERT_TRUE(second.get().ok());
  MustCommit(2);
  EXPECT_EQ(Value(int64_t{2}), ReadDirect("SELECT id FROM users"));
}

TEST_F(ParticipantTest, YesVoteHoldsAgainstDeletionOfTheReferencedParent) {
  MustExec(1, "INSERT INTO children VALUES (1, 7)");
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  auto second =
      std::async(std::launch::async, [&] { return Exec(2, "DELETE FROM parents WHERE id = 7"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  ASSERT_TRUE(p_->Commit(1).ok());
  auto r = second.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kConstraintViolation, r.error().code);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT count(*) FROM children"));
}

TEST_F(ParticipantTest, DeferredForeignKeyParentIsLockedAtPrepare) {
  // 1 references parent 9, which does not exist yet (a deferred key may wait for commit).
  MustExec(1, "INSERT INTO late_children VALUES (1, 9)");
  MustExec(2, "INSERT INTO parents VALUES (9)");
  MustCommit(2);
  // Prepare finds that the changes now depend on parent 9 and locks it before voting.
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  auto third =
      std::async(std::launch::async, [&] { return Exec(3, "DELETE FROM parents WHERE id = 9"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 3 to wait");
  ASSERT_TRUE(p_->Commit(1).ok());
  // The key is deferred, so the delete itself runs; the violation shows at prepare.
  ASSERT_TRUE(third.get().ok());
  Result<Vote> v = p_->Prepare(3, nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Vote::Kind::kNo, v.value().kind);
  EXPECT_EQ(ErrorCode::kConstraintViolation, v.value().reason_code);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT count(*) FROM parents WHERE id = 9"));
}

TEST_F(ParticipantTest, PrepareVotesNoWhenTheChangesCannotCommit) {
  MustExec(1, "INSERT INTO late_children VALUES (1, 99)");  // parent 99 never appears
  Result<Vote> v = p_->Prepare(1, nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Vote::Kind::kNo, v.value().kind);
  EXPECT_EQ(ErrorCode::kConstraintViolation, v.value().reason_code);
  EXPECT_EQ(TxnState::kAborted, p_->GetStatus(1).value().state);
}

// ---- restart

TEST_F(ParticipantTest, PreparedTransactionSurvivesARestartWithItsLocks) {
  TxnInfo info{Protocol::kTwoPhase, {{"p1", "127.0.0.1:1"}, {"p2", "127.0.0.1:2"}}};
  auto r =
      p_->Execute(1, {Sql("UPDATE accounts SET balance = 0 WHERE id = 1")}, &info, std::nullopt);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(1));
  Reopen();

  Result<TxnStatus> s = p_->GetStatus(1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(TxnState::kPrepared, s.value().state);
  ASSERT_TRUE(s.value().info.has_value());
  EXPECT_EQ(info, *s.value().info);
  EXPECT_EQ(1, s.value().rows_written);
  bool more = true;
  auto listed = p_->ListPrepared(0, 10, &more);
  ASSERT_EQ(1u, listed.size());
  EXPECT_EQ(1, listed[0].txid);
  EXPECT_FALSE(more);
  EXPECT_EQ((std::vector<TxId>{1}), p_->InDoubt(Clock::Duration::zero()));

  // Its row is still locked...
  auto second = std::async(std::launch::async,
                           [&] { return Exec(2, "UPDATE accounts SET balance = 5 WHERE id = 1"); });
  Eventually([&] { return GetStats().lock_waiters == 1; }, "transaction 2 to wait");
  // ...until the outcome, which applies exactly once.
  ASSERT_TRUE(p_->Commit(1).ok());
  ASSERT_TRUE(second.get().ok());
  ASSERT_TRUE(p_->Abort(2).ok());
  EXPECT_EQ(Value(int64_t{0}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_TRUE(p_->InDoubt(Clock::Duration::zero()).empty());
}

TEST_F(ParticipantTest, ActiveTransactionsDoNotSurviveARestart) {
  MustExec(1, "UPDATE accounts SET balance = 0 WHERE id = 1");
  Reopen();
  EXPECT_EQ(Vote::Kind::kNo, MustPrepare(1));
  MustExec(2, "UPDATE accounts SET balance = 2 WHERE id = 1");  // no lock left behind
  MustCommit(2);
}

// Regression: an agent restarted between two Executes of one transaction took the second as
// the start of a fresh transaction, so the transaction could commit without its first Execute.
TEST_F(ParticipantTest, ExecuteNumberedAfterLostExecutesAbortsTheTransaction) {
  auto first =
      p_->Execute(1, {Sql("UPDATE accounts SET balance = balance - 10 WHERE id = 1")}, nullptr, 0);
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  Reopen();  // the active transaction, and its first Execute, are gone
  auto second =
      p_->Execute(1, {Sql("UPDATE accounts SET balance = balance + 10 WHERE id = 2")}, nullptr, 1);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ErrorCode::kAborted, second.error().code);
  EXPECT_TRUE(second.error().transaction_aborted);
  EXPECT_EQ(Vote::Kind::kNo, MustPrepare(1));
  EXPECT_EQ(Value(int64_t{100}), ReadDirect("SELECT balance FROM accounts WHERE id = 2"));
}

TEST_F(ParticipantTest, DuplicatedExecuteIsRefusedWithoutEffect) {
  const Statement add = Sql("UPDATE accounts SET balance = balance + 10 WHERE id = 1");
  ASSERT_TRUE(p_->Execute(1, {add}, nullptr, 0).ok());
  auto duplicate = p_->Execute(1, {add}, nullptr, 0);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(ErrorCode::kWrongState, duplicate.error().code);
  EXPECT_FALSE(duplicate.error().transaction_aborted);
  ASSERT_TRUE(p_->Execute(1, {add}, nullptr, 1).ok());
  MustCommit(1);
  EXPECT_EQ(Value(int64_t{120}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, MissingExecuteAbortsTheTransaction) {
  ASSERT_TRUE(
      p_->Execute(1, {Sql("UPDATE accounts SET balance = 1 WHERE id = 1")}, nullptr, 0).ok());
  auto gap = p_->Execute(1, {Sql("UPDATE accounts SET balance = 3 WHERE id = 3")}, nullptr, 2);
  ASSERT_FALSE(gap.ok());
  EXPECT_TRUE(gap.error().transaction_aborted);
  EXPECT_EQ(Vote::Kind::kNo, MustPrepare(1));
}

TEST_F(ParticipantTest, FailedExecuteStillTakesItsNumber) {
  ASSERT_FALSE(p_->Execute(1, {Sql("SELEC nonsense")}, nullptr, 0).ok());
  ASSERT_TRUE(
      p_->Execute(1, {Sql("UPDATE accounts SET balance = 5 WHERE id = 1")}, nullptr, 1).ok());
  MustCommit(1);
  EXPECT_EQ(Value(int64_t{5}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
}

TEST_F(ParticipantTest, ASecondAgentOnTheSameDatabaseIsRefused) {
  Options o;
  o.db_path = dir_.path() + "/p.db";
  o.clock = &clock_;
  auto second = Participant::Open(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(Status::Code::kFailedPrecondition, second.status().code());
}

// ---- idle transactions

TEST_F(ParticipantTest, IdleTransactionIsAbortedAndReleasesItsLocks) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  MustExec(2, "UPDATE accounts SET balance = 2 WHERE id = 2");
  ASSERT_EQ(Vote::Kind::kYes, MustPrepare(2));  // prepared: never aborted unilaterally
  clock_.Advance(std::chrono::milliseconds(60000));
  Eventually([&] { return p_->GetStatus(1).value().state == TxnState::kAborted; },
             "the idle abort");
  EXPECT_EQ(TxnState::kPrepared, p_->GetStatus(2).value().state);
  auto r = Exec(1, "SELECT 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kAborted, r.error().code);
  EXPECT_NE(std::string::npos, r.error().message.find("idle"));
  MustExec(3, "UPDATE accounts SET balance = 3 WHERE id = 1");  // the lock is free
  MustCommit(3);
  ASSERT_TRUE(p_->Commit(2).ok());
}

// ---- bad input: a typed error, nothing else affected

TEST_F(ParticipantTest, BadSqlGetsTypedErrorsAndTheTransactionContinues) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  struct Case {
    std::string sql;
    ErrorCode code;
  };
  std::vector<Case> cases = {
      {"SELEC nonsense", ErrorCode::kInvalidSql},
      {"SELECT * FROM no_such_table", ErrorCode::kInvalidSql},
      {"SELECT 1; SELECT 2", ErrorCode::kInvalidSql},
      {"   ", ErrorCode::kInvalidSql},
      {"CREATE TABLE t2(id INTEGER PRIMARY KEY)", ErrorCode::kInvalidSql},
      {"DROP TABLE accounts", ErrorCode::kInvalidSql},
      {"BEGIN", ErrorCode::kInvalidSql},
      {"COMMIT", ErrorCode::kInvalidSql},
      {"SAVEPOINT x", ErrorCode::kInvalidSql},
      {"PRAGMA foreign_keys = OFF", ErrorCode::kInvalidSql},
      {"ATTACH 'x.db' AS x", ErrorCode::kInvalidSql},
      {"DELETE FROM _txpart_prepared", ErrorCode::kInvalidSql},
      {"INSERT INTO nopk VALUES (1)", ErrorCode::kNoPrimaryKey},
      {"INSERT INTO audited VALUES (1, 1)", ErrorCode::kNoPrimaryKey},  // via its trigger
      {"INSERT INTO accounts VALUES (2, 0, '')", ErrorCode::kConstraintViolation},
      {"UPDATE accounts SET balance = NULL WHERE id = 2", ErrorCode::kConstraintViolation},
      {"INSERT INTO children VALUES (5, 12345)", ErrorCode::kConstraintViolation},
  };
  for (const Case& c : cases) {
    auto r = Exec(1, c.sql);
    ASSERT_FALSE(r.ok()) << c.sql;
    EXPECT_EQ(c.code, r.error().code) << c.sql << ": " << r.error().ToString();
    EXPECT_FALSE(r.error().transaction_aborted) << c.sql;
  }
  // Statements are fine; the earlier write is intact and commits.
  EXPECT_EQ(Value(int64_t{1}),
            Exec(1, "SELECT balance FROM accounts WHERE id = 1").value()[0].rows[0][0]);
  MustCommit(1);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(int64_t{0}), ReadDirect("SELECT count(*) FROM nopk"));
}

TEST_F(ParticipantTest, AutoincrementTablesWorkAndKeepTheirSequence) {
  tweak_ = [](Options* o) {
    o->init_sql = std::string(kSchema) +
                  "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY AUTOINCREMENT, what "
                  "TEXT);";
  };
  Reopen();
  MustExec(1, "INSERT INTO events(what) VALUES ('a'), ('b')");
  MustCommit(1);
  MustExec(2, "DELETE FROM events WHERE id = 2");
  MustCommit(2);
  // AUTOINCREMENT never reuses 2, even after the delete: sqlite_sequence was kept at commit.
  auto r = Exec(3, "INSERT INTO events(what) VALUES ('c') RETURNING id");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(Value(int64_t{3}), r.value()[0].rows[0][0]);
  MustCommit(3);
  EXPECT_EQ(Value(int64_t{3}), ReadDirect("SELECT seq FROM sqlite_sequence WHERE name = 'events'"));
}

TEST_F(ParticipantTest, BadParametersGetTypedErrors) {
  auto r = Exec(1, "SELECT ?", {});
  EXPECT_EQ(ErrorCode::kInvalidArgument, r.error().code);
  r = Exec(1, "SELECT ?", {int64_t{1}, int64_t{2}});
  EXPECT_EQ(ErrorCode::kInvalidArgument, r.error().code);
  r = Exec(1, {Statement{"SELECT :a", {}, {{"b", int64_t{1}}}}});
  EXPECT_EQ(ErrorCode::kInvalidArgument, r.error().code);
  r = Exec(1, {Statement{"SELECT :a, :b", {}, {{"a", int64_t{1}}}}});
  EXPECT_EQ(ErrorCode::kInvalidArgument, r.error().code);
  r = Exec(1, {Statement{"SELECT :a", {int64_t{1}}, {{"a", int64_t{1}}}}});
  EXPECT_EQ(ErrorCode::kInvalidArgument, r.error().code);
  r = Exec(1, "SELECT :a", {int64_t{1}});
  EXPECT_EQ(ErrorCode::kInvalidArgument, r.error().code);
}

TEST_F(ParticipantTest, OversizeRequestsAndResultsAreRefused) {
  std::vector<Statement> many(17, Sql("SELECT 1"));
  auto r = Exec(1, many);
  EXPECT_EQ(ErrorCode::kTooLarge, r.error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, Exec(1, std::vector<Statement>{}).error().code);
  // A result over max_result_bytes (64 KiB here).
  r = Exec(1,
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) "
           "SELECT i, 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' FROM n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kTooLarge, r.error().code);
  // A changeset over max_changeset_bytes (64 KiB here): refused, the transaction goes on.
  MustExec(2, "UPDATE accounts SET balance = 7 WHERE id = 1");
  r = Exec(2,
           "INSERT INTO accounts(balance, note) SELECT 0, hex(randomblob(200)) FROM "
           "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
           "SELECT i FROM n)");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kTooLarge, r.error().code);
  EXPECT_FALSE(r.error().transaction_aborted);
  MustCommit(2);
  EXPECT_EQ(Value(int64_t{3}), ReadDirect("SELECT count(*) FROM accounts"));
}

TEST_F(ParticipantTest, RunawayStatementIsStoppedAtTheTimeLimit) {
  tweak_ = [](Options* o) { o->statement_timeout_ms = 200; };
  Reopen();
  const std::string forever =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
  // On a reader (nothing written yet)...
  auto r = Exec(1, forever);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kTimedOut, r.error().code);
  EXPECT_FALSE(r.error().transaction_aborted);
  // ...and on the writer, where it would hold up every prepare and commit.
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  r = Exec(1, {Sql("UPDATE accounts SET balance = 2 WHERE id = 2"),
               Sql("UPDATE accounts SET note = (" + forever + ") WHERE id = 3")});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kTimedOut, r.error().code);
  // The timed-out request had no effect; the earlier one stands and commits.
  MustCommit(1);
  EXPECT_EQ(Value(int64_t{1}), ReadDirect("SELECT balance FROM accounts WHERE id = 1"));
  EXPECT_EQ(Value(int64_t{100}), ReadDirect("SELECT balance FROM accounts WHERE id = 2"));
}

TEST_F(ParticipantTest, InvalidTxidsAreRefused) {
  EXPECT_EQ(ErrorCode::kInvalidArgument, Exec(0, "SELECT 1").error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, Exec(-5, "SELECT 1").error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, p_->Prepare(0, nullptr).error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, p_->Commit(-1).error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, p_->Abort(0).error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, p_->CommitOnePhase(0).error().code);
  EXPECT_EQ(ErrorCode::kInvalidArgument, p_->GetStatus(0).error().code);
}

TEST_F(ParticipantTest, ThreePhaseNeedsTheParticipantList) {
  MustExec(1, "UPDATE accounts SET balance = 1 WHERE id = 1");
  TxnInfo bare{Protocol::kThreePhase, {}};
  EXPECT_EQ(ErrorCode::kInvalidArgument, p_->Prepare(1, &bare).error().code);
  TxnInfo full{Protocol::kThreePhase, {{"a", "h:1"}}};
  Result<Vote> v = p_->Prepare(1, &full);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(Vote::Kind::kYes, v.value().kind);
  EXPECT_EQ(Protocol::kThreePhase, p_->GetStatus(1).value().info->protocol);
}

TEST_F(ParticipantTest, TooManyLiveTransactionsIsRetryableNotFatal) {
  tweak_ = [](Options* o) { o->max_transactions = 2; };
  Reopen();
  MustExec(1, "SELECT 1");
  MustExec(2, "SELECT 1");
  auto r = Exec(3, "SELECT 1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kResourceExhausted, r.error().code);
  ASSERT_TRUE(p_->Abort(1).ok());
  MustExec(3, "SELECT 1");
}

}  // namespace
}  // namespace tx::participant
