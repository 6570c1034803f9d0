// The engine's 3PC states (participant.h; docs/participant.md, "Three-phase commit") on real
// SQLite files: PRECOMMITTED durability and idempotency, what may and may not follow it, the
// termination round's join and its refusal of the coordinator's PreCommit, and Skeen's decision
// rule (participant/termination_rules.h).

#include <gtest/gtest.h>

#include <vector>

#include "participant/participant.h"
#include "participant/termination_rules.h"
#include "tests/support/temp_dir.h"

namespace tx::participant {
namespace {

constexpr char kSchema[] =
    "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL);"
    "INSERT OR IGNORE INTO accounts VALUES (1, 100), (2, 100);";

TxnInfo ThreePhaseInfo() {
  TxnInfo info;
  info.protocol = Protocol::kThreePhase;
  info.participants = {{"p0", "127.0.0.1:7000"}, {"p1", "127.0.0.1:7001"}};
  return info;
}

class ThreePhaseTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    Options o;
    o.name = "p0";
    o.db_path = dir_.path() + "/p.db";
    // Real time: one test waits out a lock timeout (200 ms).
    o.clock = Clock::Real();
    o.init_sql = kSchema;
    o.lock_timeout_ms = 200;
    auto p = Participant::Open(o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    p_ = std::move(p).value();
  }
  void Reopen() {
    p_.reset();
    Open();
  }

  // Writes row `id` in txid and prepares it with `info`.
  void Prepare(TxId txid, const TxnInfo& info, int id = 1) {
    auto r = p_->Execute(
        txid,
        {Statement{"UPDATE accounts SET balance = balance + 1 WHERE id = ?", {int64_t{id}}, {}}},
        nullptr, std::nullopt);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    Result<Vote> v = p_->Prepare(txid, &info);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    ASSERT_EQ(Vote::Kind::kYes, v.value().kind);
  }

  ThreePhaseState MustPreCommit(TxId txid, PreCommitSource source = PreCommitSource::kCoordinator) {
    Result<ThreePhaseState> r = p_->PreCommit(txid, source);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    return r.ok() ? r.value() : ThreePhaseState{};
  }
  ThreePhaseState MustState(TxId txid, bool join) {
    Result<ThreePhaseState> r = p_->TerminationState(txid, join);
    EXPECT_TRUE(r.ok()) << r.error().ToString();
    return r.ok() ? r.value() : ThreePhaseState{};
  }
  TxnState StatusOf(TxId txid) {
    Result<TxnStatus> s = p_->GetStatus(txid);
    EXPECT_TRUE(s.ok());
    return s.ok() ? s.value().state : TxnState::kUnknown;
  }

  tx::testing::TempDir dir_;
  std::unique_ptr<Participant> p_;
};

TEST_F(ThreePhaseTest, PreCommitIsDurableAcrossARestartWithTheLocks) {
  Prepare(1, ThreePhaseInfo());
  EXPECT_EQ(TxnState::kPreCommitted, MustPreCommit(1).state);
  Reopen();
  EXPECT_EQ(TxnState::kPreCommitted, StatusOf(1));
  std::vector<TxId> in_doubt = p_->InDoubt(Clock::Duration(0));
  ASSERT_EQ(1u, in_doubt.size()) << "a PRECOMMITTED transaction is still in doubt";
  // Its row is still locked: another writer times out.
  auto other = p_->Execute(2, {Statement{"UPDATE accounts SET balance = 0 WHERE id = 1", {}, {}}},
                           nullptr, std::nullopt);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(ErrorCode::kLockTimeout, other.error().code);
  ASSERT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(TxnState::kCommitted, StatusOf(1));
}

TEST_F(ThreePhaseTest, PreCommitIsIdempotentAndAnswersTheOutcomeOnceFinished) {
  Prepare(1, ThreePhaseInfo());
  EXPECT_EQ(TxnState::kPreCommitted, MustPreCommit(1).state);
  EXPECT_EQ(TxnState::kPreCommitted, MustPreCommit(1).state);
  Result<Vote> again = p_->Prepare(1, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Vote::Kind::kYes, again.value().kind) << "a repeated Prepare answers the same vote";
  ASSERT_TRUE(p_->Commit(1).ok());
  EXPECT_EQ(TxnState::kCommitted, MustPreCommit(1).state);
  Reopen();
  EXPECT_EQ(TxnState::kCommitted, MustPreCommit(1).state) << "from the durable outcome";
}

TEST_F(ThreePhaseTest, PreCommitOfWhatIsNotAPreparedThreePhaseTransactionIsRefused) {
  TxnInfo two_phase = ThreePhaseInfo();
  two_phase.protocol = Protocol::kTwoPhase;
  Prepare(1, two_phase, 1);
  Result<ThreePhaseState> r = p_->PreCommit(1, PreCommitSource::kCoordinator);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kWrongState, r.error().code);
  EXPECT_EQ(TxnState::kPrepared, StatusOf(1));

  ASSERT_TRUE(p_->Execute(2, {Statement{"UPDATE accounts SET balance = 5 WHERE id = 2", {}, {}}},
                          nullptr, std::nullopt)
                  .ok());
  r = p_->PreCommit(2, PreCommitSource::kCoordinator);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kWrongState, r.error().code) << "an active transaction did not vote";

  r = p_->PreCommit(99, PreCommitSource::kCoordinator);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorCode::kUnknownTransaction, r.error().code);
}

TEST_F(ThreePhaseTest, APreCommittedTransactionCannotAbort) {
  Prepare(1, ThreePhaseInfo());
  MustPreCommit(1);
  Result<> a = p_->Abort(1);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(ErrorCode::kWrongState, a.error().code);
  EXPECT_EQ(TxnState::kPreCommitted, StatusOf(1));
  Result<OnePhaseOutcome> one = p_->CommitOnePhase(1);
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(ErrorCode::kWrongState, one.error().code);
}

TEST_F(ThreePhaseTest, AJoinedParticipantRefusesTheCoordinatorsPreCommitEvenAfterARestart) {
  Prepare(1, ThreePhaseInfo());
  ThreePhaseState probe = MustState(1, /*join=*/false);
  EXPECT_EQ(TxnState::kPrepared, probe.state);
  EXPECT_FALSE(probe.in_termination) << "a probe does not join";
  ThreePhaseState joined = MustState(1, /*join=*/true);
  EXPECT_EQ(TxnState::kPrepared, joined.state);
  EXPECT_TRUE(joined.in_termination);
  Reopen();
  Result<TxnStatus> st = p_->GetStatus(1);
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st.value().in_termination) << "joining is durable";
  ThreePhaseState refused = MustPreCommit(1, PreCommitSource::kCoordinator);
  EXPECT_EQ(TxnState::kPrepared, refused.state) << "the round may abort: refuse";
  EXPECT_TRUE(refused.in_termination);
  EXPECT_EQ(TxnState::kPrepared, StatusOf(1));
  // The round itself may pre-commit it (it saw a PRECOMMITTED participant).
  EXPECT_EQ(TxnState::kPreCommitted, MustPreCommit(1, PreCommitSource::kTerminationRound).state);
  Reopen();
  EXPECT_EQ(TxnState::kPreCommitted, StatusOf(1));
  EXPECT_TRUE(MustState(1, false).in_termination);
}

TEST_F(ThreePhaseTest, JoiningAPreCommittedParticipantKeepsItPreCommitted) {
  Prepare(1, ThreePhaseInfo());
  MustPreCommit(1);
  ThreePhaseState s = MustState(1, true);
  EXPECT_EQ(TxnState::kPreCommitted, s.state);
  EXPECT_TRUE(s.in_termination);
  Reopen();
  EXPECT_EQ(TxnState::kPreCommitted, StatusOf(1));
  EXPECT_EQ(TxnState::kPreCommitted, MustPreCommit(1).state) << "already PRECOMMITTED: an ack";
}

TEST_F(ThreePhaseTest, JoiningAbortsAnActiveTransactionAndPresumesAbortOfAnUnknownOne) {
  ASSERT_TRUE(p_->Execute(1, {Statement{"UPDATE accounts SET balance = 5 WHERE id = 1", {}, {}}},
                          nullptr, std::nullopt)
                  .ok());
  EXPECT_EQ(TxnState::kActive, MustState(1, false).state) << "a probe changes nothing";
  EXPECT_EQ(TxnState::kAborted, MustState(1, true).state);
  Result<Vote> late = p_->Prepare(1, nullptr);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(Vote::Kind::kNo, late.value().kind) << "a Prepare after joining votes NO";

  EXPECT_EQ(TxnState::kUnknown, MustState(7, true).state) << "never seen: no say";
  auto exec = p_->Execute(7, {Statement{"UPDATE accounts SET balance = 5 WHERE id = 2", {}, {}}},
                          nullptr, std::nullopt);
  EXPECT_FALSE(exec.ok()) << "a late first Execute must not begin it";
  EXPECT_EQ(TxnState::kUnknown, MustState(7, true).state)
      << "a presumed abort still has no say in a later round";
  // The active one's abort is durable: after a restart a duplicated Execute or Prepare cannot
  // revive it, and a later round sees it ABORTED.
  Reopen();
  EXPECT_EQ(TxnState::kAborted, MustState(1, true).state);
  Result<Vote> after_restart = p_->Prepare(1, nullptr);
  ASSERT_TRUE(after_restart.ok());
  EXPECT_EQ(Vote::Kind::kNo, after_restart.value().kind);
}

TEST_F(ThreePhaseTest, ReadOnlyParticipantHasNoSay) {
  ASSERT_TRUE(
      p_->Execute(1, {Statement{"SELECT balance FROM accounts", {}, {}}}, nullptr, std::nullopt)
          .ok());
  TxnInfo info = ThreePhaseInfo();
  Result<Vote> v = p_->Prepare(1, &info);
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(Vote::Kind::kReadOnly, v.value().kind);
  EXPECT_EQ(TxnState::kUnknown, MustState(1, true).state)
      << "a read-only 'commit' must not make a round commit";
}

TEST_F(ThreePhaseTest, TwoPhaseTransactionsDoNotJoinRounds) {
  TxnInfo two_phase = ThreePhaseInfo();
  two_phase.protocol = Protocol::kTwoPhase;
  Prepare(1, two_phase);
  ThreePhaseState s = MustState(1, true);
  EXPECT_EQ(TxnState::kPrepared, s.state);
  EXPECT_FALSE(s.in_termination);
}

// Skeen's rule (participant/termination_rules.h), one case per line of the table.
TEST(TerminationRule, AnyCommittedCommits) {
  EXPECT_EQ(TerminationDecision::kCommit,
            DecideTermination({TxnState::kCommitted, TxnState::kPrepared}));
  EXPECT_EQ(TerminationDecision::kCommit,
            DecideTermination({TxnState::kPreCommitted, TxnState::kCommitted}));
}

TEST(TerminationRule, AnyAbortedAborts) {
  EXPECT_EQ(TerminationDecision::kAbort,
            DecideTermination({TxnState::kAborted, TxnState::kPrepared}));
  EXPECT_EQ(TerminationDecision::kAbort,
            DecideTermination({TxnState::kUnknown, TxnState::kAborted}));
}

TEST(TerminationRule, AnyPreCommittedAndNoneAbortedCommits) {
  EXPECT_EQ(TerminationDecision::kCommit,
            DecideTermination({TxnState::kPrepared, TxnState::kPreCommitted, TxnState::kUnknown}));
}

TEST(TerminationRule, OnlyPreparedAborts) {
  EXPECT_EQ(TerminationDecision::kAbort,
            DecideTermination({TxnState::kPrepared, TxnState::kPrepared}));
  EXPECT_EQ(TerminationDecision::kAbort,
            DecideTermination({TxnState::kPrepared, TxnState::kActive, TxnState::kUnknown}));
}

TEST(TerminationRule, StatesTheInvariantsRuleOutDecideNothing) {
  EXPECT_EQ(TerminationDecision::kInconsistent,
            DecideTermination({TxnState::kCommitted, TxnState::kAborted}));
  EXPECT_EQ(TerminationDecision::kInconsistent,
            DecideTermination({TxnState::kPreCommitted, TxnState::kAborted}));
}

}  // namespace
}  // namespace tx::participant
