// Helpers for tests that run the real txpart binary: start and kill it, talk to it over
// Thrift, read its database directly with the sqlite3 library, and stand in for the
// coordinator (a Thrift CoordinatorService on loopback answering Resolve from a table).

#pragma once

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <thrift/TProcessor.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/rpc/server.h"
#include "tests/support/poll.h"
#include "tests/support/subprocess.h"

namespace tx::testing {

// A txpart process. Its stdout's first line tells where it listens.
class TxpartProcess {
 public:
  // Starts txpart on `db` listening on `listen` ("127.0.0.1:0" for any port), with extra
  // flags and environment (e.g. "TX_FAILPOINTS=..."), and waits until it serves.
  static StatusOr<std::unique_ptr<TxpartProcess>> Start(const std::string& db,
                                                        const std::string& init_sql_file,
                                                        const std::string& listen,
                                                        std::vector<std::string> extra_flags = {},
                                                        std::vector<std::string> env = {}) {
    std::vector<std::string> argv = {
        BinaryDir() + "/txpart", "--name", "p1", "--db", db, "--listen", listen,
        "--log-level",           "warn"};
    if (!init_sql_file.empty()) {
      argv.push_back("--init-sql");
      argv.push_back(init_sql_file);
    }
    for (std::string& f : extra_flags) argv.push_back(std::move(f));
    StatusOr<Subprocess> proc = Subprocess::Start(argv, env);
    if (!proc.ok()) return proc.status();
    auto p = std::unique_ptr<TxpartProcess>(new TxpartProcess(std::move(proc).value()));
    std::optional<std::string> line = p->proc_.ReadLine(std::chrono::seconds(30));
    const std::string prefix = "listening on ";
    if (!line.has_value() || line->rfind(prefix, 0) != 0) {
      return Status::Unavailable("txpart did not start: " + line.value_or("<no output>"));
    }
    StatusOr<HostPort> at = ParseHostPort(line->substr(prefix.size()));
    if (!at.ok()) return at.status();
    p->address_ = *at;
    return p;
  }

  const HostPort& address() const { return address_; }
  Subprocess& process() { return proc_; }

  // SIGKILL and reap.
  void Kill() { proc_.Kill(); }

  // Waits for the process to exit by itself (e.g. at a crash failpoint); its wait status.
  std::optional<int> WaitExit(std::chrono::milliseconds timeout) { return proc_.Wait(timeout); }

 private:
  explicit TxpartProcess(Subprocess proc) : proc_(std::move(proc)) {}
  Subprocess proc_;
  HostPort address_;
};

using ParticipantPool = rpc::ClientPool<api::ParticipantServiceClient>;

inline rpc::RpcClientOptions TestClientOptions() {
  rpc::RpcClientOptions o;
  o.recv_timeout = std::chrono::milliseconds(20000);
  o.backoff.initial = std::chrono::milliseconds(5);
  o.backoff.max = std::chrono::milliseconds(50);
  return o;
}

inline api::Value Int(int64_t v) {
  api::Value out;
  out.__set_integer(v);
  return out;
}

inline api::Statement Stmt(std::string sql, std::vector<api::Value> params = {}) {
  api::Statement s;
  s.sql = std::move(sql);
  s.params = std::move(params);
  return s;
}

// The reply of a call, or the TxError it threw, or the transport failure.
template <typename T>
struct Reply {
  Status transport;  // not OK: the call failed below Thrift (crash, timeout)
  std::optional<api::TxError> error;
  T value;
  bool ok() const { return transport.ok() && !error.has_value(); }
  std::string Describe() const {
    if (!transport.ok()) return transport.ToString();
    if (error) return fmt::format("TxError {}: {}", static_cast<int>(error->code), error->message);
    return "ok";
  }
};

// Typed calls on a pool; each returns what happened, never throws.
class ParticipantClient {
 public:
  explicit ParticipantClient(const HostPort& at) : pool_(at, TestClientOptions()) {}

  template <typename T, typename Fn>
  Reply<T> Call(Fn fn) {
    Reply<T> r;
    r.transport = pool_.Call([&](api::ParticipantServiceClient& c) {
      try {
        fn(c, r.value);
      } catch (const api::TxError& e) {
        r.error = e;
      }
    });
    return r;
  }

  Reply<api::ExecuteResponse> Execute(int64_t txid, std::vector<api::Statement> statements) {
    return Call<api::ExecuteResponse>([&](api::ParticipantServiceClient& c, auto& out) {
      api::ExecuteRequest req;
      req.txid = txid;
      req.statements = statements;
      c.Execute(out, req);
    });
  }
  Reply<api::ExecuteResponse> Execute(int64_t txid, std::string sql,
                                      std::vector<api::Value> params = {}) {
    return Execute(txid, {Stmt(std::move(sql), std::move(params))});
  }
  Reply<api::PrepareResponse> Prepare(int64_t txid) {
    return Call<api::PrepareResponse>([&](api::ParticipantServiceClient& c, auto& out) {
      api::PrepareRequest req;
      req.txid = txid;
      c.Prepare(out, req);
    });
  }
  Reply<api::CommitResponse> Commit(int64_t txid) {
    return Call<api::CommitResponse>([&](api::ParticipantServiceClient& c, auto& out) {
      api::CommitRequest req;
      req.txid = txid;
      c.Commit(out, req);
    });
  }
  Reply<api::AbortResponse> Abort(int64_t txid) {
    return Call<api::AbortResponse>([&](api::ParticipantServiceClient& c, auto& out) {
      api::AbortRequest req;
      req.txid = txid;
      c.Abort(out, req);
    });
  }
  Reply<api::TransactionStatus> Status(int64_t txid) {
    return Call<api::TransactionStatus>([&](api::ParticipantServiceClient& c, auto& out) {
      api::StatusRequest req;
      req.txid = txid;
      c.Status(out, req);
    });
  }
  Reply<api::ListPreparedResponse> ListPrepared() {
    return Call<api::ListPreparedResponse>([&](api::ParticipantServiceClient& c, auto& out) {
      api::ListPreparedRequest req;
      c.ListPrepared(out, req);
    });
  }

 private:
  ParticipantPool pool_;
};

// Reads the database file directly (not through the agent): what is really committed.
class DirectDb {
 public:
  explicit DirectDb(const std::string& path) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr);
    EXPECT_EQ(SQLITE_OK, rc) << path;
  }
  ~DirectDb() { sqlite3_close_v2(db_); }
  DirectDb(const DirectDb&) = delete;
  DirectDb& operator=(const DirectDb&) = delete;

  // The first column of every row.
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

// A stand-in for the coordinator cluster's Resolve, served over Thrift on loopback.
class FakeCoordinator final : public api::CoordinatorServiceNull {
 public:
  // Answers `decision` for txid; unknown txids get PENDING.
  void Decide(int64_t txid, api::Decision::type decision) {
    std::lock_guard<std::mutex> lock(mu_);
    decisions_[txid] = decision;
  }
  // Answers NOT_LEADER (with this hint, if not empty) to every call.
  void RedirectTo(std::string hint) {
    std::lock_guard<std::mutex> lock(mu_);
    redirect_ = true;
    hint_ = std::move(hint);
  }
  int calls() const { return calls_.load(); }
  std::vector<int64_t> asked() {
    std::lock_guard<std::mutex> lock(mu_);
    return asked_;
  }

  void Resolve(api::ResolveResponse& out, const api::ResolveRequest& request) override {
    calls_++;
    std::lock_guard<std::mutex> lock(mu_);
    asked_.push_back(request.txid);
    if (redirect_) {
      api::TxError e;
      e.code = api::ErrorCode::NOT_LEADER;
      e.message = "not the leader";
      if (!hint_.empty()) e.__set_leader_hint(hint_);
      throw e;
    }
    auto it = decisions_.find(request.txid);
    out.decision = it == decisions_.end() ? api::Decision::PENDING : it->second;
  }

  // Serves this on a free loopback port.
  StatusOr<HostPort> Serve() {
    rpc::RpcServerOptions o;
    o.name = "fake-coordinator";
    o.listen = HostPort{"127.0.0.1", 0};
    auto self = std::shared_ptr<api::CoordinatorServiceIf>(this, [](auto*) {});
    StatusOr<std::unique_ptr<rpc::RpcServer>> server =
        rpc::RpcServer::Start(std::make_shared<api::CoordinatorServiceProcessor>(self), o);
    if (!server.ok()) return server.status();
    server_ = std::move(server).value();
    return server_->address();
  }
  void Stop() {
    if (server_) server_->Stop();
  }

 private:
  std::atomic<int> calls_{0};
  std::mutex mu_;
  std::map<int64_t, api::Decision::type> decisions_;  // GUARDED_BY(mu_)
  std::vector<int64_t> asked_;                        // GUARDED_BY(mu_)
  bool redirect_ = false;                             // GUARDED_BY(mu_)
  std::string hint_;                                  // GUARDED_BY(mu_)
  std::unique_ptr<rpc::RpcServer> server_;
};

}  // namespace tx::testing
