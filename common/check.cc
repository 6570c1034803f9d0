#include "common/check.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>

namespace tx::internal {

void CheckFailed(std::string_view condition, std::string_view file, int line,
                 const std::string& message) {
  std::string text = fmt::format("CHECK failed: {} at {}:{}", condition, file, line);
  if (!message.empty()) text += ": " + message;
  // The default logger may write to a file only; stderr always gets the reason for the abort.
  spdlog::critical("{}", text);
  spdlog::default_logger()->flush();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace tx::internal
