// Time, behind an interface so that tests can drive it.
//
// Code that needs "now" or a timeout takes a Clock*. Programs pass Clock::Real(); tests pass a
// FakeClock whose time moves only when the test calls Advance(), so timeouts, back-offs and
// deadlines can be tested without sleeping.
//
// Now() is monotonic (std::chrono::steady_clock) and is what every timeout and deadline uses.
// SystemNow() is wall-clock time for display (logs, txctl, "started at") only: it can jump, so
// never compute a deadline or a duration from it.
//
// To sleep until a deadline or until another thread has work, use a Waiter bound to the Clock:
// with a FakeClock its deadlines pass when the test advances the clock, not in real time.

#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <set>

namespace tx {

class Waiter;

// Thread-safe. Implementations live for as long as any user (Real() lives forever).
class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::steady_clock::duration;
  using SystemTimePoint = std::chrono::system_clock::time_point;

  virtual ~Clock() = default;

  // Monotonic time, for timeouts, deadlines and durations.
  virtual TimePoint Now() const = 0;

  // Wall-clock time, for display only.
  virtual SystemTimePoint SystemNow() const = 0;

  // The process's real clock. Never null.
  static Clock* Real();

 private:
  friend class Waiter;

  // Blocks on `cv` (whose mutex `lock` holds) until it is notified or, for a clock that moves
  // by itself, until `deadline`. Spurious returns are allowed: Waiter re-checks in a loop.
  virtual void BlockUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                          TimePoint deadline) = 0;
  // A clock that moves only when told (FakeClock) must wake every Waiter bound to it when it
  // moves; it learns about them here. The real clock ignores these.
  virtual void AddWaiter(Waiter* /*waiter*/) {}
  virtual void RemoveWaiter(Waiter* /*waiter*/) {}
};

// A clock for tests: time stands still until Advance(). Now() starts at an arbitrary fixed
// point (not the epoch, so that "time_point{}" never looks like a valid recent time) and
// SystemNow() at 2024-01-01T00:00:00Z; both move together.
//
// Thread-safe: any thread may read it while the test thread advances it.
class FakeClock final : public Clock {
 public:
  FakeClock();
  ~FakeClock() override;  // CHECKs that no Waiter is still bound to it

  TimePoint Now() const override;
  SystemTimePoint SystemNow() const override;

  // Moves time forward by `d` (d >= 0) and wakes every Waiter bound to this clock, so that
  // waits whose deadline has now passed return.
  void Advance(Duration d);

  // Number of threads currently blocked in a Waiter on this clock. A test polls it to know
  // that the code under test has reached its wait before advancing time past the deadline
  // (advancing earlier is also correct, but then the test does not exercise the wake-up).
  size_t blocked_waiters() const { return blocked_waiters_.load(std::memory_order_acquire); }

 private:
  void BlockUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                  TimePoint deadline) override;
  void AddWaiter(Waiter* waiter) override;
  void RemoveWaiter(Waiter* waiter) override;

  // Nanoseconds since the steady_clock epoch. Atomic so that Now() takes no lock: a Waiter
  // calls Now() while holding its own mutex, and Advance() takes the Waiter mutexes.
  std::atomic<int64_t> now_ns_;
  std::atomic<size_t> blocked_waiters_{0};

  // Lock order: mu_ before any Waiter::mu_.
  mutable std::mutex mu_;
  std::set<Waiter*> waiters_;  // GUARDED_BY(mu_)
};

// Sleeps until a deadline on a Clock or until Notify(), whichever comes first.
//
// A Notify() that arrives while nobody waits is remembered: the next wait returns at once and
// consumes it (an auto-reset event). So a producer can hand over work with
//   { lock queue; push; }  waiter.Notify();
// and the consumer loops on
//   while (running) { drain queue; waiter.WaitUntil(next_timer_deadline); }
// without a lost wake-up and without sharing the queue's lock with the Waiter.
//
// Thread-safe. Notify() from any thread. Meant for one waiting thread: with several, each
// notification wakes all of them but only one consumes it. Must not outlive its Clock.
class Waiter {
 public:
  explicit Waiter(Clock* clock);
  ~Waiter();
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  void Notify();

  // Returns true if woken by Notify() (consuming it), false once clock->Now() >= deadline.
  // A pending notification wins over a passed deadline.
  bool WaitUntil(Clock::TimePoint deadline);
  bool WaitFor(Clock::Duration timeout);

  // Waits for a Notify() with no deadline.
  void Wait();

 private:
  friend class FakeClock;
  void WakeForClockAdvance();

  Clock* const clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;  // GUARDED_BY(mu_)
};

// Sleeps on `clock` until `deadline` (with a FakeClock: until the test advances past it).
void SleepUntil(Clock* clock, Clock::TimePoint deadline);
void SleepFor(Clock* clock, Clock::Duration duration);

}  // namespace tx
