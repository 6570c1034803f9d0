#include "common/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <vector>

namespace tx {

Status InitLogging(const LogOptions& options) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (!options.file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file));
    } catch (const spdlog::spdlog_ex& e) {
      return Status::IOError(fmt::format("cannot open log file {}: {}", options.file, e.what()));
    }
  }
  auto logger = std::make_shared<spdlog::logger>(options.program, sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%L%$ [%n] %v", spdlog::pattern_time_type::utc);
  logger->set_level(options.level);
  // Warnings and errors reach the disk at once; info lines may wait for the periodic flush.
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
  spdlog::flush_every(std::chrono::seconds(1));
  return Status::OK();
}

StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  auto level = spdlog::level::from_str(std::string(name));
  // from_str answers "off" for anything it does not know; only accept "off" when asked for.
  if (level == spdlog::level::off && name != "off") {
    return Status::InvalidArgument(fmt::format(
        "unknown log level '{}' (want trace, debug, info, warn, error, critical or off)", name));
  }
  return level;
}

}  // namespace tx
