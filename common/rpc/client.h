// Client side of our Thrift services: connections with timeouts, reconnect with back-off, and a
// small per-endpoint pool of the generated (not thread-safe) FooClient classes.
//
//   rpc::ClientPool<ParticipantServiceClient> pool({"127.0.0.1", 7001}, options);
//   bool maybe_sent = false;
//   Status s = pool.Call([&](ParticipantServiceClient& c) { c.Prepare(vote, txid); },
//                        &maybe_sent);
//
// Error model. Call() turns every failure into a Status and never throws:
//   - Unavailable, request NOT sent: no connection could be made (refused, unreachable, connect
//     timeout), or the endpoint is in back-off after such failures (fails fast: no connect is
//     tried until the back-off delay passes). `*request_may_have_been_sent` is false.
//   - TimedOut: no reply within recv_timeout. Unavailable: the connection broke during the call.
//     Internal: the reply was malformed or over the size bound, or the server answered with a
//     TApplicationException (e.g. the handler threw). For these the request may have been
//     delivered and executed: only the caller knows whether retrying is safe (an idempotent
//     call) or the outcome must be resolved another way. `*request_may_have_been_sent` is true.
// IDL-declared exceptions are replies, not failures: catch them inside the callback. Any
// exception that escapes the callback discards the connection, because after a transport or
// protocol error the stream is out of sync; the next Call() connects afresh.
//
// Back-off: after n consecutive connect failures to an endpoint, further connects wait a random
// delay in [d/2, d], d = min(max_backoff, initial_backoff * 2^(n-1)); a success resets it.
// Idle pooled connections that the server closed (restart, idle timeout) are noticed before use
// and replaced, so a restarted server costs no failed call.

#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/net.h"
#include "common/rpc/backoff.h"
#include "common/rpc/server.h"
#include "common/status.h"

namespace apache::thrift {
namespace protocol {
class TProtocol;
}
namespace transport {
class TSocket;
}
}  // namespace apache::thrift

namespace tx::rpc {

struct RpcClientOptions {
  std::chrono::milliseconds connect_timeout{1000};
  // A call whose reply does not arrive within this long fails with TimedOut.
  std::chrono::milliseconds recv_timeout{5000};
  std::chrono::milliseconds send_timeout{5000};
  uint32_t max_message_bytes = kDefaultMaxMessageBytes;  // for replies; a bigger one is an error
  // Bounds connections (and server threads) per endpoint: as many calls as this run at once.
  int max_connections = 64;
  // Connections kept open while unused; extra ones are closed when returned.
  int max_idle_connections = 8;
  // A Call() that finds all max_connections busy waits this long (real time) for one, then
  // fails with ResourceExhausted.
  std::chrono::milliseconds acquire_timeout{1000};
  BackoffOptions backoff;
};

// Maps an exception thrown by Thrift (or escaping a Call() callback) to a Status.
Status StatusFromThriftException(const std::exception& e, const HostPort& endpoint);

// One open connection: TSocket (timeouts, TCP_NODELAY) + framed transport + strict binary
// protocol with the size bounds. Not thread-safe: one call at a time.
class RpcConnection {
 public:
  // Connects. Unavailable naming the endpoint if the connection cannot be made in time.
  static StatusOr<std::unique_ptr<RpcConnection>> Open(const HostPort& endpoint,
                                                       const RpcClientOptions& options);
  ~RpcConnection();
  RpcConnection(const RpcConnection&) = delete;
  RpcConnection& operator=(const RpcConnection&) = delete;

  // For constructing a generated client: FooClient client(connection->protocol()).
  const std::shared_ptr<apache::thrift::protocol::TProtocol>& protocol() const { return protocol_; }

  // Between calls nothing should arrive; if the socket is readable the peer closed it (or sent
  // junk), and the connection must not be used. Cheap: one poll() with zero timeout.
  bool IdleAndHealthy() const;

 private:
  RpcConnection() = default;
  std::shared_ptr<apache::thrift::transport::TSocket> socket_;
  std::shared_ptr<apache::thrift::protocol::TProtocol> protocol_;
};

// The untyped part of ClientPool: connections to one endpoint, back-off, bounds.
// Thread-safe.
class ConnectionPoolBase {
 public:
  ConnectionPoolBase(HostPort endpoint, RpcClientOptions options, Clock* clock);
  ~ConnectionPoolBase();
  ConnectionPoolBase(const ConnectionPoolBase&) = delete;
  ConnectionPoolBase& operator=(const ConnectionPoolBase&) = delete;

  const HostPort& endpoint() const { return endpoint_; }

  // Connections open now (idle and in use), and those idle.
  int open_connections() const;
  int idle_connections() const;
  // Connections made since construction.
  uint64_t connects() const;

  // Closes every idle connection (in-use ones close when returned) and forgets the back-off,
  // e.g. after learning that the endpoint restarted.
  void Reset();

 protected:
  // A connection plus the typed client built on it (owned as void to keep this part untyped).
  struct Slot {
    std::unique_ptr<RpcConnection> connection;
    std::shared_ptr<void> client;
  };

  // Takes an idle healthy connection or makes one. On error the request was not sent.
  StatusOr<Slot> Acquire();
  // Returns a connection after a call; `reusable` is false after any failure.
  void Release(Slot slot, bool reusable);

 private:
  const HostPort endpoint_;
  const RpcClientOptions options_;
  Clock* const clock_;

  mutable std::mutex mu_;
  std::condition_variable slot_freed_;
  std::vector<Slot> idle_;            // GUARDED_BY(mu_): most recently used last
  int open_ = 0;                      // GUARDED_BY(mu_): idle + in use + being connected
  uint64_t connects_ = 0;             // GUARDED_BY(mu_)
  Backoff backoff_;                   // GUARDED_BY(mu_)
  Clock::TimePoint next_connect_at_;  // GUARDED_BY(mu_): no connect before this
  Status last_connect_error_;         // GUARDED_BY(mu_)
};

// A pool of `Client` (a generated FooClient) connections to one endpoint. Thread-safe: each
// Call() has a connection to itself for its duration.
template <typename Client>
class ClientPool final : public ConnectionPoolBase {
 public:
  ClientPool(HostPort endpoint, RpcClientOptions options = {}, Clock* clock = Clock::Real())
      : ConnectionPoolBase(std::move(endpoint), std::move(options), clock) {}

  // Runs fn(Client&) on a pooled connection; see the error model above.
  // `request_may_have_been_sent`, if given, says whether a failed call may have reached the
  // server (false only when no connection was made).
  template <typename Fn>
  Status Call(Fn&& fn, bool* request_may_have_been_sent = nullptr) {
    if (request_may_have_been_sent != nullptr) *request_may_have_been_sent = false;
    StatusOr<Slot> slot = Acquire();
    if (!slot.ok()) return slot.status();
    if (slot->client == nullptr)
      slot->client = std::make_shared<Client>(slot->connection->protocol());
    if (request_may_have_been_sent != nullptr) *request_may_have_been_sent = true;
    Status status;
    try {
      std::forward<Fn>(fn)(*static_cast<Client*>(slot->client.get()));
    } catch (const std::exception& e) {
      status = StatusFromThriftException(e, endpoint());
    } catch (...) {
      status = Status::Internal(
          fmt::format("call to {} threw a non-standard exception", ToString(endpoint())));
    }
    bool ok = status.ok();
    Release(std::move(*slot), ok);
    return status;
  }
};

}  // namespace tx::rpc
