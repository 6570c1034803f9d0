// Process-wide logging set-up on spdlog.
//
// Every long-running program calls InitLogging once at start-up, before starting threads.
// Afterwards code logs with spdlog's free functions (spdlog::info(...)), which go to the
// default logger configured here.

#pragma once

#include <spdlog/common.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace tx {

struct LogOptions {
  std::string program;  // shown on every line, e.g. "txcoord-1"
  spdlog::level::level_enum level = spdlog::level::info;
  std::string file;  // when set, lines also go to this file (appended); stderr always gets them
};

// Installs the default logger. Returns IOError if the log file cannot be opened.
Status InitLogging(const LogOptions& options);

// Parses "trace", "debug", "info", "warn", "error", "critical" or "off".
StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

}  // namespace tx
