// What the lock derivation needs to know about a table: its primary key, its unique indexes
// and its foreign keys, read once from SQLite's PRAGMAs and cached.
//
// The schema is fixed while the agent runs: transactions may not change it (the authorizer
// refuses DDL), and changing it from outside while txpart runs is unsupported
// (docs/participant.md).

#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "participant/sqlite_util.h"

namespace tx::participant {

// How a key column compares, so that two values that SQLite considers equal in the index get
// the same lock key.
enum class KeyCollation : uint8_t { kBinary, kNoCase, kRtrim };

// A primary key or a UNIQUE index, as a set of table columns. When the index cannot be turned
// into exact per-value keys (it indexes an expression or uses a collation other than BINARY,
// NOCASE or RTRIM), `whole` is set and every write that may touch it locks the whole index:
// correct, but it serializes writers of that table.
struct KeyIndex {
  std::string name;  // "pk" for the primary key, else the index name
  std::vector<int> columns;
  std::vector<KeyCollation> collations;  // parallel to columns
  bool whole = false;
};

struct ForeignKey {
  std::string parent_table;
  std::vector<int> child_columns;
  // Parent columns in the same order; resolved to the parent's primary key when the
  // declaration names none.
  std::vector<std::string> parent_columns;
};

struct TableInfo {
  std::string name;
  std::vector<std::string> columns;
  bool has_primary_key = false;          // rowid tables without a declared PRIMARY KEY have none
  KeyIndex primary_key;                  // valid when has_primary_key
  std::vector<KeyIndex> unique_indexes;  // excluding the primary key
  std::vector<ForeignKey> foreign_keys;  // where this table is the child
};

// Thread-safe cache of TableInfo by table name (case-insensitive, like SQL). Entries live as
// long as the cache.
class SchemaCache {
 public:
  // Returns the table's info, reading it through `db` the first time. NotFound for a table
  // that does not exist.
  StatusOr<const TableInfo*> Get(sqlite3* db, const std::string& table);

 private:
  static StatusOr<std::unique_ptr<TableInfo>> Load(sqlite3* db, const std::string& table);

  std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<TableInfo>> tables_;  // GUARDED_BY(mu_)
};

// "name" quoted as an SQL identifier.
std::string QuoteIdentifier(std::string_view name);

// Lower-cases ASCII, as SQL identifiers compare.
std::string LowerAscii(std::string_view s);

}  // namespace tx::participant
