// Thin RAII helpers over the SQLite C API, with the session extension enabled.
//
// Include this header instead of <sqlite3.h>: Debian's SQLite is built with the session
// extension, but the header hides its API unless these macros are defined first.

#pragma once

#ifndef SQLITE_ENABLE_SESSION
#define SQLITE_ENABLE_SESSION 1
#endif
#ifndef SQLITE_ENABLE_PREUPDATE_HOOK
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#endif
#include <sqlite3.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "participant/participant.h"

namespace tx::participant {

// Maps an SQLite result code to a Status. `context` names the operation.
Status SqliteStatus(int rc, sqlite3* db, std::string_view context);

// Routes sqlite3_log() (where SQLite reports, e.g., tables skipped by changeset apply) to
// spdlog. Must run before any connection opens; later calls do nothing.
void InstallSqliteLogger();

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbHandle = std::unique_ptr<sqlite3, SqliteCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtHandle = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Opens `path` read-write (creating it), in WAL mode with synchronous=FULL, extended result
// codes, and foreign keys as asked.
StatusOr<DbHandle> OpenConnection(const std::string& path, bool foreign_keys);

// Runs one or more statements that return no rows we need.
Status Exec(sqlite3* db, std::string_view sql);

// Prepares exactly one statement.
StatusOr<StmtHandle> PrepareStmt(sqlite3* db, std::string_view sql);

// Steps a statement that returns no rows, then resets it.
Status StepDone(sqlite3* db, sqlite3_stmt* stmt, std::string_view context);

// Reads column `i` of the current row.
Value ColumnValue(sqlite3_stmt* stmt, int i);
// Converts an sqlite3_value (from a changeset or a function) to a Value.
Value FromSqliteValue(sqlite3_value* v);
// Binds `v` to parameter `index` (1-based).
int BindValue(sqlite3_stmt* stmt, int index, const Value& v);

// Approximate in-memory size of a value, for result-size bounds.
size_t ValueBytes(const Value& v);

// Renders a value for error messages and logs (text quoted, blobs as x'..', long ones cut).
std::string ValueToString(const Value& v);

// An LRU cache of prepared statements for one connection, keyed by SQL text. Not
// thread-safe: it belongs to its connection's owner. Evicting a statement finalizes it, so a
// pointer from Lookup/Insert is valid only until the next Insert.
class StatementCache {
 public:
  // Bounds memory per connection; applications reuse a small set of statements.
  static constexpr size_t kDefaultCapacity = 128;

  struct Entry {
    StmtHandle stmt;
    bool readonly = false;
    std::vector<std::string> written_tables;  // user statements: tables the authorizer saw written
  };

  explicit StatementCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}

  // The cached entry for `sql` (reset, bindings cleared), or null.
  Entry* Lookup(const std::string& sql);
  Entry* Insert(const std::string& sql, Entry entry);
  void Clear();

 private:
  using List = std::list<std::pair<std::string, Entry>>;
  const size_t capacity_;
  List lru_;  // most recent first
  std::unordered_map<std::string_view, List::iterator> index_;
};

// Prepares the single statement in `sql` (SQLITE_PREPARE_PERSISTENT). Fails with
// InvalidArgument (carrying SQLite's message) if it does not compile, is empty, or is
// followed by another statement.
StatusOr<StmtHandle> PrepareSingle(sqlite3* db, const std::string& sql);

}  // namespace tx::participant
