#include "common/rpc/thrift_logging.h"

#include <spdlog/spdlog.h>
#include <thrift/TOutput.h>

#include <mutex>
#include <string_view>

namespace tx::rpc {
namespace {

void LogThriftMessage(const char* message) {
  std::string_view text(message);
  if (text.starts_with("TSocket::")) {
    spdlog::debug("thrift: {}", text);
  } else {
    spdlog::warn("thrift: {}", text);
  }
}

}  // namespace

void RouteThriftLoggingToSpdlog() {
  static std::once_flag once;
  std::call_once(once, [] { apache::thrift::GlobalOutput.setOutputFunction(&LogThriftMessage); });
}

}  // namespace tx::rpc
