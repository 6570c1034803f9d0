// bank: concurrent money transfers between accounts kept on two participants, through
// libtxclient; checks at the end that no money was created or destroyed.
//
//   bank --coordinators 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//        [--participants accounts-even,accounts-odd] [--accounts 100] [--initial-balance 1000]
//        [--threads 8] [--seconds 10 | --transfers N] [--max-amount 100] [--print-check]
//
// Accounts 0..N-1 live in table `accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)`
// (examples/bank/schema.sql, which txpart --init-sql creates): even ids at the first
// participant, odd ids at the second. Missing accounts are created with the initial balance
// (existing ones are kept, so runs can follow each other).
//
// Each transfer moves a random amount between an even and an odd account, so every transfer
// is a distributed transaction: read both balances, write both new balances (computed here, so
// a lost update would show), commit. A transfer that aborts (conflict, lock timeout, deadlock,
// failover) is retried from Begin. Every second a progress line is printed. At the end the
// total of all balances, read through the library, must equal the total at the start; if it
// does not, the program exits with status 1.
//
// Signals: SIGINT/SIGTERM stop the transfers early (the check still runs). SIGUSR1 marks a
// moment (the demo sends it when it kills the coordinator leader); the summary then reports how
// long after the mark the first transfer committed.
//
// Exit status: 0 total unchanged; 1 total changed; 2 bad usage or set-up failure.

#include <txclient/client.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using tx::client::Client;
using tx::client::CommitResult;
using tx::client::ResultSet;
using tx::client::Statement;
using tx::client::Status;
using tx::client::StatusCode;
using tx::client::StatusOr;
using tx::client::Transaction;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::vector<std::string> coordinators;
  std::vector<std::string> participants = {"accounts-even", "accounts-odd"};
  int64_t accounts = 100;
  int64_t initial_balance = 1000;
  int threads = 8;
  double seconds = 10;
  int64_t transfers = 0;  // > 0: stop after this many committed transfers instead
  int64_t max_amount = 100;
  int64_t txn_timeout_ms = 0;
  bool print_check = false;
  bool check_only = false;
};

void Usage(const char* argv0) {
  std::fprintf(
      stderr,
      "usage: %s --coordinators HOST:PORT,... [options]\n"
      "  --participants A,B       the two participants (default accounts-even,accounts-odd)\n"
      "  --accounts N             accounts 0..N-1, even ids at A, odd at B (default 100)\n"
      "  --initial-balance N      balance of each account created (default 1000)\n"
      "  --threads N              concurrent transfer threads (default 8)\n"
      "  --seconds S              run this long (default 10)\n"
      "  --transfers N            or stop after N committed transfers\n"
      "  --max-amount N           transfer 1..N (default 100)\n"
      "  --txn-timeout-ms N       transaction timeout (default: the cluster's)\n"
      "  --print-check            print the final check in detail (per participant)\n"
      "  --check-only             only check the total (and print it), no transfers\n",
      argv0);
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

bool ParseInt(const std::string& text, int64_t* out) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

// --name value or --name=value. Returns false (after printing why) on bad input.
bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&](std::string* v) {
      if (has_value) {
        *v = value;
        return true;
      }
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bank: %s needs a value\n", arg.c_str());
        return false;
      }
      *v = argv[++i];
      return true;
    };
    auto integer = [&](int64_t* out, int64_t lo, int64_t hi) {
      std::string v;
      if (!next(&v)) return false;
      if (!ParseInt(v, out) || *out < lo || *out > hi) {
        std::fprintf(stderr, "bank: %s wants an integer in %lld..%lld, got '%s'\n", arg.c_str(),
                     static_cast<long long>(lo), static_cast<long long>(hi), v.c_str());
        return false;
      }
      return true;
    };
    std::string v;
    int64_t n = 0;
    if (arg == "--coordinators") {
      if (!next(&v)) return false;
      f->coordinators = SplitCommas(v);
    } else if (arg == "--participants") {
      if (!next(&v)) return false;
      f->participants = SplitCommas(v);
      if (f->participants.size() != 2) {
        std::fprintf(stderr, "bank: --participants wants two names, A,B\n");
        return false;
      }
    } else if (arg == "--accounts") {
      if (!integer(&f->accounts, 2, 10'000'000)) return false;
    } else if (arg == "--initial-balance") {
      if (!integer(&f->initial_balance, 0, int64_t{1} << 40)) return false;
    } else if (arg == "--threads") {
      if (!integer(&n, 1, 1024)) return false;
      f->threads = static_cast<int>(n);
    } else if (arg == "--seconds") {
      if (!integer(&n, 0, 86'400)) return false;
      f->seconds = static_cast<double>(n);
    } else if (arg == "--transfers") {
      if (!integer(&f->transfers, 1, int64_t{1} << 40)) return false;
    } else if (arg == "--max-amount") {
      if (!integer(&f->max_amount, 1, int64_t{1} << 40)) return false;
    } else if (arg == "--txn-timeout-ms") {
      if (!integer(&f->txn_timeout_ms, 0, 86'400'000)) return false;
    } else if (arg == "--print-check" && !has_value) {
      f->print_check = true;
    } else if (arg == "--check-only" && !has_value) {
      f->check_only = true;
    } else if (arg == "--help" || arg == "-h") {
      return false;
    } else {
      std::fprintf(stderr, "bank: unknown flag %s\n", argv[i]);
      return false;
    }
  }
  if (f->coordinators.empty()) {
    std::fprintf(stderr, "bank: --coordinators is required\n");
    return false;
  }
  return true;
}

// Set from signal handlers: lock-free atomics are async-signal-safe.
std::atomic<bool> g_stop{false};
std::atomic<int64_t> g_mark_ns{0};  // steady-clock time of SIGUSR1, 0 if none

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

extern "C" void OnStopSignal(int) { g_stop.store(true); }
extern "C" void OnMarkSignal(int) {
  int64_t expected = 0;
  g_mark_ns.compare_exchange_strong(expected, NowNs());
}

void InstallSignalHandlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = OnStopSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = OnMarkSignal;
  sigaction(SIGUSR1, &sa, nullptr);
}

struct Counters {
  std::atomic<int64_t> committed{0};
  std::atomic<int64_t> aborted{0};       // attempts that ended ABORTED (then retried)
  std::atomic<int64_t> conflicts{0};     // of aborted: conflict, lock timeout, deadlock
  std::atomic<int64_t> unknown{0};       // Commit outcome unknown at its deadline
  std::atomic<int64_t> errors{0};        // other failures (no coordinator in time, ...)
  std::atomic<int64_t> insufficient{0};  // transfers skipped: not enough money
  std::atomic<int64_t> given_up{0};      // transfers abandoned after too many attempts
  std::atomic<int64_t> last_commit_ns{0};
  std::atomic<int64_t> longest_gap_ns{0};  // longest time between two consecutive commits
  std::atomic<int64_t> first_commit_after_mark_ns{0};
  std::mutex error_mu;
  std::map<std::string, int64_t> error_samples;  // GUARDED_BY(error_mu): first words -> count
};

void NoteError(Counters* c, const Status& s) {
  std::lock_guard<std::mutex> lock(c->error_mu);
  std::string key = tx::client::StatusCodeName(s.code());
  auto& n = c->error_samples[key];
  if (n++ == 0)
    std::fprintf(stderr, "bank: first %s error: %s\n", key.c_str(), s.ToString().c_str());
}

void NoteCommit(Counters* c) {
  const int64_t now = NowNs();
  c->committed.fetch_add(1);
  int64_t last = c->last_commit_ns.exchange(now);
  if (last != 0) {
    int64_t gap = now - last;
    int64_t longest = c->longest_gap_ns.load();
    while (gap > longest && !c->longest_gap_ns.compare_exchange_weak(longest, gap)) {
    }
  }
  const int64_t mark = g_mark_ns.load();
  if (mark != 0 && now > mark) {
    int64_t expected = 0;
    c->first_commit_after_mark_ns.compare_exchange_strong(expected, now);
  }
}

bool IsRetryableAbort(StatusCode code) {
  return code == StatusCode::kConflict || code == StatusCode::kLockTimeout ||
         code == StatusCode::kDeadlock;
}

const std::string& ParticipantOf(const Flags& f, int64_t account) {
  return f.participants[static_cast<size_t>(account % 2)];
}

StatusOr<int64_t> ReadBalance(Transaction& txn, const Flags& f, int64_t account) {
  StatusOr<ResultSet> rs = txn.Execute(ParticipantOf(f, account),
                                       "SELECT balance FROM accounts WHERE id = ?", {account});
  if (!rs.ok()) return rs.status();
  if (rs->rows.size() != 1 || !rs->rows[0][0].is_integer()) {
    return Status(StatusCode::kFailedPrecondition, "account " + std::to_string(account) +
                                                       " is missing at '" +
                                                       ParticipantOf(f, account) + "'");
  }
  return rs->rows[0][0].integer();
}

enum class Attempt { kCommitted, kAborted, kInsufficient, kUnknown, kError };

// One attempt at a transfer of `amount` from `from` to `to`.
Attempt TryTransfer(Client& client, const Flags& f, int64_t from, int64_t to, int64_t amount,
                    Counters* c) {
  tx::client::TransactionOptions options;
  options.timeout = std::chrono::milliseconds(f.txn_timeout_ms);
  StatusOr<Transaction> begun = client.Begin(options);
  if (!begun.ok()) {
    NoteError(c, begun.status());
    return Attempt::kError;
  }
  Transaction& txn = *begun;
  auto failed = [&](const Status& s) {
    // An error that aborted the transaction is an abort; anything else is an error. Either way
    // the transaction is abandoned (its destructor aborts it).
    if (s.transaction_aborted()) {
      c->aborted.fetch_add(1);
      if (IsRetryableAbort(s.code())) c->conflicts.fetch_add(1);
      return Attempt::kAborted;
    }
    NoteError(c, s);
    return Attempt::kError;
  };
  StatusOr<int64_t> from_balance = ReadBalance(txn, f, from);
  if (!from_balance.ok()) return failed(from_balance.status());
  StatusOr<int64_t> to_balance = ReadBalance(txn, f, to);
  if (!to_balance.ok()) return failed(to_balance.status());
  if (*from_balance < amount) {
    (void)txn.Abort();  // nothing written; best effort
    return Attempt::kInsufficient;
  }
  const char* kSet = "UPDATE accounts SET balance = ? WHERE id = ?";
  StatusOr<ResultSet> debit =
      txn.Execute(ParticipantOf(f, from), kSet, {*from_balance - amount, from});
  if (!debit.ok()) return failed(debit.status());
  StatusOr<ResultSet> credit = txn.Execute(ParticipantOf(f, to), kSet, {*to_balance + amount, to});
  if (!credit.ok()) return failed(credit.status());
  StatusOr<CommitResult> result = txn.Commit();
  if (!result.ok()) {
    if (result.status().code() == StatusCode::kOutcomeUnknown) {
      c->unknown.fetch_add(1);
      NoteError(c, result.status());
      return Attempt::kUnknown;
    }
    NoteError(c, result.status());
    return Attempt::kError;
  }
  if (result->committed()) {
    NoteCommit(c);
    return Attempt::kCommitted;
  }
  c->aborted.fetch_add(1);
  if (IsRetryableAbort(result->reason_code)) c->conflicts.fetch_add(1);
  return Attempt::kAborted;
}

// A transfer is retried after an abort, an error or an unknown outcome (the check at the end
// proves that an unknown outcome never half-happened); this many attempts and it is dropped.
constexpr int kMaxAttemptsPerTransfer = 50;

void TransferLoop(Client& client, const Flags& f, Counters* c, Clock::time_point end,
                  uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t pairs = f.accounts / 2;  // even ids 0,2,..; odd ids 1,3,..
  std::uniform_int_distribution<int64_t> pick(0, pairs - 1);
  std::uniform_int_distribution<int64_t> amount_of(1, f.max_amount);
  while (!g_stop.load() && Clock::now() < end &&
         (f.transfers == 0 || c->committed.load() < f.transfers)) {
    const int64_t even = 2 * pick(rng);
    const int64_t odd = 2 * pick(rng) + 1;
    const bool even_pays = rng() % 2 == 0;
    const int64_t from = even_pays ? even : odd;
    const int64_t to = even_pays ? odd : even;
    const int64_t amount = amount_of(rng);
    int pause_ms = 1;
    for (int attempt = 1;; ++attempt) {
      Attempt a = TryTransfer(client, f, from, to, amount, c);
      if (a == Attempt::kCommitted || a == Attempt::kInsufficient) {
        if (a == Attempt::kInsufficient) c->insufficient.fetch_add(1);
        break;
      }
      if (attempt >= kMaxAttemptsPerTransfer || g_stop.load()) {
        c->given_up.fetch_add(1);
        break;
      }
      // Back off a little (randomized) so that the transfers that collided do not collide
      // again in lockstep.
      std::this_thread::sleep_for(std::chrono::milliseconds(1 + rng() % pause_ms));
      pause_ms = std::min(pause_ms * 2, 100);
    }
  }
}

// Creates missing accounts: one transaction per participant, INSERT OR IGNORE in batches.
Status SetUp(Client& client, const Flags& f) {
  constexpr int64_t kBatch = 500;  // statements per Execute (participants allow 1000)
  for (int side = 0; side < 2; ++side) {
    StatusOr<Transaction> txn = client.Begin();
    if (!txn.ok()) return txn.status();
    std::vector<Statement> batch;
    for (int64_t id = side; id < f.accounts; id += 2) {
      batch.push_back({"INSERT OR IGNORE INTO accounts(id, balance) VALUES (?, ?)",
                       {id, f.initial_balance},
                       {}});
      if (static_cast<int64_t>(batch.size()) == kBatch || id + 2 >= f.accounts) {
        auto r = txn->ExecuteBatch(f.participants[static_cast<size_t>(side)], std::move(batch));
        if (!r.ok()) return r.status();
        batch.clear();
      }
    }
    StatusOr<CommitResult> result = txn->Commit();
    if (!result.ok()) return result.status();
    if (!result->committed()) {
      return Status(StatusCode::kAborted, "creating accounts: " + result->reason);
    }
  }
  return Status();
}

struct Totals {
  int64_t sum[2] = {0, 0};
  int64_t count[2] = {0, 0};
  int64_t total() const { return sum[0] + sum[1]; }
};

// Reads both participants' totals in one transaction (retried if it aborts).
StatusOr<Totals> ReadTotals(Client& client, const Flags& f) {
  Status last;
  for (int attempt = 0; attempt < 20; ++attempt) {
    StatusOr<Transaction> txn = client.Begin();
    if (!txn.ok()) return txn.status();
    Totals t;
    bool ok = true;
    for (int side = 0; side < 2 && ok; ++side) {
      StatusOr<ResultSet> rs = txn->Execute(f.participants[static_cast<size_t>(side)],
                                            "SELECT COALESCE(SUM(balance), 0), COUNT(*) FROM "
                                            "accounts");
      if (!rs.ok()) {
        last = rs.status();
        ok = false;
        break;
      }
      t.sum[side] = rs->rows.at(0).at(0).integer();
      t.count[side] = rs->rows.at(0).at(1).integer();
    }
    if (ok) {
      StatusOr<CommitResult> result = txn->Commit();
      if (result.ok() && result->committed()) return t;
      last = result.ok() ? Status(StatusCode::kAborted, result->reason) : result.status();
    }
    if (!last.transaction_aborted() && last.code() != StatusCode::kAborted) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return last;
}

void PrintTotals(const Flags& f, const Totals& t) {
  for (int side = 0; side < 2; ++side) {
    std::printf("bank:   %-20s %8lld accounts, balance %lld\n",
                f.participants[static_cast<size_t>(side)].c_str(),
                static_cast<long long>(t.count[side]), static_cast<long long>(t.sum[side]));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, &f)) {
    Usage(argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines appear as they are printed
  InstallSignalHandlers();

  tx::client::ClientOptions options;
  StatusOr<std::unique_ptr<Client>> created = Client::Create(f.coordinators, options);
  if (!created.ok()) {
    std::fprintf(stderr, "bank: %s\n", created.status().ToString().c_str());
    return 2;
  }
  Client& client = **created;

  if (!f.check_only) {
    Status set_up = SetUp(client, f);
    if (!set_up.ok()) {
      std::fprintf(stderr, "bank: creating the accounts failed: %s\n", set_up.ToString().c_str());
      if (set_up.code() == StatusCode::kInvalidSql) {
        std::fprintf(stderr,
                     "bank: does every participant have the accounts table? Start txpart with "
                     "--init-sql examples/bank/schema.sql\n");
      }
      return 2;
    }
  }
  StatusOr<Totals> start = ReadTotals(client, f);
  if (!start.ok()) {
    std::fprintf(stderr, "bank: reading the totals failed: %s\n",
                 start.status().ToString().c_str());
    return 2;
  }
  if (f.check_only) {
    std::printf("bank: total %lld over %lld accounts\n", static_cast<long long>(start->total()),
                static_cast<long long>(start->count[0] + start->count[1]));
    if (f.print_check) PrintTotals(f, *start);
    return 0;
  }
  std::printf("bank: %lld accounts (even ids at '%s', odd at '%s'), total %lld; %d threads, %s\n",
              static_cast<long long>(start->count[0] + start->count[1]), f.participants[0].c_str(),
              f.participants[1].c_str(), static_cast<long long>(start->total()), f.threads,
              f.transfers > 0 ? (std::to_string(f.transfers) + " transfers").c_str()
                              : (std::to_string(static_cast<int64_t>(f.seconds)) + " s").c_str());

  Counters c;
  const Clock::time_point begin = Clock::now();
  const Clock::time_point end =
      f.transfers > 0 ? Clock::time_point::max()
                      : begin + std::chrono::milliseconds(static_cast<int64_t>(f.seconds * 1000));
  std::vector<std::thread> workers;
  std::random_device seeder;
  for (int i = 0; i < f.threads; ++i) {
    uint64_t seed = (uint64_t{seeder()} << 32) ^ seeder() ^ static_cast<uint64_t>(i);
    workers.emplace_back([&, seed] { TransferLoop(client, f, &c, end, seed); });
  }
  std::atomic<bool> workers_done{false};
  std::thread progress([&] {
    int64_t last_committed = 0;
    int64_t last_aborted = 0;
    bool mark_reported = false;
    for (int second = 1; !workers_done.load(); ++second) {
      const Clock::time_point tick = begin + std::chrono::seconds(second);
      while (!workers_done.load() && Clock::now() < tick) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!mark_reported && g_mark_ns.load() != 0) {
          mark_reported = true;
          std::printf("bank: [%3.1fs] mark received\n",
                      std::chrono::duration<double>(Clock::now() - begin).count());
        }
      }
      if (workers_done.load()) break;
      int64_t committed = c.committed.load();
      int64_t aborted = c.aborted.load();
      tx::client::ClientStats s = client.stats();
      std::printf(
          "bank: [%3ds] committed %7lld (%5lld/s)  aborted %5lld (+%lld)  unknown %lld  "
          "errors %lld  redirects %llu  leader %s\n",
          second, static_cast<long long>(committed),
          static_cast<long long>(committed - last_committed), static_cast<long long>(aborted),
          static_cast<long long>(aborted - last_aborted), static_cast<long long>(c.unknown.load()),
          static_cast<long long>(c.errors.load()), static_cast<unsigned long long>(s.redirects),
          client.leader_guess().c_str());
      last_committed = committed;
      last_aborted = aborted;
    }
  });
  for (std::thread& t : workers) t.join();
  workers_done.store(true);
  progress.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();

  int64_t errors = 0;
  {
    std::lock_guard<std::mutex> lock(c.error_mu);
    for (const auto& [code, n] : c.error_samples) errors += n;
  }
  tx::client::ClientStats s = client.stats();
  std::printf(
      "bank: done in %.1f s: %lld committed (%.0f/s), %lld aborted and retried "
      "(%lld conflicts/lock timeouts/deadlocks), %lld skipped for lack of money, "
      "%lld given up, %lld unknown outcomes, %lld other errors\n",
      elapsed, static_cast<long long>(c.committed.load()),
      static_cast<double>(c.committed.load()) / std::max(elapsed, 1e-9),
      static_cast<long long>(c.aborted.load()), static_cast<long long>(c.conflicts.load()),
      static_cast<long long>(c.insufficient.load()), static_cast<long long>(c.given_up.load()),
      static_cast<long long>(c.unknown.load()), static_cast<long long>(errors));
  std::printf(
      "bank: client: %llu RPC attempts, %llu retries, %llu NOT_LEADER redirects, %llu "
      "commits whose answer was lost and then learned\n",
      static_cast<unsigned long long>(s.attempts), static_cast<unsigned long long>(s.retries),
      static_cast<unsigned long long>(s.redirects),
      static_cast<unsigned long long>(s.commits_resolved));
  std::printf("bank: longest pause between two commits: %lld ms\n",
              static_cast<long long>(c.longest_gap_ns.load() / 1'000'000));
  if (const int64_t mark = g_mark_ns.load(); mark != 0) {
    const int64_t first = c.first_commit_after_mark_ns.load();
    if (first != 0) {
      std::printf("bank: first commit %lld ms after the mark\n",
                  static_cast<long long>((first - mark) / 1'000'000));
    } else {
      std::printf("bank: no commit after the mark\n");
    }
  }

  StatusOr<Totals> finish = ReadTotals(client, f);
  if (!finish.ok()) {
    std::fprintf(stderr, "bank: reading the totals failed: %s\n",
                 finish.status().ToString().c_str());
    return 2;
  }
  const bool same = finish->total() == start->total();
  if (f.print_check) {
    std::printf(
        "bank: check (SELECT SUM(balance), COUNT(*) FROM accounts at each participant, in "
        "one transaction):\n");
    PrintTotals(f, *finish);
  }
  std::printf("bank: check: total %lld, at the start %lld: %s\n",
              static_cast<long long>(finish->total()), static_cast<long long>(start->total()),
              same ? "OK, unchanged" : "CHANGED: atomicity violated");
  return same ? 0 : 1;
}
