#include "raft/node/example/epoll_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/check.h"

namespace tx::raft::example {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr size_t kFrameHeaderBytes = 4;
// One recv() takes up to this much; a request (a 128-byte proposal) fits many times over, so
// a read that comes back shorter has drained the socket and no second recv() is needed.
constexpr size_t kReadChunkBytes = 64 << 10;
// Events taken per epoll_wait: more only means more rounds, not lost events.
constexpr int kMaxEventsPerWait = 256;
// The I/O thread wakes at least this often to close idle connections.
constexpr int kSweepIntervalMs = 1000;
// Pending connections the kernel keeps for us while the I/O thread is busy.
constexpr int kListenBacklog = 1024;

// epoll data of the two non-connection descriptors; connection ids start above them.
constexpr uint64_t kListenId = 0;
constexpr uint64_t kWakeId = 1;

uint32_t ReadBigEndian32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return ntohl(v);
}

std::string ErrnoText(int err) { return std::strerror(err); }

}  // namespace

// One client connection. The socket is closed when the last owner (the I/O thread's table, or
// a Responder) lets go, so a Responder never writes to a descriptor number reused by another
// connection.
class EpollServer::Connection {
 public:
  Connection(int fd, uint64_t id, std::weak_ptr<Loop> loop)
      : fd_(fd), id_(id), loop_(std::move(loop)) {}
  ~Connection() { ::close(fd_); }

  const int fd_;
  const uint64_t id_;
  const std::weak_ptr<Loop> loop_;       // to ask the I/O thread to serve a held frame
  SteadyClock::time_point last_active_;  // I/O thread only

  std::mutex mu_;
  std::string in_;            // GUARDED_BY(mu_): received bytes not yet dispatched
  std::string out_;           // GUARDED_BY(mu_): reply bytes the socket has not taken
  bool busy_ = false;         // GUARDED_BY(mu_): a request is dispatched or its reply unsent
  uint64_t request_seq_ = 0;  // GUARDED_BY(mu_): the Responder allowed to reply
  bool closed_ = false;       // GUARDED_BY(mu_)

  // Requires mu_: a whole frame is waiting.
  bool HasFrameLocked() const {
    return in_.size() >= kFrameHeaderBytes &&
           in_.size() - kFrameHeaderBytes >= ReadBigEndian32(in_.data());
  }
};

class EpollServer::Loop : public std::enable_shared_from_this<EpollServer::Loop> {
 public:
  Loop(EpollServerOptions options, Dispatch dispatch)
      : options_(std::move(options)), dispatch_(std::move(dispatch)) {}

  ~Loop() {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
  }

  Status Listen(HostPort* bound) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(options_.listen.port);
    int rc = ::getaddrinfo(options_.listen.host.empty() ? nullptr : options_.listen.host.c_str(),
                           port.c_str(), &hints, &res);
    if (rc != 0) {
      return Status::IOError(fmt::format("{} server: cannot resolve {}: {}", options_.name,
                                         ToString(options_.listen), ::gai_strerror(rc)));
    }
    std::string error = "no address";
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        error = ErrnoText(errno);
        continue;
      }
      int one = 1;
      (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, kListenBacklog) != 0) {
        error = ErrnoText(errno);
        ::close(fd);
        continue;
      }
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
      uint16_t bound_port = addr.ss_family == AF_INET6
                                ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
      *bound = HostPort{options_.listen.host, bound_port};
      listen_fd_ = fd;
      break;
    }
    ::freeaddrinfo(res);
    if (listen_fd_ < 0) {
      return Status::IOError(fmt::format("{} server: cannot listen on {}: {}", options_.name,
                                         ToString(options_.listen), error));
    }
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) {
      return Status::IOError(
          fmt::format("{} server: epoll/eventfd: {}", options_.name, ErrnoText(errno)));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenId;
    TX_CHECK(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) == 0, "epoll_ctl: {}",
             ErrnoText(errno));
    ev.data.u64 = kWakeId;
    TX_CHECK(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) == 0, "epoll_ctl: {}",
             ErrnoText(errno));
    return Status::OK();
  }

  void Run() {
    std::vector<epoll_event> events(kMaxEventsPerWait);
    std::vector<char> chunk(kReadChunkBytes);
    auto next_sweep = SteadyClock::now() + std::chrono::milliseconds(kSweepIntervalMs);
    while (!stop_.load(std::memory_order_acquire)) {
      int n = ::epoll_wait(epoll_fd_, events.data(), kMaxEventsPerWait, kSweepIntervalMs);
      if (n < 0) {
        TX_CHECK(errno == EINTR, "{} server: epoll_wait: {}", options_.name, ErrnoText(errno));
        continue;
      }
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id == kListenId) {
          Accept();
        } else if (id == kWakeId) {
          uint64_t count;
          (void)::read(wake_fd_, &count, sizeof count);
          ServeHeldFrames();
        } else {
          auto it = connections_.find(id);
          if (it == connections_.end()) continue;  // closed earlier in this round
          std::shared_ptr<Connection> c = it->second;
          const uint32_t e = events[i].events;
          if ((e & EPOLLOUT) != 0) FlushOut(c);
          if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) ReadInput(c, chunk);
        }
      }
      auto now = SteadyClock::now();
      if (now >= next_sweep) {
        Sweep(now);
        next_sweep = now + std::chrono::milliseconds(kSweepIntervalMs);
      }
    }
    std::vector<std::shared_ptr<Connection>> all;
    for (auto& [id, c] : connections_) all.push_back(c);
    for (auto& c : all) CloseConnection(c);
  }

  void RequestStop() {
    stop_.store(true, std::memory_order_release);
    Wake();
  }

  // From a Responder's thread: `c` has a whole frame waiting that the I/O thread should serve.
  void PostHeldFrame(uint64_t id) {
    {
      std::lock_guard lock(held_mu_);
      held_.push_back(id);
    }
    Wake();
  }

  int64_t open_connections() const { return open_.load(); }
  uint64_t accepted_connections() const { return accepted_.load(); }
  uint64_t refused_connections() const { return refused_.load(); }

 private:
  void Wake() {
    uint64_t one = 1;
    (void)::write(wake_fd_, &one, sizeof one);
  }

  void Accept() {
    while (true) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          // Out of descriptors: the listening socket stays readable, so leave it alone until
          // the next sweep instead of spinning on it.
          spdlog::warn("{} server: accept: {}; pausing accepts for a second", options_.name,
                       ErrnoText(errno));
          epoll_event ev{};
          ev.data.u64 = kListenId;
          (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
          accept_paused_ = true;
        }
        return;
      }
      if (open_.load() >= options_.max_connections) {
        refused_.fetch_add(1);
        ::close(fd);
        continue;
      }
      int one = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      const uint64_t id = next_id_++;
      auto c = std::make_shared<Connection>(fd, id, weak_from_this());
      c->last_active_ = SteadyClock::now();
      epoll_event ev{};
      // Edge-triggered: one event per arrival, and a reply's send() never needs an epoll_ctl;
      // EPOLLOUT only matters after a reply filled the socket buffer.
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = id;
      if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        spdlog::warn("{} server: epoll_ctl: {}", options_.name, ErrnoText(errno));
        continue;  // c's destructor closes fd
      }
      connections_.emplace(id, std::move(c));
      open_.fetch_add(1);
      accepted_.fetch_add(1);
    }
  }

  // Reads everything the socket holds, then dispatches a frame if one is whole.
  void ReadInput(const std::shared_ptr<Connection>& c, std::vector<char>& chunk) {
    // At most one frame may wait behind the one in progress (see the header comment).
    const size_t max_buffered = 2 * (kFrameHeaderBytes + options_.max_frame_bytes);
    {
      std::lock_guard lock(c->mu_);
      if (c->closed_) return;
      while (true) {
        ssize_t n = ::recv(c->fd_, chunk.data(), chunk.size(), 0);
        if (n > 0) {
          c->in_.append(chunk.data(), static_cast<size_t>(n));
          if (c->in_.size() > max_buffered) {
            spdlog::warn("{} server: connection sent {} bytes ahead of its replies; closing it",
                         options_.name, c->in_.size());
            n = 0;
          } else if (static_cast<size_t>(n) < chunk.size()) {
            break;  // drained: the next arrival raises a new edge
          } else {
            continue;
          }
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // End of stream, an error, or a bound exceeded.
        c->closed_ = true;
        break;
      }
    }
    c->last_active_ = SteadyClock::now();
    DispatchIfWhole(c);
  }

  // Dispatches the connection's next frame if it is whole and nothing is in progress.
  void DispatchIfWhole(const std::shared_ptr<Connection>& c) {
    std::string frame;
    uint64_t seq = 0;
    bool close = false;
    {
      std::lock_guard lock(c->mu_);
      if (c->closed_) {
        close = true;
      } else if (c->busy_ || c->in_.size() < kFrameHeaderBytes) {
        return;
      } else {
        const uint32_t len = ReadBigEndian32(c->in_.data());
        if (len == 0 || len > options_.max_frame_bytes) {
          spdlog::warn("{} server: frame of {} bytes (limit {}); closing the connection",
                       options_.name, len, options_.max_frame_bytes);
          c->closed_ = true;
          close = true;
        } else if (c->in_.size() - kFrameHeaderBytes < len) {
          return;
        } else {
          frame.assign(c->in_, kFrameHeaderBytes, len);
          c->in_.erase(0, kFrameHeaderBytes + len);
          c->busy_ = true;
          seq = ++c->request_seq_;
        }
      }
    }
    if (close) {
      CloseConnection(c);
      return;
    }
    dispatch_(std::move(frame), Responder(c, seq));
  }

  void FlushOut(const std::shared_ptr<Connection>& c) {
    {
      std::lock_guard lock(c->mu_);
      if (c->closed_ || c->out_.empty()) return;
      ssize_t n = ::send(c->fd_, c->out_.data(), c->out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        c->closed_ = true;
      } else {
        c->out_.erase(0, static_cast<size_t>(n));
        if (!c->out_.empty()) return;
        c->busy_ = false;  // the reply is out: the next request may go
      }
    }
    DispatchIfWhole(c);
  }

  void ServeHeldFrames() {
    std::vector<uint64_t> held;
    {
      std::lock_guard lock(held_mu_);
      held.swap(held_);
    }
    for (uint64_t id : held) {
      auto it = connections_.find(id);
      if (it == connections_.end()) continue;
      std::shared_ptr<Connection> c = it->second;
      DispatchIfWhole(c);
    }
  }

  void Sweep(SteadyClock::time_point now) {
    if (accept_paused_) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenId;
      (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
      accept_paused_ = false;
    }
    std::vector<std::shared_ptr<Connection>> idle;
    for (auto& [id, c] : connections_) {
      std::lock_guard lock(c->mu_);
      if (c->closed_ || (!c->busy_ && now - c->last_active_ > options_.idle_timeout)) {
        idle.push_back(c);
      }
    }
    for (auto& c : idle) CloseConnection(c);
  }

  // I/O thread. The peer sees the connection end at once; the descriptor itself is released
  // when the last Responder holding the connection is gone.
  void CloseConnection(const std::shared_ptr<Connection>& c) {
    {
      std::lock_guard lock(c->mu_);
      c->closed_ = true;
      c->in_.clear();
      c->out_.clear();
      ::shutdown(c->fd_, SHUT_RDWR);
    }
    (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd_, nullptr);
    if (connections_.erase(c->id_) > 0) open_.fetch_sub(1);
  }

  const EpollServerOptions options_;
  const Dispatch dispatch_;
  int listen_fd_ = -1;  // constant after Listen()
  int epoll_fd_ = -1;   // constant after Listen()
  int wake_fd_ = -1;    // constant after Listen()
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> open_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};

  // I/O thread only.
  std::unordered_map<uint64_t, std::shared_ptr<Connection>> connections_;
  uint64_t next_id_ = kWakeId + 1;
  bool accept_paused_ = false;

  std::mutex held_mu_;
  // GUARDED_BY(held_mu_): connections with a frame to serve. Bounded by the open connections:
  // a connection is posted only when its reply goes out, and its next reply needs the I/O
  // thread to dispatch first, which drains this.
  std::vector<uint64_t> held_;
};

EpollServer::Responder::Responder(std::shared_ptr<Connection> connection, uint64_t seq)
    : connection_(std::move(connection)), seq_(seq) {}

void EpollServer::Responder::Send(std::string_view body) const {
  Connection* c = connection_.get();
  if (c == nullptr) return;
  bool serve_held = false;
  {
    std::lock_guard lock(c->mu_);
    if (c->closed_ || c->request_seq_ != seq_ || !c->busy_ || !c->out_.empty()) return;
    ++c->request_seq_;  // this request is answered: further Sends do nothing
    const uint32_t len = htonl(static_cast<uint32_t>(body.size()));
    iovec iov[2] = {{const_cast<uint32_t*>(&len), sizeof len},
                    {const_cast<char*>(body.data()), body.size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    const size_t total = sizeof len + body.size();
    ssize_t n;
    do {
      n = ::sendmsg(c->fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      // The client is gone: let the I/O thread see the end of the stream.
      ::shutdown(c->fd_, SHUT_RDWR);
      return;
    }
    const size_t sent = n < 0 ? 0 : static_cast<size_t>(n);
    if (sent < total) {
      // The socket buffer is full: the I/O thread sends the rest when it drains (EPOLLOUT).
      std::string rest(reinterpret_cast<const char*>(&len), sizeof len);
      rest.append(body);
      c->out_ = rest.substr(sent);
      return;
    }
    c->busy_ = false;
    serve_held = c->HasFrameLocked();
  }
  if (serve_held) {
    if (std::shared_ptr<Loop> loop = c->loop_.lock()) loop->PostHeldFrame(c->id_);
  }
}

void EpollServer::Responder::Close() const {
  Connection* c = connection_.get();
  if (c == nullptr) return;
  std::lock_guard lock(c->mu_);
  if (c->closed_ || c->request_seq_ != seq_) return;
  ++c->request_seq_;
  ::shutdown(c->fd_, SHUT_RDWR);  // the I/O thread closes it on the hang-up
}

StatusOr<std::unique_ptr<EpollServer>> EpollServer::Start(EpollServerOptions options,
                                                          Dispatch dispatch) {
  if (options.max_frame_bytes == 0 || options.max_connections <= 0 || !dispatch) {
    return Status::InvalidArgument("epoll server: bad options");
  }
  std::unique_ptr<EpollServer> server(new EpollServer());
  server->loop_ = std::make_shared<Loop>(std::move(options), std::move(dispatch));
  TX_RETURN_IF_ERROR(server->loop_->Listen(&server->address_));
  server->thread_ = std::thread([loop = server->loop_] { loop->Run(); });
  return server;
}

EpollServer::~EpollServer() { Stop(); }

void EpollServer::Stop() {
  std::lock_guard lock(stop_mu_);
  if (!thread_.joinable()) return;
  loop_->RequestStop();
  thread_.join();
}

int64_t EpollServer::open_connections() const { return loop_->open_connections(); }
uint64_t EpollServer::accepted_connections() const { return loop_->accepted_connections(); }
uint64_t EpollServer::refused_connections() const { return loop_->refused_connections(); }

}  // namespace tx::raft::example
