#include "tools/txchaos/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>
#include <utility>

#include "common/check.h"
#include "tools/txchaos/thrift_frame.h"

namespace tx::chaos {

std::string LinkFaults::ToString() const {
  if (!any()) return "none";
  if (cut) return "cut";
  std::string out;
  auto add = [&](const std::string& s) {
    if (!out.empty()) out += ' ';
    out += s;
  };
  if (drop_probability > 0) add(fmt::format("drop={:.3f}", drop_probability));
  if (delay_max.count() > 0)
    add(fmt::format("delay={}-{}ms", delay_min.count(), delay_max.count()));
  if (duplicate_probability > 0) add(fmt::format("dup={:.3f}", duplicate_probability));
  return out;
}

namespace {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

// Read at most this much from one socket per readiness event, so that one busy connection does
// not starve the others.
constexpr size_t kReadChunkBytes = 256 << 10;

void SetNoDelay(int fd) {
  int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Makes close() send a RST, so the peer's pending call fails at once.
void SetResetOnClose(int fd) {
  linger l{};
  l.l_onoff = 1;
  l.l_linger = 0;
  (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

sockaddr_in ToSockaddr(const HostPort& hp) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(hp.port);
  if (::inet_pton(AF_INET, hp.host.c_str(), &addr.sin_addr) != 1) {
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  return addr;
}

enum class HandleKind { kWake, kListener, kClientSide, kServerSide, kDuplicate };

struct Handle {
  HandleKind kind;
  void* object;
};

struct Link;

// One direction of a proxied connection.
struct Direction {
  bool is_request = false;  // client -> server
  std::string in;           // bytes read, not yet a whole frame
  struct Frame {
    TimePoint release;
    std::string bytes;  // with the length prefix
  };
  std::deque<Frame> queue;  // frames waiting for their release time, in order
  size_t queued_bytes = 0;
  std::string out;  // released bytes being written
  size_t out_offset = 0;
  TimePoint last_release{};
  bool eof = false;  // the source closed its side

  size_t Buffered() const { return in.size() + queued_bytes + (out.size() - out_offset); }
  bool Drained() const { return queue.empty() && out_offset >= out.size(); }
  void Clear() {
    in.clear();
    queue.clear();
    queued_bytes = 0;
    out.clear();
    out_offset = 0;
  }
};

struct Conn {
  uint64_t id = 0;
  Link* link = nullptr;
  int client_fd = -1;
  int server_fd = -1;  // -1: none (accepted while the link was cut)
  bool connecting = false;
  bool poisoned = false;  // lost frames to a cut: reset when the cut is lifted
  bool dead = false;
  uint32_t client_events = 0, server_events = 0;  // registered epoll interest
  Direction up;                                   // client -> server
  Direction down;                                 // server -> client
  Handle client_handle{HandleKind::kClientSide, nullptr};
  Handle server_handle{HandleKind::kServerSide, nullptr};
};

struct Link {
  std::string from, to;
  HostPort address, destination;
  int listen_fd = -1;
  Handle handle{HandleKind::kListener, nullptr};
  LinkFaults faults;
  LinkStats stats;
  std::mt19937_64 rng;
  std::unordered_set<Conn*> conns;
};

// A copy of a request frame, replayed on a connection of its own.
struct Duplicate {
  Link* link = nullptr;
  std::string frame;
  TimePoint send_at;
  TimePoint deadline;
  int fd = -1;
  bool connected = false;
  size_t written = 0;
  size_t reply_bytes = 0;
  bool dead = false;
  uint32_t events = 0;
  Handle handle{HandleKind::kDuplicate, nullptr};
};

}  // namespace

class NetworkProxy::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {}
  ~Impl() { Stop(); }

  Status Init() {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return Status::FromErrno(errno, "epoll_create1");
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) return Status::FromErrno(errno, "eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &wake_handle_;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
      return Status::FromErrno(errno, "epoll_ctl(eventfd)");
    }
    thread_ = std::thread([this] { Loop(); });
    return Status::OK();
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(commands_mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    Wake();
    if (thread_.joinable()) thread_.join();
    // The loop has exited: its state is ours now.
    for (auto& [key, link] : links_) {
      for (Conn* c : std::vector<Conn*>(link->conns.begin(), link->conns.end())) {
        CloseConn(c, /*reset=*/true);
      }
      if (link->listen_fd >= 0) ::close(link->listen_fd);
    }
    for (Duplicate* d : duplicates_) CloseDuplicate(d);
    ReapDead();
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    wake_fd_ = epoll_fd_ = -1;
  }

  // Runs fn on the loop thread and waits for it. After Stop(), runs it here (the loop is gone).
  template <typename Fn>
  auto RunInLoop(Fn fn) -> decltype(fn()) {
    using R = decltype(fn());
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(fn));
    std::future<R> result = task->get_future();
    {
      std::lock_guard<std::mutex> lock(commands_mu_);
      if (!stopping_) {
        commands_.push_back([task] { (*task)(); });
        task = nullptr;
      }
    }
    if (task != nullptr) {
      (*task)();
    } else {
      Wake();
    }
    return result.get();
  }

  StatusOr<HostPort> AddLink(const std::string& from, const std::string& to,
                             const HostPort& destination) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket");
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd, 512) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      Status s = Status::FromErrno(errno, fmt::format("listening for link {} -> {}", from, to));
      ::close(fd);
      return s;
    }
    HostPort address{"127.0.0.1", ntohs(addr.sin_port)};
    Status added = RunInLoop([&]() -> Status {
      auto key = std::make_pair(from, to);
      if (links_.count(key) != 0) {
        return Status::AlreadyExists(fmt::format("link {} -> {}", from, to));
      }
      auto link = std::make_unique<Link>();
      link->from = from;
      link->to = to;
      link->address = address;
      link->destination = destination;
      link->listen_fd = fd;
      link->handle.object = link.get();
      link->rng.seed(options_.seed ^ std::hash<std::string>()(from + "->" + to));
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = &link->handle;
      if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return Status::FromErrno(errno, "epoll_ctl(listener)");
      }
      links_.emplace(key, std::move(link));
      return Status::OK();
    });
    if (!added.ok()) {
      ::close(fd);
      return added;
    }
    return address;
  }

  Status SetFaults(const std::string& from, const std::string& to, const LinkFaults& faults) {
    if (faults.drop_probability < 0 || faults.drop_probability > 1 ||
        faults.duplicate_probability < 0 || faults.duplicate_probability > 1) {
      return Status::InvalidArgument("a fault probability outside [0, 1]");
    }
    if (faults.delay_min > faults.delay_max || faults.delay_min.count() < 0) {
      return Status::InvalidArgument("delay_min must be within [0, delay_max]");
    }
    return RunInLoop([&]() -> Status {
      auto it = links_.find(std::make_pair(from, to));
      if (it == links_.end()) return Status::NotFound(fmt::format("no link {} -> {}", from, to));
      ApplyFaults(it->second.get(), faults);
      return Status::OK();
    });
  }

  void ClearAllFaults() {
    RunInLoop([&] {
      for (auto& [key, link] : links_) ApplyFaults(link.get(), LinkFaults());
    });
  }

  std::vector<LinkInfo> Links() {
    return RunInLoop([&] {
      std::vector<LinkInfo> out;
      for (auto& [key, link] : links_) {
        out.push_back(
            {link->from, link->to, link->address, link->destination, link->faults, link->stats});
      }
      return out;
    });
  }

 private:
  void Wake() {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }

  void Loop() {
    std::vector<epoll_event> events(256);
    while (true) {
      std::vector<std::function<void()>> commands;
      {
        std::lock_guard<std::mutex> lock(commands_mu_);
        if (stopping_) {
          // Answer what is queued, so no caller waits forever.
          commands.swap(commands_);
        }
      }
      if (!commands.empty()) {
        for (auto& c : commands) c();
        return;
      }
      const int timeout_ms = NextTimeoutMs();
      int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout_ms);
      if (n < 0 && errno != EINTR) {
        TX_CHECK(false, "epoll_wait failed: errno {}", errno);
      }
      for (int i = 0; i < n; ++i) Dispatch(events[i]);
      {
        std::lock_guard<std::mutex> lock(commands_mu_);
        commands.swap(commands_);
        if (stopping_) {
          for (auto& c : commands) c();
          return;
        }
      }
      for (auto& c : commands) c();
      const TimePoint now = SteadyClock::now();
      ReleaseDue(now);
      RunDuplicates(now);
      ReapDead();
    }
  }

  int NextTimeoutMs() {
    TimePoint next = SteadyClock::now() + std::chrono::milliseconds(100);
    for (Conn* c : timed_) {
      if (!c->up.queue.empty()) next = std::min(next, c->up.queue.front().release);
      if (!c->down.queue.empty()) next = std::min(next, c->down.queue.front().release);
    }
    for (Duplicate* d : duplicates_) next = std::min(next, d->fd < 0 ? d->send_at : d->deadline);
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - SteadyClock::now()).count();
    return static_cast<int>(std::max<int64_t>(0, wait));
  }

  void Dispatch(const epoll_event& ev) {
    auto* h = static_cast<Handle*>(ev.data.ptr);
    switch (h->kind) {
      case HandleKind::kWake: {
        uint64_t v;
        (void)!::read(wake_fd_, &v, sizeof(v));
        return;
      }
      case HandleKind::kListener:
        Accept(static_cast<Link*>(h->object));
        return;
      case HandleKind::kClientSide: {
        Conn* c = static_cast<Conn*>(h->object);
        if (c->dead) return;
        if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadSide(c, &c->up, c->client_fd);
        if (!c->dead && (ev.events & EPOLLOUT)) Flush(c, &c->down, c->client_fd);
        if (!c->dead) UpdateInterest(c);
        return;
      }
      case HandleKind::kServerSide: {
        Conn* c = static_cast<Conn*>(h->object);
        if (c->dead) return;
        if (c->connecting) {
          if (ev.events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) FinishConnect(c);
          if (!c->dead) UpdateInterest(c);
          return;
        }
        if (ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadSide(c, &c->down, c->server_fd);
        if (!c->dead && (ev.events & EPOLLOUT)) Flush(c, &c->up, c->server_fd);
        if (!c->dead) UpdateInterest(c);
        return;
      }
      case HandleKind::kDuplicate:
        DuplicateEvent(static_cast<Duplicate*>(h->object), ev.events);
        return;
    }
  }

  void Accept(Link* link) {
    while (true) {
      int fd = ::accept4(link->listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a transient error: the next readiness tries again
      SetNoDelay(fd);
      ++link->stats.connections;
      auto* c = new Conn();
      c->id = next_conn_id_++;
      c->link = link;
      c->client_fd = fd;
      c->up.is_request = true;
      c->client_handle.object = c;
      c->server_handle.object = c;
      link->conns.insert(c);
      Register(fd, &c->client_handle, &c->client_events, EPOLLIN);
      if (link->faults.cut) {
        c->poisoned = true;  // never connected upstream; reset when the cut is lifted
        continue;
      }
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (s < 0) {
        ++link->stats.upstream_failures;
        CloseConn(c, /*reset=*/true);
        continue;
      }
      SetNoDelay(s);
      sockaddr_in addr = ToSockaddr(link->destination);
      int r = ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      c->server_fd = s;
      if (r == 0) {
        c->connecting = false;
        Register(s, &c->server_handle, &c->server_events, EPOLLIN);
      } else if (errno == EINPROGRESS) {
        c->connecting = true;
        Register(s, &c->server_handle, &c->server_events, EPOLLOUT);
      } else {
        ++link->stats.upstream_failures;
        CloseConn(c, /*reset=*/true);
      }
    }
  }

  void FinishConnect(Conn* c) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(c->server_fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ++c->link->stats.upstream_failures;
      CloseConn(c, /*reset=*/true);
      return;
    }
    c->connecting = false;
    Flush(c, &c->up, c->server_fd);
  }

  void Register(int fd, Handle* h, uint32_t* registered, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = h;
    TX_CHECK(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl ADD fd {}: errno {}",
             fd, errno);
    *registered = events;
  }

  void Modify(int fd, Handle* h, uint32_t* registered, uint32_t events) {
    if (*registered == events) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = h;
    (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
    *registered = events;
  }

  static bool CanRead(const Direction& d) { return !d.eof && d.Buffered() < kMaxBufferedBytes; }

  void UpdateInterest(Conn* c) {
    uint32_t client = 0;
    if (CanRead(c->up)) client |= EPOLLIN;
    if (c->down.out_offset < c->down.out.size()) client |= EPOLLOUT;
    Modify(c->client_fd, &c->client_handle, &c->client_events, client);
    if (c->server_fd < 0) return;
    uint32_t server = 0;
    if (c->connecting) {
      server = EPOLLOUT;
    } else {
      if (CanRead(c->down)) server |= EPOLLIN;
      if (c->up.out_offset < c->up.out.size()) server |= EPOLLOUT;
    }
    Modify(c->server_fd, &c->server_handle, &c->server_events, server);
  }

  void ReadSide(Conn* c, Direction* d, int fd) {
    size_t total = 0;
    char buf[64 << 10];
    while (total < kReadChunkBytes && CanRead(*d)) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        total += static_cast<size_t>(n);
        c->link->stats.bytes += static_cast<uint64_t>(n);
        d->in.append(buf, static_cast<size_t>(n));
        ParseFrames(c, d);
        if (c->dead) return;
        continue;
      }
      if (n == 0) {
        d->eof = true;
        break;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      CloseConn(c, /*reset=*/true);  // ECONNRESET and the like: the other side goes too
      return;
    }
    MaybeFinish(c);
  }

  // A side that closed ends the connection once what it sent has been passed on (our RPCs never
  // half-close: either side closing means the connection is done).
  void MaybeFinish(Conn* c) {
    if (c->dead) return;
    if ((c->up.eof && (c->up.Drained() || c->poisoned || c->server_fd < 0)) ||
        (c->down.eof && (c->down.Drained() || c->poisoned))) {
      CloseConn(c, /*reset=*/false);
    }
  }

  void ParseFrames(Conn* c, Direction* d) {
    size_t offset = 0;
    while (d->in.size() - offset >= kFrameHeaderBytes) {
      const uint32_t length = ReadFrameLength(d->in.data() + offset);
      if (length > options_.max_frame_bytes) {
        CloseConn(c, /*reset=*/true);
        return;
      }
      if (d->in.size() - offset - kFrameHeaderBytes < length) break;
      std::string frame = d->in.substr(offset, kFrameHeaderBytes + length);
      offset += kFrameHeaderBytes + length;
      HandleFrame(c, d, std::move(frame));
      if (c->dead) return;
    }
    d->in.erase(0, offset);
  }

  void HandleFrame(Conn* c, Direction* d, std::string frame) {
    Link* link = c->link;
    ++link->stats.frames;
    if (c->poisoned || link->faults.cut) {
      c->poisoned = true;
      ++link->stats.blackholed_frames;
      return;
    }
    const LinkFaults& f = link->faults;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    if (f.drop_probability > 0 && unit(link->rng) < f.drop_probability) {
      ++link->stats.dropped_frames;
      Emit(link, "drop", frame, d->is_request);
      CloseConn(c, /*reset=*/true);
      return;
    }
    const TimePoint now = SteadyClock::now();
    std::chrono::milliseconds delay{0};
    if (f.delay_max.count() > 0) {
      std::uniform_int_distribution<int64_t> pick(f.delay_min.count(), f.delay_max.count());
      delay = std::chrono::milliseconds(pick(link->rng));
      ++link->stats.delayed_frames;
    }
    TimePoint release = std::max(now + delay, d->last_release);
    d->last_release = release;
    if (d->is_request && f.duplicate_probability > 0 &&
        duplicates_.size() < kMaxPendingDuplicates && unit(link->rng) < f.duplicate_probability) {
      std::optional<MessageHeader> h =
          ParseMessageHeader(std::string_view(frame).substr(kFrameHeaderBytes));
      if (h.has_value() && h->type == MessageType::kCall &&
          options_.duplicable_methods.count(std::string(MethodOf(h->name))) != 0) {
        auto* dup = new Duplicate();
        dup->link = link;
        dup->frame = frame;
        dup->send_at = release + f.duplicate_after;
        dup->handle.object = dup;
        duplicates_.push_back(dup);
        ++link->stats.duplicated_frames;
        Emit(link, "duplicate", frame, true);
      }
    }
    d->queued_bytes += frame.size();
    d->queue.push_back({release, std::move(frame)});
    timed_.insert(c);
  }

  void Emit(Link* link, const char* what, const std::string& frame, bool request) {
    if (!options_.on_event) return;
    std::optional<MessageHeader> h =
        ParseMessageHeader(std::string_view(frame).substr(kFrameHeaderBytes));
    options_.on_event(ProxyEvent{link->from, link->to, what, h ? h->name : "?", request});
  }

  void ReleaseDue(TimePoint now) {
    for (Conn* c : std::vector<Conn*>(timed_.begin(), timed_.end())) {
      if (c->dead) continue;
      for (Direction* d : {&c->up, &c->down}) {
        while (!d->queue.empty() && d->queue.front().release <= now) {
          if (d->out_offset >= d->out.size()) {
            d->out.clear();
            d->out_offset = 0;
          }
          d->queued_bytes -= d->queue.front().bytes.size();
          d->out += d->queue.front().bytes;
          d->queue.pop_front();
        }
      }
      if (c->up.queue.empty() && c->down.queue.empty()) timed_.erase(c);
      if (!c->connecting && c->server_fd >= 0) Flush(c, &c->up, c->server_fd);
      if (!c->dead) Flush(c, &c->down, c->client_fd);
      if (!c->dead) {
        MaybeFinish(c);
        if (!c->dead) UpdateInterest(c);
      }
    }
  }

  void Flush(Conn* c, Direction* d, int fd) {
    if (fd < 0 || (d == &c->up && c->connecting)) return;
    while (d->out_offset < d->out.size()) {
      ssize_t n =
          ::send(fd, d->out.data() + d->out_offset, d->out.size() - d->out_offset, MSG_NOSIGNAL);
      if (n > 0) {
        d->out_offset += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && errno == EINTR) continue;
      CloseConn(c, /*reset=*/true);
      return;
    }
    d->out.clear();
    d->out_offset = 0;
  }

  void ApplyFaults(Link* link, const LinkFaults& faults) {
    const bool was_cut = link->faults.cut;
    link->faults = faults;
    if (faults.cut && !was_cut) {
      // Frames in flight are lost with the link.
      for (Conn* c : link->conns) {
        c->poisoned = true;
        c->up.Clear();
        c->down.Clear();
        timed_.erase(c);
      }
    } else if (!faults.cut && was_cut) {
      for (Conn* c : std::vector<Conn*>(link->conns.begin(), link->conns.end())) {
        if (c->poisoned) CloseConn(c, /*reset=*/true);
      }
    }
  }

  void CloseConn(Conn* c, bool reset) {
    if (c->dead) return;
    c->dead = true;
    for (int fd : {c->client_fd, c->server_fd}) {
      if (fd < 0) continue;
      (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      if (reset) SetResetOnClose(fd);
      ::close(fd);
    }
    c->client_fd = c->server_fd = -1;
    c->link->conns.erase(c);
    timed_.erase(c);
    dead_conns_.push_back(c);
  }

  void RunDuplicates(TimePoint now) {
    for (Duplicate* d : duplicates_) {
      if (d->dead) continue;
      if (d->fd < 0 && d->send_at <= now) {
        StartDuplicate(d, now);
      } else if (d->fd >= 0 && d->deadline <= now) {
        CloseDuplicate(d);
      }
    }
  }

  void StartDuplicate(Duplicate* d, TimePoint now) {
    d->deadline = now + options_.duplicate_reply_timeout;
    if (d->link->faults.cut) {  // the copy is lost like anything else on a cut link
      CloseDuplicate(d);
      return;
    }
    d->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0) {
      CloseDuplicate(d);
      return;
    }
    SetNoDelay(d->fd);
    sockaddr_in addr = ToSockaddr(d->link->destination);
    if (::connect(d->fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
        errno != EINPROGRESS) {
      CloseDuplicate(d);
      return;
    }
    Register(d->fd, &d->handle, &d->events, EPOLLOUT);
  }

  void DuplicateEvent(Duplicate* d, uint32_t events) {
    if (d->dead || d->fd < 0) return;
    if (!d->connected) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        CloseDuplicate(d);
        return;
      }
      d->connected = true;
    }
    if (events & EPOLLOUT) {
      while (d->written < d->frame.size()) {
        ssize_t n =
            ::send(d->fd, d->frame.data() + d->written, d->frame.size() - d->written, MSG_NOSIGNAL);
        if (n > 0) {
          d->written += static_cast<size_t>(n);
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          return;
        } else {
          CloseDuplicate(d);
          return;
        }
      }
      Modify(d->fd, &d->handle, &d->events, EPOLLIN);
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
      char buf[16 << 10];
      while (true) {
        ssize_t n = ::recv(d->fd, buf, sizeof(buf), 0);
        if (n > 0) {
          d->reply_bytes += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        CloseDuplicate(d);  // closed by the server, or an error
        return;
      }
      // One whole reply frame read: done.
      if (d->reply_bytes >= kFrameHeaderBytes) CloseDuplicate(d);
    }
  }

  void CloseDuplicate(Duplicate* d) {
    if (d->dead) return;
    d->dead = true;
    if (d->fd >= 0) {
      (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, d->fd, nullptr);
      ::close(d->fd);
      d->fd = -1;
    }
  }

  void ReapDead() {
    for (Conn* c : dead_conns_) delete c;
    dead_conns_.clear();
    auto it = std::remove_if(duplicates_.begin(), duplicates_.end(), [](Duplicate* d) {
      if (!d->dead) return false;
      delete d;
      return true;
    });
    duplicates_.erase(it, duplicates_.end());
  }

  const Options options_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  Handle wake_handle_{HandleKind::kWake, nullptr};
  std::thread thread_;

  std::mutex commands_mu_;
  std::vector<std::function<void()>> commands_;  // GUARDED_BY(commands_mu_)
  bool stopping_ = false;                        // GUARDED_BY(commands_mu_)

  // Owned by the loop thread (and by Stop() once the loop has exited).
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Link>> links_;
  std::unordered_set<Conn*> timed_;  // connections with frames waiting for release
  std::vector<Conn*> dead_conns_;    // closed during this iteration; deleted at its end
  std::vector<Duplicate*> duplicates_;
  uint64_t next_conn_id_ = 1;
};

StatusOr<std::unique_ptr<NetworkProxy>> NetworkProxy::Start(Options options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  TX_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<NetworkProxy>(new NetworkProxy(std::move(impl)));
}

NetworkProxy::NetworkProxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NetworkProxy::~NetworkProxy() { Stop(); }

StatusOr<HostPort> NetworkProxy::AddLink(const std::string& from, const std::string& to,
                                         const HostPort& destination) {
  return impl_->AddLink(from, to, destination);
}

Status NetworkProxy::SetFaults(const std::string& from, const std::string& to,
                               const LinkFaults& faults) {
  return impl_->SetFaults(from, to, faults);
}

void NetworkProxy::ClearAllFaults() { impl_->ClearAllFaults(); }

std::vector<LinkInfo> NetworkProxy::Links() const { return impl_->Links(); }

LinkStats NetworkProxy::TotalStats() const {
  LinkStats t;
  for (const LinkInfo& l : impl_->Links()) {
    t.connections += l.stats.connections;
    t.frames += l.stats.frames;
    t.bytes += l.stats.bytes;
    t.blackholed_frames += l.stats.blackholed_frames;
    t.dropped_frames += l.stats.dropped_frames;
    t.delayed_frames += l.stats.delayed_frames;
    t.duplicated_frames += l.stats.duplicated_frames;
    t.upstream_failures += l.stats.upstream_failures;
  }
  return t;
}

void NetworkProxy::Stop() { impl_->Stop(); }

}  // namespace tx::chaos
