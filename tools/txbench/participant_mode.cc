// txbench participant: one real txpart process on loopback (synchronous=FULL, real fsync),
// driven over Thrift by concurrent clients. Each transaction is Execute (one single-row
// UPDATE) + Prepare + Commit: the participant's side of a 2PC transaction.
//
// Two workloads:
//   uncontended  the table's rows are split among the clients, so no two transactions
//                ever touch the same row: what group commit makes of the fsync cost;
//   hot          every client updates a row chosen at random from a small hot set: lock
//                waits, first-committer-wins restarts and aborts.
//
// For each, --runs runs of --seconds are made on a fresh database and the run with the median
// throughput is printed: committed transactions per second, aborted per second, latency of a
// whole transaction (p50/p99/max) and of each call (p50). At the end of every run the database
// is checked directly: the sum of all counters must equal the number of commits.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "ParticipantService.h"
#include "common/rpc/client.h"
#include "participant/sqlite_util.h"
#include "tools/txbench/bench_util.h"
#include "tools/txbench/mode.h"

namespace tx::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Options {
  std::string txpart;  // path of the binary; default: next to txbench
  std::string dir;     // where databases go; default: a fresh temporary directory
  int rows = 1000;
  int hot_rows = 10;
  int clients = 32;
  double seconds = 5;
  int runs = 3;
  std::string workload = "both";  // uncontended, hot or both
  int64_t lock_timeout_ms = 1000;
};

struct RunResult {
  double seconds = 0;
  int64_t committed = 0;
  int64_t aborted = 0;
  Latencies txn_us, execute_us, prepare_us, commit_us;
  double committed_per_second() const { return static_cast<double>(committed) / seconds; }
};

api::Value Int(int64_t v) {
  api::Value out;
  out.__set_integer(v);
  return out;
}

// One run: a fresh database, a fresh txpart, `clients` threads for `seconds`.
StatusOr<RunResult> RunOnce(const Options& o, const std::string& dir, bool hot, int run) {
  const std::string db = fmt::format("{}/bench-{}-{}.db", dir, hot ? "hot" : "uncontended", run);
  const std::string init = db + ".sql";
  {
    std::ofstream sql(init);
    sql << "CREATE TABLE IF NOT EXISTS bench(id INTEGER PRIMARY KEY, counter INT NOT NULL);\n"
        << "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < " << o.rows - 1
        << ") INSERT OR IGNORE INTO bench SELECT i, 0 FROM n;\n";
  }
  TX_ASSIGN_OR_RETURN(
      ChildProcess txpart,
      ChildProcess::StartServer(
          {o.txpart, "--name", "bench", "--db", db, "--listen", "127.0.0.1:0", "--init-sql", init,
           "--log-level", "error", "--lock-timeout-ms", std::to_string(o.lock_timeout_ms),
           "--max-connections", std::to_string(o.clients + 16)},
          std::chrono::seconds(30)));

  rpc::RpcClientOptions client_options;
  client_options.max_connections = o.clients;
  client_options.max_idle_connections = o.clients;
  client_options.recv_timeout = std::chrono::milliseconds(30000);
  rpc::ClientPool<api::ParticipantServiceClient> pool(txpart.address(), client_options);

  std::atomic<int64_t> next_txid{1};
  std::atomic<bool> failed{false};
  std::mutex failure_mu;
  std::string failure;
  std::vector<RunResult> per_client(static_cast<size_t>(o.clients));
  const auto start = SteadyClock::now();
  const auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      RunResult& r = per_client[static_cast<size_t>(c)];
      std::mt19937_64 rng(static_cast<uint64_t>(run) * 1000 + static_cast<uint64_t>(c));
      auto fail = [&](const std::string& what) {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (failure.empty()) failure = what;
        failed = true;
      };
      while (SteadyClock::now() < deadline && !failed.load()) {
        const int64_t txid = next_txid++;
        int64_t row;
        if (hot) {
          row = static_cast<int64_t>(rng() % static_cast<uint64_t>(o.hot_rows));
        } else {
          // Rows c, c + clients, c + 2 * clients, ...: this client's own.
          int64_t mine = (o.rows - c + o.clients - 1) / o.clients;
          row = c + static_cast<int64_t>(rng() % static_cast<uint64_t>(mine)) * o.clients;
        }
        const auto t0 = SteadyClock::now();
        std::optional<api::TxError> error;
        api::ExecuteResponse exec;
        api::ExecuteRequest req;
        req.txid = txid;
        api::Statement st;
        st.sql = "UPDATE bench SET counter = counter + 1 WHERE id = ?";
        st.params = {Int(row)};
        req.statements = {st};
        Status s = pool.Call([&](api::ParticipantServiceClient& cl) {
          try {
            cl.Execute(exec, req);
          } catch (const api::TxError& e) {
            error = e;
          }
        });
        const auto t1 = SteadyClock::now();
        api::PrepareResponse vote;
        if (s.ok() && !error) {
          api::PrepareRequest p;
          p.txid = txid;
          s = pool.Call([&](api::ParticipantServiceClient& cl) {
            try {
              cl.Prepare(vote, p);
            } catch (const api::TxError& e) {
              error = e;
            }
          });
        }
        const auto t2 = SteadyClock::now();
        if (!s.ok()) return fail(s.ToString());
        if (error || vote.vote != api::Vote::YES) {
          // Lost a conflict (only in the hot workload): abort and go on.
          if (!hot) {
            return fail(
                error ? error->message
                      : fmt::format("vote {} on an uncontended row", static_cast<int>(vote.vote)));
          }
          api::AbortRequest a;
          a.txid = txid;
          api::AbortResponse ar;
          (void)pool.Call([&](api::ParticipantServiceClient& cl) { cl.Abort(ar, a); });
          r.aborted++;
          continue;
        }
        api::CommitRequest cm;
        cm.txid = txid;
        api::CommitResponse cr;
        s = pool.Call([&](api::ParticipantServiceClient& cl) { cl.Commit(cr, cm); });
        if (!s.ok()) return fail("commit: " + s.ToString());
        const auto t3 = SteadyClock::now();
        r.committed++;
        auto us = [](auto d) { return std::chrono::duration<double, std::micro>(d).count(); };
        r.txn_us.Add(us(t3 - t0));
        r.execute_us.Add(us(t1 - t0));
        r.prepare_us.Add(us(t2 - t1));
        r.commit_us.Add(us(t3 - t2));
      }
    });
  }
  for (auto& t : threads) t.join();
  RunResult total;
  total.seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  for (RunResult& r : per_client) {
    total.committed += r.committed;
    total.aborted += r.aborted;
    total.txn_us.Merge(r.txn_us);
    total.execute_us.Merge(r.execute_us);
    total.prepare_us.Merge(r.prepare_us);
    total.commit_us.Merge(r.commit_us);
  }
  txpart.Stop();
  if (failed) return Status::Internal("a client failed: " + failure);

  // Check the database itself: every commit added exactly one.
  auto conn = participant::OpenConnection(db, false);
  if (!conn.ok()) return conn.status();
  auto stmt = participant::PrepareStmt(conn->get(), "SELECT sum(counter) FROM bench");
  if (!stmt.ok()) return stmt.status();
  if (sqlite3_step(stmt->get()) != SQLITE_ROW) return Status::Internal("cannot read the sum");
  const int64_t sum = sqlite3_column_int64(stmt->get(), 0);
  if (sum != total.committed) {
    return Status::Internal(
        fmt::format("the database holds {} increments but {} transactions "
                    "committed",
                    sum, total.committed));
  }
  return total;
}

void Print(const std::string& label, RunResult& r) {
  std::printf(
      "%-28s %8.0f committed/s %7.0f aborted/s   txn p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms"
      "   (execute p50 %.2f, prepare p50 %.2f, commit p50 %.2f ms)\n",
      label.c_str(), r.committed_per_second(), static_cast<double>(r.aborted) / r.seconds,
      r.txn_us.Quantile(0.5) / 1000, r.txn_us.Quantile(0.99) / 1000, r.txn_us.Quantile(1.0) / 1000,
      r.execute_us.Quantile(0.5) / 1000, r.prepare_us.Quantile(0.5) / 1000,
      r.commit_us.Quantile(0.5) / 1000);
  std::fflush(stdout);
}

int Run(const Options& opts) {
  Options o = opts;
  if (o.txpart.empty()) o.txpart = SelfDir() + "/txpart";
  bool own_dir = o.dir.empty();
  if (own_dir) {
    StatusOr<std::string> d = MakeTempDir("txbench-participant");
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
      return 1;
    }
    o.dir = *d;
  }
  std::printf(
      "txbench participant: %d rows, %d clients, %.1f s x %d runs (median shown); "
      "synchronous=FULL; %s\n",
      o.rows, o.clients, o.seconds, o.runs, MachineDescription().c_str());
  int exit_code = 0;
  for (bool hot : {false, true}) {
    if ((hot && o.workload == "uncontended") || (!hot && o.workload == "hot")) continue;
    std::vector<RunResult> results;
    for (int run = 0; run < o.runs; ++run) {
      StatusOr<RunResult> r = RunOnce(o, o.dir, hot, run);
      if (!r.ok()) {
        std::fprintf(stderr, "run failed: %s\n", r.status().ToString().c_str());
        exit_code = 1;
        break;
      }
      std::string label = fmt::format("  run {} {}", run + 1, hot ? "hot" : "uncontended");
      Print(label, *r);
      results.push_back(*std::move(r));
    }
    if (results.empty()) continue;
    std::sort(results.begin(), results.end(), [](const RunResult& a, const RunResult& b) {
      return a.committed_per_second() < b.committed_per_second();
    });
    RunResult& median = results[results.size() / 2];
    Print(hot ? fmt::format("median hot ({} rows)", o.hot_rows)
              : fmt::format("median uncontended ({} rows)", o.rows),
          median);
  }
  if (own_dir) RemoveTree(o.dir);
  return exit_code;
}

RunFn Setup(CLI::App* cmd) {
  auto o = std::make_shared<Options>();
  cmd->add_option("--txpart", o->txpart, "txpart binary (default: next to txbench)");
  cmd->add_option("--dir", o->dir, "directory for the databases (default: a temporary one)");
  cmd->add_option("--rows", o->rows, "rows in the table")->check(CLI::Range(1, 100000000));
  cmd->add_option("--hot-rows", o->hot_rows, "rows of the hot set")->check(CLI::Range(1, 1000000));
  cmd->add_option("--clients", o->clients, "concurrent clients")->check(CLI::Range(1, 1024));
  cmd->add_option("--seconds", o->seconds, "length of each run")->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--runs", o->runs, "runs per workload; the median is reported")
      ->check(CLI::Range(1, 99));
  cmd->add_option("--workload", o->workload, "uncontended, hot or both")
      ->check(CLI::IsMember({"uncontended", "hot", "both"}));
  cmd->add_option("--lock-timeout-ms", o->lock_timeout_ms, "txpart's lock timeout");
  return [o] {
    if (o->rows < o->clients) {
      std::fprintf(stderr, "--rows must be at least --clients (each client owns rows)\n");
      return 2;
    }
    spdlog::set_level(spdlog::level::warn);
    return Run(*o);
  };
}

const ModeRegistration kParticipantMode(
    "participant", "one txpart on loopback: execute+prepare+commit throughput and latency", Setup);

}  // namespace
}  // namespace tx::bench
