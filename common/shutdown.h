// Clean shutdown on SIGTERM / SIGINT.
//
// A long-running program does, in main():
//
//   if (Status s = InstallShutdownHandlers(); !s.ok()) { ...log s...; return 1; }  // early
//   ... start servers ...
//   ShutdownSignal::Process().Wait();  // returns after SIGTERM/SIGINT once callbacks have run
//   ... stop servers, flush, return 0 ...
//
// Components that run loops either poll `ShutdownSignal::Process().requested()` (one atomic
// load) or register a stop callback with OnShutdown(); the returned handle unregisters it.
//
// Signals: the handler does nothing but write the signal number to a pipe (async-signal-safe).
// A watcher thread reads it, logs it and requests shutdown on a thread of its own, so the
// watcher stays free for a second signal: a second SIGTERM or SIGINT while shutting down ends
// the process at once with _exit(128 + signal), the escape hatch for a shutdown that hangs.
// InstallShutdownHandlers() also ignores SIGPIPE, so a write to a closed socket is an EPIPE
// error instead of a silent death. (An ignored SIGPIPE survives exec: a program that starts
// children which rely on the default action must restore it in the child.)

#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"

namespace tx {

// A one-way latch: "shutdown requested", plus callbacks run when it happens.
//
// Thread-safe. The process-wide instance (Process()) is never destroyed; an instance created by
// a test must outlive every Registration it handed out.
class ShutdownSignal {
 public:
  // Unregisters its callback when destroyed. If the callback is running on another thread at
  // that moment, the destructor waits for it to return, so the callback never runs on an object
  // that has gone; so do not destroy a Registration while holding a lock the callback takes.
  class [[nodiscard]] Registration {
   public:
    Registration() = default;
    Registration(Registration&& other) noexcept;
    Registration& operator=(Registration&& other) noexcept;
    ~Registration();

   private:
    friend class ShutdownSignal;
    Registration(ShutdownSignal* owner, uint64_t id) : owner_(owner), id_(id) {}
    void Reset();
    ShutdownSignal* owner_ = nullptr;
    uint64_t id_ = 0;
  };

  ShutdownSignal() = default;
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // The instance SIGTERM and SIGINT trigger. Never destroyed.
  static ShutdownSignal& Process();

  // Requests shutdown: sets requested(), then runs every registered callback on the calling
  // thread, newest first (like destructors), then wakes Wait(). Only the first call does this
  // and its reason is kept; later calls return at once, even while the first is still running
  // the callbacks.
  void Request(std::string_view reason);

  // True from the start of the first Request(). One acquire load: cheap enough for any loop.
  bool requested() const { return requested_.load(std::memory_order_acquire); }

  // The first Request()'s reason ("SIGTERM", "admin request", ...); empty if none yet.
  std::string reason() const;

  // Blocks until a Request() has run all callbacks.
  void Wait();
  // Like Wait() but gives up after `timeout` (real time); returns true if shutdown completed.
  bool WaitFor(std::chrono::milliseconds timeout);

  // Registers `callback` to run once on Request(). If shutdown was already requested it runs
  // now, on this thread, before OnShutdown returns. Callbacks should only start stopping
  // (interrupt a loop, close a listener) and return; they must not call back into this object.
  Registration OnShutdown(std::function<void()> callback);

 private:
  void Unregister(uint64_t id);

  std::atomic<bool> requested_{false};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string reason_;                                   // GUARDED_BY(mu_)
  bool done_ = false;                                    // GUARDED_BY(mu_): callbacks all ran
  uint64_t next_id_ = 1;                                 // GUARDED_BY(mu_)
  std::map<uint64_t, std::function<void()>> callbacks_;  // GUARDED_BY(mu_): id -> callback
  uint64_t running_id_ = 0;                              // GUARDED_BY(mu_): 0 when none runs
  std::thread::id running_thread_;                       // GUARDED_BY(mu_)
};

// Installs the SIGTERM/SIGINT handlers that trigger ShutdownSignal::Process() and ignores
// SIGPIPE. Idempotent: later calls return the first call's result. Returns IOError if the
// pipe or the handlers cannot be set up.
Status InstallShutdownHandlers();

}  // namespace tx
