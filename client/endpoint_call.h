// One RPC attempt to one server, bounded by a timeout: the building block of the client's
// retries. Internal to libtxclient (and txctl).
//
// ServerPools<C> keeps a rpc::ClientPool of generated Thrift clients `C` per server address.
// Call() makes one attempt with a reply timeout: through the pool when the timeout is at least
// the pool's (the common case), else through a connection of its own opened with the shorter
// timeout, so that no attempt outlives the deadline of the call it belongs to (a pool's sockets
// have one fixed timeout).
//
// Thread-safe. Servers are never forgotten; their number is bounded by kMaxServers.

#pragma once

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "common/net.h"
#include "common/rpc/client.h"
#include "common/status.h"

// Nested classes of exported ones (Client::Impl, Transaction::Impl) would be exported too;
// this keeps them inside libtxclient.so.
#define TXCLIENT_INTERNAL __attribute__((visibility("hidden")))

namespace tx::client::internal {

using Millis = std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

// Coordinator replicas learned from hints plus participants in the directory (at most 1024)
// stay far below this; more means a misbehaving server, and new addresses are then refused.
inline constexpr size_t kMaxServers = 4096;

// Rounded up, so that a call gives up at its deadline, not up to a millisecond before it.
inline Millis Remaining(SteadyTime deadline) {
  auto left = std::chrono::ceil<Millis>(deadline - std::chrono::steady_clock::now());
  return std::max(left, Millis(0));
}

template <typename C>
class ServerPools {
 public:
  explicit ServerPools(rpc::RpcClientOptions options) : options_(std::move(options)) {}

  // One attempt of fn(C&) at `server`, waiting at most `timeout` for the reply. The error
  // model is rpc::ClientPool::Call's: `*maybe_sent` is false only when no connection was made.
  template <typename Fn>
  tx::Status Call(const HostPort& server, Millis timeout, Fn&& fn, bool* maybe_sent) {
    *maybe_sent = false;
    if (timeout <= Millis(0)) return tx::Status::TimedOut("no time left for a call");
    if (timeout >= options_.recv_timeout) {
      tx::StatusOr<rpc::ClientPool<C>*> pool = PoolFor(server);
      if (!pool.ok()) return pool.status();
      return (*pool)->Call(std::forward<Fn>(fn), maybe_sent);
    }
    rpc::RpcClientOptions one_off = options_;
    one_off.recv_timeout = timeout;
    one_off.send_timeout = std::min(timeout, options_.send_timeout);
    one_off.connect_timeout = std::min(timeout, options_.connect_timeout);
    tx::StatusOr<std::unique_ptr<rpc::RpcConnection>> connection =
        rpc::RpcConnection::Open(server, one_off);
    if (!connection.ok()) return connection.status();
    *maybe_sent = true;
    C client((*connection)->protocol());
    try {
      std::forward<Fn>(fn)(client);
    } catch (const std::exception& e) {
      return rpc::StatusFromThriftException(e, server);
    }
    return tx::Status::OK();
  }

 private:
  tx::StatusOr<rpc::ClientPool<C>*> PoolFor(const HostPort& server) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pools_.find(server);
    if (it == pools_.end()) {
      if (pools_.size() >= kMaxServers) {
        return tx::Status::ResourceExhausted(
            fmt::format("refusing to open connections to a {}th server ({})", kMaxServers + 1,
                        ToString(server)));
      }
      it = pools_.emplace(server, std::make_unique<rpc::ClientPool<C>>(server, options_)).first;
    }
    return it->second.get();
  }

  const rpc::RpcClientOptions options_;
  std::mutex mu_;
  std::map<HostPort, std::unique_ptr<rpc::ClientPool<C>>> pools_;  // GUARDED_BY(mu_)
};

}  // namespace tx::client::internal
