#include "common/clock.h"

#include "common/check.h"

namespace tx {
namespace {

class RealClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  SystemTimePoint SystemNow() const override { return std::chrono::system_clock::now(); }

 private:
  void BlockUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                  TimePoint deadline) override {
    if (deadline == TimePoint::max()) {
      cv.wait(lock);
    } else {
      cv.wait_until(lock, deadline);
    }
  }
};

// Far from zero so that a default-constructed time_point is clearly "long ago".
constexpr std::chrono::nanoseconds kFakeStart = std::chrono::hours(1000);
// 2024-01-01T00:00:00Z.
constexpr std::chrono::seconds kFakeSystemStart{1704067200};

}  // namespace

Clock* Clock::Real() {
  static RealClock* const clock = new RealClock();  // never destroyed: used until exit
  return clock;
}

FakeClock::FakeClock() : now_ns_(kFakeStart.count()) {}

FakeClock::~FakeClock() {
  std::lock_guard lock(mu_);
  TX_CHECK(waiters_.empty(), "FakeClock destroyed while {} Waiter(s) still use it",
           waiters_.size());
}

Clock::TimePoint FakeClock::Now() const {
  return TimePoint(std::chrono::nanoseconds(now_ns_.load(std::memory_order_acquire)));
}

Clock::SystemTimePoint FakeClock::SystemNow() const {
  auto elapsed = std::chrono::nanoseconds(now_ns_.load(std::memory_order_acquire)) - kFakeStart;
  return SystemTimePoint(
      std::chrono::duration_cast<SystemTimePoint::duration>(kFakeSystemStart + elapsed));
}

void FakeClock::Advance(Duration d) {
  TX_CHECK(d.count() >= 0, "FakeClock::Advance by a negative duration ({} ns)",
           std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  now_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(),
                    std::memory_order_acq_rel);
  // Each Waiter re-reads Now() under its own mutex before blocking, and we take that mutex
  // before notifying, so a waiter that read the old time is already blocked and gets woken.
  std::lock_guard lock(mu_);
  for (Waiter* w : waiters_) w->WakeForClockAdvance();
}

void FakeClock::BlockUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                           TimePoint /*deadline*/) {
  // Time moves only in Advance(), which notifies; a timed wait would let real time leak in.
  blocked_waiters_.fetch_add(1, std::memory_order_acq_rel);
  cv.wait(lock);
  blocked_waiters_.fetch_sub(1, std::memory_order_acq_rel);
}

void FakeClock::AddWaiter(Waiter* waiter) {
  std::lock_guard lock(mu_);
  waiters_.insert(waiter);
}

void FakeClock::RemoveWaiter(Waiter* waiter) {
  std::lock_guard lock(mu_);
  waiters_.erase(waiter);
}

Waiter::Waiter(Clock* clock) : clock_(clock) {
  TX_CHECK(clock != nullptr);
  clock_->AddWaiter(this);
}

Waiter::~Waiter() { clock_->RemoveWaiter(this); }

void Waiter::Notify() {
  std::lock_guard lock(mu_);
  notified_ = true;
  cv_.notify_all();
}

bool Waiter::WaitUntil(Clock::TimePoint deadline) {
  std::unique_lock lock(mu_);
  while (!notified_) {
    if (clock_->Now() >= deadline) return false;
    clock_->BlockUntil(cv_, lock, deadline);
  }
  notified_ = false;
  return true;
}

bool Waiter::WaitFor(Clock::Duration timeout) {
  Clock::TimePoint now = clock_->Now();
  // Saturate instead of overflowing for "forever"-sized timeouts.
  Clock::TimePoint deadline =
      timeout >= Clock::TimePoint::max() - now ? Clock::TimePoint::max() : now + timeout;
  return WaitUntil(deadline);
}

void Waiter::Wait() {
  bool notified = WaitUntil(Clock::TimePoint::max());
  TX_CHECK(notified, "an unbounded wait returned without a notification");
}

void Waiter::WakeForClockAdvance() {
  std::lock_guard lock(mu_);
  cv_.notify_all();
}

void SleepUntil(Clock* clock, Clock::TimePoint deadline) {
  Waiter waiter(clock);
  // Nobody else can see this Waiter, so only the deadline can end the wait.
  (void)waiter.WaitUntil(deadline);
}

void SleepFor(Clock* clock, Clock::Duration duration) {
  Waiter waiter(clock);
  (void)waiter.WaitFor(duration);
}

}  // namespace tx
