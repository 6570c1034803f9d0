// Invariant checks that stay on in release builds.
//
// A broken invariant is a programmer error: the process stops with a message naming the
// condition, the source location and the values that broke it. Operating errors (a full disk,
// a lost connection, bad input) are Status values, never TX_CHECK failures.

#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace tx::internal {

// Logs "CHECK failed: <condition> at <file>:<line>: <message>" and aborts.
[[noreturn]] void CheckFailed(std::string_view condition, std::string_view file, int line,
                              const std::string& message);

}  // namespace tx::internal

// TX_CHECK(cond) or TX_CHECK(cond, "format {}", args...): aborts unless cond holds.
#define TX_CHECK(cond, ...)                                                               \
  do {                                                                                    \
    if (!(cond)) [[unlikely]] {                                                           \
      ::tx::internal::CheckFailed(#cond, __FILE__, __LINE__,                              \
                                  ::tx::internal::CheckMessage(__VA_OPT__(__VA_ARGS__))); \
    }                                                                                     \
  } while (false)

namespace tx::internal {
inline std::string CheckMessage() { return {}; }
template <typename... Args>
std::string CheckMessage(fmt::format_string<Args...> format, Args&&... args) {
  return fmt::format(format, std::forward<Args>(args)...);
}
}  // namespace tx::internal
