#include "common/rpc/client.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <thrift/TApplicationException.h>
#include <thrift/protocol/TProtocolException.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>

#include "common/rpc/dial_rewrite.h"
#include "common/rpc/thrift_logging.h"
#include "common/rpc/transport.h"

namespace tx::rpc {

using apache::thrift::TApplicationException;
using apache::thrift::protocol::TProtocolException;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransportException;

Status StatusFromThriftException(const std::exception& e, const HostPort& endpoint) {
  if (const auto* t = dynamic_cast<const TTransportException*>(&e)) {
    switch (t->getType()) {
      case TTransportException::TIMED_OUT:
        return Status::TimedOut(fmt::format("call to {} timed out: {}", endpoint, t->what()));
      case TTransportException::CORRUPTED_DATA:
        return Status::Internal(fmt::format("bad reply from {}: {}", endpoint, t->what()));
      default:
        return Status::Unavailable(
            fmt::format("connection to {} failed during a call: {}", endpoint, t->what()));
    }
  }
  if (const auto* p = dynamic_cast<const TProtocolException*>(&e)) {
    return Status::Internal(fmt::format(
        "bad reply from {}: {}{}", endpoint, p->what(),
        p->getType() == TProtocolException::SIZE_LIMIT ? " (over the message size bound)" : ""));
  }
  if (const auto* a = dynamic_cast<const TApplicationException*>(&e)) {
    return Status::Internal(
        fmt::format("{} answered with an application error: {}", endpoint, a->what()));
  }
  return Status::Internal(fmt::format("call to {} failed: {}", endpoint, e.what()));
}

StatusOr<std::unique_ptr<RpcConnection>> RpcConnection::Open(const HostPort& endpoint,
                                                             const RpcClientOptions& options) {
  RouteThriftLoggingToSpdlog();
  const HostPort dial = DialAddress(endpoint);  // a fault-injection proxy, normally `endpoint`
  std::unique_ptr<RpcConnection> c(new RpcConnection());
  c->socket_ = std::make_shared<TSocket>(dial.host, dial.port,
                                         MakeThriftConfiguration(options.max_message_bytes));
  c->socket_->setConnTimeout(static_cast<int>(options.connect_timeout.count()));
  c->socket_->setRecvTimeout(static_cast<int>(options.recv_timeout.count()));
  c->socket_->setSendTimeout(static_cast<int>(options.send_timeout.count()));
  c->socket_->setNoDelay(true);  // requests are small and latency-bound
  // An ordinary FIN on close (Thrift's default is an abortive RST), so that a server reading
  // the next request sees a clean end of stream.
  c->socket_->setLinger(false, 0);
  c->protocol_ = MakeClientProtocol(c->socket_, options.max_message_bytes);
  try {
    c->protocol_->getTransport()->open();
  } catch (const TTransportException& e) {
    return Status::Unavailable(fmt::format("cannot connect to {}: {}", endpoint, e.what()));
  }
  return c;
}

RpcConnection::~RpcConnection() {
  if (protocol_ == nullptr) return;
  try {
    protocol_->getTransport()->close();
  } catch (const std::exception& e) {
    // Closing a socket cannot meaningfully fail; nothing to do but note it.
    spdlog::debug("closing RPC connection: {}", e.what());
  }
}

bool RpcConnection::IdleAndHealthy() const {
  if (!socket_->isOpen()) return false;
  pollfd pfd = {};
  pfd.fd = socket_->getSocketFD();
  pfd.events = POLLIN | POLLRDHUP;
  // Readable (EOF, reset or stray bytes) or any error: the stream is unusable for a new call.
  return ::poll(&pfd, 1, 0) == 0;
}

ConnectionPoolBase::ConnectionPoolBase(HostPort endpoint, RpcClientOptions options, Clock* clock)
    : endpoint_(std::move(endpoint)),
      options_(std::move(options)),
      clock_(clock),
      backoff_(options_.backoff) {
  TX_CHECK(clock_ != nullptr);
  TX_CHECK(options_.max_connections > 0 && options_.max_idle_connections >= 0,
           "max_connections {}, max_idle_connections {}", options_.max_connections,
           options_.max_idle_connections);
}

ConnectionPoolBase::~ConnectionPoolBase() {
  std::lock_guard lock(mu_);
  TX_CHECK(open_ == static_cast<int>(idle_.size()),
           "connection pool for {} destroyed with {} connection(s) in use", endpoint_,
           open_ - static_cast<int>(idle_.size()));
}

int ConnectionPoolBase::open_connections() const {
  std::lock_guard lock(mu_);
  return open_;
}

int ConnectionPoolBase::idle_connections() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(idle_.size());
}

uint64_t ConnectionPoolBase::connects() const {
  std::lock_guard lock(mu_);
  return connects_;
}

void ConnectionPoolBase::Reset() {
  std::vector<Slot> closing;
  {
    std::lock_guard lock(mu_);
    closing.swap(idle_);
    open_ -= static_cast<int>(closing.size());
    backoff_.Reset();
    next_connect_at_ = Clock::TimePoint{};
    slot_freed_.notify_all();
  }
  // `closing` goes out of scope here, closing the sockets without the lock held.
}

StatusOr<ConnectionPoolBase::Slot> ConnectionPoolBase::Acquire() {
  auto give_up_at = std::chrono::steady_clock::now() + options_.acquire_timeout;
  std::unique_lock lock(mu_);
  while (true) {
    if (!idle_.empty()) {
      Slot slot = std::move(idle_.back());
      idle_.pop_back();
      lock.unlock();
      if (slot.connection->IdleAndHealthy()) return slot;
      slot = Slot{};  // closed by the peer while idle: close our end and look again
      lock.lock();
      --open_;
      continue;
    }
    if (open_ < options_.max_connections) break;
    if (slot_freed_.wait_until(lock, give_up_at) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.max_connections) {
      return Status::ResourceExhausted(fmt::format("all {} connections to {} busy for {} ms",
                                                   options_.max_connections, endpoint_,
                                                   options_.acquire_timeout.count()));
    }
  }

  Clock::TimePoint now = clock_->Now();
  if (now < next_connect_at_) {
    auto wait_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_connect_at_ - now).count();
    return Status::Unavailable(fmt::format(
        "{} unreachable after {} failed connect(s), next attempt in {} ms; last error: {}",
        endpoint_, backoff_.failures(), wait_ms, last_connect_error_.message()));
  }
  ++open_;  // reserve the slot while connecting without the lock
  lock.unlock();
  StatusOr<std::unique_ptr<RpcConnection>> connection = RpcConnection::Open(endpoint_, options_);
  lock.lock();
  if (!connection.ok()) {
    --open_;
    slot_freed_.notify_one();
    std::chrono::milliseconds delay = backoff_.NextDelay();
    next_connect_at_ = clock_->Now() + delay;
    last_connect_error_ = connection.status();
    return connection.status();
  }
  backoff_.Reset();
  next_connect_at_ = Clock::TimePoint{};
  ++connects_;
  return Slot{std::move(connection).value(), nullptr};
}

void ConnectionPoolBase::Release(Slot slot, bool reusable) {
  std::unique_lock lock(mu_);
  if (reusable && static_cast<int>(idle_.size()) < options_.max_idle_connections) {
    idle_.push_back(std::move(slot));
  } else {
    --open_;
  }
  slot_freed_.notify_one();
  lock.unlock();
  // A slot not kept is closed here, without the lock held.
}

}  // namespace tx::rpc
