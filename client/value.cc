#include "txclient/value.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace tx::client {

namespace {

[[noreturn]] void WrongType(Value::Type wanted, Value::Type actual) {
  std::fprintf(stderr, "txclient: reading a %s value as %s\n", TypeName(actual), TypeName(wanted));
  std::abort();
}

}  // namespace

const char* TypeName(Value::Type type) {
  switch (type) {
    case Value::Type::kNull:
      return "NULL";
    case Value::Type::kInteger:
      return "INTEGER";
    case Value::Type::kReal:
      return "REAL";
    case Value::Type::kText:
      return "TEXT";
    case Value::Type::kBlob:
      return "BLOB";
  }
  return "?";
}

int64_t Value::integer() const {
  if (!is_integer()) WrongType(Type::kInteger, type());
  return std::get<int64_t>(v_);
}

double Value::real() const {
  if (!is_real()) WrongType(Type::kReal, type());
  return std::get<double>(v_);
}

const std::string& Value::text() const {
  if (!is_text()) WrongType(Type::kText, type());
  return std::get<std::string>(v_);
}

const std::string& Value::blob() const {
  if (!is_blob()) WrongType(Type::kBlob, type());
  return std::get<BlobBytes>(v_).bytes;
}

std::string Value::ToString() const {
  switch (type()) {
    case Type::kNull:
      return "NULL";
    case Type::kInteger:
      return std::to_string(integer());
    case Type::kReal:
      return fmt::format("{}", real());
    case Type::kText: {
      std::string out = "'";
      for (char c : text()) {
        if (c == '\'') out += '\'';
        out += c;
      }
      return out + "'";
    }
    case Type::kBlob: {
      std::string out = "x'";
      for (unsigned char c : blob()) out += fmt::format("{:02x}", c);
      return out + "'";
    }
  }
  return "?";
}

}  // namespace tx::client
