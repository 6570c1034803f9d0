#include "client/convert.h"

#include <fmt/format.h>

namespace tx::client::internal {

api::Value ToWire(const Value& v) {
  api::Value out;
  switch (v.type()) {
    case Value::Type::kNull:
      out.__set_null_value(api::Null());
      break;
    case Value::Type::kInteger:
      out.__set_integer(v.integer());
      break;
    case Value::Type::kReal:
      out.__set_real(v.real());
      break;
    case Value::Type::kText:
      out.__set_text(v.text());
      break;
    case Value::Type::kBlob:
      out.__set_blob(v.blob());
      break;
  }
  return out;
}

api::Statement ToWire(const Statement& s) {
  api::Statement out;
  out.sql = s.sql;
  out.params.reserve(s.params.size());
  for (const Value& v : s.params) out.params.push_back(ToWire(v));
  for (const auto& [name, v] : s.named_params) out.named_params.emplace(name, ToWire(v));
  return out;
}

tx::StatusOr<Value> FromWire(const api::Value& v, const std::string& where) {
  const auto& set = v.__isset;
  const int fields =
      int{set.null_value} + int{set.integer} + int{set.real} + int{set.text} + int{set.blob};
  if (fields != 1) {
    return tx::Status::InvalidArgument(
        fmt::format("{}: a value with {} fields set (exactly one expected)", where, fields));
  }
  if (set.null_value) return Value();
  if (set.integer) return Value(v.integer);
  if (set.real) return Value(v.real);
  if (set.text) return Value(v.text);
  return Value::Blob(v.blob);
}

tx::StatusOr<ResultSet> FromWire(const api::ResultSet& rs, const std::string& where) {
  ResultSet out;
  out.columns = rs.columns;
  out.rows_changed = rs.rows_changed;
  out.rows.reserve(rs.rows.size());
  for (size_t r = 0; r < rs.rows.size(); ++r) {
    const api::Row& row = rs.rows[r];
    if (row.values.size() != rs.columns.size()) {
      return tx::Status::InvalidArgument(fmt::format("{}: row {} has {} values for {} columns",
                                                     where, r, row.values.size(),
                                                     rs.columns.size()));
    }
    Row values;
    values.reserve(row.values.size());
    for (const api::Value& v : row.values) {
      tx::StatusOr<Value> value = FromWire(v, where);
      if (!value.ok()) return value.status();
      values.push_back(*std::move(value));
    }
    out.rows.push_back(std::move(values));
  }
  return out;
}

StatusCode FromWire(api::ErrorCode::type code) {
  switch (code) {
    case api::ErrorCode::INTERNAL:
      return StatusCode::kInternal;
    case api::ErrorCode::INVALID_ARGUMENT:
      return StatusCode::kInvalidArgument;
    case api::ErrorCode::INVALID_SQL:
      return StatusCode::kInvalidSql;
    case api::ErrorCode::CONSTRAINT_VIOLATION:
      return StatusCode::kConstraintViolation;
    case api::ErrorCode::NO_PRIMARY_KEY:
      return StatusCode::kNoPrimaryKey;
    case api::ErrorCode::UNKNOWN_TRANSACTION:
      return StatusCode::kUnknownTransaction;
    case api::ErrorCode::WRONG_STATE:
      return StatusCode::kWrongState;
    case api::ErrorCode::CONFLICT:
      return StatusCode::kConflict;
    case api::ErrorCode::LOCK_TIMEOUT:
      return StatusCode::kLockTimeout;
    case api::ErrorCode::DEADLOCK:
      return StatusCode::kDeadlock;
    case api::ErrorCode::TOO_LARGE:
      return StatusCode::kTooLarge;
    case api::ErrorCode::RESOURCE_EXHAUSTED:
      return StatusCode::kResourceExhausted;
    case api::ErrorCode::ABORTED:
      return StatusCode::kAborted;
    case api::ErrorCode::UNAVAILABLE:
    case api::ErrorCode::NOT_LEADER:
      return StatusCode::kUnavailable;
    case api::ErrorCode::TIMED_OUT:
      return StatusCode::kStatementTimeout;
    default:
      // A peer may send any i32, and newer servers add codes (common.thrift: a code the reader
      // does not know is treated as INTERNAL).
      return StatusCode::kInternal;
  }
}

client::Status FromTxError(const api::TxError& e, const std::string& context) {
  return client::Status(FromWire(e.code),
                        fmt::format("{}: {} ({})", context, e.message, ErrorCodeName(e.code)),
                        e.transaction_aborted);
}

client::Status FromCallResult(const CallResult& r, const std::string& context) {
  if (r.status.ok()) {
    if (r.error.has_value()) return FromTxError(*r.error, context);
    return client::Status();
  }
  const StatusCode code = r.status.code() == tx::Status::Code::kTimedOut
                              ? StatusCode::kDeadlineExceeded
                              : StatusCode::kUnavailable;
  return client::Status(code, fmt::format("{}: {}", context, r.status.message()));
}

}  // namespace tx::client::internal
