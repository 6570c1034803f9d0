#include "common/rpc/dial_rewrite.h"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

namespace tx::rpc {
namespace {

// The fast path reads only `g_active`; the table is swapped whole under `g_mu`, and readers copy
// the shared_ptr under the same lock (connections are made rarely: pools keep them).
std::atomic<bool> g_active{false};
std::mutex g_mu;
std::shared_ptr<const DialRewrites> g_table;  // GUARDED_BY(g_mu)

}  // namespace

StatusOr<DialRewrites> ParseDialRewrites(std::string_view text) {
  DialRewrites out;
  if (text.empty()) return out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(start, comma - start);
    // Spaces around items are allowed, as in the other address lists (common/net.h).
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("dial rewrite '{}' is not FROM=TO", item));
    }
    StatusOr<HostPort> from = ParseHostPort(item.substr(0, eq));
    if (!from.ok()) return from.status().Annotate(fmt::format("dial rewrite '{}'", item));
    StatusOr<HostPort> to = ParseHostPort(item.substr(eq + 1));
    if (!to.ok()) return to.status().Annotate(fmt::format("dial rewrite '{}'", item));
    if (from->port == 0 || to->port == 0) {
      return Status::InvalidArgument(fmt::format("dial rewrite '{}' names port 0", item));
    }
    if (!out.emplace(*from, *to).second) {
      return Status::InvalidArgument(fmt::format("dial rewrite names {} twice", ToString(*from)));
    }
    if (out.size() > kMaxDialRewrites) {
      return Status::InvalidArgument(fmt::format("more than {} dial rewrites", kMaxDialRewrites));
    }
    start = comma + 1;
  }
  return out;
}

Status SetDialRewrites(DialRewrites rewrites) {
  if (rewrites.size() > kMaxDialRewrites) {
    return Status::InvalidArgument(fmt::format("more than {} dial rewrites", kMaxDialRewrites));
  }
  for (const auto& [from, to] : rewrites) {
    if (from.port == 0 || to.port == 0) {
      return Status::InvalidArgument(
          fmt::format("dial rewrite {}={} names port 0", ToString(from), ToString(to)));
    }
  }
  std::lock_guard<std::mutex> lock(g_mu);
  const bool active = !rewrites.empty();
  g_table = active ? std::make_shared<const DialRewrites>(std::move(rewrites)) : nullptr;
  g_active.store(active, std::memory_order_release);
  return Status::OK();
}

Status LoadDialRewritesFromEnv() {
  const char* text = std::getenv(kDialRewriteEnv);
  if (text == nullptr) return Status::OK();
  StatusOr<DialRewrites> parsed = ParseDialRewrites(text);
  if (!parsed.ok()) return parsed.status().Annotate(kDialRewriteEnv);
  return SetDialRewrites(*std::move(parsed));
}

HostPort DialAddress(const HostPort& endpoint) {
  if (!g_active.load(std::memory_order_acquire)) return endpoint;
  std::shared_ptr<const DialRewrites> table;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    table = g_table;
  }
  if (table == nullptr) return endpoint;
  auto it = table->find(endpoint);
  return it == table->end() ? endpoint : it->second;
}

}  // namespace tx::rpc
