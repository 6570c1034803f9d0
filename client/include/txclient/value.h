// SQL values, statements and results as libtxclient hands them over: one Value per SQLite
// storage class (NULL, INTEGER, REAL, TEXT, BLOB), exactly as the participant's SQLite database
// stores them.
//
//   tx::client::Value v = 42;                          // INTEGER
//   tx::client::Value t = "alice";                     // TEXT (UTF-8)
//   tx::client::Value b = tx::client::Value::Blob(bytes);
//   if (row[0].is_integer()) total += row[0].integer();
//
// Reading a value as the wrong type (integer() of a TEXT value) is a programmer error and stops
// the process with a message; check type() or is_*() first when the column may hold several.
// Value types are regular: copyable, comparable, thread-compatible.

#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "txclient/export.h"

namespace tx::client {

class TXCLIENT_EXPORT Value {
 public:
  enum class Type { kNull, kInteger, kReal, kText, kBlob };

  Value() = default;        // NULL
  Value(std::nullptr_t) {}  // NOLINT(google-explicit-constructor): NULL
  // Any integer type (bool as 0/1). An unsigned value above INT64_MAX wraps, as in SQLite.
  template <typename I, typename std::enable_if_t<std::is_integral_v<I>, int> = 0>
  Value(I v) : v_(static_cast<int64_t>(v)) {}              // NOLINT(google-explicit-constructor)
  Value(double v) : v_(v) {}                               // NOLINT(google-explicit-constructor)
  Value(std::string text) : v_(std::move(text)) {}         // NOLINT(google-explicit-constructor)
  Value(std::string_view text) : v_(std::string(text)) {}  // NOLINT
  Value(const char* text) : v_(std::string(text)) {}       // NOLINT

  static Value Null() { return Value(); }
  static Value Blob(std::string bytes) {
    Value v;
    v.v_ = BlobBytes{std::move(bytes)};
    return v;
  }

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_null() const { return type() == Type::kNull; }
  bool is_integer() const { return type() == Type::kInteger; }
  bool is_real() const { return type() == Type::kReal; }
  bool is_text() const { return type() == Type::kText; }
  bool is_blob() const { return type() == Type::kBlob; }

  // The value as its own type; the wrong type stops the process (see above).
  int64_t integer() const;
  double real() const;
  const std::string& text() const;
  const std::string& blob() const;

  // For display: NULL, 42, 1.5, 'text' (quotes doubled), x'0aff'.
  std::string ToString() const;

  friend bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  struct BlobBytes {
    std::string bytes;
    friend bool operator==(const BlobBytes& a, const BlobBytes& b) { return a.bytes == b.bytes; }
  };
  // Index order matches Type.
  std::variant<std::monostate, int64_t, double, std::string, BlobBytes> v_;
};

TXCLIENT_EXPORT const char* TypeName(Value::Type type);  // "NULL", "INTEGER", ...

// One SQL statement and its parameters: positional (?, ?NNN) or named (:name, @name, $name; a
// key may be written with or without its prefix), not both. Every parameter the statement
// declares must be given exactly once.
struct Statement {
  std::string sql;
  std::vector<Value> params;
  std::map<std::string, Value> named_params;
};

using Row = std::vector<Value>;  // one Value per column, in ResultSet::columns order

// The outcome of one statement. A statement that returns no rows (UPDATE, INSERT without
// RETURNING) has no columns and no rows; rows_changed counts the rows it inserted, updated or
// deleted.
struct ResultSet {
  std::vector<std::string> columns;
  std::vector<Row> rows;
  int64_t rows_changed = 0;

  // The index of the named column, or -1.
  int ColumnIndex(std::string_view name) const {
    for (size_t i = 0; i < columns.size(); ++i) {
      if (columns[i] == name) return static_cast<int>(i);
    }
    return -1;
  }
};

}  // namespace tx::client
