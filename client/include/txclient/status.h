// tx::client::Status and StatusOr<T>: how every call of libtxclient reports failure.
//
// Errors are values. A Status is OK or carries a StatusCode, a message meant for a human
// (it names the participant, txid or endpoint involved) and, for errors inside a transaction,
// whether the transaction was aborted by it. Both types are [[nodiscard]].
//
//   tx::client::StatusOr<tx::client::ResultSet> rs = txn.Execute("accounts", "SELECT ...");
//   if (!rs.ok()) {
//     if (rs.status().transaction_aborted()) { /* start again from Begin */ }
//     std::cerr << rs.status().ToString() << "\n";
//   }
//
// Header-only and standard C++17. Thread-compatible: const objects may be shared.

#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace tx::client {

// Stable numbers (they appear in logs). The first group mirrors what the servers answer; the
// second is the client's own.
enum class StatusCode : int {
  kOk = 0,
  // Answers of a participant or the coordinator.
  kInternal = 1,             // a bug or an unexpected failure of a dependency
  kInvalidArgument = 2,      // malformed request: bad parameters, bad value, bad option
  kInvalidSql = 3,           // the SQL does not compile or is not allowed (DDL, PRAGMA, ...)
  kConstraintViolation = 4,  // UNIQUE, NOT NULL, CHECK or FOREIGN KEY failed
  kNoPrimaryKey = 5,         // a write to a table without a PRIMARY KEY
  kUnknownTransaction = 6,   // the txid is unknown there, or its outcome was forgotten
  kWrongState = 7,           // the call does not fit the transaction's state
  kConflict = 8,             // another transaction committed a write to the same row first
  kLockTimeout = 9,          // waited too long for another transaction's row lock
  kDeadlock = 10,            // chosen as a deadlock victim
  kTooLarge = 11,            // a request, result or transaction exceeds a size bound
  kResourceExhausted = 12,   // a server is at a limit (transactions, connections); retry later
  kAborted = 13,             // the transaction was aborted (timeout, Abort, an earlier error)
  kUnavailable = 14,         // no answer could be had (servers down, no leader) in time
  kStatementTimeout = 16,    // a statement ran past the participant's time limit; no effect
  // The client's own.
  kDeadlineExceeded = 100,    // the call's deadline passed before it completed
  kOutcomeUnknown = 101,      // Commit: the outcome could not be learned before the deadline
  kNotFound = 102,            // e.g. a participant name that is not in the directory
  kFailedPrecondition = 103,  // the object is not in a state that allows the call
};

// "Conflict", "OutcomeUnknown", ... ("Unknown(<n>)" for a number not listed above).
inline std::string StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInternal:
      return "Internal";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kInvalidSql:
      return "InvalidSql";
    case StatusCode::kConstraintViolation:
      return "ConstraintViolation";
    case StatusCode::kNoPrimaryKey:
      return "NoPrimaryKey";
    case StatusCode::kUnknownTransaction:
      return "UnknownTransaction";
    case StatusCode::kWrongState:
      return "WrongState";
    case StatusCode::kConflict:
      return "Conflict";
    case StatusCode::kLockTimeout:
      return "LockTimeout";
    case StatusCode::kDeadlock:
      return "Deadlock";
    case StatusCode::kTooLarge:
      return "TooLarge";
    case StatusCode::kResourceExhausted:
      return "ResourceExhausted";
    case StatusCode::kAborted:
      return "Aborted";
    case StatusCode::kUnavailable:
      return "Unavailable";
    case StatusCode::kStatementTimeout:
      return "StatementTimeout";
    case StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case StatusCode::kOutcomeUnknown:
      return "OutcomeUnknown";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kFailedPrecondition:
      return "FailedPrecondition";
  }
  return "Unknown(" + std::to_string(static_cast<int>(code)) + ")";
}

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message, bool transaction_aborted = false)
      : code_(code), message_(std::move(message)), transaction_aborted_(transaction_aborted) {}

  static Status OK() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // True when the error ended the transaction it happened in (a conflict, a lock timeout, a
  // deadlock, an Execute whose effect is unknown, ...): the transaction can only be aborted or
  // committed as ABORTED; the application starts again from Begin. False when only the failed
  // call had no effect and the transaction may continue (e.g. a constraint violation).
  bool transaction_aborted() const { return transaction_aborted_; }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const {
    if (ok()) return "OK";
    return StatusCodeName(code_) + ": " + message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  bool transaction_aborted_ = false;
};

// Holds a T or a non-OK Status. Reading the value of an error is a programmer error: the
// process stops with the Status printed.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) Die("StatusOr constructed from an OK Status without a value");
  }
  StatusOr(const T& value) : v_(value) {}        // NOLINT(google-explicit-constructor)
  StatusOr(T&& value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::OK() : std::get<Status>(v_); }

  const T& value() const& {
    CheckHasValue();
    return std::get<T>(v_);
  }
  T& value() & {
    CheckHasValue();
    return std::get<T>(v_);
  }
  T&& value() && {
    CheckHasValue();
    return std::get<T>(std::move(v_));
  }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  [[noreturn]] static void Die(const std::string& what) {
    std::fprintf(stderr, "txclient: %s\n", what.c_str());
    std::abort();
  }
  void CheckHasValue() const {
    if (!ok()) Die("StatusOr::value() on an error: " + std::get<Status>(v_).ToString());
  }

  std::variant<Status, T> v_;
};

}  // namespace tx::client
