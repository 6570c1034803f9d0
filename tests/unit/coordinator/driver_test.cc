// Driver: the leader's 2PC logic against fake participants, a fake replicated log (under the
// real CommandBatcher) and a fake clock. Every reply and every log application is stepped by
// the test, so each test states exactly what happened in which order.

#include "coordinator/driver.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "coordinator/batcher.h"
#include "coordinator/codec.h"
#include "coordinator/replicated_state.h"

namespace tx::coordinator {
namespace {

using api::Decision;
using api::ErrorCode;

// The Raft log, as far as the driver can tell: entries wait until the test applies them to the
// shared state (as the apply thread would) or fails them.
class FakeEntryLog final : public EntryLog {
 public:
  explicit FakeEntryLog(ReplicatedState* state) : state_(state) {}

  void ProposeEntry(std::string entry, std::function<void(Status, std::string)> done) override {
    if (refuse_) {
      done(Status::Unavailable("not the leader"), "");
      return;
    }
    pending_.push_back({std::move(entry), std::move(done)});
  }

  size_t pending() const { return pending_.size(); }

  // Commands waiting in proposed entries, decoded.
  std::vector<coordlog::Command> PendingCommands() const {
    std::vector<coordlog::Command> out;
    for (const auto& p : pending_) {
      StatusOr<coordlog::Entry> e = DecodeEntry(p.entry);
      EXPECT_TRUE(e.ok());
      for (auto& c : e->commands) out.push_back(c);
    }
    return out;
  }

  // Applies every pending entry (and those proposed meanwhile) in order.
  int ApplyAll() {
    int n = 0;
    while (!pending_.empty()) {
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      StatusOr<std::string> r = state_->Apply(++index_, p.entry);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      p.done(Status::OK(), *r);
      ++n;
    }
    return n;
  }

  // The first pending entry is applied but its proposer hears `status` (e.g. a timeout).
  void ApplyFirstButReport(Status status) {
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    ASSERT_TRUE(state_->Apply(++index_, p.entry).ok());
    p.done(std::move(status), "");
  }

  // The first pending entry is lost (never applied) and its proposer hears `status`.
  void LoseFirst(Status status) {
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    p.done(std::move(status), "");
  }

  void set_refuse(bool refuse) { refuse_ = refuse; }
  uint64_t index() const { return index_; }
  void set_index(uint64_t index) { index_ = index; }

 private:
  struct Pending {
    std::string entry;
    std::function<void(Status, std::string)> done;
  };
  ReplicatedState* const state_;
  std::deque<Pending> pending_;
  uint64_t index_ = 0;
  bool refuse_ = false;
};

// Participants: every call waits in a queue until the test answers it.
class FakeChannel final : public ParticipantChannel {
 public:
  struct Call {
    std::string kind;  // "prepare", "commit", "abort", "one_phase"
    std::string address;
    TxId txid = 0;
    std::optional<api::TransactionInfo> info;
    std::function<void(Status transport, std::optional<api::TxError> error,
                       std::optional<api::Vote::type> vote, std::optional<bool> committed)>
        reply;
    // PreCommit only: answers the participant's state.
    std::function<void(api::TxState::type state, bool in_termination)> precommit_reply;
  };

  void Prepare(const std::string& address, api::PrepareRequest request,
               ReplyCallback<api::PrepareResponse> done) override {
    Call c{"prepare", address, request.txid, request.info, nullptr, nullptr};
    c.reply = [done](Status t, std::optional<api::TxError> e, std::optional<api::Vote::type> v,
                     std::optional<bool>) {
      ParticipantReply<api::PrepareResponse> r;
      r.transport = t;
      r.error = e;
      if (v.has_value()) r.response.vote = *v;
      if (v == api::Vote::NO) {
        r.response.__set_reason_code(ErrorCode::CONFLICT);
        r.response.__set_reason("row 7 changed");
      }
      done(r);
    };
    calls_.push_back(std::move(c));
  }
  void Commit(const std::string& address, api::CommitRequest request,
              ReplyCallback<api::CommitResponse> done) override {
    Push("commit", address, request.txid, done);
  }
  void Abort(const std::string& address, api::AbortRequest request,
             ReplyCallback<api::AbortResponse> done) override {
    Push("abort", address, request.txid, done);
  }
  void CommitOnePhase(const std::string& address, api::CommitOnePhaseRequest request,
                      ReplyCallback<api::CommitOnePhaseResponse> done) override {
    Call c{"one_phase", address, request.txid, std::nullopt, nullptr, nullptr};
    c.reply = [done](Status t, std::optional<api::TxError> e, std::optional<api::Vote::type>,
                     std::optional<bool> committed) {
      ParticipantReply<api::CommitOnePhaseResponse> r;
      r.transport = t;
      r.error = e;
      if (committed.has_value()) {
        r.response.outcome = *committed ? api::Outcome::COMMITTED : api::Outcome::ABORTED;
      }
      done(r);
    };
    calls_.push_back(std::move(c));
  }

  void PreCommit(const std::string& address, api::PreCommitRequest request,
                 ReplyCallback<api::PreCommitResponse> done) override {
    Call c{"precommit", address, request.txid, std::nullopt, nullptr, nullptr};
    c.reply = [done](Status t, std::optional<api::TxError> e, std::optional<api::Vote::type>,
                     std::optional<bool>) {
      ParticipantReply<api::PreCommitResponse> r;
      r.transport = t;
      r.error = e;
      r.response.state = api::TxState::PRECOMMITTED;
      done(r);
    };
    c.precommit_reply = [done](api::TxState::type state, bool in_termination) {
      ParticipantReply<api::PreCommitResponse> r;
      r.response.state = state;
      r.response.in_termination = in_termination;
      done(r);
    };
    calls_.push_back(std::move(c));
  }

  size_t size() const { return calls_.size(); }
  // Kinds and addresses of the waiting calls, e.g. "prepare@a prepare@b".
  std::string Describe() const {
    std::string s;
    for (const Call& c : calls_) s += (s.empty() ? "" : " ") + c.kind + "@" + c.address;
    return s;
  }
  // Takes the oldest waiting call (to `address`, if given).
  Call Take(const std::string& address = "") {
    for (auto it = calls_.begin(); it != calls_.end(); ++it) {
      if (address.empty() || it->address == address) {
        Call c = std::move(*it);
        calls_.erase(it);
        return c;
      }
    }
    ADD_FAILURE() << "no call waiting for '" << address << "'; waiting: " << Describe();
    return Call{"none",
                "",
                0,
                std::nullopt,
                [](Status, std::optional<api::TxError>, std::optional<api::Vote::type>,
                   std::optional<bool>) {},
                nullptr};
  }

  void Vote(const std::string& address, api::Vote::type vote) {
    Take(address).reply(Status::OK(), std::nullopt, vote, std::nullopt);
  }
  void Ack(const std::string& address) {
    Take(address).reply(Status::OK(), std::nullopt, std::nullopt, std::nullopt);
  }
  // Answers a waiting PreCommit with `state`.
  void PreCommitState(const std::string& address, api::TxState::type state,
                      bool in_termination = false) {
    Call c = Take(address);
    ASSERT_EQ(c.kind, "precommit") << "at " << address;
    c.precommit_reply(state, in_termination);
  }
  void OnePhase(const std::string& address, bool committed) {
    Take(address).reply(Status::OK(), std::nullopt, std::nullopt, committed);
  }
  void Fail(const std::string& address) {
    Take(address).reply(Status::Unavailable("connection refused"), std::nullopt, std::nullopt,
                        std::nullopt);
  }
  void Error(const std::string& address, ErrorCode::type code) {
    api::TxError e;
    e.code = code;
    e.message = "participant error";
    Take(address).reply(Status::OK(), e, std::nullopt, std::nullopt);
  }

 private:
  template <typename Resp>
  void Push(const char* kind, const std::string& address, TxId txid, ReplyCallback<Resp> done) {
    Call c{kind, address, txid, std::nullopt, nullptr, nullptr};
    c.reply = [done](Status t, std::optional<api::TxError> e, std::optional<api::Vote::type>,
                     std::optional<bool>) {
      ParticipantReply<Resp> r;
      r.transport = t;
      r.error = e;
      done(r);
    };
    calls_.push_back(std::move(c));
  }

  std::deque<Call> calls_;
};

template <typename T>
struct Answer {
  bool arrived = false;
  Reply<T> reply;
  Done<T> Callback() {
    return [this](Reply<T> r) {
      EXPECT_FALSE(arrived) << "answered twice";
      arrived = true;
      reply = std::move(r);
    };
  }
  ErrorCode::type error_code() const {
    return reply.error.has_value() ? reply.error->code : static_cast<ErrorCode::type>(0);
  }
};

class DriverTest : public ::testing::Test {
 protected:
  explicit DriverTest(StateMachineLimits limits = {}) : state_(limits) { Start(); }

  DriverOptions Options() {
    DriverOptions o;
    o.clock = &clock_;
    o.default_txn_timeout = std::chrono::seconds(10);
    o.txid_block_size = 8;
    o.retry_initial = std::chrono::milliseconds(10);
    o.retry_max = std::chrono::milliseconds(100);
    o.phase_two_retry_max = std::chrono::milliseconds(100);
    o.abort_notify_attempts = 3;
    o.leader_hint = [this]() -> std::optional<std::string> { return hint_; };
    return o;
  }

  void Start() {
    batcher_ = std::make_unique<CommandBatcher>(&log_, BatcherOptions{});
    driver_ = std::make_unique<Driver>(&state_, batcher_.get(), &channel_, Options());
  }

  // Registers participants a and b (addresses "a:1", "b:1"), makes the driver leader and lets
  // it reserve its first txid block.
  void BecomeLeaderWithParticipants() {
    coordlog::Entry e;
    for (std::string name : {"a", "b", "c"}) {
      coordlog::Command c;
      coordlog::RegisterParticipant r;
      r.name = name;
      r.address = name + ":1";
      c.__set_register_participant(r);
      e.commands.push_back(c);
    }
    log_.set_index(log_.index() + 1);
    ASSERT_TRUE(state_.Apply(log_.index(), EncodeEntry(e)).ok());
    driver_->BecomeLeader(1);
    ASSERT_EQ(1, log_.ApplyAll());  // the txid block
  }

  TxId Begin(int32_t timeout_ms = 0, api::Protocol::type protocol = api::Protocol::TWO_PHASE) {
    api::BeginRequest req;
    req.options.timeout_ms = timeout_ms;
    req.options.protocol = protocol;
    Reply<api::BeginResponse> r = driver_->Begin(req);
    EXPECT_TRUE(r.ok()) << (r.error ? r.error->message : "");
    return r.value.txid;
  }

  void Commit(TxId txid, std::vector<std::string> parts,
              Answer<api::CommitTransactionResponse>* answer,
              api::Protocol::type protocol = api::Protocol::TWO_PHASE) {
    api::CommitTransactionRequest req;
    req.txid = txid;
    req.participants = std::move(parts);
    req.protocol = protocol;
    driver_->Commit(req, answer->Callback());
  }

  void Abort(TxId txid, std::vector<std::string> parts,
             Answer<api::AbortTransactionResponse>* answer) {
    api::AbortTransactionRequest req;
    req.txid = txid;
    req.participants = std::move(parts);
    driver_->Abort(req, answer->Callback());
  }

  void Resolve(TxId txid, Answer<api::ResolveResponse>* answer) {
    api::ResolveRequest req;
    req.txid = txid;
    req.participant = "a";
    driver_->Resolve(req, answer->Callback());
  }

  void GetOutcome(TxId txid, Answer<api::GetOutcomeResponse>* answer) {
    api::GetOutcomeRequest req;
    req.txid = txid;
    driver_->GetOutcome(req, answer->Callback());
  }

  void Advance(std::chrono::milliseconds d) {
    clock_.Advance(d);
    driver_->Tick();
  }

  TxnLookup Lookup(TxId txid) {
    return state_.Read([txid](const TxnStateMachine& sm) {
      TxnLookup l = sm.Lookup(txid);
      l.record = nullptr;
      return l;
    });
  }

  std::string PendingKinds() {
    std::string s;
    for (const coordlog::Command& c : log_.PendingCommands()) {
      std::string k = c.__isset.decide
                          ? (c.decide.outcome == coordlog::Outcome::COMMITTED ? "COMMIT" : "ABORT")
                      : c.__isset.end_transaction ? "END"
                      : c.__isset.precommit       ? "PRECOMMIT"
                      : c.__isset.reserve_txids   ? "RESERVE"
                                                  : "REGISTER";
      s += (s.empty() ? "" : " ") + k;
    }
    return s;
  }

  FakeClock clock_;
  ReplicatedState state_;
  FakeEntryLog log_{&state_};
  FakeChannel channel_;
  std::optional<std::string> hint_;
  std::unique_ptr<CommandBatcher> batcher_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(DriverTest, CommitLogsTheDecisionBeforeAnsweringThenRunsPhaseTwoAndEnd) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  ASSERT_EQ("prepare@a:1 prepare@b:1", channel_.Describe());
  // The participants learn the whole participant list at prepare.
  FakeChannel::Call first = channel_.Take("a:1");
  ASSERT_TRUE(first.info.has_value());
  EXPECT_EQ(2u, first.info->participants.size());
  first.reply(Status::OK(), std::nullopt, api::Vote::YES, std::nullopt);
  channel_.Vote("b:1", api::Vote::YES);

  EXPECT_EQ("COMMIT", PendingKinds());
  EXPECT_FALSE(answer.arrived) << "answered before the decision was applied";
  EXPECT_EQ(0u, channel_.size()) << "phase two before the decision was applied";

  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  ASSERT_TRUE(answer.reply.ok());
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  EXPECT_EQ(TxnKnowledge::kLive, Lookup(txid).knowledge);
  EXPECT_EQ("commit@a:1 commit@b:1", channel_.Describe());

  channel_.Ack("a:1");
  EXPECT_EQ("", PendingKinds()) << "END before every participant acknowledged";
  channel_.Ack("b:1");
  EXPECT_EQ("END", PendingKinds());
  log_.ApplyAll();
  EXPECT_EQ(TxnKnowledge::kFinished, Lookup(txid).knowledge);
  EXPECT_EQ(0u, driver_->GetStats().active);
}

TEST_F(DriverTest, NoVoteAbortsWithItsReasonAndTellsOnlyThoseThatMayBePrepared) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b", "c"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::NO);
  // c has not answered: it may be prepared too, so it is told as well.
  EXPECT_EQ("ABORT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
  EXPECT_EQ(ErrorCode::CONFLICT, answer.reply.value.reason_code);
  EXPECT_NE(std::string::npos, answer.reply.value.reason.find("'b'"));
  channel_.Take("c:1");  // the Prepare still outstanding; its late answer is ignored
  EXPECT_EQ("abort@a:1 abort@c:1", channel_.Describe());
}

TEST_F(DriverTest, AllReadOnlyCommitsWithoutWritingTheLog) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::READ_ONLY);
  channel_.Vote("b:1", api::Vote::READ_ONLY);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  EXPECT_EQ(0u, log_.pending());
  EXPECT_EQ(0u, channel_.size()) << "read-only participants need no phase two";
  EXPECT_EQ(1u, driver_->GetStats().read_only);
}

TEST_F(DriverTest, AbortWhereNobodyCanBePreparedWritesNothing) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::READ_ONLY);
  channel_.Vote("b:1", api::Vote::NO);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
  EXPECT_EQ(0u, log_.pending());
  EXPECT_EQ(0u, channel_.size());
}

TEST_F(DriverTest, OneWriterAndReadersStillLogsTheCommit) {
  // Once a participant is prepared, only a logged decision may release it: an unlogged commit
  // would let a later Resolve log ABORT for a transaction that committed.
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::READ_ONLY);
  channel_.Vote("b:1", api::Vote::YES);
  EXPECT_EQ("COMMIT", PendingKinds());
  log_.ApplyAll();
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  EXPECT_EQ("commit@b:1", channel_.Describe()) << "the reader needs no phase two";
}

TEST_F(DriverTest, SingleParticipantCommitsInOnePhaseWithoutTheLog) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a"}, &answer);
  ASSERT_EQ("one_phase@a:1", channel_.Describe());
  channel_.OnePhase("a:1", true);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  EXPECT_EQ(0u, log_.pending());
  EXPECT_EQ(TxnKnowledge::kUndecided, Lookup(txid).knowledge);
}

TEST_F(DriverTest, SingleParticipantThatDidNotCommitAnswersAborted) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a"}, &answer);
  channel_.OnePhase("a:1", false);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
}

TEST_F(DriverTest, OnePhaseUnansweredByTheDeadlineIsFencedWithAbort) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(/*timeout_ms=*/1000);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a"}, &answer);
  // CommitOnePhase is idempotent: it is repeated while the deadline allows.
  for (int i = 0; i < 3; ++i) {
    channel_.Fail("a:1");
    Advance(std::chrono::milliseconds(200));
    ASSERT_EQ("one_phase@a:1", channel_.Describe()) << i;
  }
  channel_.Fail("a:1");
  Advance(std::chrono::milliseconds(1000));
  // Past the deadline: Abort decides it for good, or reveals that the commit happened.
  ASSERT_EQ("abort@a:1", channel_.Describe());
  channel_.Error("a:1", ErrorCode::WRONG_STATE);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
}

TEST_F(DriverTest, OnePhaseFencedByAnAcceptedAbortIsAborted) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(/*timeout_ms=*/100);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a"}, &answer);
  channel_.Fail("a:1");
  Advance(std::chrono::milliseconds(200));
  channel_.Ack("a:1");
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
}

TEST_F(DriverTest, EmptyTransactionCommitsAtOnce) {
  BecomeLeaderWithParticipants();
  Answer<api::CommitTransactionResponse> answer;
  Commit(Begin(), {}, &answer);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
}

TEST_F(DriverTest, AnEarlierResolveAbortWinsOverTheCommitDecision) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  // A participant asks before the Commit arrives (e.g. it was prepared by a deposed leader).
  Answer<api::ResolveResponse> resolve;
  Resolve(txid, &resolve);
  EXPECT_EQ("ABORT", PendingKinds());
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  EXPECT_EQ("ABORT COMMIT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(resolve.arrived && answer.arrived);
  EXPECT_EQ(Decision::ABORTED, resolve.reply.value.decision);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision)
      << "the client's answer must be the logged outcome, not the proposal";
  // Both prepared participants are told to abort even though the ABORT record named nobody.
  EXPECT_EQ("abort@a:1 abort@b:1", channel_.Describe());
}

TEST_F(DriverTest, ResolveWhileVotesAreCollectedIsPending) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  Answer<api::ResolveResponse> resolve;
  Resolve(txid, &resolve);
  ASSERT_TRUE(resolve.arrived);
  EXPECT_EQ(Decision::PENDING, resolve.reply.value.decision);
  EXPECT_EQ(0u, log_.pending());
}

TEST_F(DriverTest, ResolveAnswersTheLoggedOutcome) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  Answer<api::ResolveResponse> resolve;
  Resolve(txid, &resolve);
  ASSERT_TRUE(resolve.arrived);
  EXPECT_EQ(Decision::COMMITTED, resolve.reply.value.decision);
  EXPECT_EQ(0u, log_.pending());
}

TEST_F(DriverTest, ResolveOfAnUnknownTxidLogsAbortFirst) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::ResolveResponse> resolve;
  Resolve(txid, &resolve);
  EXPECT_FALSE(resolve.arrived) << "answered before the ABORT was logged";
  log_.ApplyAll();
  ASSERT_TRUE(resolve.arrived);
  EXPECT_EQ(Decision::ABORTED, resolve.reply.value.decision);
  EXPECT_EQ(TxnKnowledge::kFinished, Lookup(txid).knowledge);
}

TEST_F(DriverTest, ResolveOfATxidNeverIssuedIsInvalid) {
  BecomeLeaderWithParticipants();
  Answer<api::ResolveResponse> resolve;
  Resolve(1'000'000, &resolve);
  ASSERT_TRUE(resolve.arrived);
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, resolve.error_code());
}

TEST_F(DriverTest, UnansweredPrepareIsRetriedThenAbortedAtTheTimeout) {
  BecomeLeaderWithParticipants();
  const Clock::TimePoint start = clock_.Now();
  TxId txid = Begin(/*timeout_ms=*/1000);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  int attempts = 0;
  for (int i = 0; i < 200 && log_.pending() == 0; ++i) {
    if (channel_.size() > 0) {
      channel_.Fail("b:1");
      ++attempts;
    }
    Advance(std::chrono::milliseconds(10));
  }
  EXPECT_GE(clock_.Now() - start, std::chrono::milliseconds(1000)) << "gave up early";
  EXPECT_GE(attempts, 5) << "Prepare is retried until the deadline";
  EXPECT_LE(attempts, 40) << "retries back off";
  EXPECT_EQ("ABORT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
  // b never answered: it may be prepared, so it is told too.
  EXPECT_NE(std::string::npos, channel_.Describe().find("abort@b:1")) << channel_.Describe();
  EXPECT_NE(std::string::npos, channel_.Describe().find("abort@a:1")) << channel_.Describe();
}

TEST_F(DriverTest, PhaseTwoIsRetriedUntilAcknowledgedAndOnlyThenEnded) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  channel_.Ack("a:1");
  for (int i = 0; i < 10; ++i) {
    channel_.Fail("b:1");
    Advance(std::chrono::milliseconds(200));
    ASSERT_EQ("commit@b:1", channel_.Describe()) << "retry " << i;
    EXPECT_EQ(0u, log_.pending());
  }
  channel_.Ack("b:1");
  EXPECT_EQ("END", PendingKinds());
  log_.ApplyAll();
  EXPECT_EQ(TxnKnowledge::kFinished, Lookup(txid).knowledge);
}

TEST_F(DriverTest, AbortPhaseTwoGivesUpOnADeadParticipantAndEnds) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::NO);
  log_.ApplyAll();
  for (int i = 0; i < 3; ++i) {
    channel_.Fail("a:1");
    Advance(std::chrono::milliseconds(200));
  }
  // Presumed abort: the record may go; a participant that comes back asks and gets ABORTED.
  EXPECT_EQ("END", PendingKinds());
  log_.ApplyAll();
  Answer<api::ResolveResponse> resolve;
  Resolve(txid, &resolve);
  EXPECT_EQ(Decision::ABORTED, resolve.reply.value.decision);
}

TEST_F(DriverTest, NewLeaderRedrivesPhaseTwoOfDecidedTransactions) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  ASSERT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  // The leader dies before phase two reaches anyone.
  channel_.Take("a:1");
  channel_.Take("b:1");
  driver_->StepDown();

  Start();  // a new driver on another replica, same replicated state
  driver_->BecomeLeader(2);
  EXPECT_EQ(1u, driver_->GetStats().phase_two_redriven);
  EXPECT_EQ("commit@a:1 commit@b:1", channel_.Describe());
  log_.ApplyAll();  // its txid block
  channel_.Ack("a:1");
  channel_.Ack("b:1");
  EXPECT_EQ("END", PendingKinds());
  log_.ApplyAll();
  EXPECT_EQ(TxnKnowledge::kFinished, Lookup(txid).knowledge);
}

TEST_F(DriverTest, ADecisionProposedInAnEarlierTermIsAdoptedForPhaseTwo) {
  // Found by coordinator_sim (seed 365): a decision queued in the log when leadership changed
  // was committed in the next term, after the new leader had scanned its state, and no one ran
  // its phase two.
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  ASSERT_EQ("COMMIT", PendingKinds());
  driver_->StepDown();
  driver_->BecomeLeader(2);  // the same replica wins the next term
  log_.ApplyAll();           // ... and the old term's COMMIT commits now
  EXPECT_EQ(TxnKnowledge::kLive, Lookup(txid).knowledge);
  EXPECT_EQ(0u, channel_.size());
  Advance(std::chrono::milliseconds(1000));
  EXPECT_EQ("commit@a:1 commit@b:1", channel_.Describe());
  channel_.Ack("a:1");
  channel_.Ack("b:1");
  EXPECT_EQ("END", PendingKinds());
}

TEST_F(DriverTest, RepeatedCommitAfterFailoverCollectsTheVotesAgain) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> first;
  Commit(txid, {"a", "b"}, &first);
  channel_.Vote("a:1", api::Vote::YES);
  driver_->StepDown();  // b's vote never arrives
  ASSERT_TRUE(first.arrived);
  EXPECT_EQ(ErrorCode::UNAVAILABLE, first.error_code()) << "outcome unknown, not a guess";
  channel_.Take("b:1");

  Start();
  driver_->BecomeLeader(2);
  log_.ApplyAll();
  Answer<api::CommitTransactionResponse> retry;
  Commit(txid, {"a", "b"}, &retry);
  EXPECT_EQ("prepare@a:1 prepare@b:1", channel_.Describe());
  channel_.Vote("a:1", api::Vote::YES);  // Prepare is idempotent at the participant
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  ASSERT_TRUE(retry.arrived);
  EXPECT_EQ(Decision::COMMITTED, retry.reply.value.decision);
}

TEST_F(DriverTest, RepeatedCommitJoinsTheCommitInProgress) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> first, second;
  Commit(txid, {"a", "b"}, &first);
  Commit(txid, {"a", "b"}, &second);
  EXPECT_EQ(2u, channel_.size()) << "the repeat sends nothing";
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  EXPECT_EQ(Decision::COMMITTED, first.reply.value.decision);
  EXPECT_EQ(Decision::COMMITTED, second.reply.value.decision);
  // And once decided, a repeat is answered from the log at once.
  Answer<api::CommitTransactionResponse> third;
  Commit(txid, {"a", "b"}, &third);
  ASSERT_TRUE(third.arrived);
  EXPECT_EQ(Decision::COMMITTED, third.reply.value.decision);
}

TEST_F(DriverTest, CallersWaitingForOneOutcomeAreBounded) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  std::vector<std::unique_ptr<Answer<api::CommitTransactionResponse>>> answers;
  for (int i = 0; i < 65; ++i) {
    answers.push_back(std::make_unique<Answer<api::CommitTransactionResponse>>());
    Commit(txid, {"a", "b"}, answers.back().get());
  }
  for (int i = 0; i < 64; ++i) EXPECT_FALSE(answers[i]->arrived) << i;
  ASSERT_TRUE(answers[64]->arrived);
  EXPECT_EQ(ErrorCode::UNAVAILABLE, answers[64]->error_code());
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(answers[i]->arrived) << i;
    EXPECT_EQ(Decision::COMMITTED, answers[i]->reply.value.decision);
  }
}

TEST_F(DriverTest, NotServingAnswersNotLeaderWithTheHint) {
  hint_ = "10.0.0.2:7000";
  Reply<api::BeginResponse> b = driver_->Begin(api::BeginRequest{});
  ASSERT_TRUE(b.error.has_value());
  EXPECT_EQ(ErrorCode::NOT_LEADER, b.error->code);
  EXPECT_EQ("10.0.0.2:7000", b.error->leader_hint);
  Answer<api::CommitTransactionResponse> c;
  Commit(5, {"a"}, &c);
  EXPECT_EQ(ErrorCode::NOT_LEADER, c.error_code());
  Answer<api::ResolveResponse> r;
  Resolve(5, &r);
  EXPECT_EQ(ErrorCode::NOT_LEADER, r.error_code());
  hint_.reset();
  Answer<api::GetOutcomeResponse> g;
  GetOutcome(5, &g);
  EXPECT_EQ(ErrorCode::UNAVAILABLE, g.error_code()) << "no leader known";
  EXPECT_EQ(0u, channel_.size());
  EXPECT_EQ(0u, log_.pending());
}

TEST_F(DriverTest, BeginHandsOutTxidsOnlyFromReservedBlocks) {
  driver_->BecomeLeader(1);
  EXPECT_EQ("RESERVE", PendingKinds());
  Reply<api::BeginResponse> early = driver_->Begin(api::BeginRequest{});
  ASSERT_TRUE(early.error.has_value());
  EXPECT_EQ(ErrorCode::UNAVAILABLE, early.error->code);
  log_.ApplyAll();
  std::set<TxId> seen;
  for (int i = 0; i < 20; ++i) {
    Reply<api::BeginResponse> r = driver_->Begin(api::BeginRequest{});
    if (!r.ok()) {
      // The next block is on its way (half of the block size is the refill mark).
      log_.ApplyAll();
      r = driver_->Begin(api::BeginRequest{});
    }
    ASSERT_TRUE(r.ok()) << i;
    EXPECT_TRUE(seen.insert(r.value.txid).second) << "txid issued twice";
    log_.ApplyAll();
  }
  TxId next = state_.Read([](const TxnStateMachine& sm) { return sm.next_txid(); });
  EXPECT_LT(*seen.rbegin(), next) << "a txid outside every reserved block";
}

TEST_F(DriverTest, BeginAcceptsThreePhaseAndRefusesOutOfRangeTimeouts) {
  BecomeLeaderWithParticipants();
  api::BeginRequest req;
  req.options.protocol = api::Protocol::THREE_PHASE;
  EXPECT_TRUE(driver_->Begin(req).ok());
  req.options.protocol = api::Protocol::TWO_PHASE;
  req.options.timeout_ms = -1;
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, driver_->Begin(req).error->code);
  req.options.timeout_ms = 700'000;
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, driver_->Begin(req).error->code);
}

TEST_F(DriverTest, BeginReturnsTheDirectoryOnlyWhenTheClientsVersionIsStale) {
  BecomeLeaderWithParticipants();
  Reply<api::BeginResponse> r = driver_->Begin(api::BeginRequest{});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r.value.__isset.participants);
  EXPECT_EQ(3u, r.value.participants.size());
  api::BeginRequest req;
  req.directory_version = r.value.directory_version;
  Reply<api::BeginResponse> again = driver_->Begin(req);
  EXPECT_FALSE(again.value.__isset.participants);
}

TEST_F(DriverTest, CommitAfterTheTransactionTimedOutIsAborted) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(/*timeout_ms=*/500);
  Advance(std::chrono::milliseconds(600));
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
  EXPECT_EQ(ErrorCode::ABORTED, answer.reply.value.reason_code);
  EXPECT_EQ(0u, channel_.size()) << "no Prepare for a timed-out transaction";
}

TEST_F(DriverTest, AbortDuringVoteCollectionDecidesAbortForBothCallers) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> commit;
  Commit(txid, {"a", "b"}, &commit);
  channel_.Vote("a:1", api::Vote::YES);
  Answer<api::AbortTransactionResponse> abort;
  Abort(txid, {"a", "b"}, &abort);
  EXPECT_EQ("ABORT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(commit.arrived && abort.arrived);
  EXPECT_EQ(Decision::ABORTED, commit.reply.value.decision);
  EXPECT_EQ(Decision::ABORTED, abort.reply.value.decision);
}

TEST_F(DriverTest, AbortOfAnUnknownTransactionLogsAbortBeforeTellingParticipants) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::AbortTransactionResponse> abort;
  Abort(txid, {"a", "b"}, &abort);
  EXPECT_EQ("ABORT", PendingKinds());
  EXPECT_EQ(0u, channel_.size()) << "participants told before the ABORT was logged";
  log_.ApplyAll();
  EXPECT_EQ(Decision::ABORTED, abort.reply.value.decision);
  EXPECT_EQ("abort@a:1 abort@b:1", channel_.Describe());
}

TEST_F(DriverTest, AbortOfACommittedTransactionReportsCommitted) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> commit;
  Commit(txid, {"a", "b"}, &commit);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  Answer<api::AbortTransactionResponse> abort;
  Abort(txid, {"a", "b"}, &abort);
  ASSERT_TRUE(abort.arrived);
  EXPECT_EQ(Decision::COMMITTED, abort.reply.value.decision);
}

TEST_F(DriverTest, AbortOfASingleParticipantTransactionThatCommittedInOnePhase) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::AbortTransactionResponse> abort;
  Abort(txid, {"a"}, &abort);
  EXPECT_EQ(0u, log_.pending()) << "one participant: its own answer is the outcome";
  channel_.Error("a:1", ErrorCode::WRONG_STATE);
  ASSERT_TRUE(abort.arrived);
  EXPECT_EQ(Decision::COMMITTED, abort.reply.value.decision);
}

TEST_F(DriverTest, GetOutcomeAnswersFromTheLogAndNeverGuesses) {
  BecomeLeaderWithParticipants();
  TxId committed = Begin();
  TxId live = Begin();
  TxId unknown = Begin();
  Answer<api::CommitTransactionResponse> c1, c2;
  Commit(committed, {"a", "b"}, &c1);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  Commit(live, {"a", "b"}, &c2);

  Answer<api::GetOutcomeResponse> g1, g2, g3, g4;
  GetOutcome(committed, &g1);
  EXPECT_EQ(Decision::COMMITTED, g1.reply.value.decision);
  GetOutcome(live, &g2);
  EXPECT_EQ(Decision::PENDING, g2.reply.value.decision);
  GetOutcome(unknown, &g3);
  EXPECT_FALSE(g3.arrived) << "UNDECIDED needs a barrier through the log first";
  log_.ApplyAll();
  ASSERT_TRUE(g3.arrived);
  EXPECT_EQ(Decision::UNDECIDED, g3.reply.value.decision);
  EXPECT_EQ(TxnKnowledge::kUndecided, Lookup(unknown).knowledge) << "GetOutcome decided it";
  GetOutcome(1'000'000, &g4);
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, g4.error_code());
}

TEST_F(DriverTest, GetOutcomeOnADeposedLeaderFailsInsteadOfClaimingUndecided) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::GetOutcomeResponse> g;
  GetOutcome(txid, &g);
  log_.LoseFirst(Status::Unavailable("not the leader"));
  ASSERT_TRUE(g.arrived);
  EXPECT_EQ(ErrorCode::UNAVAILABLE, g.error_code());
}

TEST_F(DriverTest, CommitRefusesBadParticipantLists) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> unknown, twice;
  Commit(txid, {"a", "nobody"}, &unknown);
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, unknown.error_code());
  Commit(txid, {"a", "a"}, &twice);
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, twice.error_code());
  Answer<api::CommitTransactionResponse> many;
  std::vector<std::string> names(65, "a");
  Commit(txid, names, &many);
  EXPECT_EQ(ErrorCode::TOO_LARGE, many.error_code());
  Answer<api::CommitTransactionResponse> bad_txid;
  Commit(0, {"a"}, &bad_txid);
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, bad_txid.error_code());
  EXPECT_EQ(0u, channel_.size());
}

TEST_F(DriverTest, ADecisionWhoseProposalTimedOutIsReadBackFromTheState) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyFirstButReport(Status::TimedOut("deadline passed"));
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
}

TEST_F(DriverTest, ALostDecisionProposalIsRetried) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.LoseFirst(Status::Aborted("overwritten by a new leader"));
  EXPECT_FALSE(answer.arrived);
  Advance(std::chrono::milliseconds(50));
  EXPECT_EQ("COMMIT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
}

TEST_F(DriverTest, StepDownFailsTheCallsInProgress) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  driver_->StepDown();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(ErrorCode::UNAVAILABLE, answer.error_code());
  // The decision, if it commits after all, is the new leader's business.
  log_.ApplyAll();
  EXPECT_EQ(0u, channel_.size());
}

TEST_F(DriverTest, ParticipantContradictingTheLogIsCountedAndPhaseTwoStillEnds) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  channel_.Ack("a:1");
  channel_.Error("b:1", ErrorCode::WRONG_STATE);
  EXPECT_EQ(1u, driver_->GetStats().anomalies);
  EXPECT_EQ("END", PendingKinds());
}

TEST_F(DriverTest, ListTransactionsShowsWhoIsBeingWaitedOn) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  clock_.Advance(std::chrono::milliseconds(250));
  api::ListTransactionsRequest req;
  Reply<api::ListTransactionsResponse> list = driver_->ListTransactions(req);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(1u, list.value.transactions.size());
  const api::TransactionView& v = list.value.transactions[0];
  EXPECT_EQ(txid, v.txid);
  EXPECT_EQ(api::TransactionPhase::COLLECTING_VOTES, v.phase);
  EXPECT_EQ(250, v.age_ms);
  ASSERT_EQ(2u, v.participants.size());
  EXPECT_EQ(api::ParticipantVote::YES, v.participants[0].vote);
  EXPECT_FALSE(v.participants[0].waiting);
  EXPECT_TRUE(v.participants[1].waiting);
  req.include_begun = true;
  Begin();
  EXPECT_EQ(2u, driver_->ListTransactions(req).value.transactions.size());
  req.limit = 0;
  EXPECT_FALSE(driver_->ListTransactions(req).ok());
}

TEST_F(DriverTest, GetTransactionCoversEveryStage) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin();
  api::GetTransactionRequest req;
  req.txid = txid;
  EXPECT_EQ(api::TransactionPhase::BEGUN, driver_->GetTransaction(req).value.phase);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  EXPECT_EQ(api::TransactionPhase::DECIDING, driver_->GetTransaction(req).value.phase);
  log_.ApplyAll();
  EXPECT_EQ(api::TransactionPhase::COMMITTING, driver_->GetTransaction(req).value.phase);
  channel_.Ack("a:1");
  channel_.Ack("b:1");
  log_.ApplyAll();
  Reply<api::TransactionView> done = driver_->GetTransaction(req);
  EXPECT_EQ(api::TransactionPhase::FINISHED, done.value.phase);
  EXPECT_EQ(Decision::COMMITTED, done.value.decision);
  req.txid = 999;
  EXPECT_EQ(ErrorCode::UNKNOWN_TRANSACTION, driver_->GetTransaction(req).error->code);
}

TEST_F(DriverTest, RegisterParticipantGoesThroughTheLog) {
  BecomeLeaderWithParticipants();
  api::RegisterParticipantRequest req;
  req.participant.name = "d";
  req.participant.address = "127.0.0.1:7104";
  Answer<api::RegisterParticipantResponse> answer;
  driver_->RegisterParticipant(req, answer.Callback());
  EXPECT_FALSE(answer.arrived);
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(4, answer.reply.value.directory_version);
  EXPECT_EQ("127.0.0.1:7104",
            state_.Read([](const TxnStateMachine& sm) { return sm.AddressOf("d"); }).value_or(""));
  Answer<api::RegisterParticipantResponse> bad;
  req.participant.name = "no spaces";
  driver_->RegisterParticipant(req, bad.Callback());
  EXPECT_EQ(ErrorCode::INVALID_ARGUMENT, bad.error_code());
}

TEST_F(DriverTest, TooManyTransactionsInMemoryRefusesNewCommits) {
  DriverOptions o = Options();
  o.max_active_transactions = 1;
  driver_ = std::make_unique<Driver>(&state_, batcher_.get(), &channel_, o);
  BecomeLeaderWithParticipants();
  Answer<api::CommitTransactionResponse> first, second;
  Commit(Begin(), {"a", "b"}, &first);
  Commit(Begin(), {"a", "b"}, &second);
  EXPECT_EQ(ErrorCode::RESOURCE_EXHAUSTED, second.error_code());
}

class FullStateDriverTest : public DriverTest {
 protected:
  static StateMachineLimits OneLiveRecord() {
    StateMachineLimits l;
    l.max_live_transactions = 1;
    return l;
  }
  FullStateDriverTest() : DriverTest(OneLiveRecord()) {}
};

TEST_F(FullStateDriverTest, CommitRefusedForLackOfRoomInTheStateBecomesAnAbort) {
  BecomeLeaderWithParticipants();
  Answer<api::CommitTransactionResponse> first, second;
  Commit(Begin(), {"a", "b"}, &first);
  Commit(Begin(), {"a", "b"}, &second);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  ASSERT_TRUE(first.arrived && second.arrived);
  EXPECT_EQ(Decision::COMMITTED, first.reply.value.decision);
  EXPECT_EQ(Decision::ABORTED, second.reply.value.decision);
  EXPECT_EQ(ErrorCode::RESOURCE_EXHAUSTED, second.reply.value.reason_code);
}

// ---------------------------------------------------------------------------------------------
// Three-phase commit (docs/protocol.md, "Three-phase commit")
// ---------------------------------------------------------------------------------------------

constexpr api::Protocol::type k3pc = api::Protocol::THREE_PHASE;

TEST_F(DriverTest, ThreePhaseLogsPrecommitBeforePreCommitAndCommitOnlyAfterEveryAck) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(0, k3pc);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b", "c"}, &answer, k3pc);
  FakeChannel::Call first = channel_.Take("a:1");
  ASSERT_TRUE(first.info.has_value());
  EXPECT_EQ(k3pc, first.info->protocol);
  EXPECT_EQ(3u, first.info->participants.size()) << "every peer's endpoint, for termination";
  first.reply(Status::OK(), std::nullopt, api::Vote::YES, std::nullopt);
  channel_.Vote("b:1", api::Vote::YES);
  channel_.Vote("c:1", api::Vote::READ_ONLY);
  EXPECT_EQ("PRECOMMIT", PendingKinds());
  EXPECT_EQ(0u, channel_.size()) << "PreCommit sent before PRECOMMIT was applied";
  log_.ApplyAll();
  EXPECT_EQ(TxnKnowledge::kPreCommitted, Lookup(txid).knowledge);
  // Only the YES voters pre-commit.
  EXPECT_EQ("precommit@a:1 precommit@b:1", channel_.Describe());
  channel_.PreCommitState("a:1", api::TxState::PRECOMMITTED);
  EXPECT_EQ("", PendingKinds()) << "COMMIT before every YES voter acknowledged PreCommit";
  EXPECT_FALSE(answer.arrived);
  channel_.PreCommitState("b:1", api::TxState::PRECOMMITTED);
  EXPECT_EQ("COMMIT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  EXPECT_EQ("commit@a:1 commit@b:1", channel_.Describe());
  channel_.Ack("a:1");
  channel_.Ack("b:1");
  EXPECT_EQ("END", PendingKinds());
  log_.ApplyAll();
  EXPECT_EQ(TxnKnowledge::kFinished, Lookup(txid).knowledge);
  EXPECT_EQ(1u, driver_->GetStats().precommits_proposed);
}

TEST_F(DriverTest, ThreePhaseNoVoteAbortsWithoutPrecommit) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(0, k3pc);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer, k3pc);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::NO);
  EXPECT_EQ("ABORT", PendingKinds());
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
  EXPECT_EQ("abort@a:1", channel_.Describe());
}

TEST_F(DriverTest, ThreePhaseUnacknowledgedPreCommitIsRetriedAndNeverTimesOutIntoAnAbort) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(100, k3pc);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer, k3pc);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  channel_.PreCommitState("a:1", api::TxState::PRECOMMITTED);
  channel_.Fail("b:1");
  Advance(std::chrono::milliseconds(500));  // far past the transaction's 100 ms timeout
  EXPECT_EQ("", PendingKinds()) << "an ABORT after PRECOMMIT";
  EXPECT_EQ("precommit@b:1", channel_.Describe());
  // A participant that joined a termination round refuses; it is asked again.
  channel_.PreCommitState("b:1", api::TxState::PREPARED, /*in_termination=*/true);
  Advance(std::chrono::milliseconds(500));
  EXPECT_EQ("precommit@b:1", channel_.Describe());
  // Its round committed (it saw a's PRECOMMITTED): that acknowledges too.
  channel_.PreCommitState("b:1", api::TxState::COMMITTED);
  EXPECT_EQ("COMMIT", PendingKinds());
  log_.ApplyAll();
  EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
}

TEST_F(DriverTest, ThreePhaseAdoptsTheAbortOfATerminationRound) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(0, k3pc);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer, k3pc);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  // Both participants had joined a round that found them only PREPARED and aborted.
  channel_.PreCommitState("a:1", api::TxState::ABORTED);
  EXPECT_EQ("ABORT", PendingKinds());
  std::vector<coordlog::Command> cmds = log_.PendingCommands();
  ASSERT_EQ(1u, cmds.size());
  EXPECT_EQ(coordlog::Origin::TERMINATION, cmds[0].decide.origin);
  log_.ApplyAll();
  ASSERT_TRUE(answer.arrived);
  EXPECT_EQ(Decision::ABORTED, answer.reply.value.decision);
  EXPECT_EQ(1u, driver_->GetStats().terminations_adopted);
}

TEST_F(DriverTest, ThreePhasePastPrecommitResolveGetOutcomeAndAbortWaitForTheOutcome) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(0, k3pc);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer, k3pc);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  // The leader dies before any PreCommit arrives; a new one has not picked it up yet.
  channel_.Take("a:1");
  channel_.Take("b:1");
  driver_->StepDown();
  Start();
  driver_->BecomeLeader(2);
  log_.ApplyAll();
  EXPECT_EQ(1u, driver_->GetStats().phase_two_redriven);
  EXPECT_EQ("precommit@a:1 precommit@b:1", channel_.Describe());
  Answer<api::ResolveResponse> resolve;
  Resolve(txid, &resolve);
  ASSERT_TRUE(resolve.arrived);
  EXPECT_EQ(Decision::PENDING, resolve.reply.value.decision) << "presumed abort after PRECOMMIT";
  Answer<api::GetOutcomeResponse> outcome;
  GetOutcome(txid, &outcome);
  ASSERT_TRUE(outcome.arrived);
  EXPECT_EQ(Decision::PENDING, outcome.reply.value.decision);
  Answer<api::AbortTransactionResponse> abort;
  Abort(txid, {"a", "b"}, &abort);
  EXPECT_FALSE(abort.arrived);
  EXPECT_EQ("", PendingKinds()) << "a client's ABORT after PRECOMMIT";
  channel_.PreCommitState("a:1", api::TxState::PRECOMMITTED);
  channel_.PreCommitState("b:1", api::TxState::PRECOMMITTED);
  log_.ApplyAll();
  ASSERT_TRUE(abort.arrived);
  EXPECT_EQ(Decision::COMMITTED, abort.reply.value.decision);
}

TEST_F(DriverTest, ThreePhaseAbortLosingToAPrecommitLoggedFirstContinuesTheProtocol) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(0, k3pc);
  // An earlier leader logged PRECOMMIT; this one has a Commit collecting votes, which a NO
  // (a participant that had meanwhile forgotten it, say) turns into an ABORT proposal.
  {
    coordlog::Entry e;
    coordlog::Command c;
    coordlog::PreCommit pc;
    pc.txid = txid;
    for (std::string n : {"a", "b"}) {
      coordlog::Participant p;
      p.name = n;
      p.address = n + ":1";
      p.vote = coordlog::Vote::YES;
      p.notify = true;
      pc.participants.push_back(p);
    }
    c.__set_precommit(pc);
    e.commands.push_back(c);
    Answer<api::CommitTransactionResponse> answer;
    Commit(txid, {"a", "b"}, &answer, k3pc);
    channel_.Vote("a:1", api::Vote::YES);
    log_.set_index(log_.index() + 1);
    ASSERT_TRUE(state_.Apply(log_.index(), EncodeEntry(e)).ok());
    channel_.Vote("b:1", api::Vote::NO);
    EXPECT_EQ("ABORT", PendingKinds());
    log_.ApplyAll();
    EXPECT_FALSE(answer.arrived);
    EXPECT_EQ(TxnKnowledge::kPreCommitted, Lookup(txid).knowledge);
    EXPECT_EQ("precommit@a:1 precommit@b:1", channel_.Describe());
    channel_.PreCommitState("a:1", api::TxState::PRECOMMITTED);
    channel_.PreCommitState("b:1", api::TxState::PRECOMMITTED);
    log_.ApplyAll();
    ASSERT_TRUE(answer.arrived);
    EXPECT_EQ(Decision::COMMITTED, answer.reply.value.decision);
  }
}

TEST_F(DriverTest, ListTransactionsShowsTheProtocolAndThePrecommitPhase) {
  BecomeLeaderWithParticipants();
  TxId txid = Begin(0, k3pc);
  Answer<api::CommitTransactionResponse> answer;
  Commit(txid, {"a", "b"}, &answer, k3pc);
  channel_.Vote("a:1", api::Vote::YES);
  channel_.Vote("b:1", api::Vote::YES);
  log_.ApplyAll();
  channel_.PreCommitState("a:1", api::TxState::PRECOMMITTED);
  api::ListTransactionsRequest req;
  Reply<api::ListTransactionsResponse> r = driver_->ListTransactions(req);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(1u, r.value.transactions.size());
  const api::TransactionView& v = r.value.transactions[0];
  EXPECT_EQ(k3pc, v.protocol);
  EXPECT_EQ(api::TransactionPhase::PRECOMMITTING, v.phase);
  ASSERT_EQ(2u, v.participants.size());
  EXPECT_TRUE(v.participants[0].acknowledged);
  EXPECT_TRUE(v.participants[1].waiting);
}

}  // namespace
}  // namespace tx::coordinator
