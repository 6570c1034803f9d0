// tx::raft::example::EpollServer: a framed-transport TCP server in which no thread waits for a
// request to finish. One I/O thread accepts connections and reads their requests with epoll; each
// complete frame goes to a Dispatch function on that thread, which must not block: it starts the
// work (RaftNode::ProposeAsync, say) and hands the Responder to whoever finishes it, and that
// thread sends the reply with one send(). So 64 clients each waiting on a Raft commit cost no
// thread each and no wake-ups of their own: per request the server does one recv() (the whole
// frame, header and body together) and one send(), and epoll_wait is shared by every request
// that arrived together (docs/raft.md, "Client-facing server").
//
// Why not the project's RpcServer (TThreadedServer): there each request costs its connection
// thread two sleeps (in poll() for the next request, and waiting for the commit), a poll() and a
// recv() each for the frame header and body, and one futex wake from the thread that completes
// it; on two CPUs those context switches were most of the Raft leader's CPU time per proposal
// (docs/benchmarks.md, "Raft"). Thrift's TNonblockingServer has no asynchronous handlers.
//
// Wire: frames are a 4-byte big-endian length and that many bytes (Thrift's TFramedTransport).
// The server does not look inside a frame; the Dispatch parses it (e.g. a strict binary Thrift
// call) and sends back a whole reply frame body.
//
// One request at a time per connection, as with any Thrift server: a connection's next frame is
// dispatched only after its previous reply was sent (a client that pipelines is served in order;
// what it sent ahead is held, at most one frame). Replies therefore never interleave.
//
// Bounds: a frame longer than max_frame_bytes, or a zero-length one, closes the connection (the
// stream cannot be trusted after it); past max_connections new connections are closed at once
// (clients see the connection break and retry elsewhere or later); a connection with no request
// in flight and none received for idle_timeout is closed.
//
// Thread-safety: Start/Stop/address may be called from any thread. A Responder may be used from
// any thread, once. Dispatch runs on the I/O thread only, one frame at a time.
//
// Lifetime: Stop() closes the listening socket and every connection and joins the I/O thread; it
// does not wait for requests in progress. A Responder outliving the server (or its connection) is
// safe: its Send() then does nothing, and the socket is closed when the last Responder for it is
// gone.

#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/net.h"
#include "common/status.h"

namespace tx::raft::example {

struct EpollServerOptions {
  std::string name = "epoll";  // in logs
  HostPort listen;             // port 0: the kernel picks one; see EpollServer::address()
  // Bounds the memory one request can make the server allocate (RpcServer's bound).
  uint32_t max_frame_bytes = 16 << 20;
  // Bounds sockets and buffers (each idle connection holds a small read buffer). Far above the
  // clients one replica serves (a benchmark's 64 proposers; an application's pooled connections).
  int max_connections = 1024;
  // A connection with no request in flight that sends nothing for this long is closed, so
  // abandoned connections give their slot back.
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
};

class EpollServer {
 public:
  class Connection;

  // Sends the reply to one request. Copyable (the copies share the one reply); the first Send
  // wins, later ones do nothing. If the client is gone, Send does nothing.
  class Responder {
   public:
    Responder() = default;
    // Made by the server for the request numbered `seq` on `connection`.
    Responder(std::shared_ptr<Connection> connection, uint64_t seq);
    // `body` without the length word. A reply too large for the socket buffer is finished by the
    // I/O thread.
    void Send(std::string_view body) const;
    // Closes the connection instead of replying (a request that cannot be answered in protocol,
    // e.g. a malformed one).
    void Close() const;

   private:
    std::shared_ptr<Connection> connection_;
    uint64_t seq_ = 0;
  };

  // Called on the I/O thread with each request frame (without its length word). Must return
  // quickly and never block; the reply may be sent from any thread later.
  using Dispatch = std::function<void(std::string frame, Responder responder)>;

  // Binds and starts the I/O thread. IOError naming the address if it cannot listen.
  static StatusOr<std::unique_ptr<EpollServer>> Start(EpollServerOptions options,
                                                      Dispatch dispatch);

  ~EpollServer();  // Stop()
  EpollServer(const EpollServer&) = delete;
  EpollServer& operator=(const EpollServer&) = delete;

  const HostPort& address() const { return address_; }

  // Closes the listening socket and every connection, joins the I/O thread. Idempotent.
  void Stop();

  // Connections open now / accepted since Start / refused because max_connections were open.
  int64_t open_connections() const;
  uint64_t accepted_connections() const;
  uint64_t refused_connections() const;

 private:
  class Loop;
  EpollServer() = default;

  HostPort address_;            // constant after Start()
  std::shared_ptr<Loop> loop_;  // constant after Start()
  std::mutex stop_mu_;          // serializes Stop()
  std::thread thread_;          // runs the loop; joined by Stop() under stop_mu_
};

}  // namespace tx::raft::example
