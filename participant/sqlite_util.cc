#include "participant/sqlite_util.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace tx::participant {

Status SqliteStatus(int rc, sqlite3* db, std::string_view context) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return Status::OK();
  std::string msg = fmt::format("{}: {} ({})", context,
                                db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return Status::NoSpace(msg);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
      return Status::IOError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(msg);
    case SQLITE_CONSTRAINT:
    case SQLITE_ERROR:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
    case SQLITE_AUTH:
      return Status::InvalidArgument(msg);
    case SQLITE_NOMEM:
      return Status::ResourceExhausted(msg);
    default:
      return Status::Internal(msg);
  }
}

namespace {
void LogCallback(void* /*arg*/, int code, const char* msg) {
  // SQLITE_SCHEMA here means changeset apply skipped a table: worth a warning. Notices about
  // WAL recovery and auto-indexes are routine.
  int primary = code & 0xff;
  if (primary == SQLITE_NOTICE || code == SQLITE_WARNING_AUTOINDEX) {
    spdlog::debug("sqlite ({}): {}", code, msg);
  } else {
    spdlog::warn("sqlite ({}): {}", code, msg);
  }
}
}  // namespace

void InstallSqliteLogger() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Fails (harmlessly) if the library was initialized already, e.g. by a test's own use.
    (void)sqlite3_config(SQLITE_CONFIG_LOG, LogCallback, nullptr);
  });
}

StatusOr<DbHandle> OpenConnection(const std::string& path, bool foreign_keys) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  DbHandle db(raw);
  if (rc != SQLITE_OK) return SqliteStatus(rc, raw, fmt::format("open {}", path));
  sqlite3_extended_result_codes(raw, 1);
  // Readers never wait on the writer in WAL mode; this covers the rare cases that do (WAL
  // recovery by another connection at start-up, checkpoints racing a reader).
  sqlite3_busy_timeout(raw, 5000);
  TX_RETURN_IF_ERROR(Exec(raw, "PRAGMA journal_mode=WAL"));
  TX_RETURN_IF_ERROR(Exec(raw, "PRAGMA synchronous=FULL"));
  TX_RETURN_IF_ERROR(
      Exec(raw, foreign_keys ? "PRAGMA foreign_keys=ON" : "PRAGMA foreign_keys=OFF"));
  // Temporary b-trees (sorts, changeset apply's scratch) stay in memory.
  TX_RETURN_IF_ERROR(Exec(raw, "PRAGMA temp_store=MEMORY"));
  return db;
}

Status Exec(sqlite3* db, std::string_view sql) {
  char* err = nullptr;
  std::string s(sql);
  int rc = sqlite3_exec(db, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return SqliteStatus(rc, nullptr, fmt::format("{}: {}", s, msg));
  }
  return Status::OK();
}

StatusOr<StmtHandle> PrepareStmt(sqlite3* db, std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  StmtHandle stmt(raw);
  if (rc != SQLITE_OK) return SqliteStatus(rc, db, fmt::format("prepare {}", sql));
  TX_CHECK(stmt != nullptr, "internal statement is empty: {}", sql);
  return stmt;
}

Status StepDone(sqlite3* db, sqlite3_stmt* stmt, std::string_view context) {
  int rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqliteStatus(rc, db, context);
  return Status::OK();
}

Value ColumnValue(sqlite3_stmt* stmt, int i) {
  switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
      return static_cast<int64_t>(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
      return sqlite3_column_double(stmt, i);
    case SQLITE_TEXT: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
      return std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt, i)));
    }
    case SQLITE_BLOB: {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, i));
      size_t n = static_cast<size_t>(sqlite3_column_bytes(stmt, i));
      return Blob{std::string(p != nullptr ? p : "", n)};
    }
    default:
      return std::monostate{};
  }
}

Value FromSqliteValue(sqlite3_value* v) {
  if (v == nullptr) return std::monostate{};
  switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER:
      return static_cast<int64_t>(sqlite3_value_int64(v));
    case SQLITE_FLOAT:
      return sqlite3_value_double(v);
    case SQLITE_TEXT: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_value_text(v));
      return std::string(p, static_cast<size_t>(sqlite3_value_bytes(v)));
    }
    case SQLITE_BLOB: {
      const auto* p = static_cast<const char*>(sqlite3_value_blob(v));
      size_t n = static_cast<size_t>(sqlite3_value_bytes(v));
      return Blob{std::string(p != nullptr ? p : "", n)};
    }
    default:
      return std::monostate{};
  }
}

int BindValue(sqlite3_stmt* stmt, int index, const Value& v) {
  switch (v.index()) {
    case 0:
      return sqlite3_bind_null(stmt, index);
    case 1:
      return sqlite3_bind_int64(stmt, index, std::get<int64_t>(v));
    case 2:
      return sqlite3_bind_double(stmt, index, std::get<double>(v));
    case 3: {
      const auto& s = std::get<std::string>(v);
      return sqlite3_bind_text64(stmt, index, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    default: {
      const auto& b = std::get<Blob>(v).bytes;
      return sqlite3_bind_blob64(stmt, index, b.data(), b.size(), SQLITE_TRANSIENT);
    }
  }
}

size_t ValueBytes(const Value& v) {
  constexpr size_t kOverhead = 16;  // the variant and list slot per value, roughly
  switch (v.index()) {
    case 3:
      return kOverhead + std::get<std::string>(v).size();
    case 4:
      return kOverhead + std::get<Blob>(v).bytes.size();
    default:
      return kOverhead;
  }
}

std::string ValueToString(const Value& v) {
  constexpr size_t kMaxShown = 64;  // keeps error messages and log lines short
  switch (v.index()) {
    case 0:
      return "NULL";
    case 1:
      return fmt::format("{}", std::get<int64_t>(v));
    case 2:
      return fmt::format("{}", std::get<double>(v));
    case 3: {
      const auto& s = std::get<std::string>(v);
      if (s.size() > kMaxShown) return fmt::format("'{}...'", s.substr(0, kMaxShown));
      return fmt::format("'{}'", s);
    }
    default: {
      const auto& b = std::get<Blob>(v).bytes;
      std::string hex;
      for (size_t i = 0; i < b.size() && i < kMaxShown; ++i) {
        hex += fmt::format("{:02x}", static_cast<unsigned char>(b[i]));
      }
      return fmt::format("x'{}{}'", hex, b.size() > kMaxShown ? "..." : "");
    }
  }
}

StatusOr<StmtHandle> PrepareSingle(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &raw, &tail);
  StmtHandle stmt(raw);
  if (rc != SQLITE_OK) return Status::InvalidArgument(sqlite3_errmsg(db));
  if (stmt == nullptr) return Status::InvalidArgument("empty statement (only comments or blanks)");
  if (tail != nullptr && tail < sql.data() + sql.size()) {
    // Only blanks, semicolons and comments may follow: preparing them yields no statement.
    sqlite3_stmt* extra = nullptr;
    int tail_rc = sqlite3_prepare_v3(db, tail, static_cast<int>(sql.data() + sql.size() - tail), 0,
                                     &extra, nullptr);
    StmtHandle extra_handle(extra);
    if (tail_rc != SQLITE_OK || extra != nullptr) {
      return Status::InvalidArgument(
          "more than one statement in one Statement; send each as its own Statement");
    }
  }
  return stmt;
}

StatementCache::Entry* StatementCache::Lookup(const std::string& sql) {
  auto it = index_.find(sql);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  Entry& e = it->second->second;
  sqlite3_reset(e.stmt.get());
  sqlite3_clear_bindings(e.stmt.get());
  return &e;
}

StatementCache::Entry* StatementCache::Insert(const std::string& sql, Entry entry) {
  auto it = index_.find(sql);
  if (it != index_.end()) {
    lru_.erase(it->second);
    index_.erase(it);
  }
  lru_.emplace_front(sql, std::move(entry));
  index_.emplace(lru_.front().first, lru_.begin());
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return &lru_.front().second;
}

void StatementCache::Clear() {
  index_.clear();
  lru_.clear();
}

}  // namespace tx::participant
