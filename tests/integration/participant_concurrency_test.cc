// Many clients move money between a few rows of one real txpart concurrently, through
// Execute/Prepare/Commit over Thrift. Half of the transfers read the balances first and write
// back values computed in the client (the read-modify-write that loses updates without
// first-committer-wins); the other half update in SQL. Every committed transfer also inserts a
// row into a journal, in the same transaction.
//
// Checked: a reader, running throughout, always sees the same total; at the end (read
// directly from the file) the total is unchanged, and every account's balance equals its
// initial balance plus the journal's credits minus its debits: no committed update was lost,
// none applied twice, and nothing of an aborted transfer leaked.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "tests/integration/participant_harness.h"
#include "tests/support/temp_dir.h"

namespace tx::testing {
namespace {

using std::chrono::seconds;

constexpr int kAccounts = 8;  // few rows: plenty of conflicts
constexpr int64_t kInitialBalance = 1000;
#ifdef TX_SANITIZE_BUILD
constexpr int kClients = 8;
constexpr auto kRunTime = seconds(4);
#else
constexpr int kClients = 16;
constexpr auto kRunTime = seconds(6);
#endif

TEST(ParticipantConcurrency, TransfersKeepTheTotalAndLoseNoUpdate) {
  TempDir dir;
  const std::string db = dir.path() + "/bank.db";
  const std::string schema = dir.path() + "/schema.sql";
  {
    std::ofstream out(schema);
    out << "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL);\n"
        << "CREATE TABLE IF NOT EXISTS journal(txid INTEGER PRIMARY KEY, src INT NOT NULL, "
        << "  dst INT NOT NULL, amount INT NOT NULL);\n";
    for (int i = 0; i < kAccounts; ++i) {
      out << "INSERT OR IGNORE INTO accounts VALUES (" << i << ", " << kInitialBalance << ");\n";
    }
  }
  auto proc = TxpartProcess::Start(db, schema, "127.0.0.1:0", {"--lock-timeout-ms", "2000"});
  ASSERT_TRUE(proc.ok()) << proc.status().ToString();
  const HostPort at = (*proc)->address();

  std::atomic<int64_t> next_txid{1};
  std::atomic<int64_t> committed{0}, aborted{0}, bad_totals{0}, reads{0};
  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0};
  const auto deadline = std::chrono::steady_clock::now() + kRunTime;

  auto transfer = [&](ParticipantClient& c, std::mt19937_64& rng, bool read_first) -> bool {
    const int64_t txid = next_txid++;
    int src = static_cast<int>(rng() % kAccounts);
    int dst = static_cast<int>(rng() % (kAccounts - 1));
    if (dst >= src) ++dst;
    const int64_t amount = 1 + static_cast<int64_t>(rng() % 50);
    auto fail = [&](const std::string& what, const auto& reply) {
      // Conflicts, deadlocks and lock timeouts are the expected ways to lose; anything else
      // is a bug.
      if (!reply.transport.ok() || !reply.error.has_value() ||
          (reply.error->code != api::ErrorCode::CONFLICT &&
           reply.error->code != api::ErrorCode::DEADLOCK &&
           reply.error->code != api::ErrorCode::LOCK_TIMEOUT)) {
        ADD_FAILURE() << what << ": " << reply.Describe();
        unexpected++;
      }
      (void)c.Abort(txid);
      return false;
    };
    if (read_first) {
      auto r = c.Execute(txid, "SELECT id, balance FROM accounts WHERE id IN (?, ?)",
                         {Int(src), Int(dst)});
      if (!r.ok()) return fail("read", r);
      int64_t bsrc = 0, bdst = 0;
      for (const api::Row& row : r.value.results[0].rows) {
        (row.values[0].integer == src ? bsrc : bdst) = row.values[1].integer;
      }
      auto w = c.Execute(
          txid,
          {Stmt("UPDATE accounts SET balance = ? WHERE id = ?", {Int(bsrc - amount), Int(src)}),
           Stmt("UPDATE accounts SET balance = ? WHERE id = ?", {Int(bdst + amount), Int(dst)})});
      if (!w.ok()) return fail("write", w);
    } else {
      auto w = c.Execute(txid, {Stmt("UPDATE accounts SET balance = balance - ? WHERE id = ?",
                                     {Int(amount), Int(src)}),
                                Stmt("UPDATE accounts SET balance = balance + ? WHERE id = ?",
                                     {Int(amount), Int(dst)})});
      if (!w.ok()) return fail("write", w);
    }
    auto j = c.Execute(txid, "INSERT INTO journal VALUES (?, ?, ?, ?)",
                       {Int(txid), Int(src), Int(dst), Int(amount)});
    if (!j.ok()) return fail("journal", j);
    auto v = c.Prepare(txid);
    if (!v.ok()) return fail("prepare", v);
    if (v.value.vote != api::Vote::YES) {
      (void)c.Abort(txid);
      return false;
    }
    auto done = c.Commit(txid);
    if (!done.ok()) {
      ADD_FAILURE() << "commit after YES failed: " << done.Describe();
      unexpected++;
      return false;
    }
    return true;
  };

  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      ParticipantClient c(at);
      std::mt19937_64 rng(1000 + t);
      while (std::chrono::steady_clock::now() < deadline && unexpected.load() == 0) {
        (transfer(c, rng, t % 2 == 0) ? committed : aborted)++;
      }
    });
  }
  std::thread reader([&] {
    ParticipantClient c(at);
    while (!stop.load()) {
      const int64_t txid = next_txid++;
      auto r = c.Execute(txid, "SELECT sum(balance) FROM accounts");
      if (r.ok()) {
        reads++;
        if (r.value.results[0].rows[0].values[0].integer != kAccounts * kInitialBalance) {
          bad_totals++;
        }
      }
      (void)c.Abort(txid);
    }
  });
  for (auto& th : clients) th.join();
  stop = true;
  reader.join();

  EXPECT_EQ(0, unexpected.load());
  EXPECT_EQ(0, bad_totals.load()) << "a reader saw money appear or vanish";
  EXPECT_GT(reads.load(), 0);
  EXPECT_GT(committed.load(), 100) << "too little progress to mean anything";
  std::printf("transfers: %lld committed, %lld aborted; %lld consistent reads\n",
              static_cast<long long>(committed.load()), static_cast<long long>(aborted.load()),
              static_cast<long long>(reads.load()));

  (*proc)->Kill();
  DirectDb check(db);
  EXPECT_EQ(kAccounts * kInitialBalance, check.Int("SELECT sum(balance) FROM accounts"));
  EXPECT_EQ(committed.load(), check.Int("SELECT count(*) FROM journal"));
  for (int i = 0; i < kAccounts; ++i) {
    const std::string id = std::to_string(i);
    int64_t expected = kInitialBalance +
                       check.Int("SELECT coalesce(sum(amount), 0) FROM journal WHERE dst = " + id) -
                       check.Int("SELECT coalesce(sum(amount), 0) FROM journal WHERE src = " + id);
    EXPECT_EQ(expected, check.Int("SELECT balance FROM accounts WHERE id = " + id))
        << "account " << i << " lost or duplicated an update";
  }
  EXPECT_EQ(0, check.Int("SELECT count(*) FROM _txpart_prepared"));
}

}  // namespace
}  // namespace tx::testing
