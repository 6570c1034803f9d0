// A local cluster for libtxclient's real-process tests: three txcoord replicas and two txpart
// agents on loopback, real SQLite files, real fsync; plus direct reads of the agents' SQLite
// files (what is really committed, independent of anything the client says).

#pragma once

#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CoordinatorService.h"
#include "client/coordinator_channel.h"
#include "common/net.h"
#include "tests/support/poll.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace tx::client::testing {

using tx::testing::BinaryDir;
using tx::testing::Subprocess;
using tx::testing::TempDir;

// Free loopback ports, found by binding port 0 and releasing them. (Another program could take
// one in between; nothing on a test machine competes for them in practice.)
inline std::vector<uint16_t> FreePorts(int n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(0, ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    socklen_t len = sizeof(addr);
    EXPECT_EQ(0, ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len));
    ports.push_back(ntohs(addr.sin_port));
    fds.push_back(fd);
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

// Polls every 20 ms (the conditions here are RPCs to the cluster) until `done` holds or
// `timeout` passes.
template <typename Fn>
bool PollUntil(Fn done, std::chrono::milliseconds timeout) {
  return tx::testing::PollUntil(done, timeout, std::chrono::milliseconds(20));
}

// Reads a SQLite file directly, read-only.
class SqliteFile {
 public:
  explicit SqliteFile(const std::string& path) {
    EXPECT_EQ(SQLITE_OK, sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr))
        << path;
    sqlite3_busy_timeout(db_, 5000);
  }
  ~SqliteFile() { sqlite3_close_v2(db_); }
  SqliteFile(const SqliteFile&) = delete;
  SqliteFile& operator=(const SqliteFile&) = delete;

  // The first column of every row, as integers.
  std::vector<int64_t> Ints(const std::string& sql) {
    std::vector<int64_t> out;
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(SQLITE_OK, sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr))
        << sql << ": " << sqlite3_errmsg(db_);
    while (stmt != nullptr && sqlite3_step(stmt) == SQLITE_ROW) {
      out.push_back(sqlite3_column_int64(stmt, 0));
    }
    sqlite3_finalize(stmt);
    return out;
  }
  int64_t Int(const std::string& sql) {
    std::vector<int64_t> v = Ints(sql);
    EXPECT_EQ(1u, v.size()) << sql;
    return v.empty() ? -1 : v[0];
  }

 private:
  sqlite3* db_ = nullptr;
};

class LocalCluster {
 public:
  static constexpr int kReplicas = 3;
  static constexpr int kParticipants = 2;

  // `schema_sql` is what every participant runs at start-up (--init-sql).
  explicit LocalCluster(std::string schema_sql) : schema_sql_(std::move(schema_sql)) {}
  ~LocalCluster() {
    for (auto& [id, p] : coordinators_) p.Kill();
    for (auto& [i, p] : participants_) p.Kill();
  }

  // Starts everything, waits for a leader, registers the participants "accounts-even" and
  // "accounts-odd" through libtxclient's coordinator channel.
  tx::Status Start() {
    std::vector<uint16_t> ports = FreePorts(kReplicas);
    for (int id = 1; id <= kReplicas; ++id) {
      HostPort hp{"127.0.0.1", ports[static_cast<size_t>(id - 1)]};
      replicas_[id] = hp;
      peers_ += fmt::format("{}{}={}", peers_.empty() ? "" : ",", id, ToString(hp));
      coordinators_list_ += (coordinators_list_.empty() ? "" : ",") + ToString(hp);
    }
    std::ofstream(dir_.path() + "/schema.sql") << schema_sql_;
    for (int id = 1; id <= kReplicas; ++id) TX_RETURN_IF_ERROR(StartCoordinator(id));
    for (int i = 0; i < kParticipants; ++i) TX_RETURN_IF_ERROR(StartParticipant(i));
    if (LeaderId(std::chrono::seconds(30)) == 0)
      return tx::Status::Unavailable("no leader elected");
    for (int i = 0; i < kParticipants; ++i) {
      api::RegisterParticipantRequest req;
      req.participant.name = name(i);
      req.participant.address = ToString(participant_addresses_.at(i));
      api::RegisterParticipantResponse resp;
      internal::CallResult r = channel().Call(
          "RegisterParticipant",
          [&](api::CoordinatorServiceClient& c) { c.RegisterParticipant(resp, req); },
          std::chrono::steady_clock::now() + std::chrono::seconds(30));
      if (!r.ok()) return tx::Status::Unavailable("register " + name(i) + ": " + r.Describe());
    }
    return tx::Status::OK();
  }

  tx::Status StartCoordinator(int id) {
    tx::StatusOr<Subprocess> p =
        Serve({BinaryDir() + "/txcoord", "--id", std::to_string(id), "--listen",
               ToString(replicas_.at(id)), "--peers", peers_, "--data-dir",
               fmt::format("{}/coord{}", dir_.path(), id), "--tick-ms", "10", "--heartbeat-ticks",
               "2", "--election-ticks", "20", "--txn-timeout-ms", "10000", "--log-level", "warn"});
    if (!p.ok()) return p.status();
    coordinators_.erase(id);
    coordinators_.emplace(id, *std::move(p));
    return tx::Status::OK();
  }

  tx::Status StartParticipant(int i) {
    tx::StatusOr<Subprocess> p = Serve(
        {BinaryDir() + "/txpart", "--name", name(i), "--db", db_path(i), "--listen", "127.0.0.1:0",
         "--coordinators", coordinators_list_, "--init-sql", dir_.path() + "/schema.sql",
         "--resolve-after-ms", "1000", "--lock-timeout-ms", "2000", "--log-level", "warn"},
        &participant_addresses_[i]);
    if (!p.ok()) return p.status();
    participants_.erase(i);
    participants_.emplace(i, *std::move(p));
    return tx::Status::OK();
  }

  void KillCoordinator(int id) { coordinators_.at(id).Kill(); }

  // The replica that reports itself leader (0 when none does within `wait`). With `not_id`,
  // waits for a leader other than that replica.
  int LeaderId(std::chrono::milliseconds wait, int not_id = 0) {
    int leader = 0;
    PollUntil(
        [&] {
          leader = 0;
          for (int id = 1; id <= kReplicas; ++id) {
            std::optional<api::ClusterStatusResponse> s = StatusOf(id);
            if (s && s->role == "leader" && id != not_id) leader = id;
          }
          return leader != 0;
        },
        wait);
    return leader;
  }

  std::optional<api::ClusterStatusResponse> StatusOf(int id) {
    api::ClusterStatusResponse s;
    internal::CallResult r = channel().CallReplica(
        replicas_.at(id),
        [&](api::CoordinatorServiceClient& c) {
          c.GetClusterStatus(s, api::ClusterStatusRequest());
        },
        std::chrono::milliseconds(1000));
    if (!r.ok()) return std::nullopt;
    return s;
  }

  // True once no participant holds a prepared transaction and the leader has no decided,
  // unfinished one: every transaction is resolved everywhere.
  bool WaitAllResolved(std::chrono::milliseconds timeout) {
    return PollUntil(
        [&] {
          for (int i = 0; i < kParticipants; ++i) {
            if (SqliteFile(db_path(i)).Int("SELECT count(*) FROM _txpart_prepared") != 0) {
              return false;
            }
          }
          int leader = LeaderId(std::chrono::milliseconds(0));
          if (leader == 0) return false;
          std::optional<api::ClusterStatusResponse> s = StatusOf(leader);
          return s && s->decided_transactions == 0;
        },
        timeout);
  }

  // txid -> outcome (1 committed, 2 aborted) as participant i recorded it in its own tables.
  std::map<int64_t, int64_t> Outcomes(int i) {
    SqliteFile db(db_path(i));
    std::vector<int64_t> txids = db.Ints("SELECT txid FROM _txpart_outcomes ORDER BY txid");
    std::vector<int64_t> outcomes = db.Ints("SELECT outcome FROM _txpart_outcomes ORDER BY txid");
    std::map<int64_t, int64_t> out;
    for (size_t k = 0; k < txids.size() && k < outcomes.size(); ++k) out[txids[k]] = outcomes[k];
    return out;
  }

  internal::CoordinatorChannel& channel() {
    if (!channel_) {
      std::vector<HostPort> endpoints;
      for (const auto& [id, hp] : replicas_) endpoints.push_back(hp);
      channel_ =
          std::make_unique<internal::CoordinatorChannel>(endpoints, internal::ChannelOptions());
    }
    return *channel_;
  }
  std::vector<std::string> coordinator_endpoints() const {
    std::vector<std::string> out;
    for (const auto& [id, hp] : replicas_) out.push_back(ToString(hp));
    return out;
  }
  const std::string& coordinators_list() const { return coordinators_list_; }
  static std::string name(int i) { return i == 0 ? "accounts-even" : "accounts-odd"; }
  std::string db_path(int i) const { return fmt::format("{}/{}.db", dir_.path(), name(i)); }

 private:
  // Starts a program that prints "listening on HOST:PORT" once it serves.
  tx::StatusOr<Subprocess> Serve(const std::vector<std::string>& argv,
                                 HostPort* address = nullptr) {
    tx::StatusOr<Subprocess> p = Subprocess::Start(argv);
    if (!p.ok()) return p.status();
    std::optional<std::string> line = p->ReadLine(std::chrono::seconds(30));
    const std::string prefix = "listening on ";
    if (!line || line->rfind(prefix, 0) != 0) {
      return tx::Status::Unavailable(argv[0] + " did not start: " + line.value_or("<no output>"));
    }
    if (address != nullptr) {
      tx::StatusOr<HostPort> hp = ParseHostPort(line->substr(prefix.size()));
      if (!hp.ok()) return hp.status();
      *address = *hp;
    }
    return p;
  }

  const std::string schema_sql_;
  TempDir dir_;
  std::map<int, HostPort> replicas_;
  std::string peers_;
  std::string coordinators_list_;
  std::map<int, HostPort> participant_addresses_;
  std::map<int, Subprocess> coordinators_;
  std::map<int, Subprocess> participants_;
  std::unique_ptr<internal::CoordinatorChannel> channel_;
};

}  // namespace tx::client::testing
