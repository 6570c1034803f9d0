// Registers a participant in the coordinators' directory at start-up.
//
// Clients know only the coordinators' addresses; they learn where each participant serves from
// the directory the coordinators replicate. A participant therefore registers its name and
// advertised address as soon as it serves, and keeps trying, with back-off, until a leader
// accepts it: the coordinators may still be electing a leader, or be unreachable for a while.
//
// Thread-safe: Start/Stop from one thread; the attempts run on the Registrar's own thread.

#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "common/clock.h"
#include "common/status.h"

namespace tx::participant {

class Registrar {
 public:
  // `register_once` makes one attempt (e.g. CoordinatorOutcomeSource::Register) and is called
  // only from the Registrar's thread.
  Registrar(std::function<Status()> register_once, Clock* clock,
            std::chrono::milliseconds initial_backoff = std::chrono::milliseconds(100),
            std::chrono::milliseconds max_backoff = std::chrono::seconds(5));
  ~Registrar();  // stops

  void Start();
  // Ends the attempts (registered or not) and joins the thread.
  void Stop();

  bool registered() const { return registered_.load(std::memory_order_acquire); }
  int attempts() const { return attempts_.load(std::memory_order_acquire); }

 private:
  void Loop();

  // Constant after construction.
  const std::function<Status()> register_once_;
  Clock* const clock_;
  const std::chrono::milliseconds initial_backoff_;
  const std::chrono::milliseconds max_backoff_;

  Waiter stop_waiter_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> registered_{false};
  std::atomic<int> attempts_{0};
  std::thread thread_;
};

}  // namespace tx::participant
