// txbench 2pc: distributed transactions through the whole system. Three txcoord replicas and
// two txpart agents as processes on loopback, fsync on everywhere (the Raft WAL, SQLite with
// synchronous=FULL), driven by concurrent clients. Each transaction writes one row at each
// participant:
//
//   Begin (leader) -> Execute at p0 -> Execute at p1 -> Commit([p0, p1]) (leader)
//
// so every commit is a real two-phase commit: two durable Prepares, a decision replicated by
// Raft before the answer, then phase two (two durable Commits) and END.
//
// Reported per client count: committed transactions per second, latency from Begin to the
// Commit answer (p50/p99), the client's time in each call, and the leader's time in each phase
// (from its /metrics: prepare = Commit received to the last vote; decision = to the decision
// applied; phase two = to the last acknowledgement, which the client does not wait for). After
// each run every transaction is resolved and the databases are checked directly: each holds
// exactly one increment per committed transaction.

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "tools/txbench/bench_util.h"
#include "tools/txbench/mode.h"

namespace tx::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Options {
  std::string bin_dir;  // where txcoord and txpart are; default: next to txbench
  std::string dir;      // data directories; default: a fresh temporary directory
  std::vector<int> clients = {1, 64};
  double seconds = 10;
  int rows = 10000;  // per participant; each client writes its own rows
  int batch_inflight = 4;
  int participant_threads = 128;
  bool keep_logs = false;
  // --protocol: TWO_PHASE or THREE_PHASE for every transaction (3PC adds a PRECOMMIT to the
  // Raft log and a durable PreCommit at each participant before the decision).
  api::Protocol::type protocol = api::Protocol::TWO_PHASE;
};

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// GET http://host:port/metrics, the body.
std::string FetchMetrics(const HostPort& at) {
  std::string out;
  StatusOr<int> fd = ConnectTcp(at, std::chrono::seconds(10));
  if (!fd.ok()) return out;
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)::write(*fd, req.data(), req.size());
  char buf[65536];
  ssize_t n;
  while ((n = ::read(*fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(*fd);
  return out;
}

// sum and count of tx_coordinator_phase_seconds{phase=...}.
struct PhaseTotals {
  std::map<std::string, std::pair<double, double>> by_phase;  // phase -> (sum s, count)
};

PhaseTotals ParsePhases(const std::string& text) {
  PhaseTotals t;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    for (const char* counter :
         {"tx_coordinator_log_entries_total", "tx_coordinator_log_commands_total"}) {
      if (line.rfind(std::string(counter) + " ", 0) == 0) {
        t.by_phase[counter] = {std::atof(line.substr(line.rfind(' ') + 1).c_str()), 1};
      }
    }
    for (const char* kind : {"_sum", "_count"}) {
      const std::string prefix = std::string("tx_coordinator_phase_seconds") + kind + "{phase=\"";
      if (line.rfind(prefix, 0) != 0) continue;
      size_t q = line.find('"', prefix.size());
      if (q == std::string::npos) continue;
      std::string phase = line.substr(prefix.size(), q - prefix.size());
      double v = std::atof(line.substr(line.rfind(' ') + 1).c_str());
      auto& p = t.by_phase[phase];
      (std::string(kind) == "_sum" ? p.first : p.second) = v;
    }
  }
  return t;
}

// CPU seconds (user + system) a process has used so far; 0 if unreadable.
double CpuSeconds(pid_t pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat") : fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  // Fields after the name start at 3 (state); utime and stime are 14 and 15.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::atof(field.c_str());
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

template <typename T>
struct Reply {
  Status transport;
  std::optional<api::TxError> error;
  T value;
  bool ok() const { return transport.ok() && !error.has_value(); }
  std::string Describe() const {
    if (!transport.ok()) return transport.ToString();
    if (error) return fmt::format("TxError {}: {}", static_cast<int>(error->code), error->message);
    return "ok";
  }
};

// The coordinator cluster: follows NOT_LEADER hints, retries UNAVAILABLE (Commit is safe to
// repeat: it never decides twice).
class Coordinators {
 public:
  Coordinators(std::vector<HostPort> endpoints, int connections)
      : endpoints_(std::move(endpoints)) {
    rpc::RpcClientOptions o;
    o.max_connections = connections;
    o.max_idle_connections = connections;
    o.recv_timeout = std::chrono::milliseconds(30000);
    for (const HostPort& e : endpoints_) {
      pools_.push_back(std::make_unique<rpc::ClientPool<api::CoordinatorServiceClient>>(e, o));
    }
  }

  template <typename T, typename Fn>
  Reply<T> Call(Fn fn) {
    Reply<T> r;
    for (int attempt = 0; attempt < 200; ++attempt) {
      size_t at = leader_.load();
      r.error.reset();
      r.transport = pools_[at]->Call([&](api::CoordinatorServiceClient& c) {
        try {
          fn(c, r.value);
        } catch (const api::TxError& e) {
          r.error = e;
        }
      });
      if (r.ok()) return r;
      if (r.transport.ok() && r.error->code != api::ErrorCode::NOT_LEADER &&
          r.error->code != api::ErrorCode::UNAVAILABLE) {
        return r;
      }
      size_t next = (at + 1) % pools_.size();
      if (r.transport.ok() && r.error->__isset.leader_hint) {
        for (size_t i = 0; i < endpoints_.size(); ++i) {
          if (ToString(endpoints_[i]) == r.error->leader_hint) next = i;
        }
      }
      leader_.compare_exchange_strong(at, next);
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, 1 << attempt)));
    }
    return r;
  }

  size_t leader() const { return leader_.load(); }

 private:
  std::vector<HostPort> endpoints_;
  std::vector<std::unique_ptr<rpc::ClientPool<api::CoordinatorServiceClient>>> pools_;
  std::atomic<size_t> leader_{0};
};

api::Value Int(int64_t v) {
  api::Value out;
  out.__set_integer(v);
  return out;
}

// CPU used during a run, by role.
struct CpuUse {
  double leader = 0, followers = 0, participants = 0, clients = 0;
};

struct RunResult {
  CpuUse cpu;
  double seconds = 0;
  int64_t committed = 0;
  int64_t aborted = 0;
  Latencies txn_us, begin_us, execute_us, commit_us;
  PhaseTotals phases;
};

class Cluster {
 public:
  static StatusOr<std::unique_ptr<Cluster>> Start(const Options& o, const std::string& dir,
                                                  int run) {
    auto c = std::unique_ptr<Cluster>(new Cluster());
    std::string peers;
    for (int id = 1; id <= 3; ++id) {
      c->coord_[id] = {"127.0.0.1", FreePort()};
      c->metrics_[id] = {"127.0.0.1", FreePort()};
      peers += fmt::format("{}{}={}", peers.empty() ? "" : ",", id, ToString(c->coord_[id]));
    }
    const std::string base = fmt::format("{}/run{}", dir, run);
    std::error_code ec;
    std::filesystem::create_directories(base, ec);
    for (int id = 1; id <= 3; ++id) {
      TX_ASSIGN_OR_RETURN(
          ChildProcess p,
          ChildProcess::StartServer(
              {o.bin_dir + "/txcoord", "--id", std::to_string(id), "--listen",
               ToString(c->coord_[id]), "--peers", peers, "--data-dir",
               fmt::format("{}/coord{}", base, id), "--metrics-listen", ToString(c->metrics_[id]),
               "--batch-inflight", std::to_string(o.batch_inflight), "--participant-threads",
               std::to_string(o.participant_threads), "--log-level", "warn"},
              std::chrono::seconds(30)));
      c->procs_.push_back(std::move(p));
    }
    const std::string init = base + "/schema.sql";
    {
      std::ofstream sql(init);
      sql << "CREATE TABLE IF NOT EXISTS bench(id INTEGER PRIMARY KEY, counter INT NOT NULL);\n"
          << "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < "
          << o.rows - 1 << ") INSERT OR IGNORE INTO bench SELECT i, 0 FROM n;\n";
    }
    std::string coordinators;
    for (auto& [id, hp] : c->coord_)
      coordinators += (coordinators.empty() ? "" : ",") + ToString(hp);
    for (int i = 0; i < 2; ++i) {
      c->dbs_.push_back(fmt::format("{}/p{}.db", base, i));
      TX_ASSIGN_OR_RETURN(
          ChildProcess p,
          ChildProcess::StartServer(
              {o.bin_dir + "/txpart", "--name", fmt::format("p{}", i), "--db", c->dbs_.back(),
               "--listen", "127.0.0.1:0", "--coordinators", coordinators, "--init-sql", init,
               "--max-connections", "1024", "--log-level", "warn"},
              std::chrono::seconds(30)));
      c->parts_.push_back(p.address());
      c->procs_.push_back(std::move(p));
    }
    std::vector<HostPort> endpoints;
    for (auto& [id, hp] : c->coord_) endpoints.push_back(hp);
    c->coordinators_ = std::make_unique<Coordinators>(endpoints, 128);
    for (int i = 0; i < 2; ++i) {
      api::RegisterParticipantRequest req;
      req.participant.name = fmt::format("p{}", i);
      req.participant.address = ToString(c->parts_[i]);
      auto r = c->coordinators_->Call<api::RegisterParticipantResponse>(
          [&](api::CoordinatorServiceClient& cl, api::RegisterParticipantResponse& out) {
            cl.RegisterParticipant(out, req);
          });
      if (!r.ok()) return Status::Unavailable("register: " + r.Describe());
    }
    return c;
  }

  Coordinators& coordinators() { return *coordinators_; }
  const HostPort& participant(int i) const { return parts_[i]; }
  const HostPort& metrics_of_leader() { return metrics_[1 + coordinators_->leader()]; }
  const std::string& db(int i) const { return dbs_[i]; }

  // Waits until the leader has no transaction in phase two.
  bool WaitQuiet(std::chrono::seconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      auto s = coordinators_->Call<api::ClusterStatusResponse>(
          [](api::CoordinatorServiceClient& c, api::ClusterStatusResponse& out) {
            c.GetClusterStatus(out, api::ClusterStatusRequest{});
          });
      if (s.ok() && s.value.role == "leader" && s.value.decided_transactions == 0 &&
          s.value.active_transactions == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  void Stop() {
    for (ChildProcess& p : procs_) p.Stop();
  }

  // CPU seconds so far: [0..2] the replicas by id - 1, [3..4] the participants.
  std::vector<double> Cpu() const {
    std::vector<double> out;
    for (const ChildProcess& p : procs_) out.push_back(CpuSeconds(p.pid()));
    return out;
  }
  // Index into Cpu() of the leader.
  size_t leader_index() const { return coordinators_->leader(); }

 private:
  Cluster() = default;
  std::map<int, HostPort> coord_, metrics_;
  std::vector<HostPort> parts_;
  std::vector<std::string> dbs_;
  std::vector<ChildProcess> procs_;
  std::unique_ptr<Coordinators> coordinators_;
};

StatusOr<int64_t> SumCounters(const std::string& db) {
  sqlite3* conn = nullptr;
  if (sqlite3_open_v2(db.c_str(), &conn, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(conn);
    return Status::IOError("cannot open " + db);
  }
  sqlite3_stmt* stmt = nullptr;
  int64_t sum = -1;
  if (sqlite3_prepare_v2(conn, "SELECT sum(counter) FROM bench", -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    sum = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(conn);
  if (sum < 0) return Status::IOError("cannot read " + db);
  return sum;
}

StatusOr<RunResult> RunOnce(const Options& o, const std::string& dir, int clients, int run) {
  TX_ASSIGN_OR_RETURN(std::unique_ptr<Cluster> cluster, Cluster::Start(o, dir, run));
  Coordinators& coord = cluster->coordinators();
  rpc::RpcClientOptions po;
  po.max_connections = clients;
  po.max_idle_connections = clients;
  po.recv_timeout = std::chrono::milliseconds(30000);
  rpc::ClientPool<api::ParticipantServiceClient> p0(cluster->participant(0), po);
  rpc::ClientPool<api::ParticipantServiceClient> p1(cluster->participant(1), po);

  // Warm-up: connections, the first txid block, the participants' caches.
  {
    auto b = coord.Call<api::BeginResponse>(
        [&](api::CoordinatorServiceClient& c, api::BeginResponse& out) {
          api::BeginRequest breq;
          breq.options.protocol = o.protocol;
          c.Begin(out, breq);
        });
    if (!b.ok()) return Status::Unavailable("begin: " + b.Describe());
    api::CommitTransactionRequest req;
    req.txid = b.value.txid;
    req.protocol = o.protocol;
    auto c = coord.Call<api::CommitTransactionResponse>(
        [&](api::CoordinatorServiceClient& cl, api::CommitTransactionResponse& out) {
          cl.Commit(out, req);
        });
    if (!c.ok()) return Status::Unavailable("commit: " + c.Describe());
  }
  const PhaseTotals before = ParsePhases(FetchMetrics(cluster->metrics_of_leader()));
  const std::vector<double> cpu_before = cluster->Cpu();
  const double self_cpu_before = CpuSeconds(0);

  std::atomic<bool> failed{false};
  std::mutex failure_mu;
  std::string failure;
  std::vector<RunResult> per_client(static_cast<size_t>(clients));
  const auto start = SteadyClock::now();
  const auto deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int ci = 0; ci < clients; ++ci) {
    threads.emplace_back([&, ci] {
      RunResult& r = per_client[static_cast<size_t>(ci)];
      std::mt19937_64 rng(static_cast<uint64_t>(run) * 1000 + static_cast<uint64_t>(ci));
      auto fail = [&](const std::string& what) {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (failure.empty()) failure = what;
        failed = true;
      };
      const int64_t mine = std::max<int64_t>(1, o.rows / clients);
      auto execute = [&](rpc::ClientPool<api::ParticipantServiceClient>& pool, int64_t txid,
                         int64_t row) -> std::string {
        api::ExecuteRequest req;
        req.txid = txid;
        api::Statement st;
        st.sql = "UPDATE bench SET counter = counter + 1 WHERE id = ?";
        st.params = {Int(row)};
        req.statements = {st};
        api::ExecuteResponse out;
        std::optional<api::TxError> error;
        Status s = pool.Call([&](api::ParticipantServiceClient& c) {
          try {
            c.Execute(out, req);
          } catch (const api::TxError& e) {
            error = e;
          }
        });
        if (!s.ok()) return s.ToString();
        if (error) return error->message;
        return "";
      };
      while (SteadyClock::now() < deadline && !failed.load()) {
        const int64_t row = ci * mine + static_cast<int64_t>(rng() % static_cast<uint64_t>(mine));
        const auto t0 = SteadyClock::now();
        auto b = coord.Call<api::BeginResponse>(
            [&](api::CoordinatorServiceClient& c, api::BeginResponse& out) {
              api::BeginRequest breq;
              breq.options.protocol = o.protocol;
              c.Begin(out, breq);
            });
        if (!b.ok()) return fail("begin: " + b.Describe());
        const int64_t txid = b.value.txid;
        const auto t1 = SteadyClock::now();
        std::string e0 = execute(p0, txid, row);
        std::string e1 = e0.empty() ? execute(p1, txid, row) : e0;
        if (!e0.empty() || !e1.empty()) return fail("execute: " + (e0.empty() ? e1 : e0));
        const auto t2 = SteadyClock::now();
        api::CommitTransactionRequest req;
        req.txid = txid;
        req.participants = {"p0", "p1"};
        req.protocol = o.protocol;
        auto c = coord.Call<api::CommitTransactionResponse>(
            [&](api::CoordinatorServiceClient& cl, api::CommitTransactionResponse& out) {
              cl.Commit(out, req);
            });
        if (!c.ok()) return fail("commit: " + c.Describe());
        const auto t3 = SteadyClock::now();
        if (c.value.decision != api::Decision::COMMITTED) {
          ++r.aborted;
          continue;
        }
        ++r.committed;
        auto us = [](auto d) { return std::chrono::duration<double, std::micro>(d).count(); };
        r.txn_us.Add(us(t3 - t0));
        r.begin_us.Add(us(t1 - t0));
        r.execute_us.Add(us(t2 - t1));
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
    total.begin_us.Merge(r.begin_us);
    total.execute_us.Merge(r.execute_us);
    total.commit_us.Merge(r.commit_us);
  }
  if (failed) return Status::Internal("a client failed: " + failure);
  {
    const std::vector<double> cpu_after = cluster->Cpu();
    const size_t leader = cluster->leader_index();
    for (size_t i = 0; i < cpu_after.size() && i < cpu_before.size(); ++i) {
      const double used = cpu_after[i] - cpu_before[i];
      if (i == leader) {
        total.cpu.leader += used;
      } else if (i < 3) {
        total.cpu.followers += used;
      } else {
        total.cpu.participants += used;
      }
    }
    total.cpu.clients = CpuSeconds(0) - self_cpu_before;
  }
  if (!cluster->WaitQuiet(std::chrono::seconds(60))) {
    return Status::Internal("transactions still in progress a minute after the run");
  }
  const PhaseTotals after = ParsePhases(FetchMetrics(cluster->metrics_of_leader()));
  for (const auto& [phase, v] : after.by_phase) {
    auto b = before.by_phase.find(phase);
    double sum = v.first - (b == before.by_phase.end() ? 0 : b->second.first);
    double count = v.second - (b == before.by_phase.end() ? 0 : b->second.second);
    total.phases.by_phase[phase] = {sum, count};
  }
  cluster->Stop();
  for (int i = 0; i < 2; ++i) {
    TX_ASSIGN_OR_RETURN(int64_t sum, SumCounters(cluster->db(i)));
    // The warm-up transaction wrote nothing.
    if (sum != total.committed) {
      return Status::Internal(fmt::format("p{} holds {} increments, but {} transactions committed",
                                          i, sum, total.committed));
    }
  }
  return total;
}

void Print(int clients, RunResult& r) {
  auto mean_ms = [&](const char* phase) {
    auto it = r.phases.by_phase.find(phase);
    if (it == r.phases.by_phase.end() || it->second.second == 0) return 0.0;
    return it->second.first / it->second.second * 1000;
  };
  const double prepare = mean_ms("prepare"), decision = mean_ms("decision"),
               phase_two = mean_ms("phase_two");
  const double all = prepare + decision + phase_two;
  const double entries = r.phases.by_phase["tx_coordinator_log_entries_total"].first;
  const double commands = r.phases.by_phase["tx_coordinator_log_commands_total"].first;
  std::printf(
      "%3d clients: %7.0f committed/s %5.0f aborted/s  txn p50 %6.2f ms p99 %7.2f ms  "
      "(client: begin %.2f, 2 executes %.2f, commit %.2f ms p50)\n"
      "             leader, mean per transaction: prepare %.2f ms (%.0f%%), decision %.2f ms "
      "(%.0f%%), phase two %.2f ms (%.0f%%, after the answer); %.1f log commands per Raft "
      "entry\n",
      clients, static_cast<double>(r.committed) / r.seconds,
      static_cast<double>(r.aborted) / r.seconds, r.txn_us.Quantile(0.5) / 1000,
      r.txn_us.Quantile(0.99) / 1000, r.begin_us.Quantile(0.5) / 1000,
      r.execute_us.Quantile(0.5) / 1000, r.commit_us.Quantile(0.5) / 1000, prepare,
      all > 0 ? 100 * prepare / all : 0, decision, all > 0 ? 100 * decision / all : 0, phase_two,
      all > 0 ? 100 * phase_two / all : 0, entries > 0 ? commands / entries : 0);
  const double n = std::max<double>(1, static_cast<double>(r.committed));
  std::printf(
      "             CPU per committed transaction: leader %.0f us, followers %.0f us, "
      "participants %.0f us, clients %.0f us (%.2f of the 2 CPUs busy)\n",
      1e6 * r.cpu.leader / n, 1e6 * r.cpu.followers / n, 1e6 * r.cpu.participants / n,
      1e6 * r.cpu.clients / n,
      (r.cpu.leader + r.cpu.followers + r.cpu.participants + r.cpu.clients) / r.seconds);
  std::fflush(stdout);
}

int Run(const Options& opts) {
  Options o = opts;
  if (o.bin_dir.empty()) o.bin_dir = SelfDir();
  const bool own_dir = o.dir.empty();
  if (own_dir) {
    StatusOr<std::string> d = MakeTempDir("txbench-2pc");
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
      return 1;
    }
    o.dir = *d;
  }
  std::printf(
      "txbench 2pc: 3 txcoord + 2 txpart on loopback, fsync on everywhere, one row written at "
      "each participant per transaction, protocol %s, %.0f s per client count; %s\n",
      o.protocol == api::Protocol::THREE_PHASE
          ? "3PC (decision = PRECOMMIT logged + PreCommit at both + COMMIT logged)"
          : "2PC",
      o.seconds, MachineDescription().c_str());
  int exit_code = 0;
  int run = 0;
  for (int clients : o.clients) {
    StatusOr<RunResult> r = RunOnce(o, o.dir, clients, run++);
    if (!r.ok()) {
      std::fprintf(stderr, "%d clients: run failed: %s\n", clients, r.status().ToString().c_str());
      exit_code = 1;
      continue;
    }
    Print(clients, *r);
  }
  if (own_dir && !o.keep_logs) RemoveTree(o.dir);
  return exit_code;
}

RunFn Setup(CLI::App* cmd) {
  auto o = std::make_shared<Options>();
  cmd->add_option("--bin-dir", o->bin_dir,
                  "where txcoord and txpart are (default: beside txbench)");
  cmd->add_option("--dir", o->dir, "data directory (default: a temporary one, removed after)");
  cmd->add_option("--clients", o->clients, "client counts to run, e.g. --clients 1 64")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--seconds", o->seconds, "length of each run")->check(CLI::Range(0.5, 3600.0));
  cmd->add_option("--rows", o->rows, "rows per participant")->check(CLI::Range(1, 10000000));
  cmd->add_option("--batch-inflight", o->batch_inflight, "txcoord --batch-inflight")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--participant-threads", o->participant_threads, "txcoord --participant-threads")
      ->check(CLI::Range(1, 4096));
  cmd->add_option_function<std::string>(
         "--protocol",
         [o](const std::string& p) {
           o->protocol = p == "3pc" ? api::Protocol::THREE_PHASE : api::Protocol::TWO_PHASE;
         },
         "2pc (default) or 3pc: the commit protocol of every transaction")
      ->check(CLI::IsMember({"2pc", "3pc"}));
  return [o] {
    spdlog::set_level(spdlog::level::warn);
    return Run(*o);
  };
}

const ModeRegistration k2pcMode(
    "2pc", "3 txcoord + 2 txpart on loopback: distributed transactions per second, latency, phases",
    Setup);

}  // namespace
}  // namespace tx::bench
