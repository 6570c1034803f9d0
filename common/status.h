// Errors as values.
//
// A Status is either OK or carries a code and a human-readable message that says what failed
// and, where it helps an operator, where (file, offset, txid). StatusOr<T> holds either a value
// or a non-OK Status. Both are [[nodiscard]]: ignoring one must be written out, e.g.
//   (void)wal->Sync();  // best effort at shutdown
//
// Thread-compatible: a const Status may be read from many threads; copies are independent.

#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/check.h"

namespace tx {

class [[nodiscard]] Status {
 public:
  // Codes are stable: they cross process boundaries in Thrift errors and in logs.
  enum class Code : uint8_t {
    kOk = 0,
    kNotFound = 1,            // the named thing (txid, file, index) does not exist
    kCorruption = 2,          // stored data failed a checksum or an invariant
    kInvalidArgument = 3,     // the caller's input is malformed or out of bounds
    kIOError = 4,             // the operating system refused an I/O operation
    kNoSpace = 5,             // the disk (or a quota) is full
    kAborted = 6,             // the operation lost a conflict and was rolled back
    kUnavailable = 7,         // the service cannot answer now; retrying may help
    kTimedOut = 8,            // a deadline passed before the operation completed
    kFailedPrecondition = 9,  // the system is not in a state that allows the operation
    kOutOfRange = 10,         // an index lies outside the valid range (e.g. compacted)
    kResourceExhausted = 11,  // a bounded queue or limit is full
    kAlreadyExists = 12,      // the thing being created already exists
    kInternal = 13,           // an unexpected error inside a dependency
    kCancelled = 14,          // the operation was cancelled, e.g. by shutdown
  };

  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return Status(Code::kNotFound, msg); }
  static Status Corruption(std::string_view msg) { return Status(Code::kCorruption, msg); }
  static Status InvalidArgument(std::string_view msg) {
    return Status(Code::kInvalidArgument, msg);
  }
  static Status IOError(std::string_view msg) { return Status(Code::kIOError, msg); }
  static Status NoSpace(std::string_view msg) { return Status(Code::kNoSpace, msg); }
  static Status Aborted(std::string_view msg) { return Status(Code::kAborted, msg); }
  static Status Unavailable(std::string_view msg) { return Status(Code::kUnavailable, msg); }
  static Status TimedOut(std::string_view msg) { return Status(Code::kTimedOut, msg); }
  static Status FailedPrecondition(std::string_view msg) {
    return Status(Code::kFailedPrecondition, msg);
  }
  static Status OutOfRange(std::string_view msg) { return Status(Code::kOutOfRange, msg); }
  static Status ResourceExhausted(std::string_view msg) {
    return Status(Code::kResourceExhausted, msg);
  }
  static Status AlreadyExists(std::string_view msg) { return Status(Code::kAlreadyExists, msg); }
  static Status Internal(std::string_view msg) { return Status(Code::kInternal, msg); }
  static Status Cancelled(std::string_view msg) { return Status(Code::kCancelled, msg); }

  // Maps an errno value from a failed system call to a Status. `context` names the operation
  // and its object, e.g. "fdatasync /data/wal/0000000000000001.wal".
  static Status FromErrno(int err, std::string_view context);

  Status(Code code, std::string_view msg);

  bool ok() const { return state_ == nullptr; }
  Code code() const { return state_ ? state_->code : Code::kOk; }
  // Empty for OK.
  const std::string& message() const;

  bool IsNotFound() const { return code() == Code::kNotFound; }
  bool IsCorruption() const { return code() == Code::kCorruption; }
  bool IsInvalidArgument() const { return code() == Code::kInvalidArgument; }
  bool IsIOError() const { return code() == Code::kIOError; }
  bool IsNoSpace() const { return code() == Code::kNoSpace; }
  bool IsTimedOut() const { return code() == Code::kTimedOut; }
  bool IsUnavailable() const { return code() == Code::kUnavailable; }
  bool IsOutOfRange() const { return code() == Code::kOutOfRange; }

  // Returns a Status with the same code and "prefix: message".
  Status Annotate(std::string_view prefix) const;

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct State {
    Code code;
    std::string message;
  };
  // Null means OK, which keeps the common case one pointer wide and allocation-free.
  std::shared_ptr<const State> state_;
};

std::string_view StatusCodeName(Status::Code code);

// Holds a T or a non-OK Status. Accessing the value of an error aborts with the Status: that
// is a programmer error, not an operating error.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  // Implicit by design, so that functions can `return value;` or `return status;`.
  StatusOr(const Status& status) : v_(status) {  // NOLINT(google-explicit-constructor)
    TX_CHECK(!status.ok(), "StatusOr constructed from an OK Status without a value");
  }
  StatusOr(Status&& status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    TX_CHECK(!std::get<Status>(v_).ok(), "StatusOr constructed from an OK Status without a value");
  }
  StatusOr(const T& value) : v_(value) {}        // NOLINT(google-explicit-constructor)
  StatusOr(T&& value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }

  // OK when a value is held.
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
  void CheckHasValue() const {
    TX_CHECK(ok(), "StatusOr::value() on error: {}", std::get<Status>(v_).ToString());
  }

  std::variant<Status, T> v_;
};

}  // namespace tx

#define TX_STATUS_CONCAT_INNER_(a, b) a##b
#define TX_STATUS_CONCAT_(a, b) TX_STATUS_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function if it is not OK.
#define TX_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::tx::Status tx_status_ = (expr);        \
    if (!tx_status_.ok()) return tx_status_; \
  } while (false)

// Evaluates `expr` (a StatusOr), returns its Status on error, else moves its value into `lhs`.
//   TX_ASSIGN_OR_RETURN(auto file, fs->OpenAppendable(path));
#define TX_ASSIGN_OR_RETURN(lhs, expr) \
  TX_ASSIGN_OR_RETURN_IMPL_(TX_STATUS_CONCAT_(tx_statusor_, __LINE__), lhs, expr)
#define TX_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
