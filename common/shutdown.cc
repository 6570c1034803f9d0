#include "common/shutdown.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>

namespace tx {

ShutdownSignal::Registration::Registration(Registration&& other) noexcept
    : owner_(other.owner_), id_(other.id_) {
  other.owner_ = nullptr;
  other.id_ = 0;
}

ShutdownSignal::Registration& ShutdownSignal::Registration::operator=(
    Registration&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = other.owner_;
    id_ = other.id_;
    other.owner_ = nullptr;
    other.id_ = 0;
  }
  return *this;
}

ShutdownSignal::Registration::~Registration() { Reset(); }

void ShutdownSignal::Registration::Reset() {
  if (owner_ != nullptr && id_ != 0) owner_->Unregister(id_);
  owner_ = nullptr;
  id_ = 0;
}

ShutdownSignal& ShutdownSignal::Process() {
  // Leaked on purpose: the signal threads may still touch it while the process exits.
  static ShutdownSignal* const signal = new ShutdownSignal();
  return *signal;
}

namespace {

void RunCallback(const std::function<void()>& callback) {
  try {
    callback();
  } catch (const std::exception& e) {
    // The remaining callbacks still deserve their turn; shutdown must not stall on one.
    spdlog::error("shutdown callback threw: {}", e.what());
  } catch (...) {
    spdlog::error("shutdown callback threw a non-standard exception");
  }
}

}  // namespace

void ShutdownSignal::Request(std::string_view reason) {
  std::unique_lock lock(mu_);
  if (requested_.load(std::memory_order_relaxed)) return;
  reason_ = std::string(reason);
  requested_.store(true, std::memory_order_release);
  // OnShutdown() runs late registrations itself once requested_ is set, so this loop only sees
  // callbacks registered before now; newest first.
  while (!callbacks_.empty()) {
    auto newest = std::prev(callbacks_.end());
    std::function<void()> callback = std::move(newest->second);
    running_id_ = newest->first;
    running_thread_ = std::this_thread::get_id();
    callbacks_.erase(newest);
    lock.unlock();
    RunCallback(callback);
    lock.lock();
    running_id_ = 0;
    cv_.notify_all();  // a Registration destructor may be waiting for this callback
  }
  done_ = true;
  cv_.notify_all();
}

std::string ShutdownSignal::reason() const {
  std::lock_guard lock(mu_);
  return reason_;
}

void ShutdownSignal::Wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return done_; });
}

bool ShutdownSignal::WaitFor(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return done_; });
}

ShutdownSignal::Registration ShutdownSignal::OnShutdown(std::function<void()> callback) {
  std::unique_lock lock(mu_);
  if (requested_.load(std::memory_order_relaxed)) {
    lock.unlock();
    RunCallback(callback);
    return Registration();
  }
  uint64_t id = next_id_++;
  callbacks_.emplace(id, std::move(callback));
  return Registration(this, id);
}

void ShutdownSignal::Unregister(uint64_t id) {
  std::unique_lock lock(mu_);
  callbacks_.erase(id);
  // A callback that drops its own registration must not wait for itself.
  cv_.wait(lock,
           [&] { return running_id_ != id || running_thread_ == std::this_thread::get_id(); });
}

namespace {

// Written only before the handlers are installed, read by the handler.
int g_signal_pipe_write = -1;

void HandleSignal(int signo) {
  int saved_errno = errno;
  auto byte = static_cast<unsigned char>(signo);
  // Non-blocking: if the pipe is somehow full, a signal is already pending for the watcher.
  ssize_t ignored = ::write(g_signal_pipe_write, &byte, 1);
  (void)ignored;
  errno = saved_errno;
}

const char* SignalName(int signo) {
  switch (signo) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    default:
      return "signal";
  }
}

[[noreturn]] void ExitNow(int signo) {
  // No spdlog here: the shutdown that hangs may hold its locks.
  char message[96];
  int n = std::snprintf(message, sizeof(message), "received %s again during shutdown; exiting\n",
                        SignalName(signo));
  if (n > 0) {
    ssize_t ignored = ::write(STDERR_FILENO, message, static_cast<size_t>(n));
    (void)ignored;
  }
  ::_exit(128 + signo);
}

void WatchSignals(int read_fd) {
  bool seen_signal = false;
  while (true) {
    unsigned char byte = 0;
    ssize_t n = ::read(read_fd, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) {
      spdlog::error("shutdown signal pipe failed ({}); SIGTERM/SIGINT no longer handled",
                    n == 0 ? "closed" : std::strerror(errno));
      return;
    }
    int signo = byte;
    if (seen_signal) ExitNow(signo);
    seen_signal = true;
    spdlog::info("received {}: shutting down (send it again to exit at once)", SignalName(signo));
    // On its own thread, so that this one can still act on a second signal if a callback hangs.
    std::thread([signo] { ShutdownSignal::Process().Request(SignalName(signo)); }).detach();
  }
}

Status DoInstall() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe2 for shutdown signals");
  if (::fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) {
    return Status::FromErrno(errno, "fcntl O_NONBLOCK on shutdown signal pipe");
  }
  g_signal_pipe_write = fds[1];

  struct sigaction ignore = {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  if (::sigaction(SIGPIPE, &ignore, nullptr) != 0) {
    return Status::FromErrno(errno, "sigaction SIGPIPE");
  }

  // Started before the handlers, so a signal that arrives at once is read.
  std::thread(WatchSignals, fds[0]).detach();

  struct sigaction action = {};
  action.sa_handler = HandleSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signo : {SIGTERM, SIGINT}) {
    if (::sigaction(signo, &action, nullptr) != 0) {
      return Status::FromErrno(errno, fmt::format("sigaction {}", SignalName(signo)));
    }
  }
  return Status::OK();
}

}  // namespace

Status InstallShutdownHandlers() {
  static const Status* const result = new Status(DoInstall());
  return *result;
}

}  // namespace tx
