// One SQLite connection of the agent, with the authorizer that decides what a client's SQL may
// do, and caches of prepared statements.
//
// Client SQL ("user statements") may read anything and write rows of tables that have a
// PRIMARY KEY in the main database. It may not control transactions (BEGIN, COMMIT,
// SAVEPOINT: the agent runs the transaction), change the schema (DDL: changesets do not carry
// it), run PRAGMAs, ATTACH, or write the agent's own tables (_txpart_*) or SQLite's.
//
// Not thread-safe: a connection is used by one thread at a time (the writer thread owns one;
// readers are checked out of a pool).

#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "participant/participant.h"
#include "participant/schema.h"
#include "participant/sqlite_util.h"

namespace tx::participant {

// Tables of the agent itself; clients may read but never write them.
inline constexpr std::string_view kInternalTablePrefix = "_txpart_";

class Connection {
 public:
  static StatusOr<std::unique_ptr<Connection>> Open(const std::string& path, bool foreign_keys,
                                                    SchemaCache* schema);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* db() const { return db_.get(); }
  SchemaCache* schema() const { return schema_; }

  struct UserStatement {
    sqlite3_stmt* stmt = nullptr;  // valid until the next PrepareUser
    bool readonly = false;
  };
  // Prepares (or reuses) a client statement under the client policy. Errors: kInvalidSql
  // (does not compile, not exactly one statement, or not allowed), kNoPrimaryKey (writes a
  // table without a PRIMARY KEY, directly or through a trigger or foreign-key action).
  Result<UserStatement> PrepareUser(const std::string& sql);

  // Prepares (or reuses) one of the agent's own statements; no policy applies.
  StatusOr<sqlite3_stmt*> PrepareInternal(const std::string& sql);

  // While set, the client policy applies to statements SQLite re-prepares on its own (after
  // a schema change) during sqlite3_step. Set around the stepping of client statements.
  void set_user_mode(bool on) { user_mode_ = on; }

  // Triggers fire for client statements; changeset apply runs with them off, since their
  // effects were captured in the changeset already.
  void SetTriggersEnabled(bool on);

  // While set, a statement still running at `deadline` is interrupted (SQLITE_INTERRUPT;
  // RunStatement reports TIMED_OUT). Real time: it guards against runaway queries.
  void set_deadline(std::optional<std::chrono::steady_clock::time_point> deadline) {
    deadline_ = deadline;
  }
  bool deadline_passed() const {
    return deadline_.has_value() && std::chrono::steady_clock::now() >= *deadline_;
  }

 private:
  Connection(DbHandle db, SchemaCache* schema);
  static int Authorize(void* self, int action, const char* a1, const char* a2, const char* db_name,
                       const char* trigger);
  int AuthorizeUser(int action, const char* a1, const char* db_name);
  static int OnProgress(void* self);

  DbHandle db_;
  SchemaCache* const schema_;
  StatementCache user_cache_;
  StatementCache internal_cache_;

  // Authorizer state, meaningful while a client statement is prepared.
  bool user_mode_ = false;
  std::string denied_;                // why the last refusal happened
  std::vector<std::string> written_;  // tables written by the statement being prepared
  std::optional<std::chrono::steady_clock::time_point> deadline_;
};

// Sets a connection's statement deadline `timeout_ms` from now, for its own lifetime.
class StatementDeadline {
 public:
  StatementDeadline(Connection* conn, int64_t timeout_ms) : conn_(conn) {
    conn_->set_deadline(std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms));
  }
  ~StatementDeadline() { conn_->set_deadline(std::nullopt); }
  StatementDeadline(const StatementDeadline&) = delete;
  StatementDeadline& operator=(const StatementDeadline&) = delete;

 private:
  Connection* const conn_;
};

}  // namespace tx::participant
