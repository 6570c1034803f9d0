// Output helpers for txctl: aligned text tables for people, JSON for scripts.

#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tx::txctl {

// Columns padded to their widest cell, two spaces apart; the last column is not padded.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// A JSON document written in one pass. Commas and escaping are handled here; the caller pairs
// Begin/End calls (checked: a mismatch is a programmer error).
class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // The document; every container must be closed.
  std::string Take();

 private:
  void BeforeValue();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

// "850ms", "12.3s", "4m05s", "2h13m".
std::string FormatAge(int64_t ms);

}  // namespace tx::txctl
