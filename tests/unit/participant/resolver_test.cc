// The Resolve loop against a scripted outcome source, with a fake clock.

#include "participant/resolver.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "tests/support/temp_dir.h"

namespace tx::participant {
namespace {

using std::chrono::milliseconds;
using Decision = OutcomeSource::Decision;

class ScriptedSource final : public OutcomeSource {
 public:
  void Set(TxId txid, StatusOr<Decision> answer) {
    std::lock_guard<std::mutex> lock(mu_);
    answers_.insert_or_assign(txid, std::move(answer));
  }
  int asked(TxId txid) {
    std::lock_guard<std::mutex> lock(mu_);
    return asked_[txid];
  }
  StatusOr<Decision> Resolve(TxId txid) override {
    std::lock_guard<std::mutex> lock(mu_);
    asked_[txid]++;
    auto it = answers_.find(txid);
    if (it == answers_.end()) return Status::Unavailable("no coordinator");
    return it->second;
  }

 private:
  std::mutex mu_;
  std::map<TxId, StatusOr<Decision>> answers_;
  std::map<TxId, int> asked_;
};

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    Options o;
    o.db_path = dir_.path() + "/p.db";
    o.clock = &clock_;
    o.init_sql =
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v INT);"
        "INSERT OR IGNORE INTO t VALUES (1, 0), (2, 0), (3, 0);";
    auto p = Participant::Open(o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    p_ = std::move(p).value();
  }
  void Prepare(TxId txid) {
    std::vector<Statement> s = {{"UPDATE t SET v = v + 1 WHERE id = ?", {txid}, {}}};
    ASSERT_TRUE(p_->Execute(txid, s, nullptr, std::nullopt).ok());
    Result<Vote> v = p_->Prepare(txid, nullptr);
    ASSERT_TRUE(v.ok() && v.value().kind == Vote::Kind::kYes);
  }
  TxnState State(TxId txid) { return p_->GetStatus(txid).value().state; }

  ResolverOptions Options10s() {
    ResolverOptions o;
    o.resolve_after = milliseconds(10000);
    o.initial_backoff = milliseconds(100);
    o.max_backoff = milliseconds(400);
    return o;
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Participant> p_;
  ScriptedSource source_;
};

TEST_F(ResolverTest, AsksOnlyOnceTheOutcomeIsOverdueAndAppliesIt) {
  Prepare(1);
  Prepare(2);
  source_.Set(1, Decision::kCommitted);
  source_.Set(2, Decision::kAborted);
  Resolver r(p_.get(), &source_, Options10s(), &clock_);
  EXPECT_EQ(0, r.RunOnce());
  EXPECT_EQ(0, source_.asked(1));  // the coordinator's phase two may still be on its way
  clock_.Advance(milliseconds(10000));
  EXPECT_EQ(2, r.RunOnce());
  EXPECT_EQ(TxnState::kCommitted, State(1));
  EXPECT_EQ(TxnState::kAborted, State(2));
  EXPECT_EQ(0, r.RunOnce());
  EXPECT_EQ(1, source_.asked(1));
}

TEST_F(ResolverTest, PendingAndErrorsAreRetriedWithBackoff) {
  Prepare(3);
  source_.Set(3, Decision::kPending);
  Resolver r(p_.get(), &source_, Options10s(), &clock_);
  clock_.Advance(milliseconds(10000));
  EXPECT_EQ(0, r.RunOnce());
  EXPECT_EQ(1, source_.asked(3));
  EXPECT_EQ(0, r.RunOnce());  // backing off: not asked again at once
  EXPECT_EQ(1, source_.asked(3));
  clock_.Advance(milliseconds(100));
  EXPECT_EQ(0, r.RunOnce());
  EXPECT_EQ(2, source_.asked(3));
  source_.Set(3, Status::Unavailable("leader election"));
  clock_.Advance(milliseconds(400));
  EXPECT_EQ(0, r.RunOnce());
  EXPECT_EQ(3, source_.asked(3));
  EXPECT_EQ(TxnState::kPrepared, State(3));  // never decided here
  source_.Set(3, Decision::kCommitted);
  clock_.Advance(milliseconds(400));
  EXPECT_EQ(1, r.RunOnce());
  EXPECT_EQ(TxnState::kCommitted, State(3));
}

TEST_F(ResolverTest, RecoveredTransactionsAreAskedAtOnce) {
  Prepare(1);
  Prepare(2);
  p_.reset();
  Open();
  source_.Set(1, Decision::kCommitted);
  source_.Set(2, Decision::kAborted);
  Resolver r(p_.get(), &source_, Options10s(), &clock_);
  r.Start();  // no time passes: recovery alone makes them due
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (State(1) != TxnState::kCommitted || State(2) != TxnState::kAborted) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "not resolved";
    std::this_thread::sleep_for(milliseconds(1));
  }
  r.Stop();
}

TEST_F(ResolverTest, OutcomeDeliveredMeanwhileIsNotAskedAgain) {
  Prepare(1);
  source_.Set(1, Decision::kPending);
  Resolver r(p_.get(), &source_, Options10s(), &clock_);
  clock_.Advance(milliseconds(10000));
  EXPECT_EQ(0, r.RunOnce());
  ASSERT_TRUE(p_->Commit(1).ok());  // the coordinator's Commit arrives after all
  clock_.Advance(milliseconds(1000));
  EXPECT_EQ(0, r.RunOnce());
  EXPECT_EQ(1, source_.asked(1));
}

}  // namespace
}  // namespace tx::participant
