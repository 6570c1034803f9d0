// libtxclient and examples/bank against a real cluster (three txcoord, two txpart, loopback,
// real SQLite files and fsync), with the coordinator leader killed by SIGKILL in the middle.
// What committed is judged from the SQLite files, not from what the client says.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "tests/integration/client_harness.h"
#include "txclient/client.h"

namespace tx::client {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::LocalCluster;
using testing::PollUntil;
using testing::SqliteFile;
using Clock = std::chrono::steady_clock;

// examples/bank/schema.sql, plus a table of applied transfers for the library test.
constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS transfers(txid INTEGER PRIMARY KEY, amount INTEGER NOT NULL);";

constexpr int64_t kInitialBalance = 1000;

int64_t TotalInFiles(LocalCluster& cluster) {
  int64_t total = 0;
  for (int i = 0; i < LocalCluster::kParticipants; ++i) {
    total += SqliteFile(cluster.db_path(i)).Int("SELECT COALESCE(SUM(balance), 0) FROM accounts");
  }
  return total;
}

// No txid committed at one participant and aborted at the other, from their own tables.
void ExpectNoSplitOutcomes(LocalCluster& cluster) {
  std::map<int64_t, int64_t> even = cluster.Outcomes(0);
  std::map<int64_t, int64_t> odd = cluster.Outcomes(1);
  int both = 0;
  for (const auto& [txid, outcome] : even) {
    auto it = odd.find(txid);
    if (it == odd.end()) continue;
    ++both;
    EXPECT_EQ(outcome, it->second) << "txid " << txid << " has different outcomes";
  }
  EXPECT_GT(both, 0) << "no transaction touched both participants";
}

// Waits until the restarted replica `id` follows the current leader and has applied what the
// leader had committed when we started waiting.
void ExpectRejoins(LocalCluster& cluster, int id) {
  int leader = cluster.LeaderId(seconds(10));
  ASSERT_NE(0, leader);
  std::optional<api::ClusterStatusResponse> at_start = cluster.StatusOf(leader);
  ASSERT_TRUE(at_start.has_value());
  EXPECT_TRUE(PollUntil(
      [&] {
        std::optional<api::ClusterStatusResponse> s = cluster.StatusOf(id);
        return s && s->role == "follower" && s->term >= at_start->term &&
               s->applied_index >= at_start->commit_index;
      },
      seconds(30)))
      << "replica " << id << " did not catch up";
}

TEST(ClientFailover, BankExampleKeepsItsTotalThroughALeaderKill) {
  LocalCluster cluster(kSchema);
  ASSERT_TRUE(cluster.Start().ok());
  constexpr int kAccounts = 40;
  tx::StatusOr<tx::testing::Subprocess> bank = tx::testing::Subprocess::Start(
      {tx::testing::BinaryDir() + "/bank", "--coordinators", cluster.coordinators_list(),
       "--accounts", std::to_string(kAccounts), "--initial-balance",
       std::to_string(kInitialBalance), "--threads", "4", "--seconds", "8", "--print-check"});
  ASSERT_TRUE(bank.ok()) << bank.status().ToString();
  std::vector<std::string> output;
  auto read_until = [&](const std::string& needle, milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      std::optional<std::string> line = bank->ReadLine(milliseconds(500));
      if (!line) {
        if (bank->timed_out()) continue;
        return false;  // EOF
      }
      output.push_back(*line);
      if (line->find(needle) != std::string::npos) return true;
    }
    return false;
  };
  // Transfers are flowing: two progress lines.
  ASSERT_TRUE(read_until("[  2s]", seconds(60))) << fmt::format("{}", fmt::join(output, "\n"));

  const int old_leader = cluster.LeaderId(seconds(10));
  ASSERT_NE(0, old_leader);
  cluster.KillCoordinator(old_leader);
  bank->Signal(SIGUSR1);  // the bank reports the first commit after this moment
  ASSERT_NE(0, cluster.LeaderId(seconds(10), old_leader)) << "no new leader";
  ASSERT_TRUE(cluster.StartCoordinator(old_leader).ok());

  ASSERT_TRUE(read_until("bank: check:", seconds(120)))
      << fmt::format("{}", fmt::join(output, "\n"));
  std::optional<int> status = bank->Wait(seconds(30));
  ASSERT_TRUE(status.has_value());
  const std::string all = fmt::format("{}", fmt::join(output, "\n"));
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << all;
  EXPECT_NE(std::string::npos, all.find("OK, unchanged")) << all;
  EXPECT_NE(std::string::npos, all.find("ms after the mark")) << "no commit after the kill:\n"
                                                              << all;
  ExpectRejoins(cluster, old_leader);

  // The files agree with the bank: every prepared transaction resolved, total intact.
  ASSERT_TRUE(cluster.WaitAllResolved(seconds(60)));
  EXPECT_EQ(kAccounts * kInitialBalance, TotalInFiles(cluster));
  ExpectNoSplitOutcomes(cluster);
}

// Each transfer also records its txid at both participants, so the files say exactly which
// transactions committed; the library's answers must match them.
TEST(ClientFailover, LibraryAnswersMatchTheFilesAcrossALeaderKill) {
  LocalCluster cluster(kSchema);
  ASSERT_TRUE(cluster.Start().ok());
  ClientOptions options;
  options.call_deadline = seconds(20);
  options.commit_deadline = seconds(30);
  StatusOr<std::unique_ptr<Client>> created =
      Client::Create(cluster.coordinator_endpoints(), options);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  Client& client = **created;

  constexpr int kAccountsPerSide = 10;
  for (int side = 0; side < 2; ++side) {
    StatusOr<Transaction> t = client.Begin();
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    for (int k = 0; k < kAccountsPerSide; ++k) {
      ASSERT_TRUE(t->Execute(LocalCluster::name(side),
                             "INSERT INTO accounts(id, balance) VALUES (?, ?)",
                             {2 * k + side, kInitialBalance})
                      .ok());
    }
    StatusOr<CommitResult> r = t->Commit();
    ASSERT_TRUE(r.ok() && r->committed()) << (r.ok() ? r->reason : r.status().ToString());
  }

  enum class Seen { kCommitted, kAborted, kUnknown };
  std::mutex mu;
  std::map<int64_t, Seen> seen;  // GUARDED_BY(mu)
  std::atomic<bool> stop{false};
  std::atomic<int64_t> kill_ns{0};
  std::atomic<int> committed_after_kill{0};
  auto transfer_loop = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    while (!stop.load()) {
      const int64_t even = 2 * static_cast<int64_t>(rng() % kAccountsPerSide);
      const int64_t odd = even + 1;
      const int64_t amount = 1 + static_cast<int64_t>(rng() % 10);
      StatusOr<Transaction> t = client.Begin();
      if (!t.ok()) continue;
      const int64_t txid = t->txid();
      bool ok = true;
      int64_t balance[2] = {0, 0};
      for (int side = 0; side < 2 && ok; ++side) {
        StatusOr<ResultSet> rs =
            t->Execute(LocalCluster::name(side), "SELECT balance FROM accounts WHERE id = ?",
                       {side == 0 ? even : odd});
        ok = rs.ok() && rs->rows.size() == 1;
        if (ok) balance[side] = rs->rows[0][0].integer();
      }
      for (int side = 0; side < 2 && ok; ++side) {
        const int64_t delta = side == 0 ? -amount : amount;
        StatusOr<std::vector<ResultSet>> w = t->ExecuteBatch(
            LocalCluster::name(side),
            {{"UPDATE accounts SET balance = ? WHERE id = ?",
              {balance[side] + delta, side == 0 ? even : odd},
              {}},
             {"INSERT INTO transfers(txid, amount) VALUES (?, ?)", {txid, amount}, {}}});
        ok = w.ok();
      }
      if (!ok) continue;  // abandoned: the destructor aborts it
      StatusOr<CommitResult> r = t->Commit();
      std::lock_guard<std::mutex> lock(mu);
      if (!r.ok()) {
        seen[txid] = Seen::kUnknown;
      } else if (r->committed()) {
        seen[txid] = Seen::kCommitted;
        const int64_t k = kill_ns.load();
        if (k != 0 && Clock::now().time_since_epoch().count() > k) committed_after_kill++;
      } else {
        seen[txid] = Seen::kAborted;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(transfer_loop, 1234 + i);

  auto committed_count = [&] {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (const auto& [txid, s] : seen) n += s == Seen::kCommitted;
    return n;
  };
  ASSERT_TRUE(PollUntil([&] { return committed_count() >= 50; }, seconds(60)));
  const int old_leader = cluster.LeaderId(seconds(10));
  ASSERT_NE(0, old_leader);
  kill_ns.store(Clock::now().time_since_epoch().count());
  cluster.KillCoordinator(old_leader);
  EXPECT_TRUE(PollUntil([&] { return committed_after_kill.load() >= 50; }, seconds(60)))
      << "transfers did not resume after the leader was killed";
  stop.store(true);
  for (std::thread& t : threads) t.join();

  ASSERT_TRUE(cluster.WaitAllResolved(seconds(60)));
  EXPECT_EQ(2 * kAccountsPerSide * kInitialBalance, TotalInFiles(cluster));
  std::set<int64_t> applied[2];
  for (int side = 0; side < 2; ++side) {
    for (int64_t txid : SqliteFile(cluster.db_path(side)).Ints("SELECT txid FROM transfers")) {
      applied[side].insert(txid);
    }
  }
  EXPECT_EQ(applied[0], applied[1]) << "a transfer committed at one participant only";
  int committed = 0, aborted = 0, unknown = 0;
  for (const auto& [txid, s] : seen) {
    switch (s) {
      case Seen::kCommitted:
        ++committed;
        EXPECT_EQ(1u, applied[0].count(txid)) << "txid " << txid << " answered COMMITTED";
        break;
      case Seen::kAborted:
        ++aborted;
        EXPECT_EQ(0u, applied[0].count(txid)) << "txid " << txid << " answered ABORTED";
        break;
      case Seen::kUnknown:
        ++unknown;
        break;
    }
  }
  // The library resolves lost answers rather than giving up on them within its deadline.
  EXPECT_EQ(0, unknown);
  for (int64_t txid : applied[0]) {
    EXPECT_EQ(1u, seen.count(txid)) << "txid " << txid << " applied but never committed by us";
  }
  std::printf("committed %d, aborted %d, unknown %d; commits resolved after a lost answer: %llu\n",
              committed, aborted, unknown,
              static_cast<unsigned long long>(client.stats().commits_resolved));
}

}  // namespace
}  // namespace tx::client
