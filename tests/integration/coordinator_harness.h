// A real cluster for the coordinator's integration tests: three txcoord replicas and N txpart
// agents as processes on loopback, real SQLite files, real fsync; plus the checks that read the
// databases directly (the bank invariant, and per-txid outcome agreement from the agents'
// outcome tables).
//
// Replica 1 gets a short election timeout and the others a long one, so replica 1 leads after
// start-up: a test can arm a failpoint (TX_FAILPOINTS) on the replica that will coordinate.

#pragma once

#include <arpa/inet.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/integration/participant_harness.h"
#include "tests/support/coordinator_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace tx::testing {

// Free loopback ports, found by binding port 0. (A port could be taken between this and the
// process binding it; nothing else on a CI machine competes for these in practice.)
inline std::vector<uint16_t> PickFreePorts(int n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(0, ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    socklen_t len = sizeof(addr);
    EXPECT_EQ(0, ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len));
    ports.push_back(ntohs(addr.sin_port));
    fds.push_back(fd);
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

// Starts a program that prints "listening on HOST:PORT" when ready.
inline StatusOr<Subprocess> StartServing(const std::vector<std::string>& argv,
                                         const std::vector<std::string>& env) {
  StatusOr<Subprocess> p = Subprocess::Start(argv, env);
  if (!p.ok()) return p.status();
  std::optional<std::string> line = p->ReadLine(std::chrono::seconds(30));
  if (!line.has_value() || line->rfind("listening on ", 0) != 0) {
    return Status::Unavailable(argv[0] + " did not start: " + line.value_or("<no output>"));
  }
  return p;
}

struct ClusterOptions {
  int participants = 2;
  int accounts = 10;  // per participant, ids 0..accounts-1
  int64_t initial_balance = 1000;
  // Extra environment per replica id (1..3) and per participant index, e.g. TX_FAILPOINTS.
  std::map<int, std::vector<std::string>> coordinator_env;
  std::map<int, std::vector<std::string>> participant_env;
  int64_t txn_timeout_ms = 10'000;
};

class Cluster {
 public:
  static constexpr int kReplicas = 3;

  explicit Cluster(ClusterOptions options = {}) : options_(std::move(options)) {}
  ~Cluster() {
    for (auto& [id, p] : coordinators_) p.Kill();
    for (auto& [i, p] : participants_) p.Kill();
  }

  // Starts everything, waits for a leader, registers the participants.
  Status Start() {
    std::vector<uint16_t> ports = PickFreePorts(kReplicas + options_.participants);
    std::string peers;
    for (int id = 1; id <= kReplicas; ++id) {
      coord_ports_[id] = ports[id - 1];
      peers += fmt::format("{}{}=127.0.0.1:{}", peers.empty() ? "" : ",", id, ports[id - 1]);
      endpoints_.push_back(HostPort{"127.0.0.1", ports[id - 1]});
    }
    peers_ = peers;
    for (int i = 0; i < options_.participants; ++i) {
      part_ports_[i] = ports[kReplicas + i];
    }
    std::ofstream(dir_.path() + "/schema.sql")
        << "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);"
        << "CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY, note TEXT);";
    for (int id = 1; id <= kReplicas; ++id) TX_RETURN_IF_ERROR(StartCoordinator(id));
    client_ = std::make_unique<CoordinatorClient>(endpoints_, std::chrono::seconds(30));
    for (int i = 0; i < options_.participants; ++i) TX_RETURN_IF_ERROR(StartParticipant(i));
    // Each agent registers itself with the coordinators (txpart's Registrar); every test that
    // starts a cluster thus checks that clients can find the agents through the directory alone.
    std::string directory;
    bool registered = PollUntil(
        [&] {
          CoordReply<api::GetDirectoryResponse> d = client_->GetDirectory();
          if (!d.ok()) return false;
          std::map<std::string, std::string> listed;
          for (const api::ParticipantRef& p : d.value.participants) listed[p.name] = p.address;
          directory = fmt::format("{}", listed);
          for (int i = 0; i < options_.participants; ++i) {
            if (listed[name(i)] != fmt::format("127.0.0.1:{}", part_ports_[i])) return false;
          }
          return true;
        },
        std::chrono::seconds(30));
    if (!registered) {
      return Status::Unavailable("the agents did not register themselves; directory: " + directory);
    }
    // Seed the accounts through the agents (ordinary transactions would do too, but a direct
    // one-phase commit per participant keeps the set-up short).
    for (int i = 0; i < options_.participants; ++i) {
      CoordReply<api::BeginResponse> b = client_->Begin();
      if (!b.ok()) return Status::Unavailable("begin: " + b.Describe());
      ParticipantClient pc(participant_address(i));
      std::vector<api::Statement> stmts;
      for (int a = 0; a < options_.accounts; ++a) {
        stmts.push_back(Stmt("INSERT OR IGNORE INTO accounts(id, balance) VALUES (?, ?)",
                             {Int(a), Int(options_.initial_balance)}));
      }
      auto e = pc.Execute(b.value.txid, stmts);
      if (!e.ok()) return Status::Unavailable("seed: " + e.Describe());
      CoordReply<api::CommitTransactionResponse> c = client_->Commit(b.value.txid, {name(i)});
      if (!c.ok() || c.value.decision != api::Decision::COMMITTED) {
        return Status::Unavailable("seed commit: " + c.Describe());
      }
    }
    return Status::OK();
  }

  // `env`, when given, replaces the options' environment for this replica (e.g. to restart it
  // without the failpoint it crashed at).
  Status StartCoordinator(int id, std::optional<std::vector<std::string>> env_override = {}) {
    std::string data = fmt::format("{}/coord{}", dir_.path(), id);
    std::vector<std::string> env = env_override.value_or(options_.coordinator_env[id]);
    StatusOr<Subprocess> p =
        StartServing({BinaryDir() + "/txcoord", "--id", std::to_string(id), "--listen",
                      fmt::format("127.0.0.1:{}", coord_ports_[id]), "--peers", peers_,
                      "--data-dir", data, "--tick-ms", "10", "--heartbeat-ticks", "2",
                      // Replica 1 campaigns first and wins; the others wait much longer.
                      "--election-ticks", id == 1 ? "5" : "40", "--txn-timeout-ms",
                      std::to_string(options_.txn_timeout_ms), "--log-level", "warn"},
                     env);
    if (!p.ok()) return p.status();
    coordinators_.erase(id);
    coordinators_.emplace(id, std::move(p).value());
    return Status::OK();
  }

  Status StartParticipant(int i, std::optional<std::vector<std::string>> env_override = {}) {
    std::vector<std::string> env = env_override.value_or(options_.participant_env[i]);
    std::vector<std::string> addresses;
    for (const HostPort& hp : endpoints_) addresses.push_back(ToString(hp));
    const std::string coordinators = fmt::format("{}", fmt::join(addresses, ","));
    StatusOr<Subprocess> p =
        StartServing({BinaryDir() + "/txpart", "--name", name(i), "--db", db_path(i), "--listen",
                      fmt::format("127.0.0.1:{}", part_ports_[i]), "--coordinators", coordinators,
                      "--init-sql", dir_.path() + "/schema.sql", "--resolve-after-ms", "1000",
                      "--lock-timeout-ms", "2000", "--log-level", "warn"},
                     env);
    if (!p.ok()) return p.status();
    participants_.erase(i);
    participants_.emplace(i, std::move(p).value());
    return Status::OK();
  }

  void KillCoordinator(int id) { coordinators_.at(id).Kill(); }
  void KillParticipant(int i) { participants_.at(i).Kill(); }
  // Waits for a process to end by itself (a crash failpoint); its wait status.
  std::optional<int> WaitCoordinatorExit(int id, std::chrono::milliseconds timeout) {
    return coordinators_.at(id).Wait(timeout);
  }
  std::optional<int> WaitParticipantExit(int i, std::chrono::milliseconds timeout) {
    return participants_.at(i).Wait(timeout);
  }

  // The id of the replica that serves as leader now (0 if none answers as such).
  int LeaderId() {
    for (int id = 1; id <= kReplicas; ++id) {
      CoordReply<api::ClusterStatusResponse> s = client_->Status(endpoints_[id - 1]);
      if (s.ok() && s.value.role == "leader") return id;
    }
    return 0;
  }

  // Polls until every participant's prepared table is empty and the leader holds no decided,
  // unfinished transaction.
  bool WaitAllResolved(std::chrono::milliseconds timeout) {
    return PollUntil(
        [&] {
          for (int i = 0; i < options_.participants; ++i) {
            DirectDb db(db_path(i));
            if (db.Int("SELECT count(*) FROM _txpart_prepared") != 0) return false;
          }
          int leader = LeaderId();
          if (leader == 0) return false;
          CoordReply<api::ClusterStatusResponse> s = client_->Status(endpoints_[leader - 1]);
          return s.ok() && s.value.decided_transactions == 0;
        },
        timeout);
  }

  // What is unresolved, for failure messages: prepared txids per participant and the leader's
  // transactions in progress.
  std::string DescribeUnresolved() {
    std::string out;
    for (int i = 0; i < options_.participants; ++i) {
      DirectDb db(db_path(i));
      out += fmt::format("{} prepared: [{}]; ", name(i),
                         fmt::join(db.Ints("SELECT txid FROM _txpart_prepared"), ","));
    }
    CoordReply<api::ListTransactionsResponse> list = client_->ListTransactions();
    if (!list.ok()) return out + "ListTransactions: " + list.Describe();
    for (const api::TransactionView& v : list.value.transactions) {
      out += fmt::format("txid {} phase {}:", v.txid, static_cast<int>(v.phase));
      for (const api::ParticipantProgress& p : v.participants) {
        out += fmt::format(" {}(vote {} waiting {} acked {} attempts {} error '{}')", p.name,
                           static_cast<int>(p.vote), p.waiting, p.acknowledged, p.attempts,
                           p.last_error);
      }
      out += "; ";
    }
    return out;
  }

  // Sum of every balance at every participant, read from the files.
  int64_t TotalBalance() {
    int64_t total = 0;
    for (int i = 0; i < options_.participants; ++i) {
      total += DirectDb(db_path(i)).Int("SELECT COALESCE(sum(balance), 0) FROM accounts");
    }
    return total;
  }
  int64_t ExpectedTotal() const {
    return int64_t{options_.participants} * options_.accounts * options_.initial_balance;
  }

  // txid -> outcome (1 committed, 2 aborted) as participant i recorded it.
  std::map<int64_t, int64_t> Outcomes(int i) {
    DirectDb db(db_path(i));
    std::vector<int64_t> txids = db.Ints("SELECT txid FROM _txpart_outcomes ORDER BY txid");
    std::vector<int64_t> outcomes = db.Ints("SELECT outcome FROM _txpart_outcomes ORDER BY txid");
    std::map<int64_t, int64_t> out;
    for (size_t k = 0; k < txids.size() && k < outcomes.size(); ++k) out[txids[k]] = outcomes[k];
    return out;
  }

  // Atomicity from the files: no txid committed at one participant and aborted at another.
  void ExpectNoSplitOutcomes() {
    std::map<int64_t, std::set<int64_t>> seen;
    for (int i = 0; i < options_.participants; ++i) {
      for (auto [txid, outcome] : Outcomes(i)) seen[txid].insert(outcome);
    }
    for (const auto& [txid, outcomes] : seen) {
      EXPECT_EQ(1u, outcomes.size()) << "txid " << txid << " committed at one participant and "
                                     << "aborted at another";
    }
  }

  CoordinatorClient& client() { return *client_; }
  const std::vector<HostPort>& endpoints() const { return endpoints_; }
  std::string name(int i) const { return fmt::format("p{}", i); }
  std::string db_path(int i) const { return fmt::format("{}/p{}.db", dir_.path(), i); }
  HostPort participant_address(int i) const { return HostPort{"127.0.0.1", part_ports_.at(i)}; }
  const ClusterOptions& options() const { return options_; }

 private:
  ClusterOptions options_;
  TempDir dir_;
  std::string peers_;
  std::map<int, uint16_t> coord_ports_;
  std::map<int, uint16_t> part_ports_;
  std::vector<HostPort> endpoints_;
  std::map<int, Subprocess> coordinators_;
  std::map<int, Subprocess> participants_;
  std::unique_ptr<CoordinatorClient> client_;
};

// One bank transfer: `amount` from account `from` at participant 0 to account `to` at
// participant 1, through the coordinator. What the client learned.
enum class TransferResult { kCommitted, kAborted, kFailed, kUnknown };

struct Transfer {
  int64_t txid = 0;
  TransferResult result = TransferResult::kFailed;
  std::string detail;
};

inline Transfer RunTransfer(Cluster& cluster, CoordinatorClient& client, ParticipantClient& a,
                            ParticipantClient& b, int from, int to, int64_t amount) {
  Transfer t;
  CoordReply<api::BeginResponse> begin = client.Begin();
  if (!begin.ok()) {
    t.detail = "begin: " + begin.Describe();
    return t;
  }
  t.txid = begin.value.txid;
  const std::vector<std::string> parts = {cluster.name(0), cluster.name(1)};
  auto ea = a.Execute(t.txid, "UPDATE accounts SET balance = balance - ? WHERE id = ?",
                      {Int(amount), Int(from)});
  auto eb = ea.ok() ? b.Execute(t.txid, "UPDATE accounts SET balance = balance + ? WHERE id = ?",
                                {Int(amount), Int(to)})
                    : ea;
  if (!ea.ok() || !eb.ok()) {
    (void)client.Abort(t.txid, parts);
    t.result = TransferResult::kAborted;
    t.detail = "execute: " + (ea.ok() ? eb : ea).Describe();
    return t;
  }
  CoordReply<api::CommitTransactionResponse> c = client.Commit(t.txid, parts);
  if (!c.ok()) {
    t.result = TransferResult::kUnknown;
    t.detail = "commit: " + c.Describe();
    return t;
  }
  t.result = c.value.decision == api::Decision::COMMITTED ? TransferResult::kCommitted
                                                          : TransferResult::kAborted;
  t.detail = c.value.reason;
  return t;
}

}  // namespace tx::testing
