#include "participant/registrar.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace tx::participant {

namespace {
// 100+200+400+800+1600 ms of back-off: about three seconds, several election timeouts.
constexpr int kQuietAttempts = 5;
}  // namespace

Registrar::Registrar(std::function<Status()> register_once, Clock* clock,
                     std::chrono::milliseconds initial_backoff,
                     std::chrono::milliseconds max_backoff)
    : register_once_(std::move(register_once)),
      clock_(clock),
      initial_backoff_(initial_backoff),
      max_backoff_(max_backoff),
      stop_waiter_(clock) {}

Registrar::~Registrar() { Stop(); }

void Registrar::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Registrar::Stop() {
  stopping_.store(true, std::memory_order_release);
  stop_waiter_.Notify();
  if (thread_.joinable()) thread_.join();
}

void Registrar::Loop() {
  std::chrono::milliseconds backoff = initial_backoff_;
  while (!stopping_.load(std::memory_order_acquire)) {
    attempts_.fetch_add(1, std::memory_order_acq_rel);
    Status s = register_once_();
    if (s.ok()) {
      registered_.store(true, std::memory_order_release);
      spdlog::info("registered with the coordinators");
      return;
    }
    // A refused name or address will not fix itself, but the operator may fix the coordinators'
    // side (or the cluster may be mid-upgrade): keep trying, loudly.
    if (s.IsInvalidArgument()) {
      spdlog::error("the coordinators refused this participant's registration: {}", s.ToString());
    } else {
      // The first few failures are the normal start-up race (the replicas are still electing
      // a leader): not worth a warning. Past them, something is wrong and the operator should
      // see it.
      const bool expected = attempts_.load(std::memory_order_acquire) <= kQuietAttempts;
      spdlog::log(expected ? spdlog::level::info : spdlog::level::warn,
                  "registration with the coordinators failed, retrying in {} ms: {}",
                  backoff.count(), s.ToString());
    }
    if (stop_waiter_.WaitFor(backoff)) return;  // notified: stopping
    backoff = std::min(backoff * 2, max_backoff_);
  }
}

}  // namespace tx::participant
