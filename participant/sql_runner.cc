#include "participant/sql_runner.h"

#include <fmt/format.h>

#include <set>

namespace tx::participant {
namespace {

Result<> Bind(sqlite3_stmt* stmt, const Statement& s) {
  const int n = sqlite3_bind_parameter_count(stmt);
  if (!s.params.empty() && !s.named_params.empty()) {
    return Error{ErrorCode::kInvalidArgument,
                 "use either positional or named parameters in one statement, not both"};
  }
  if (!s.named_params.empty()) {
    std::set<int> bound;
    for (const auto& [name, value] : s.named_params) {
      int index = 0;
      if (!name.empty() && (name[0] == ':' || name[0] == '@' || name[0] == '$')) {
        index = sqlite3_bind_parameter_index(stmt, name.c_str());
      } else {
        for (const char* prefix : {":", "@", "$"}) {
          index = sqlite3_bind_parameter_index(stmt, (prefix + name).c_str());
          if (index != 0) break;
        }
      }
      if (index == 0) {
        return Error{ErrorCode::kInvalidArgument,
                     fmt::format("the statement has no parameter named '{}'", name)};
      }
      if (!bound.insert(index).second) {
        return Error{ErrorCode::kInvalidArgument,
                     fmt::format("parameter '{}' is given more than once", name)};
      }
      int rc = BindValue(stmt, index, value);
      if (rc != SQLITE_OK) {
        return Error{ErrorCode::kInvalidArgument,
                     fmt::format("cannot bind '{}': {}", name, sqlite3_errstr(rc))};
      }
    }
    for (int i = 1; i <= n; ++i) {
      if (bound.count(i) == 0) {
        const char* pname = sqlite3_bind_parameter_name(stmt, i);
        return Error{ErrorCode::kInvalidArgument,
                     fmt::format("parameter {} is not given a value",
                                 pname != nullptr ? pname : fmt::format("?{}", i))};
      }
    }
    return Unit{};
  }
  if (static_cast<int>(s.params.size()) != n) {
    return Error{
        ErrorCode::kInvalidArgument,
        fmt::format("the statement has {} parameters, {} values were given", n, s.params.size())};
  }
  for (int i = 1; i <= n; ++i) {
    const char* pname = sqlite3_bind_parameter_name(stmt, i);
    if (pname != nullptr && pname[0] != '?') {
      return Error{ErrorCode::kInvalidArgument,
                   fmt::format("parameter {} is named: bind it with named parameters", pname)};
    }
    int rc = BindValue(stmt, i, s.params[static_cast<size_t>(i - 1)]);
    if (rc != SQLITE_OK) {
      return Error{ErrorCode::kInvalidArgument,
                   fmt::format("cannot bind parameter {}: {}", i, sqlite3_errstr(rc))};
    }
  }
  return Unit{};
}

Error StepError(sqlite3* db, int rc) {
  std::string msg = sqlite3_errmsg(db);
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      return Error{ErrorCode::kConstraintViolation, msg};
    case SQLITE_TOOBIG:
      return Error{ErrorCode::kTooLarge, msg};
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Error{ErrorCode::kUnavailable, msg};
    case SQLITE_AUTH:
      return Error{ErrorCode::kInvalidSql, msg};
    case SQLITE_CORRUPT:
    case SQLITE_INTERNAL:
    case SQLITE_MISUSE:
      return Error{ErrorCode::kInternal, msg};
    default:
      return Error{ErrorCode::kInvalidSql, fmt::format("statement failed: {}", msg)};
  }
}

}  // namespace

Result<ResultSet> RunStatement(Connection* conn, const Statement& statement, size_t* budget_bytes) {
  Result<Connection::UserStatement> prepared = conn->PrepareUser(statement.sql);
  if (!prepared.ok()) return prepared.error();
  sqlite3_stmt* stmt = prepared.value().stmt;
  Result<> bound = Bind(stmt, statement);
  if (!bound.ok()) {
    sqlite3_clear_bindings(stmt);
    return bound.error();
  }
  ResultSet rs;
  const int ncol = sqlite3_column_count(stmt);
  for (int i = 0; i < ncol; ++i) {
    const char* name = sqlite3_column_name(stmt, i);
    rs.columns.emplace_back(name != nullptr ? name : "");
  }
  conn->set_user_mode(true);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    std::vector<Value> row;
    row.reserve(static_cast<size_t>(ncol));
    size_t bytes = 0;
    for (int i = 0; i < ncol; ++i) {
      row.push_back(ColumnValue(stmt, i));
      bytes += ValueBytes(row.back());
    }
    if (bytes > *budget_bytes) {
      conn->set_user_mode(false);
      sqlite3_reset(stmt);
      sqlite3_clear_bindings(stmt);
      return Error{ErrorCode::kTooLarge,
                   fmt::format("the result exceeds the limit of one Execute's results "
                               "(after {} rows of this statement); narrow the query or page it",
                               rs.rows.size())};
    }
    *budget_bytes -= bytes;
    rs.rows.push_back(std::move(row));
  }
  conn->set_user_mode(false);
  if (rc != SQLITE_DONE) {
    Error e = (rc & 0xff) == SQLITE_INTERRUPT && conn->deadline_passed()
                  ? Error{ErrorCode::kTimedOut,
                          "the statements ran past the statement time limit and were stopped; "
                          "the Execute had no effect"}
                  : StepError(conn->db(), rc);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return e;
  }
  rs.rows_changed = prepared.value().readonly ? 0 : sqlite3_changes64(conn->db());
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return rs;
}

Result<bool> AllReadOnly(Connection* conn, const std::vector<Statement>& statements) {
  for (const Statement& s : statements) {
    Result<Connection::UserStatement> prepared = conn->PrepareUser(s.sql);
    if (!prepared.ok()) return prepared.error();
    if (!prepared.value().readonly) return false;
  }
  return true;
}

}  // namespace tx::participant
