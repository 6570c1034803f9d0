// libtxclient against fake coordinators and participants served over real Thrift on loopback:
// leader discovery, NOT_LEADER redirects, retries across a coordinator restart, deadlines, a
// lost Commit reply resolved from the coordinator's log, Execute errors, and bad input.

#include "txclient/client.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <set>
#include <thread>

#include "client/coordinator_channel.h"
#include "tests/support/poll.h"
#include "tests/unit/client/fakes.h"

namespace tx::client {
namespace {

using std::chrono::milliseconds;
using testing::CoordinatorServer;
using testing::CuttingProxy;
using testing::FakeCoordinator;
using testing::FakeParticipant;
using testing::MakeTxError;
using testing::ParticipantServer;
using Clock = std::chrono::steady_clock;
using tx::testing::PollUntil;

ClientOptions FastOptions() {
  ClientOptions o;
  o.call_deadline = milliseconds(5'000);
  o.commit_deadline = milliseconds(5'000);
  o.connect_timeout = milliseconds(500);
  o.rpc_timeout = milliseconds(2'000);
  o.retry_initial = milliseconds(2);
  o.retry_max = milliseconds(20);
  return o;
}

std::unique_ptr<Client> MakeClient(const std::vector<std::string>& endpoints,
                                   ClientOptions options = FastOptions()) {
  StatusOr<std::unique_ptr<Client>> c = Client::Create(endpoints, options);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *std::move(c);
}

// A closed loopback port: bound, then released, so connects are refused.
std::string ClosedEndpoint() {
  CoordinatorServer s(std::make_shared<FakeCoordinator>());
  s.Start();
  std::string e = s.endpoint();
  s.Stop();
  return e;
}

// A leader and a participant "a" (plus "b") in its directory: the set-up most tests share.
struct Cluster {
  CoordinatorServer leader{std::make_shared<FakeCoordinator>()};
  ParticipantServer a{std::make_shared<FakeParticipant>()};
  ParticipantServer b{std::make_shared<FakeParticipant>()};

  Cluster() {
    a.Start();
    b.Start();
    leader.Start();
    std::lock_guard<std::mutex> lock(leader.handler().mu);
    leader.handler().directory = {Ref("a", a.endpoint()), Ref("b", b.endpoint())};
  }
  static api::ParticipantRef Ref(std::string name, std::string address) {
    api::ParticipantRef r;
    r.name = std::move(name);
    r.address = std::move(address);
    return r;
  }
  FakeCoordinator& coord() { return leader.handler(); }
};

// ---------------------------------------------------------------------------------------------
// Construction and bad input
// ---------------------------------------------------------------------------------------------

TEST(ClientCreate, RejectsBadEndpointsAndOptions) {
  EXPECT_EQ(StatusCode::kInvalidArgument, Client::Create({}).status().code());
  EXPECT_EQ(StatusCode::kInvalidArgument, Client::Create({"nonsense"}).status().code());
  EXPECT_EQ(StatusCode::kInvalidArgument, Client::Create({"127.0.0.1:0"}).status().code());
  EXPECT_EQ(StatusCode::kInvalidArgument,
            Client::Create({"127.0.0.1:7001", "127.0.0.1:7001"}).status().code());
  ClientOptions bad;
  bad.rpc_timeout = milliseconds(0);
  EXPECT_EQ(StatusCode::kInvalidArgument, Client::Create({"127.0.0.1:7001"}, bad).status().code());
  bad = ClientOptions();
  bad.retry_max = milliseconds(1);
  bad.retry_initial = milliseconds(10);
  EXPECT_EQ(StatusCode::kInvalidArgument, Client::Create({"127.0.0.1:7001"}, bad).status().code());
  Status s = Client::Create({"127.0.0.1:7001", "bad:port:x"}).status();
  EXPECT_NE(std::string::npos, s.message().find("bad:port:x")) << s.ToString();
}

TEST(ClientBegin, RejectsBadOptionsWithoutCallingTheCoordinator) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  TransactionOptions o;
  o.timeout = milliseconds(-1);
  EXPECT_EQ(StatusCode::kInvalidArgument, client->Begin(o).status().code());
  o.timeout = milliseconds(int64_t{1} << 40);
  EXPECT_EQ(StatusCode::kInvalidArgument, client->Begin(o).status().code());
  EXPECT_EQ(0, c.coord().Count("Begin"));
}

TEST(ClientBegin, PassesOptionsAndReportsTheCoordinatorsRefusal) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  TransactionOptions o;
  o.timeout = milliseconds(1234);
  StatusOr<Transaction> t = client->Begin(o);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(milliseconds(1234), t->timeout());
  EXPECT_EQ(100, t->txid());
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    ASSERT_EQ(1u, c.coord().begins.size());
    EXPECT_EQ(1234, c.coord().begins[0].options.timeout_ms);
  }
  o.protocol = Protocol::kThreePhase;
  StatusOr<Transaction> three = client->Begin(o);
  EXPECT_EQ(StatusCode::kInvalidArgument, three.status().code()) << three.status().ToString();
  EXPECT_NE(std::string::npos, three.status().message().find("TWO_PHASE"));
}

// ---------------------------------------------------------------------------------------------
// Leader discovery
// ---------------------------------------------------------------------------------------------

TEST(ClientLeader, FollowsNotLeaderHintStraightToTheLeader) {
  Cluster c;
  CoordinatorServer f1(std::make_shared<FakeCoordinator>());
  CoordinatorServer f2(std::make_shared<FakeCoordinator>());
  f1.Start();
  f2.Start();
  for (CoordinatorServer* f : {&f1, &f2}) {
    std::lock_guard<std::mutex> lock(f->handler().mu);
    f->handler().role = FakeCoordinator::Role::kFollower;
    f->handler().leader_hint = c.leader.endpoint();
  }
  // The leader is last in the list; the first follower's hint skips the second.
  auto client = MakeClient({f1.endpoint(), f2.endpoint(), c.leader.endpoint()});
  ASSERT_TRUE(client->Begin().ok());
  EXPECT_EQ(1, f1.handler().Count("Begin"));
  EXPECT_EQ(0, f2.handler().Count("Begin"));
  EXPECT_EQ(1, c.coord().Count("Begin"));
  EXPECT_EQ(1u, client->stats().redirects);
  EXPECT_EQ(c.leader.endpoint(), client->leader_guess());
  // The guess sticks: the next call goes straight to the leader.
  ASSERT_TRUE(client->Begin().ok());
  EXPECT_EQ(1, f1.handler().Count("Begin"));
  EXPECT_EQ(2, c.coord().Count("Begin"));
}

TEST(ClientLeader, LearnsALeaderThatWasNotConfigured) {
  Cluster c;
  CoordinatorServer f(std::make_shared<FakeCoordinator>());
  f.Start();
  {
    std::lock_guard<std::mutex> lock(f.handler().mu);
    f.handler().role = FakeCoordinator::Role::kFollower;
    f.handler().leader_hint = c.leader.endpoint();
  }
  auto client = MakeClient({f.endpoint()});
  ASSERT_TRUE(client->Begin().ok());
  EXPECT_EQ(c.leader.endpoint(), client->leader_guess());
}

TEST(ClientLeader, TriesTheNextReplicaWithoutAHint) {
  Cluster c;
  CoordinatorServer f(std::make_shared<FakeCoordinator>());
  f.Start();
  {
    std::lock_guard<std::mutex> lock(f.handler().mu);
    f.handler().role = FakeCoordinator::Role::kNoLeader;
  }
  auto client = MakeClient({f.endpoint(), c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(1, f.handler().Count("Begin"));
  EXPECT_EQ(0u, client->stats().redirects);
}

TEST(ClientLeader, SkipsAnUnreachableReplica) {
  Cluster c;
  auto client = MakeClient({ClosedEndpoint(), c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(c.leader.endpoint(), client->leader_guess());
}

TEST(ClientLeader, IgnoresAMalformedHint) {
  Cluster c;
  CoordinatorServer f(std::make_shared<FakeCoordinator>());
  f.Start();
  {
    std::lock_guard<std::mutex> lock(f.handler().mu);
    f.handler().role = FakeCoordinator::Role::kFollower;
    f.handler().leader_hint = "not an address";
  }
  auto client = MakeClient({f.endpoint(), c.leader.endpoint()});
  ASSERT_TRUE(client->Begin().ok());
  EXPECT_EQ(c.leader.endpoint(), client->leader_guess());
}

TEST(ClientLeader, BoundsTheReplicasLearnedFromHints) {
  // A broken replica that names a new "leader" on every answer must not grow the list of
  // replicas without bound: every hint points at another closed port.
  CoordinatorServer liar(std::make_shared<FakeCoordinator>());
  liar.Start();
  std::atomic<int> next{1};
  {
    std::lock_guard<std::mutex> lock(liar.handler().mu);
    liar.handler().role = FakeCoordinator::Role::kFollower;
    liar.handler().leader_hint_fn = [&] {
      return "127.0.0.1:" + std::to_string(next.fetch_add(1));
    };
  }
  internal::ChannelOptions o;
  o.retry_initial = milliseconds(1);
  o.retry_max = milliseconds(5);
  internal::CoordinatorChannel channel({liar.address()}, o);
  api::BeginResponse resp;
  internal::CallResult r = channel.Call(
      "Begin", [&](api::CoordinatorServiceClient& c) { c.Begin(resp, api::BeginRequest()); },
      Clock::now() + milliseconds(2'000));
  EXPECT_FALSE(r.answered());
  // More hints were offered than the list may hold (it starts with the liar itself).
  EXPECT_GT(next.load() - 1, static_cast<int>(internal::kMaxCoordinatorEndpoints))
      << "the liar was asked too rarely for the test to mean anything";
  EXPECT_EQ(internal::kMaxCoordinatorEndpoints, channel.endpoints().size());
}

// ---------------------------------------------------------------------------------------------
// Retries and deadlines
// ---------------------------------------------------------------------------------------------

TEST(ClientRetry, BeginSucceedsOnceARestartedCoordinatorServesAgain) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  ASSERT_TRUE(client->Begin().ok());
  c.leader.Stop();
  const uint64_t attempts_before = client->stats().attempts;
  std::future<StatusOr<Transaction>> begun =
      std::async(std::launch::async, [&] { return client->Begin(); });
  // The client keeps trying the dead address...
  ASSERT_TRUE(PollUntil([&] { return client->stats().attempts >= attempts_before + 3; },
                        milliseconds(5'000)));
  // ...and gets its answer from the restarted process on the same port.
  c.leader.Restart();
  StatusOr<Transaction> t = begun.get();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(2, c.coord().Count("Begin"));
}

TEST(ClientRetry, CallFailsWithDeadlineExceededWhenNoLeaderIsElected) {
  CoordinatorServer a(std::make_shared<FakeCoordinator>());
  CoordinatorServer b(std::make_shared<FakeCoordinator>());
  a.Start();
  b.Start();
  for (CoordinatorServer* s : {&a, &b}) {
    std::lock_guard<std::mutex> lock(s->handler().mu);
    s->handler().role = FakeCoordinator::Role::kNoLeader;
  }
  ClientOptions o = FastOptions();
  o.call_deadline = milliseconds(300);
  auto client = MakeClient({a.endpoint(), b.endpoint()}, o);
  const auto start = Clock::now();
  StatusOr<Transaction> t = client->Begin();
  const auto took = Clock::now() - start;
  EXPECT_EQ(StatusCode::kDeadlineExceeded, t.status().code()) << t.status().ToString();
  EXPECT_NE(std::string::npos, t.status().message().find("no leader is serving"))
      << t.status().ToString();
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, milliseconds(2'000));
  EXPECT_GE(a.handler().Count("Begin") + b.handler().Count("Begin"), 2);
}

TEST(ClientRetry, DeadlineCutsAnAttemptThatHangs) {
  // rpc_timeout is long, the call's deadline short: the attempt must end at the deadline, not
  // at rpc_timeout.
  Cluster c;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().begin_hook = [released] { released.wait_for(std::chrono::seconds(10)); };
  }
  ClientOptions o = FastOptions();
  o.rpc_timeout = milliseconds(10'000);
  o.call_deadline = milliseconds(300);
  auto client = MakeClient({c.leader.endpoint()}, o);
  const auto start = Clock::now();
  StatusOr<Transaction> t = client->Begin();
  const auto took = Clock::now() - start;
  release.set_value();
  EXPECT_EQ(StatusCode::kDeadlineExceeded, t.status().code()) << t.status().ToString();
  EXPECT_LT(took, milliseconds(2'000));
}

// ---------------------------------------------------------------------------------------------
// Commit, and an ambiguous Commit resolved from the log
// ---------------------------------------------------------------------------------------------

TEST(ClientCommit, SendsTheParticipantsInFirstUseOrder) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("b", "UPDATE x SET v = 1").ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 2").ok());
  ASSERT_TRUE(t->Execute("b", "UPDATE x SET v = 3").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->committed());
  EXPECT_EQ(Transaction::State::kCommitted, t->state());
  std::lock_guard<std::mutex> lock(c.coord().mu);
  ASSERT_EQ(1u, c.coord().commits.size());
  EXPECT_EQ((std::vector<std::string>{"b", "a"}), c.coord().commits[0].participants);
  EXPECT_EQ(t->txid(), c.coord().commits[0].txid);
}

TEST(ClientCommit, NotLeaderAnswerIsFollowedWithoutAskingForTheOutcome) {
  // A follower's NOT_LEADER means it did nothing with the Commit: no ambiguity to resolve.
  Cluster c;
  CoordinatorServer follower(std::make_shared<FakeCoordinator>());
  follower.Start();
  auto client = MakeClient({c.leader.endpoint(), follower.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  // Leadership moves before the Commit: the old leader now points at the new one.
  {
    std::lock_guard<std::mutex> lock(follower.handler().mu);
    follower.handler().directory = c.coord().directory;
  }
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().role = FakeCoordinator::Role::kFollower;
    c.coord().leader_hint = follower.endpoint();
  }
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->committed());
  EXPECT_EQ(1, follower.handler().Count("Commit"));
  EXPECT_EQ(0, follower.handler().Count("GetOutcome"));
  EXPECT_EQ(0u, client->stats().commits_resolved);
}

TEST(ClientCommit, AbortedOutcomeCarriesTheReason) {
  Cluster c;
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().commit_decision = api::Decision::ABORTED;
  }
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->committed());
  EXPECT_EQ(StatusCode::kConflict, r->reason_code);
  EXPECT_NE(std::string::npos, r->reason.find("voted NO"));
  // Repeating Commit answers the same outcome without asking again.
  StatusOr<CommitResult> again = t->Commit();
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->committed());
  EXPECT_EQ(1, c.coord().Count("Commit"));
}

// The coordinator decides, then the connection breaks before the reply gets out.
struct LostCommitReply {
  Cluster c;
  CuttingProxy proxy{c.leader.address()};
  std::unique_ptr<Client> client = MakeClient({proxy.endpoint()});

  explicit LostCommitReply(bool decide_before_cut) {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().decide_before_commit_hook = decide_before_cut;
    c.coord().commit_hook = [this](int64_t) {
      // Only the first Commit loses its reply.
      if (proxy.cuts() == 0) proxy.CutAll();
    };
  }
};

TEST(ClientCommit, LostReplyOfACommittedTransactionIsLearnedFromTheLog) {
  LostCommitReply f(/*decide_before_cut=*/true);
  StatusOr<Transaction> t = f.client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  ASSERT_TRUE(t->Execute("b", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->committed());
  EXPECT_EQ(1, f.proxy.cuts());
  // Resolved by asking, not by committing again.
  EXPECT_EQ(1, f.c.coord().Count("Commit"));
  EXPECT_GE(f.c.coord().Count("GetOutcome"), 1);
  EXPECT_EQ(1u, f.client->stats().commits_resolved);
}

TEST(ClientCommit, LostReplyOfAnAbortedTransactionIsLearnedFromTheLog) {
  LostCommitReply f(/*decide_before_cut=*/true);
  {
    std::lock_guard<std::mutex> lock(f.c.coord().mu);
    f.c.coord().commit_decision = api::Decision::ABORTED;
  }
  StatusOr<Transaction> t = f.client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->committed());
  EXPECT_EQ(StatusCode::kConflict, r->reason_code);
  EXPECT_EQ(1, f.c.coord().Count("Commit"));
}

TEST(ClientCommit, LostReplyBeforeAnyDecisionIsCompletedByARepeatedCommit) {
  LostCommitReply f(/*decide_before_cut=*/false);
  // The first Commit is cut before it decides, so the log holds nothing for the txid...
  {
    std::lock_guard<std::mutex> lock(f.c.coord().mu);
    f.c.coord().commit_hook = [&](int64_t) {
      if (f.proxy.cuts() == 0) {
        f.proxy.CutAll();
        throw MakeTxError(api::ErrorCode::UNAVAILABLE, "stepping down");
      }
    };
  }
  StatusOr<Transaction> t = f.client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->committed());
  // ...so the client asked first (UNDECIDED), and only then committed again.
  std::lock_guard<std::mutex> lock(f.c.coord().mu);
  std::vector<std::string> tail;
  for (const std::string& call : f.c.coord().calls) {
    if (call == "Commit" || call == "GetOutcome") tail.push_back(call);
  }
  EXPECT_EQ((std::vector<std::string>{"Commit", "GetOutcome", "Commit"}), tail);
}

TEST(ClientCommit, PendingOutcomeJoinsTheCommitInProgress) {
  LostCommitReply f(/*decide_before_cut=*/false);
  {
    std::lock_guard<std::mutex> lock(f.c.coord().mu);
    f.c.coord().get_outcome_script = {api::Decision::PENDING};
  }
  StatusOr<Transaction> t = f.client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->committed());
  EXPECT_EQ(2, f.c.coord().Count("Commit"));
  EXPECT_EQ(1, f.c.coord().Count("GetOutcome"));
}

TEST(ClientCommit, LeaderFailoverMidCommitIsResolvedAtTheNewLeader) {
  // The old leader logs COMMIT and "crashes" (its connections cut; from then on it answers
  // NOT_LEADER naming the new leader, which has the decision in its log).
  Cluster c;
  CoordinatorServer next(std::make_shared<FakeCoordinator>());
  next.Start();
  CuttingProxy proxy(c.leader.address());
  std::unique_lock<std::mutex> setting(c.coord().mu);
  c.coord().commit_hook = [&](int64_t txid) {
    {
      std::lock_guard<std::mutex> lock(next.handler().mu);
      next.handler().decided[txid] = api::Decision::COMMITTED;
    }
    {
      std::lock_guard<std::mutex> lock(c.coord().mu);
      c.coord().role = FakeCoordinator::Role::kFollower;
      c.coord().leader_hint = next.endpoint();
    }
    proxy.CutAll();
  };
  setting.unlock();
  auto client = MakeClient({proxy.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  ASSERT_TRUE(t->Execute("b", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->committed());
  EXPECT_EQ(next.endpoint(), client->leader_guess());
  EXPECT_EQ(0, next.handler().Count("Commit"));
  EXPECT_EQ(1, next.handler().Count("GetOutcome"));
}

TEST(ClientCommit, OutcomeUnknownAtTheDeadlineAndResolvedByCallingCommitAgain) {
  LostCommitReply f(/*decide_before_cut=*/true);
  ClientOptions o = FastOptions();
  o.commit_deadline = milliseconds(300);
  f.client = MakeClient({f.proxy.endpoint()}, o);
  // After the lost reply the coordinators answer nothing useful for a while.
  {
    std::lock_guard<std::mutex> lock(f.c.coord().mu);
    f.c.coord().commit_hook = [&](int64_t) {
      f.proxy.CutAll();
      std::lock_guard<std::mutex> relock(f.c.coord().mu);
      f.c.coord().role = FakeCoordinator::Role::kNoLeader;
    };
  }
  StatusOr<Transaction> t = f.client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  EXPECT_EQ(StatusCode::kOutcomeUnknown, r.status().code()) << r.status().ToString();
  EXPECT_EQ(Transaction::State::kOutcomeUnknown, t->state());
  EXPECT_EQ(1, f.c.coord().Count("Commit"));
  // Executing is over; aborting cannot be promised either.
  EXPECT_EQ(StatusCode::kFailedPrecondition, t->Execute("a", "SELECT 1").status().code());
  {
    std::lock_guard<std::mutex> lock(f.c.coord().mu);
    f.c.coord().role = FakeCoordinator::Role::kLeader;
  }
  StatusOr<CommitResult> again = t->Commit();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->committed());
  EXPECT_EQ(1, f.c.coord().Count("Commit"));
}

TEST(ClientCommit, UnreachableClusterIsDeadlineExceededAndNotCommitted) {
  Cluster c;
  ClientOptions o = FastOptions();
  o.commit_deadline = milliseconds(300);
  o.call_deadline = milliseconds(300);  // also bounds the destructor's Abort
  auto client = MakeClient({c.leader.endpoint()}, o);
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  c.leader.Stop();
  StatusOr<CommitResult> r = t->Commit();
  // Nothing reached a coordinator: not "unknown", just not done.
  EXPECT_EQ(StatusCode::kDeadlineExceeded, r.status().code()) << r.status().ToString();
  EXPECT_EQ(Transaction::State::kActive, t->state());
}

// ---------------------------------------------------------------------------------------------
// Execute
// ---------------------------------------------------------------------------------------------

TEST(ClientExecute, SendsTypedParametersAndReturnsTypedValues) {
  Cluster c;
  c.a.handler().on_execute = [](const api::ExecuteRequest& req, api::ExecuteResponse& out) {
    api::ResultSet rs;
    rs.columns = {"i", "r", "t", "b", "n"};
    api::Row row;
    row.values.resize(5);
    row.values[0].__set_integer(7);
    row.values[1].__set_real(1.5);
    row.values[2].__set_text("it's");
    row.values[3].__set_blob(std::string("\x00\xff", 2));
    row.values[4].__set_null_value(api::Null());
    rs.rows.push_back(row);
    out.results.assign(req.statements.size(), rs);
  };
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  StatusOr<ResultSet> rs = t->Execute(
      "a", "SELECT ?, ?, ?, ?, ?", {42, 2.5, "text", Value::Blob(std::string("\x01", 1)), nullptr});
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  ASSERT_EQ(1u, rs->rows.size());
  const Row& row = rs->rows[0];
  EXPECT_EQ(7, row[0].integer());
  EXPECT_EQ(1.5, row[1].real());
  EXPECT_EQ("it's", row[2].text());
  EXPECT_EQ(std::string("\x00\xff", 2), row[3].blob());
  EXPECT_TRUE(row[4].is_null());
  EXPECT_EQ(1, rs->ColumnIndex("r"));
  EXPECT_EQ(-1, rs->ColumnIndex("nope"));
  EXPECT_EQ("'it''s'", row[2].ToString());
  EXPECT_EQ("x'00ff'", row[3].ToString());
  std::lock_guard<std::mutex> lock(c.a.handler().mu);
  ASSERT_EQ(1u, c.a.handler().executes.size());
  const api::ExecuteRequest& req = c.a.handler().executes[0];
  EXPECT_EQ(t->txid(), req.txid);
  ASSERT_EQ(5u, req.statements[0].params.size());
  EXPECT_EQ(42, req.statements[0].params[0].integer);
  EXPECT_EQ(2.5, req.statements[0].params[1].real);
  EXPECT_EQ("text", req.statements[0].params[2].text);
  EXPECT_TRUE(req.statements[0].params[3].__isset.blob);
  EXPECT_TRUE(req.statements[0].params[4].__isset.null_value);
}

TEST(ClientExecute, NamedParametersAndBatches) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->ExecuteNamed("a", "UPDATE x SET v = :v", {{"v", 3}}).ok());
  StatusOr<std::vector<ResultSet>> batch =
      t->ExecuteBatch("a", {{"UPDATE x SET v = 1", {}, {}}, {"UPDATE x SET v = ?", {2}, {}}});
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_EQ(2u, batch->size());
  std::lock_guard<std::mutex> lock(c.a.handler().mu);
  ASSERT_EQ(2u, c.a.handler().executes.size());
  EXPECT_EQ(3, c.a.handler().executes[0].statements[0].named_params.at("v").integer);
  EXPECT_EQ(2u, c.a.handler().executes[1].statements.size());
}

TEST(ClientExecute, UnknownParticipantIsNotFoundAfterOneDirectoryRefresh) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  StatusOr<ResultSet> rs = t->Execute("nobody", "SELECT 1");
  EXPECT_EQ(StatusCode::kNotFound, rs.status().code()) << rs.status().ToString();
  EXPECT_NE(std::string::npos, rs.status().message().find("nobody"));
  EXPECT_FALSE(rs.status().transaction_aborted());
  EXPECT_EQ(1, c.coord().Count("GetDirectory"));
  // The transaction goes on.
  EXPECT_TRUE(t->Execute("a", "SELECT 1").ok());
}

TEST(ClientExecute, ParticipantRegisteredAfterBeginIsFoundByRefreshingTheDirectory) {
  Cluster c;
  ParticipantServer late(std::make_shared<FakeParticipant>());
  late.Start();
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().directory.push_back(Cluster::Ref("late", late.endpoint()));
    ++c.coord().directory_version;
  }
  ASSERT_TRUE(t->Execute("late", "SELECT 1").ok());
  EXPECT_EQ(1u, late.handler().execute_count());
}

TEST(ClientExecute, ParticipantThatMovedIsFoundAtItsNewAddress) {
  Cluster c;
  const std::string old_address = ClosedEndpoint();
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().directory = {Cluster::Ref("a", old_address)};
  }
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  // Re-registered at its new address while the client still has the old one.
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().directory = {Cluster::Ref("a", c.a.endpoint())};
    ++c.coord().directory_version;
  }
  StatusOr<ResultSet> rs = t->Execute("a", "SELECT 1");
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  EXPECT_EQ(1u, c.a.handler().execute_count());
}

TEST(ClientExecute, ErrorThatAbortsTheTransactionEndsItAborted) {
  Cluster c;
  c.b.handler().on_execute = [](const api::ExecuteRequest&, api::ExecuteResponse&) {
    throw MakeTxError(api::ErrorCode::CONFLICT, "row 7 was written by a later commit", true);
  };
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<ResultSet> rs = t->Execute("b", "UPDATE x SET v = 1");
  EXPECT_EQ(StatusCode::kConflict, rs.status().code());
  EXPECT_TRUE(rs.status().transaction_aborted());
  EXPECT_NE(std::string::npos, rs.status().message().find("row 7"));
  StatusOr<ResultSet> later = t->Execute("a", "SELECT 1");
  EXPECT_EQ(StatusCode::kAborted, later.status().code());
  EXPECT_TRUE(later.status().transaction_aborted());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->committed());
  EXPECT_EQ(StatusCode::kConflict, r->reason_code);
  EXPECT_EQ(Transaction::State::kAborted, t->state());
  // The coordinator was told to abort (releasing "a"'s locks), never to commit.
  EXPECT_EQ(0, c.coord().Count("Commit"));
  std::lock_guard<std::mutex> lock(c.coord().mu);
  ASSERT_EQ(1u, c.coord().aborts.size());
  EXPECT_EQ((std::vector<std::string>{"a", "b"}), c.coord().aborts[0].participants);
}

TEST(ClientExecute, ErrorThatKeepsTheTransactionLetsItContinue) {
  Cluster c;
  std::atomic<int> calls{0};
  c.a.handler().on_execute = [&](const api::ExecuteRequest& req, api::ExecuteResponse& out) {
    if (calls.fetch_add(1) == 0) {
      throw MakeTxError(api::ErrorCode::CONSTRAINT_VIOLATION, "UNIQUE constraint failed", false);
    }
    out.results.resize(req.statements.size());
  };
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  StatusOr<ResultSet> rs = t->Execute("a", "INSERT INTO x VALUES (1)");
  EXPECT_EQ(StatusCode::kConstraintViolation, rs.status().code());
  EXPECT_FALSE(rs.status().transaction_aborted());
  ASSERT_TRUE(t->Execute("a", "INSERT INTO x VALUES (2)").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->committed());
}

TEST(ClientExecute, NumbersEachParticipantsExecutesSoRestartsAndDuplicatesAreCaught) {
  Cluster c;
  std::atomic<int> calls{0};
  c.a.handler().on_execute = [&](const api::ExecuteRequest& req, api::ExecuteResponse& out) {
    if (calls.fetch_add(1) == 1) {
      throw MakeTxError(api::ErrorCode::CONSTRAINT_VIOLATION, "UNIQUE constraint failed", false);
    }
    out.results.resize(req.statements.size());
  };
  c.b.handler().on_execute = [&](const api::ExecuteRequest& req, api::ExecuteResponse& out) {
    out.results.resize(req.statements.size());
  };
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "SELECT 1").ok());
  EXPECT_FALSE(t->Execute("a", "INSERT INTO x VALUES (1)").ok());  // answered: still counted
  ASSERT_TRUE(t->Execute("b", "SELECT 1").ok());
  ASSERT_TRUE(t->Execute("a", "SELECT 2").ok());
  std::lock_guard lock_a(c.a.handler().mu);
  ASSERT_EQ(3u, c.a.handler().executes.size());
  for (int32_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.a.handler().executes[i].__isset.sequence);
    EXPECT_EQ(i, c.a.handler().executes[i].sequence);
  }
  std::lock_guard lock_b(c.b.handler().mu);
  ASSERT_EQ(1u, c.b.handler().executes.size());
  EXPECT_EQ(0, c.b.handler().executes[0].sequence);
}

TEST(ClientExecute, LostReplyAbortsTheTransactionInsteadOfGuessing) {
  Cluster c;
  CuttingProxy proxy(c.a.address());
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    c.coord().directory = {Cluster::Ref("a", proxy.endpoint())};
  }
  c.a.handler().on_execute = [&](const api::ExecuteRequest& req, api::ExecuteResponse& out) {
    out.results.resize(req.statements.size());
    proxy.CutAll();  // ran, but the reply is lost
  };
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  StatusOr<ResultSet> rs = t->Execute("a", "UPDATE x SET v = v + 1");
  EXPECT_EQ(StatusCode::kUnavailable, rs.status().code()) << rs.status().ToString();
  EXPECT_TRUE(rs.status().transaction_aborted());
  EXPECT_EQ(1u, c.a.handler().execute_count());  // not repeated: Execute is not idempotent
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->committed());
  EXPECT_EQ(0, c.coord().Count("Commit"));
  EXPECT_EQ(1, c.coord().Count("Abort"));
}

TEST(ClientExecute, MalformedValueFromAServerIsAnErrorNotACrash) {
  Cluster c;
  c.a.handler().on_execute = [](const api::ExecuteRequest&, api::ExecuteResponse& out) {
    api::ResultSet rs;
    rs.columns = {"x"};
    rs.rows.resize(1);
    rs.rows[0].values.resize(1);  // a Value with no field set
    out.results.push_back(rs);
  };
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  StatusOr<ResultSet> rs = t->Execute("a", "SELECT x");
  EXPECT_EQ(StatusCode::kInternal, rs.status().code()) << rs.status().ToString();
  EXPECT_TRUE(rs.status().transaction_aborted());
  // A reply with the wrong number of results is refused the same way.
  c.b.handler().on_execute = [](const api::ExecuteRequest&, api::ExecuteResponse&) {};
  StatusOr<Transaction> t2 = client->Begin();
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(StatusCode::kInternal, t2->Execute("b", "SELECT 1").status().code());
}

TEST(ClientExecute, RejectsBadUse) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(StatusCode::kInvalidArgument, t->ExecuteBatch("a", {}).status().code());
  // A 65th participant.
  {
    std::lock_guard<std::mutex> lock(c.coord().mu);
    for (int i = 0; i < 65; ++i) {
      c.coord().directory.push_back(Cluster::Ref(fmt::format("p{}", i), c.a.endpoint()));
    }
    ++c.coord().directory_version;
  }
  StatusOr<Transaction> wide = client->Begin();
  ASSERT_TRUE(wide.ok());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(wide->Execute(fmt::format("p{}", i), "SELECT 1").ok()) << i;
  }
  EXPECT_EQ(StatusCode::kTooLarge, wide->Execute("p64", "SELECT 1").status().code());
  EXPECT_TRUE(wide->Execute("p3", "SELECT 1").ok());  // one already in: fine
  // After the outcome, no more statements; Abort of a committed transaction is refused.
  ASSERT_TRUE(t->Execute("a", "SELECT 1").ok());
  ASSERT_TRUE(t->Commit().ok());
  EXPECT_EQ(StatusCode::kFailedPrecondition, t->Execute("a", "SELECT 1").status().code());
  EXPECT_EQ(StatusCode::kFailedPrecondition, t->Abort().code());
  // A moved-from transaction refuses everything.
  Transaction moved = std::move(*wide);
  EXPECT_EQ(StatusCode::kFailedPrecondition, wide->Execute("a", "SELECT 1").status().code());
  EXPECT_EQ(0, wide->txid());
  EXPECT_TRUE(moved.Abort().ok());
}

// ---------------------------------------------------------------------------------------------
// Abort, abandonment, sharing
// ---------------------------------------------------------------------------------------------

TEST(ClientTransaction, AbortTellsTheCoordinatorWithTheParticipants) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  ASSERT_TRUE(t->Abort().ok());
  EXPECT_EQ(Transaction::State::kAborted, t->state());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->committed());
  EXPECT_EQ(0, c.coord().Count("Commit"));
  std::lock_guard<std::mutex> lock(c.coord().mu);
  ASSERT_EQ(1u, c.coord().aborts.size());
  EXPECT_EQ((std::vector<std::string>{"a"}), c.coord().aborts[0].participants);
}

TEST(ClientTransaction, DestroyingAnActiveTransactionAbortsIt) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  {
    StatusOr<Transaction> t = client->Begin();
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(t->Execute("b", "UPDATE x SET v = 1").ok());
  }
  EXPECT_EQ(1, c.coord().Count("Abort"));
  // One that touched nothing costs no call.
  { ASSERT_TRUE(client->Begin().ok()); }
  EXPECT_EQ(1, c.coord().Count("Abort"));
}

TEST(ClientTransaction, OutlivesItsClient) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<Transaction> t = client->Begin();
  ASSERT_TRUE(t.ok());
  client.reset();
  ASSERT_TRUE(t->Execute("a", "UPDATE x SET v = 1").ok());
  StatusOr<CommitResult> r = t->Commit();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->committed());
}

TEST(ClientTransaction, ManyThreadsShareOneClient) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  constexpr int kThreads = 8;
#ifdef TX_SANITIZE_BUILD
  constexpr int kPerThread = 10;
#else
  constexpr int kPerThread = 50;
#endif
  std::atomic<int> committed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < kPerThread; ++k) {
        StatusOr<Transaction> t = client->Begin();
        if (!t.ok()) continue;
        if (!t->Execute("a", "UPDATE x SET v = 1").ok()) continue;
        if (!t->Execute("b", "UPDATE x SET v = 1").ok()) continue;
        StatusOr<CommitResult> r = t->Commit();
        if (r.ok() && r->committed()) committed.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(kThreads * kPerThread, committed.load());
  std::lock_guard<std::mutex> lock(c.coord().mu);
  std::set<int64_t> txids;
  for (const auto& commit : c.coord().commits) txids.insert(commit.txid);
  EXPECT_EQ(static_cast<size_t>(kThreads * kPerThread), txids.size());
}

TEST(ClientDirectory, ListAndRegisterParticipants) {
  Cluster c;
  auto client = MakeClient({c.leader.endpoint()});
  StatusOr<std::vector<ParticipantInfo>> list = client->ListParticipants();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(2u, list->size());
  EXPECT_EQ("a", (*list)[0].name);
  EXPECT_EQ(c.a.endpoint(), (*list)[0].address);
  ASSERT_TRUE(client->RegisterParticipant("c", "127.0.0.1:9").ok());
  std::lock_guard<std::mutex> lock(c.coord().mu);
  ASSERT_EQ(1u, c.coord().registrations.size());
  EXPECT_EQ("c", c.coord().registrations[0].participant.name);
}

// ---------------------------------------------------------------------------------------------
// Values and Status
// ---------------------------------------------------------------------------------------------

TEST(ClientValue, TypesComparisonAndDisplay) {
  EXPECT_TRUE(Value().is_null());
  EXPECT_TRUE(Value(nullptr).is_null());
  EXPECT_EQ(Value::Type::kInteger, Value(int8_t{3}).type());
  EXPECT_EQ(Value::Type::kInteger, Value(uint32_t{3}).type());
  EXPECT_EQ(1, Value(true).integer());
  EXPECT_EQ(Value::Type::kReal, Value(0.5).type());
  EXPECT_EQ(Value::Type::kText, Value("x").type());
  EXPECT_EQ(Value::Type::kText, Value(std::string("x")).type());
  EXPECT_EQ(Value::Type::kBlob, Value::Blob("x").type());
  EXPECT_NE(Value("x"), Value::Blob("x"));
  EXPECT_EQ(Value(5), Value(int64_t{5}));
  EXPECT_EQ("NULL", Value().ToString());
  EXPECT_STREQ("BLOB", TypeName(Value::Type::kBlob));
}

TEST(ClientValueDeathTest, ReadingTheWrongTypeStopsWithAMessage) {
  EXPECT_DEATH((void)Value("text").integer(), "reading a TEXT value as INTEGER");
  StatusOr<int> err = Status(StatusCode::kConflict, "lost");
  EXPECT_DEATH((void)err.value(), "Conflict: lost");
}

TEST(ClientStatus, CodesAndMessages) {
  Status s(StatusCode::kLockTimeout, "waited 5000 ms", true);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.transaction_aborted());
  EXPECT_EQ("LockTimeout: waited 5000 ms", s.ToString());
  EXPECT_EQ("OK", Status().ToString());
  EXPECT_EQ("Unknown(999)", StatusCodeName(static_cast<StatusCode>(999)));
  EXPECT_STREQ("0.1.0", LibraryVersion());
}

}  // namespace
}  // namespace tx::client
