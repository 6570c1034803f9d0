// A tiny framed-Thrift-shaped TCP server for txchaos's unit tests: for every frame it receives it
// records the message name and answers a REPLY frame with the same name and sequence id (or does
// what the test asks: nothing, a close, a success or an error reply). Real sockets on loopback.
//
// Thread-safe; one thread per connection.

#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/net.h"
#include "tools/txchaos/thrift_frame.h"

namespace tx::chaos::testing {

// A strict-binary message of `type` named `name` with `body` after the header, framed.
inline std::string MakeFrame(MessageType type, const std::string& name, int32_t seqid,
                             const std::string& body = std::string(1, '\0')) {
  std::string msg;
  auto put32 = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) msg.push_back(static_cast<char>(v >> shift));
  };
  put32(0x80010000u | static_cast<uint32_t>(type));
  put32(static_cast<uint32_t>(name.size()));
  msg += name;
  put32(static_cast<uint32_t>(seqid));
  msg += body;
  std::string out;
  AppendFrameLength(&out, static_cast<uint32_t>(msg.size()));
  return out + msg;
}

// Reads one whole frame from `fd` within `timeout`, keeping bytes that follow it in *buffer for
// the next call; nullopt on close or timeout (*closed says which).
inline std::optional<std::string> ReadFrame(int fd, std::string* buffer,
                                            std::chrono::milliseconds timeout,
                                            bool* closed = nullptr) {
  std::string& in = *buffer;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  if (closed != nullptr) *closed = false;
  while (true) {
    if (in.size() >= 4 && in.size() - 4 >= ReadFrameLength(in.data())) {
      const size_t length = 4 + ReadFrameLength(in.data());
      std::string frame = in.substr(0, length);
      in.erase(0, length);
      return frame;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = true;
      return std::nullopt;
    }
    in.append(buf, static_cast<size_t>(n));
  }
}

// The same for one call in flight at a time (nothing follows the frame).
inline std::optional<std::string> ReadFrame(int fd, std::chrono::milliseconds timeout,
                                            bool* closed = nullptr) {
  std::string buffer;
  return ReadFrame(fd, &buffer, timeout, closed);
}

inline int ConnectTo(const HostPort& at) {
  StatusOr<int> fd = ConnectTcp(at);
  return fd.ok() ? *fd : -1;
}

inline bool SendAll(int fd, const std::string& bytes) {
  return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

class FrameServer {
 public:
  enum class Mode {
    kReply,         // REPLY with an empty result struct (a void success)
    kSilent,        // read, never answer, never close
    kClose,         // close on the first byte
    kSuccessValue,  // REPLY whose result struct holds field 0 (a success with a value)
    kDeclaredError  // REPLY whose result struct holds field 1 (a declared exception)
  };

  explicit FrameServer(Mode mode = Mode::kReply) : mode_(mode) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    TX_CHECK(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind");
    TX_CHECK(::listen(listen_fd_, 64) == 0, "listen");
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    address_ = {"127.0.0.1", ntohs(addr.sin_port)};
    acceptor_ = std::thread([this] { Accept(); });
  }
  ~FrameServer() {
    stop_.store(true);
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    for (std::thread& t : threads_) t.join();
    for (int fd : fds_) ::close(fd);
  }

  const HostPort& address() const { return address_; }
  int received(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_[name];
  }
  int connections() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(fds_.size());
  }

 private:
  void Accept() {
    while (!stop_.load()) {
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    if (mode_ == Mode::kClose) {
      char c;
      (void)::recv(fd, &c, 1, 0);
      ::shutdown(fd, SHUT_RDWR);
      return;
    }
    std::string buffer;
    while (!stop_.load()) {
      bool closed = false;
      std::optional<std::string> frame =
          ReadFrame(fd, &buffer, std::chrono::milliseconds(100), &closed);
      if (closed) {
        ::shutdown(fd, SHUT_RDWR);  // as our servers do: the peer left, so do we
        return;
      }
      if (!frame.has_value()) continue;
      std::optional<MessageHeader> h =
          ParseMessageHeader(std::string_view(*frame).substr(kFrameHeaderBytes));
      const std::string name = h ? h->name : "?";
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++counts_[name];
      }
      if (mode_ == Mode::kSilent) continue;
      std::string body(1, '\0');  // STOP: an empty result struct
      if (mode_ == Mode::kSuccessValue) body = std::string("\x08\x00\x00\x00\x00\x00\x07\x00", 8);
      if (mode_ == Mode::kDeclaredError) body = std::string("\x0c\x00\x01\x00\x00", 5);
      (void)SendAll(fd, MakeFrame(MessageType::kReply, name, h ? h->seqid : 0, body));
    }
  }

  const Mode mode_;
  int listen_fd_ = -1;
  HostPort address_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;               // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;   // GUARDED_BY(mu_)
  std::map<std::string, int> counts_;  // GUARDED_BY(mu_)
};

}  // namespace tx::chaos::testing
