// Terminator (participant/termination.h): the 3PC termination protocol between real engines on
// real SQLite files, over a fake peer channel the test can cut, with fake coordinators and a
// fake clock.

#include "participant/termination.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "participant/participant.h"
#include "tests/support/temp_dir.h"

namespace tx::participant {
namespace {

constexpr char kSchema[] =
    "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v INT NOT NULL);"
    "INSERT OR IGNORE INTO t VALUES (1, 0);";

// Routes calls to engines by address; a cut address does not answer. Logs every call.
class FakePeers final : public PeerChannel {
 public:
  void Add(const std::string& address, Participant* p) { peers_[address] = p; }
  void Cut(const std::string& address) { cut_.insert(address); }
  void Heal() { cut_.clear(); }
  const std::vector<std::string>& calls() const { return calls_; }

  StatusOr<ThreePhaseState> TerminationState(const std::string& address, TxId txid,
                                             bool join) override {
    TX_ASSIGN_OR_RETURN(Participant * p, Find(address, join ? "join" : "probe"));
    return Unwrap(p->TerminationState(txid, join));
  }
  StatusOr<ThreePhaseState> PreCommit(const std::string& address, TxId txid) override {
    TX_ASSIGN_OR_RETURN(Participant * p, Find(address, "precommit"));
    return Unwrap(p->PreCommit(txid, PreCommitSource::kTerminationRound));
  }
  Status Commit(const std::string& address, TxId txid) override {
    TX_ASSIGN_OR_RETURN(Participant * p, Find(address, "commit"));
    Result<> r = p->Commit(txid);
    return r.ok() ? Status::OK() : Status::Unavailable(r.error().ToString());
  }
  Status Abort(const std::string& address, TxId txid) override {
    TX_ASSIGN_OR_RETURN(Participant * p, Find(address, "abort"));
    Result<> r = p->Abort(txid);
    return r.ok() ? Status::OK() : Status::Unavailable(r.error().ToString());
  }

 private:
  StatusOr<Participant*> Find(const std::string& address, const char* what) {
    calls_.push_back(std::string(what) + "@" + address);
    if (cut_.count(address) != 0 || peers_.count(address) == 0) {
      return Status::Unavailable(address + " does not answer");
    }
    return peers_[address];
  }
  static StatusOr<ThreePhaseState> Unwrap(Result<ThreePhaseState> r) {
    if (!r.ok()) return Status::Unavailable(r.error().ToString());
    return r.value();
  }
  std::map<std::string, Participant*> peers_;
  std::set<std::string> cut_;
  std::vector<std::string> calls_;
};

class FakeCoordinators final : public OutcomeSource {
 public:
  StatusOr<Decision> Resolve(TxId) override {
    ++asked;
    return answer;
  }
  StatusOr<Decision> answer = Status::Unavailable("no coordinator reachable");
  int asked = 0;
};

class TerminationTest : public ::testing::Test {
 protected:
  static constexpr int kParticipants = 3;

  void SetUp() override {
    for (int i = 0; i < kParticipants; ++i) {
      Options o;
      o.name = Name(i);
      o.db_path = dir_.path() + "/" + Name(i) + ".db";
      o.clock = &clock_;
      o.init_sql = kSchema;
      auto p = Participant::Open(o);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      parts_.push_back(std::move(p).value());
      peers_.Add(Address(i), parts_.back().get());
    }
  }
  void TearDown() override {
    terminators_.clear();
    parts_.clear();
  }

  static std::string Name(int i) { return "p" + std::to_string(i); }
  static std::string Address(int i) { return "127.0.0.1:" + std::to_string(7000 + i); }

  Terminator* TerminatorAt(int i) {
    TerminatorOptions o;
    o.termination_timeout = std::chrono::milliseconds(1000);
    o.probe_after = std::chrono::milliseconds(100);
    o.retry_interval = std::chrono::milliseconds(10);
    terminators_.push_back(std::make_unique<Terminator>(parts_[i].get(), Name(i), &coordinators_,
                                                        &peers_, o, &clock_));
    return terminators_.back().get();
  }

  // txid written and prepared (3PC) at every participant.
  void PrepareEverywhere(TxId txid) {
    TxnInfo info;
    info.protocol = Protocol::kThreePhase;
    for (int i = 0; i < kParticipants; ++i) info.participants.push_back({Name(i), Address(i)});
    for (auto& p : parts_) {
      auto r = p->Execute(txid, {Statement{"UPDATE t SET v = v + 1 WHERE id = 1", {}, {}}}, nullptr,
                          std::nullopt);
      ASSERT_TRUE(r.ok()) << r.error().ToString();
      Result<Vote> v = p->Prepare(txid, &info);
      ASSERT_TRUE(v.ok() && v.value().kind == Vote::Kind::kYes);
    }
  }
  TxnState StateAt(int i, TxId txid) {
    Result<TxnStatus> s = parts_[i]->GetStatus(txid);
    EXPECT_TRUE(s.ok());
    return s.ok() ? s.value().state : TxnState::kUnknown;
  }
  size_t IndexOf(const std::string& call) {
    const auto& c = peers_.calls();
    return static_cast<size_t>(std::find(c.begin(), c.end(), call) - c.begin());
  }

  tx::testing::TempDir dir_;
  FakeClock clock_;
  FakePeers peers_;
  FakeCoordinators coordinators_;
  std::vector<std::unique_ptr<Participant>> parts_;
  std::vector<std::unique_ptr<Terminator>> terminators_;
};

TEST_F(TerminationTest, APreCommittedParticipantMakesTheRoundCommitAfterPreCommittingAll) {
  PrepareEverywhere(1);
  ASSERT_TRUE(parts_[2]->PreCommit(1, PreCommitSource::kCoordinator).ok());
  EXPECT_EQ(Terminator::RoundResult::kCommitted, TerminatorAt(0)->RunRound(1));
  for (int i = 0; i < kParticipants; ++i) EXPECT_EQ(TxnState::kCommitted, StateAt(i, 1)) << i;
  // Skeen: every PREPARED one is PRECOMMITTED before the first Commit is sent.
  EXPECT_LT(IndexOf("precommit@" + Address(1)), IndexOf("commit@" + Address(1)));
  EXPECT_LT(IndexOf("precommit@" + Address(1)), IndexOf("commit@" + Address(2)));
}

TEST_F(TerminationTest, OnlyPreparedParticipantsMakeTheRoundAbortAndTheCoordinatorLearnsIt) {
  PrepareEverywhere(1);
  EXPECT_EQ(Terminator::RoundResult::kAborted, TerminatorAt(0)->RunRound(1));
  for (int i = 0; i < kParticipants; ++i) {
    EXPECT_EQ(TxnState::kAborted, StateAt(i, 1)) << i;
    // A coordinator that comes back and sends PreCommit learns the round's outcome.
    Result<ThreePhaseState> s = parts_[i]->PreCommit(1, PreCommitSource::kCoordinator);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(TxnState::kAborted, s.value().state);
  }
}

TEST_F(TerminationTest, AnUnreachableParticipantBlocksTheRoundAndFreezesTheOthers) {
  PrepareEverywhere(1);
  peers_.Cut(Address(2));
  EXPECT_EQ(Terminator::RoundResult::kBlocked, TerminatorAt(0)->RunRound(1));
  EXPECT_EQ(TxnState::kPrepared, StateAt(0, 1));
  EXPECT_EQ(TxnState::kPrepared, StateAt(1, 1));
  // The joined ones refuse the coordinator's PreCommit: the round they told "PREPARED" to may
  // still abort.
  Result<ThreePhaseState> s = parts_[1]->PreCommit(1, PreCommitSource::kCoordinator);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(TxnState::kPrepared, s.value().state);
  EXPECT_TRUE(s.value().in_termination);
  // p2 did not join: it may still be pre-committed by the coordinator, and then the round,
  // once it can see p2, commits.
  ASSERT_EQ(TxnState::kPreCommitted,
            parts_[2]->PreCommit(1, PreCommitSource::kCoordinator).value().state);
  peers_.Heal();
  EXPECT_EQ(Terminator::RoundResult::kCommitted, TerminatorAt(0)->RunRound(1));
  for (int i = 0; i < kParticipants; ++i) EXPECT_EQ(TxnState::kCommitted, StateAt(i, 1)) << i;
}

TEST_F(TerminationTest, AHigherNamedParticipantDefersToTheLowestInDoubt) {
  PrepareEverywhere(1);
  EXPECT_EQ(Terminator::RoundResult::kDeferred, TerminatorAt(1)->RunRound(1));
  EXPECT_EQ(TxnState::kPrepared, StateAt(1, 1));
  EXPECT_FALSE(parts_[0]->GetStatus(1).value().in_termination) << "a deferring probe joins";
  // With p0 out of reach, p1 is the lowest reachable in doubt: it is the backup, and blocks
  // (p0's state is not in hand).
  peers_.Cut(Address(0));
  EXPECT_EQ(Terminator::RoundResult::kBlocked, TerminatorAt(1)->RunRound(1));
}

TEST_F(TerminationTest, ALowerNamedParticipantThatIsNoLongerInDoubtIsNotElected) {
  // Found by coordinator_sim (seed 7, before the fix): a backup deferred to a reachable
  // lower-named participant that had nothing to terminate, which never ran a round.
  PrepareEverywhere(1);
  ASSERT_TRUE(parts_[0]->Abort(1).ok());  // p0 finished (aborted before any PRECOMMIT)
  EXPECT_EQ(Terminator::RoundResult::kAborted, TerminatorAt(1)->RunRound(1));
  for (int i = 0; i < kParticipants; ++i) EXPECT_EQ(TxnState::kAborted, StateAt(i, 1)) << i;
}

TEST_F(TerminationTest, TerminationStartsOnlyOnceNoCoordinatorAnsweredForTheTimeout) {
  PrepareEverywhere(1);
  Terminator* t = TerminatorAt(0);
  clock_.Advance(std::chrono::milliseconds(200));  // past probe_after
  EXPECT_EQ(0, t->RunOnce());
  EXPECT_EQ(1, coordinators_.asked);
  clock_.Advance(std::chrono::milliseconds(500));
  EXPECT_EQ(0, t->RunOnce()) << "terminated before the timeout";
  EXPECT_EQ(0u, t->GetStats().rounds);
  // A coordinator answers PENDING: it is alive and deciding; the clock starts again.
  coordinators_.answer = OutcomeSource::Decision::kPending;
  clock_.Advance(std::chrono::milliseconds(600));
  EXPECT_EQ(0, t->RunOnce());
  coordinators_.answer = Status::Unavailable("gone");
  clock_.Advance(std::chrono::milliseconds(600));
  EXPECT_EQ(0, t->RunOnce());
  EXPECT_EQ(0u, t->GetStats().rounds);
  clock_.Advance(std::chrono::milliseconds(1100));
  EXPECT_EQ(1, t->RunOnce());
  EXPECT_EQ(1u, t->GetStats().rounds);
  EXPECT_EQ(1u, t->GetStats().aborted);
  for (int i = 0; i < kParticipants; ++i) EXPECT_EQ(TxnState::kAborted, StateAt(i, 1)) << i;
}

TEST_F(TerminationTest, AReachableCoordinatorsOutcomeIsAppliedWithoutARound) {
  PrepareEverywhere(1);
  coordinators_.answer = OutcomeSource::Decision::kCommitted;
  clock_.Advance(std::chrono::milliseconds(200));
  EXPECT_EQ(1, TerminatorAt(0)->RunOnce());
  EXPECT_EQ(TxnState::kCommitted, StateAt(0, 1));
  EXPECT_TRUE(peers_.calls().empty()) << "no termination round while a coordinator decides";
}

TEST_F(TerminationTest, AJoinedParticipantKeepsTerminatingWhateverTheCoordinators) {
  PrepareEverywhere(1);
  peers_.Cut(Address(2));
  ASSERT_EQ(Terminator::RoundResult::kBlocked, TerminatorAt(0)->RunRound(1));
  peers_.Heal();
  // A coordinator is back (PENDING: it cannot pre-commit the joined ones), but p0 joined a
  // round: it finishes it.
  coordinators_.answer = OutcomeSource::Decision::kPending;
  clock_.Advance(std::chrono::milliseconds(200));
  EXPECT_EQ(1, TerminatorAt(0)->RunOnce());
  for (int i = 0; i < kParticipants; ++i) EXPECT_EQ(TxnState::kAborted, StateAt(i, 1)) << i;
}

TEST_F(TerminationTest, AProbedParticipantRunsItsOwnRound) {
  PrepareEverywhere(1);
  Terminator* t0 = TerminatorAt(0);
  coordinators_.answer = OutcomeSource::Decision::kPending;
  // Not yet overdue at p0, and its coordinators answer; but p1's round probed it.
  t0->NoteProbe(1);
  EXPECT_EQ(1, t0->RunOnce());
  EXPECT_EQ(TxnState::kAborted, StateAt(0, 1));
}

}  // namespace
}  // namespace tx::participant
