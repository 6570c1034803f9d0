#include "common/status.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

namespace tx {

Status::Status(Code code, std::string_view msg) {
  TX_CHECK(code != Code::kOk, "a non-OK Status needs a non-OK code");
  state_ = std::make_shared<const State>(State{code, std::string(msg)});
}

Status Status::FromErrno(int err, std::string_view context) {
  std::string msg = fmt::format("{}: {}", context, std::strerror(err));
  switch (err) {
    case ENOENT:
      return NotFound(msg);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return NoSpace(msg);
    case EEXIST:
      return AlreadyExists(msg);
    case EINVAL:
      return InvalidArgument(msg);
    default:
      return IOError(msg);
  }
}

const std::string& Status::message() const {
  static const std::string* const kEmpty = new std::string();
  return state_ ? state_->message : *kEmpty;
}

Status Status::Annotate(std::string_view prefix) const {
  if (ok()) return *this;
  return Status(code(), fmt::format("{}: {}", prefix, message()));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return fmt::format("{}: {}", StatusCodeName(code()), message());
}

std::string_view StatusCodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kOk:
      return "OK";
    case Status::Code::kNotFound:
      return "NotFound";
    case Status::Code::kCorruption:
      return "Corruption";
    case Status::Code::kInvalidArgument:
      return "InvalidArgument";
    case Status::Code::kIOError:
      return "IOError";
    case Status::Code::kNoSpace:
      return "NoSpace";
    case Status::Code::kAborted:
      return "Aborted";
    case Status::Code::kUnavailable:
      return "Unavailable";
    case Status::Code::kTimedOut:
      return "TimedOut";
    case Status::Code::kFailedPrecondition:
      return "FailedPrecondition";
    case Status::Code::kOutOfRange:
      return "OutOfRange";
    case Status::Code::kResourceExhausted:
      return "ResourceExhausted";
    case Status::Code::kAlreadyExists:
      return "AlreadyExists";
    case Status::Code::kInternal:
      return "Internal";
    case Status::Code::kCancelled:
      return "Cancelled";
  }
  return "Unknown";
}

}  // namespace tx
