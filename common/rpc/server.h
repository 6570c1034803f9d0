// Serves one Thrift TProcessor over TCP the way every txcoord and txpart service does: framed
// transport, binary protocol (strict: a request must carry the protocol version, so stray bytes
// such as an HTTP request fail on the first word), our own message and frame size bounds, and a
// thread of its own for the accept loop.
//
// Threading: TThreadedServer, one thread per connection, with a cap on concurrent connections.
// Our clients keep a few long-lived pooled connections per peer (a 5-replica Raft group plus a
// handful of participants and clients), so connections are few and long-lived, and a thread per
// connection gives the lowest latency measured here (DEPENDENCIES.md: 19-31 µs framed round
// trip; TNonblockingServer's thread hops cost 50-115 µs). TThreadPoolServer would not bound
// anything better: it too holds a pool thread for a connection's whole life, so a bounded pool is
// our connection cap plus a task queue. The cap (max_connections) bounds threads and memory under
// overload: past it the server stops accepting, new connections wait in the kernel's listen
// backlog and their calls time out at the client; nothing grows without bound. A connection idle
// for idle_timeout is closed, so abandoned connections give their thread back.
//
// Reserved connections. A cap shared by everyone lets clients lock a server's peers out: idle
// pooled client connections at the cap kept txcoord's Raft peers from connecting to each other,
// so no leader could be elected until the clients left (tests/chaos/connection_cap_test.cc).
// As PostgreSQL does for superuser_reserved_connections, the server therefore accepts the
// reserved slots' total more than max_connections, and a connection accepted while
// max_connections are already open may only make the calls of a class of reserved slots with
// room (a peer's protocol calls, e.g. "raft:AppendEntries"): its first other call closes it
// without a reply (the client sees the connection break, i.e. Unavailable, and retries later as
// under any overload), which frees the slot at once. Until its first call is accepted such a
// connection has reserved_admission_timeout rather than idle_timeout to send it, so connections
// that never send a whole request cannot sit on the reserved slots either, and once admitted it is
// closed after reserved_idle_timeout without a request (not idle_timeout): a peer's pool that grew
// in a burst gives the reserved slots back soon after (peers' pools replace connections the server
// closed before using them, rpc/client.h). Peers are told apart by what they call, not by
// address, because replicas share hosts with clients (and, in tests, 127.0.0.1).
//
// Every server runs one request at a time per connection (Thrift's model); concurrency comes
// from several connections, so the handler behind the processor is called from many threads at
// once and must be thread-safe. An exception a handler throws that the IDL does not declare is
// answered with a TApplicationException (the client sees Internal) and the server carries on.
//
// Thread-safe: Stop() and the accessors may be called from any thread.

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/net.h"
#include "common/status.h"

namespace apache::thrift {
class TProcessor;
namespace server {
class TThreadedServer;
}
}  // namespace apache::thrift

namespace tx::rpc {

// 16 MiB bounds the memory one request can make a process allocate; the largest messages we
// send are Raft snapshot chunks and append batches, which are chunked well below this.
inline constexpr uint32_t kDefaultMaxMessageBytes = 16 << 20;

struct RpcServerOptions {
  std::string name = "rpc";  // in logs: "<name> server listening on ..."
  HostPort listen;           // port 0: the kernel picks one; see RpcServer::address()
  uint32_t max_message_bytes = kDefaultMaxMessageBytes;  // a bigger frame closes the connection
  // Bounds threads (one per connection) and their stacks: 256 is far above what a cluster of
  // 5 replicas, tens of participants and their pooled clients open.
  int max_connections = 256;
  // A connection with no request for this long is closed. Also bounds how long a peer that
  // sends a partial frame and stalls can hold a thread.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  // A reply the client does not read within this long fails and closes the connection.
  std::chrono::milliseconds send_timeout{std::chrono::seconds(10)};
  // Slots above max_connections kept for peers (see the header comment), in classes: each
  // class has its own number of slots and its own calls, so that one kind of peer cannot use up
  // another's (participants calling txcoord's Resolve must not take the slots its Raft peers
  // need). A connection on a reserved slot joins the first class whose may_use() allows its
  // first call and that has a slot free, and from then on may make that class's calls only.
  struct ReservedSlots {
    std::string name;  // whom they are kept for, in logs ("raft peers")
    int connections = 0;
    // By Thrift message name (with a TMultiplexedProcessor, "service:method"). Called from the
    // connection threads concurrently.
    std::function<bool(const std::string& message_name)> may_use;
  };
  std::vector<ReservedSlots> reserved;
  // How long a connection on a reserved slot has to send its first call.
  std::chrono::milliseconds reserved_admission_timeout{std::chrono::seconds(5)};
  // How long an admitted connection on a reserved slot may wait for its next request.
  std::chrono::milliseconds reserved_idle_timeout{std::chrono::seconds(10)};
};

class RpcServer {
 public:
  // Binds, starts the accept loop on its own thread and returns once the port accepts
  // connections. IOError naming the address if it cannot listen (port in use, bad host).
  static StatusOr<std::unique_ptr<RpcServer>> Start(
      std::shared_ptr<apache::thrift::TProcessor> processor, const RpcServerOptions& options);

  ~RpcServer();  // Stop()
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // The bound address, with the real port when 0 was asked for.
  const HostPort& address() const { return address_; }

  // Stops accepting, interrupts idle connections, waits for handlers that are running to
  // return, and joins every thread. The port is closed when it returns. Idempotent.
  void Stop();

  // Connections accepted since Start().
  uint64_t accepted_connections() const;
  // Connections open now.
  int64_t open_connections() const;
  // Connections on reserved slots closed because no class of reserved slots with room allows
  // their call.
  uint64_t refused_connections() const;

 private:
  class ReservedSlotTable;
  class EventHandler;
  class AdmissionProcessor;
  RpcServer() = default;

  std::shared_ptr<EventHandler> events_;
  std::shared_ptr<AdmissionProcessor> admission_;                    // constant after Start()
  std::shared_ptr<apache::thrift::server::TThreadedServer> server_;  // constant after Start()
  HostPort address_;                                                 // constant after Start()
  std::string name_;                                                 // constant after Start()

  std::mutex stop_mu_;  // serializes Stop()
  std::thread thread_;  // runs serve(); joined by Stop() under stop_mu_
};

}  // namespace tx::rpc
