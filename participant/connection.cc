#include "participant/connection.h"

#include <fmt/format.h>
#include <strings.h>

#include <algorithm>

namespace tx::participant {
namespace {

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

}  // namespace

StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& path, bool foreign_keys,
                                                       SchemaCache* schema) {
  TX_ASSIGN_OR_RETURN(DbHandle db, OpenConnection(path, foreign_keys));
  auto conn = std::unique_ptr<Connection>(new Connection(std::move(db), schema));
  int rc = sqlite3_set_authorizer(conn->db(), &Connection::Authorize, conn.get());
  if (rc != SQLITE_OK) return SqliteStatus(rc, conn->db(), "set authorizer");
  // Every ~1000 virtual-machine steps: cheap, and fine-grained enough for a deadline.
  sqlite3_progress_handler(conn->db(), 1000, &Connection::OnProgress, conn.get());
  return conn;
}

Connection::Connection(DbHandle db, SchemaCache* schema) : db_(std::move(db)), schema_(schema) {}

Connection::~Connection() {
  // Statements go before the handle closes.
  user_cache_.Clear();
  internal_cache_.Clear();
}

int Connection::OnProgress(void* self) {
  return static_cast<Connection*>(self)->deadline_passed() ? 1 : 0;
}

int Connection::Authorize(void* self, int action, const char* a1, const char* /*a2*/,
                          const char* db_name, const char* /*trigger*/) {
  auto* conn = static_cast<Connection*>(self);
  if (!conn->user_mode_) return SQLITE_OK;
  return conn->AuthorizeUser(action, a1, db_name);
}

int Connection::AuthorizeUser(int action, const char* a1, const char* db_name) {
  switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_FUNCTION:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE: {
      std::string_view table = a1 != nullptr ? a1 : "";
      if (db_name != nullptr && strcasecmp(db_name, "main") != 0) {
        denied_ = fmt::format("writes to database '{}' are not allowed; only 'main'", db_name);
        return SQLITE_DENY;
      }
      // AUTOINCREMENT bookkeeping: not captured (no primary key), but changeset apply inserts
      // the same explicit rowids, which updates it again at commit.
      if (strcasecmp(table.data(), "sqlite_sequence") == 0) return SQLITE_OK;
      if (StartsWithNoCase(table, "sqlite_") || StartsWithNoCase(table, kInternalTablePrefix)) {
        denied_ = fmt::format("table {} belongs to the system and cannot be written", table);
        return SQLITE_DENY;
      }
      std::string name(table);
      if (std::find(written_.begin(), written_.end(), name) == written_.end()) {
        written_.push_back(std::move(name));
      }
      return SQLITE_OK;
    }
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      denied_ =
          "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) is not allowed: the "
          "participant runs the transaction";
      return SQLITE_DENY;
    case SQLITE_PRAGMA:
      // The session extension reads table_info (through this authorizer) when a statement
      // first writes a table; these only read metadata.
      if (a1 != nullptr &&
          (strcasecmp(a1, "table_info") == 0 || strcasecmp(a1, "table_xinfo") == 0)) {
        return SQLITE_OK;
      }
      denied_ = "PRAGMA is not allowed inside a transaction";
      return SQLITE_DENY;
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      denied_ = "ATTACH and DETACH are not allowed";
      return SQLITE_DENY;
    default:
      denied_ =
          "schema changes (CREATE, DROP, ALTER, ANALYZE, ...) are not allowed inside a "
          "transaction: changesets do not carry them; set the schema up before start "
          "(txpart --init-sql)";
      return SQLITE_DENY;
  }
}

Result<Connection::UserStatement> Connection::PrepareUser(const std::string& sql) {
  if (StatementCache::Entry* e = user_cache_.Lookup(sql)) {
    return UserStatement{e->stmt.get(), e->readonly};
  }
  denied_.clear();
  written_.clear();
  user_mode_ = true;
  StatusOr<StmtHandle> stmt = PrepareSingle(db(), sql);
  user_mode_ = false;
  if (!stmt.ok()) {
    std::string why = !denied_.empty() ? denied_ : stmt.status().message();
    return Error{ErrorCode::kInvalidSql, why};
  }
  for (const std::string& table : written_) {
    StatusOr<const TableInfo*> info = schema_->Get(db(), table);
    if (!info.ok()) return Error{ErrorCode::kInternal, info.status().ToString()};
    if (!(*info)->has_primary_key) {
      return Error{ErrorCode::kNoPrimaryKey,
                   fmt::format("table {} has no PRIMARY KEY, so its changes cannot be captured "
                               "and would be lost at commit; give it a PRIMARY KEY",
                               table)};
    }
  }
  StatementCache::Entry entry;
  entry.readonly = sqlite3_stmt_readonly(stmt->get()) != 0;
  entry.written_tables = written_;
  entry.stmt = std::move(stmt).value();
  StatementCache::Entry* e = user_cache_.Insert(sql, std::move(entry));
  return UserStatement{e->stmt.get(), e->readonly};
}

StatusOr<sqlite3_stmt*> Connection::PrepareInternal(const std::string& sql) {
  if (StatementCache::Entry* e = internal_cache_.Lookup(sql)) return e->stmt.get();
  TX_ASSIGN_OR_RETURN(StmtHandle stmt, PrepareStmt(db(), sql));
  StatementCache::Entry entry;
  entry.stmt = std::move(stmt);
  return internal_cache_.Insert(sql, std::move(entry))->stmt.get();
}

void Connection::SetTriggersEnabled(bool on) {
  int out = 0;
  sqlite3_db_config(db(), SQLITE_DBCONFIG_ENABLE_TRIGGER, on ? 1 : 0, &out);
}

}  // namespace tx::participant
