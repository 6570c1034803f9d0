#include "participant/changeset.h"

#include <fmt/format.h>

#include <map>
#include <optional>

#include "participant/lock_keys.h"

namespace tx::participant {
namespace {

struct ApplyContext {
  bool allow_deferred_fk = false;
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

std::string ChangeTarget(sqlite3_changeset_iter* it) {
  const char* table = nullptr;
  int ncol = 0, op = 0, indirect = 0;
  sqlite3changeset_op(it, &table, &ncol, &op, &indirect);
  const char* op_name = op == SQLITE_INSERT   ? "insert into"
                        : op == SQLITE_DELETE ? "delete from"
                                              : "update of";
  return fmt::format("{} {}", op_name, table != nullptr ? table : "?");
}

bool SameValue(sqlite3_value* a, sqlite3_value* b) {
  if (a == nullptr || b == nullptr) return a == b;
  return FromSqliteValue(a) == FromSqliteValue(b);
}

// An UPDATE conflict is harmless when the row already holds every new value.
bool RowAlreadyUpdated(sqlite3_changeset_iter* it) {
  const char* table = nullptr;
  int ncol = 0, op = 0, indirect = 0;
  sqlite3changeset_op(it, &table, &ncol, &op, &indirect);
  for (int i = 0; i < ncol; ++i) {
    sqlite3_value* want = nullptr;
    if (sqlite3changeset_new(it, i, &want) != SQLITE_OK || want == nullptr) continue;
    sqlite3_value* have = nullptr;
    if (sqlite3changeset_conflict(it, i, &have) != SQLITE_OK) return false;
    if (!SameValue(want, have)) return false;
  }
  return true;
}

int OnConflict(void* ctx, int kind, sqlite3_changeset_iter* it) {
  auto* c = static_cast<ApplyContext*>(ctx);
  const char* table = nullptr;
  int ncol = 0, op = 0, indirect = 0;
  sqlite3changeset_op(it, &table, &ncol, &op, &indirect);
  switch (kind) {
    case SQLITE_CHANGESET_NOTFOUND:
      if (op == SQLITE_DELETE) return SQLITE_CHANGESET_OMIT;  // already gone
      c->code = ErrorCode::kConflict;
      c->message = fmt::format("{}: the row no longer exists", ChangeTarget(it));
      return SQLITE_CHANGESET_ABORT;
    case SQLITE_CHANGESET_DATA:
      if (op == SQLITE_UPDATE && RowAlreadyUpdated(it)) return SQLITE_CHANGESET_OMIT;
      c->code = ErrorCode::kConflict;
      c->message = fmt::format("{}: the row was changed by another transaction", ChangeTarget(it));
      return SQLITE_CHANGESET_ABORT;
    case SQLITE_CHANGESET_CONFLICT:
      c->code = ErrorCode::kConflict;
      c->message = fmt::format("{}: a row with this primary key exists", ChangeTarget(it));
      return SQLITE_CHANGESET_ABORT;
    case SQLITE_CHANGESET_CONSTRAINT:
      c->code = ErrorCode::kConstraintViolation;
      c->message =
          fmt::format("{}: a UNIQUE, NOT NULL or CHECK constraint failed", ChangeTarget(it));
      return SQLITE_CHANGESET_ABORT;
    case SQLITE_CHANGESET_FOREIGN_KEY:
      if (c->allow_deferred_fk) return SQLITE_CHANGESET_OMIT;  // keeps the changes
      c->code = ErrorCode::kConstraintViolation;
      c->message = "FOREIGN KEY constraint failed";
      return SQLITE_CHANGESET_ABORT;
    default:
      c->code = ErrorCode::kConstraintViolation;
      c->message = "FOREIGN KEY constraint failed";
      return SQLITE_CHANGESET_ABORT;
  }
}

}  // namespace

Result<> ApplyChangeset(Connection* conn, std::string_view changeset, bool allow_deferred_fk) {
  if (changeset.empty()) return Unit{};
  ApplyContext ctx;
  ctx.allow_deferred_fk = allow_deferred_fk;
  conn->SetTriggersEnabled(false);
  // Without NOSAVEPOINT the apply runs in its own savepoint, so a failure undoes it alone.
  int rc = sqlite3changeset_apply_v2(conn->db(), static_cast<int>(changeset.size()),
                                     const_cast<char*>(changeset.data()), nullptr, OnConflict, &ctx,
                                     nullptr, nullptr, 0);
  conn->SetTriggersEnabled(true);
  if (rc == SQLITE_OK) return Unit{};
  if (!ctx.message.empty()) return Error{ctx.code, ctx.message};
  Status s = SqliteStatus(rc, conn->db(), "apply changeset");
  if ((rc & 0xff) == SQLITE_CONSTRAINT) return Error{ErrorCode::kConstraintViolation, s.message()};
  return Error{s.IsNoSpace() || s.IsIOError() ? ErrorCode::kUnavailable : ErrorCode::kInternal,
               s.ToString()};
}

StatusOr<std::string> CombineChangesets(std::string_view base, std::string_view next) {
  if (base.empty()) return std::string(next);
  if (next.empty()) return std::string(base);
  sqlite3_changegroup* group = nullptr;
  int rc = sqlite3changegroup_new(&group);
  if (rc != SQLITE_OK) return SqliteStatus(rc, nullptr, "changegroup_new");
  std::unique_ptr<sqlite3_changegroup, void (*)(sqlite3_changegroup*)> guard(
      group, sqlite3changegroup_delete);
  rc = sqlite3changegroup_add(group, static_cast<int>(base.size()), const_cast<char*>(base.data()));
  if (rc != SQLITE_OK) return SqliteStatus(rc, nullptr, "changegroup_add (base)");
  rc = sqlite3changegroup_add(group, static_cast<int>(next.size()), const_cast<char*>(next.data()));
  if (rc != SQLITE_OK) return SqliteStatus(rc, nullptr, "changegroup_add (next)");
  int n = 0;
  void* out = nullptr;
  rc = sqlite3changegroup_output(group, &n, &out);
  if (rc != SQLITE_OK) return SqliteStatus(rc, nullptr, "changegroup_output");
  std::string result(static_cast<const char*>(out), static_cast<size_t>(n));
  sqlite3_free(out);
  return result;
}

int64_t CountChanges(std::string_view changeset) {
  if (changeset.empty()) return 0;
  sqlite3_changeset_iter* it = nullptr;
  if (sqlite3changeset_start(&it, static_cast<int>(changeset.size()),
                             const_cast<char*>(changeset.data())) != SQLITE_OK) {
    return 0;
  }
  int64_t n = 0;
  while (sqlite3changeset_next(it) == SQLITE_ROW) ++n;
  sqlite3changeset_finalize(it);
  return n;
}

namespace {

using Row = std::vector<std::optional<Value>>;  // nullopt: not present in the change

bool AnyNull(const std::vector<Value>& values) {
  for (const Value& v : values) {
    if (v.index() == 0) return true;
  }
  return false;
}

// Values of `columns` taken from `row`; every one must be present.
std::vector<Value> Pick(const Row& row, const std::vector<int>& columns) {
  std::vector<Value> out;
  out.reserve(columns.size());
  for (int c : columns) {
    TX_CHECK(static_cast<size_t>(c) < row.size() && row[static_cast<size_t>(c)].has_value(),
             "column {} missing from a row image", c);
    out.push_back(*row[static_cast<size_t>(c)]);
  }
  return out;
}

bool AnyChanged(const Row& new_values, const std::vector<int>& columns) {
  for (int c : columns) {
    if (static_cast<size_t>(c) < new_values.size() && new_values[static_cast<size_t>(c)]) {
      return true;
    }
  }
  return false;
}

// The current (post-change) values of every column of the row with `pk` in `table`.
Result<Row> ReadRow(Connection* conn, const TableInfo& table, const std::vector<Value>& pk) {
  std::string where;
  for (size_t i = 0; i < table.primary_key.columns.size(); ++i) {
    if (i > 0) where += " AND ";
    where +=
        QuoteIdentifier(table.columns[static_cast<size_t>(table.primary_key.columns[i])]) + " = ?";
  }
  std::string sql =
      fmt::format("SELECT * FROM main.{} WHERE {}", QuoteIdentifier(table.name), where);
  StatusOr<sqlite3_stmt*> stmt = conn->PrepareInternal(sql);
  if (!stmt.ok()) return Error{ErrorCode::kInternal, stmt.status().ToString()};
  for (size_t i = 0; i < pk.size(); ++i) BindValue(*stmt, static_cast<int>(i + 1), pk[i]);
  int rc = sqlite3_step(*stmt);
  Row row(table.columns.size());
  if (rc == SQLITE_ROW) {
    for (size_t i = 0; i < row.size(); ++i) row[i] = ColumnValue(*stmt, static_cast<int>(i));
  }
  sqlite3_reset(*stmt);
  if (rc != SQLITE_ROW) {
    return Error{ErrorCode::kInternal,
                 fmt::format("row of {} updated by this transaction is missing ({})", table.name,
                             sqlite3_errstr(rc))};
  }
  return row;
}

// The primary key of the parent row that `values` reference through `fk`, if it exists.
Result<std::optional<std::vector<Value>>> FindParent(Connection* conn, const TableInfo& parent,
                                                     const ForeignKey& fk,
                                                     const std::vector<Value>& values) {
  std::vector<std::string> parent_columns = fk.parent_columns;
  if (parent_columns.empty()) {
    for (int c : parent.primary_key.columns) {
      parent_columns.push_back(parent.columns[static_cast<size_t>(c)]);
    }
  }
  if (parent_columns.size() != values.size()) return std::optional<std::vector<Value>>();
  std::string select, where;
  for (size_t i = 0; i < parent.primary_key.columns.size(); ++i) {
    if (i > 0) select += ", ";
    select += QuoteIdentifier(parent.columns[static_cast<size_t>(parent.primary_key.columns[i])]);
  }
  for (size_t i = 0; i < parent_columns.size(); ++i) {
    if (i > 0) where += " AND ";
    where += QuoteIdentifier(parent_columns[i]) + " = ?";
  }
  std::string sql = fmt::format("SELECT {} FROM main.{} WHERE {} LIMIT 1", select,
                                QuoteIdentifier(parent.name), where);
  StatusOr<sqlite3_stmt*> stmt = conn->PrepareInternal(sql);
  if (!stmt.ok()) return Error{ErrorCode::kInternal, stmt.status().ToString()};
  for (size_t i = 0; i < values.size(); ++i) BindValue(*stmt, static_cast<int>(i + 1), values[i]);
  std::optional<std::vector<Value>> pk;
  int rc = sqlite3_step(*stmt);
  if (rc == SQLITE_ROW) {
    pk.emplace();
    for (size_t i = 0; i < parent.primary_key.columns.size(); ++i) {
      pk->push_back(ColumnValue(*stmt, static_cast<int>(i)));
    }
  }
  sqlite3_reset(*stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return Error{ErrorCode::kInternal, SqliteStatus(rc, conn->db(), sql).ToString()};
  }
  return pk;
}

}  // namespace

Result<std::vector<LockRequest>> DeriveLocks(Connection* conn, std::string_view changeset) {
  std::map<std::string, LockMode> locks;
  auto add = [&](std::string key, LockMode mode) {
    auto [it, inserted] = locks.emplace(std::move(key), mode);
    if (!inserted && mode == LockMode::kExclusive) it->second = mode;
  };
  if (changeset.empty()) return std::vector<LockRequest>();

  sqlite3_changeset_iter* it = nullptr;
  int rc = sqlite3changeset_start(&it, static_cast<int>(changeset.size()),
                                  const_cast<char*>(changeset.data()));
  if (rc != SQLITE_OK) return Error{ErrorCode::kInternal, "cannot read changeset"};
  std::unique_ptr<sqlite3_changeset_iter, int (*)(sqlite3_changeset_iter*)> guard(
      it, sqlite3changeset_finalize);

  while ((rc = sqlite3changeset_next(it)) == SQLITE_ROW) {
    const char* table_name = nullptr;
    int ncol = 0, op = 0, indirect = 0;
    sqlite3changeset_op(it, &table_name, &ncol, &op, &indirect);
    StatusOr<const TableInfo*> info_or = conn->schema()->Get(conn->db(), table_name);
    if (!info_or.ok()) return Error{ErrorCode::kInternal, info_or.status().ToString()};
    const TableInfo& table = **info_or;
    TX_CHECK(table.has_primary_key, "changeset holds table {} without a primary key", table.name);
    TX_CHECK(static_cast<size_t>(ncol) == table.columns.size(),
             "changeset has {} columns for {}, the table has {}", ncol, table.name,
             table.columns.size());

    Row old_values(static_cast<size_t>(ncol)), new_values(static_cast<size_t>(ncol));
    for (int i = 0; i < ncol; ++i) {
      sqlite3_value* v = nullptr;
      if (op != SQLITE_INSERT && sqlite3changeset_old(it, i, &v) == SQLITE_OK && v != nullptr) {
        old_values[static_cast<size_t>(i)] = FromSqliteValue(v);
      }
      v = nullptr;
      if (op != SQLITE_DELETE && sqlite3changeset_new(it, i, &v) == SQLITE_OK && v != nullptr) {
        new_values[static_cast<size_t>(i)] = FromSqliteValue(v);
      }
    }
    std::vector<Value> pk =
        Pick(op == SQLITE_INSERT ? new_values : old_values, table.primary_key.columns);
    add(RowLockKey(table, pk), LockMode::kExclusive);

    // Full row images where an index or foreign key needs columns the change does not carry.
    Row old_row = old_values, new_row = new_values;
    if (op == SQLITE_UPDATE && (!table.unique_indexes.empty() || !table.foreign_keys.empty())) {
      Result<Row> current = ReadRow(conn, table, pk);
      if (!current.ok()) return current.error();
      new_row = current.value();
      old_row = current.value();
      for (size_t i = 0; i < old_values.size(); ++i) {
        if (old_values[i]) old_row[i] = old_values[i];
      }
    }

    for (const KeyIndex& index : table.unique_indexes) {
      if (index.whole) {
        add(IndexLockKey(table, index, {}), LockMode::kExclusive);
        continue;
      }
      if (op == SQLITE_UPDATE && !AnyChanged(new_values, index.columns)) continue;
      if (op != SQLITE_INSERT) {
        std::vector<Value> key = Pick(old_row, index.columns);
        if (!AnyNull(key)) add(IndexLockKey(table, index, key), LockMode::kExclusive);
      }
      if (op != SQLITE_DELETE) {
        std::vector<Value> key = Pick(new_row, index.columns);
        if (!AnyNull(key)) add(IndexLockKey(table, index, key), LockMode::kExclusive);
      }
    }

    // Any insert or update of a child row share-locks the parent row it references, even
    // when the reference itself is unchanged: whoever deletes or re-keys the parent (and, by
    // a foreign-key action, changes or deletes this row at apply time) must wait for us.
    if (op == SQLITE_DELETE) continue;
    for (const ForeignKey& fk : table.foreign_keys) {
      std::vector<Value> ref = Pick(new_row, fk.child_columns);
      if (AnyNull(ref)) continue;
      StatusOr<const TableInfo*> parent_or = conn->schema()->Get(conn->db(), fk.parent_table);
      if (!parent_or.ok()) continue;  // a dangling declaration; SQLite reports it on use
      const TableInfo& parent = **parent_or;
      // A parent without a primary key cannot be written through the agent, so it cannot
      // change under us.
      if (!parent.has_primary_key) continue;
      Result<std::optional<std::vector<Value>>> parent_pk = FindParent(conn, parent, fk, ref);
      if (!parent_pk.ok()) return parent_pk.error();
      if (parent_pk.value().has_value()) {
        add(RowLockKey(parent, *parent_pk.value()), LockMode::kShared);
      }
    }
  }
  if (rc != SQLITE_DONE) return Error{ErrorCode::kInternal, "corrupt changeset"};

  std::vector<LockRequest> out;
  out.reserve(locks.size());
  for (auto& [key, mode] : locks) out.push_back(LockRequest{key, mode});
  return out;
}

Result<std::vector<LockRequest>> RowLocksByRowid(
    Connection* conn, const std::vector<std::pair<std::string, int64_t>>& rows) {
  std::vector<LockRequest> out;
  for (const auto& [table_name, rowid] : rows) {
    StatusOr<const TableInfo*> info_or = conn->schema()->Get(conn->db(), table_name);
    if (!info_or.ok()) return Error{ErrorCode::kInternal, info_or.status().ToString()};
    const TableInfo& table = **info_or;
    if (!table.has_primary_key) continue;  // the authorizer refuses writes to these
    std::string select;
    for (size_t i = 0; i < table.primary_key.columns.size(); ++i) {
      if (i > 0) select += ", ";
      select += QuoteIdentifier(table.columns[static_cast<size_t>(table.primary_key.columns[i])]);
    }
    std::string sql = fmt::format("SELECT {} FROM main.{} WHERE _rowid_ = ?", select,
                                  QuoteIdentifier(table.name));
    StatusOr<sqlite3_stmt*> stmt = conn->PrepareInternal(sql);
    if (!stmt.ok()) return Error{ErrorCode::kInternal, stmt.status().ToString()};
    sqlite3_bind_int64(*stmt, 1, rowid);
    int rc = sqlite3_step(*stmt);
    if (rc == SQLITE_ROW) {
      std::vector<Value> pk;
      for (size_t i = 0; i < table.primary_key.columns.size(); ++i) {
        pk.push_back(ColumnValue(*stmt, static_cast<int>(i)));
      }
      if (!AnyNull(pk)) out.push_back(LockRequest{RowLockKey(table, pk), LockMode::kExclusive});
    }
    sqlite3_reset(*stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      return Error{ErrorCode::kInternal, SqliteStatus(rc, conn->db(), sql).ToString()};
    }
  }
  return out;
}

}  // namespace tx::participant
