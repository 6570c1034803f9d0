#include "participant/schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace tx::participant {

std::string QuoteIdentifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

namespace {

std::string ColumnText(sqlite3_stmt* stmt, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
  return p != nullptr ? std::string(p) : std::string();
}

// Runs a PRAGMA (whose argument is a quoted name) and calls fn for each row.
template <typename Fn>
Status ForEachRow(sqlite3* db, const std::string& sql, Fn fn) {
  TX_ASSIGN_OR_RETURN(StmtHandle stmt, PrepareStmt(db, sql));
  while (true) {
    int rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_DONE) return Status::OK();
    if (rc != SQLITE_ROW) return SqliteStatus(rc, db, sql);
    fn(stmt.get());
  }
}

std::optional<KeyCollation> ParseCollation(const std::string& name) {
  std::string n = LowerAscii(name);
  if (n.empty() || n == "binary") return KeyCollation::kBinary;
  if (n == "nocase") return KeyCollation::kNoCase;
  if (n == "rtrim") return KeyCollation::kRtrim;
  return std::nullopt;
}

}  // namespace

StatusOr<std::unique_ptr<TableInfo>> SchemaCache::Load(sqlite3* db, const std::string& table) {
  auto info = std::make_unique<TableInfo>();
  info->name = table;
  const std::string quoted = QuoteIdentifier(table);
  std::map<int, int> pk_order_to_cid;  // table_info's pk field (1-based order) -> column
  TX_RETURN_IF_ERROR(
      ForEachRow(db, fmt::format("PRAGMA main.table_info({})", quoted), [&](sqlite3_stmt* s) {
        info->columns.push_back(ColumnText(s, 1));
        int pk = sqlite3_column_int(s, 5);
        if (pk > 0) pk_order_to_cid[pk] = sqlite3_column_int(s, 0);
      }));
  if (info->columns.empty()) return Status::NotFound(fmt::format("no such table: {}", table));
  info->has_primary_key = !pk_order_to_cid.empty();
  if (info->has_primary_key) {
    info->primary_key.name = "pk";
    for (const auto& [order, cid] : pk_order_to_cid) {
      info->primary_key.columns.push_back(cid);
      info->primary_key.collations.push_back(KeyCollation::kBinary);
    }
  }

  struct IndexRow {
    std::string name;
    std::string origin;
  };
  std::vector<IndexRow> unique;
  TX_RETURN_IF_ERROR(
      ForEachRow(db, fmt::format("PRAGMA main.index_list({})", quoted), [&](sqlite3_stmt* s) {
        if (sqlite3_column_int(s, 2) != 0) unique.push_back({ColumnText(s, 1), ColumnText(s, 3)});
      }));
  for (const IndexRow& row : unique) {
    KeyIndex index;
    index.name = row.origin == "pk" ? "pk" : row.name;
    TX_RETURN_IF_ERROR(
        ForEachRow(db, fmt::format("PRAGMA main.index_xinfo({})", QuoteIdentifier(row.name)),
                   [&](sqlite3_stmt* s) {
                     if (sqlite3_column_int(s, 5) == 0)
                       return;  // not a key column (rowid, pk suffix)
                     int cid = sqlite3_column_int(s, 1);
                     auto coll = ParseCollation(ColumnText(s, 4));
                     if (cid < 0 || !coll.has_value()) {
                       index.whole = true;  // an expression, or a collation we cannot normalize
                       return;
                     }
                     index.columns.push_back(cid);
                     index.collations.push_back(*coll);
                   }));
    if (row.origin == "pk") {
      // The primary key's own index gives its collations; keep table_info's column order.
      for (size_t i = 0; i < info->primary_key.columns.size(); ++i) {
        auto it =
            std::find(index.columns.begin(), index.columns.end(), info->primary_key.columns[i]);
        if (it != index.columns.end()) {
          info->primary_key.collations[i] =
              index.collations[static_cast<size_t>(it - index.columns.begin())];
        }
      }
      info->primary_key.whole = index.whole;
    } else {
      info->unique_indexes.push_back(std::move(index));
    }
  }

  std::map<int, ForeignKey> fks;                                       // by foreign key id
  std::map<int, std::vector<std::pair<int, std::string>>> fk_columns;  // id -> (seq, to)
  Status column_error;
  TX_RETURN_IF_ERROR(
      ForEachRow(db, fmt::format("PRAGMA main.foreign_key_list({})", quoted), [&](sqlite3_stmt* s) {
        int id = sqlite3_column_int(s, 0);
        ForeignKey& fk = fks[id];
        fk.parent_table = ColumnText(s, 2);
        std::string from = ColumnText(s, 3);
        auto it =
            std::find_if(info->columns.begin(), info->columns.end(),
                         [&](const std::string& c) { return LowerAscii(c) == LowerAscii(from); });
        if (it == info->columns.end()) {
          column_error = Status::Corruption(
              fmt::format("foreign key of {} names unknown column {}", table, from));
          return;
        }
        fk.child_columns.push_back(static_cast<int>(it - info->columns.begin()));
        if (sqlite3_column_type(s, 4) != SQLITE_NULL) fk.parent_columns.push_back(ColumnText(s, 4));
      }));
  TX_RETURN_IF_ERROR(column_error);
  for (auto& [id, fk] : fks) info->foreign_keys.push_back(std::move(fk));
  return info;
}

StatusOr<const TableInfo*> SchemaCache::Get(sqlite3* db, const std::string& table) {
  std::string key = LowerAscii(table);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tables_.find(key);
    if (it != tables_.end()) return it->second.get();
  }
  // Loaded outside the lock (it runs queries); two threads may load the same table, and the
  // first to insert wins.
  TX_ASSIGN_OR_RETURN(std::unique_ptr<TableInfo> info, Load(db, table));
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = tables_.emplace(key, std::move(info));
  return it->second.get();
}

}  // namespace tx::participant
