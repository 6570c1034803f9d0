#include "common/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "tests/support/poll.h"

namespace tx {
namespace {

using namespace std::chrono_literals;

bool PollUntil(const std::function<bool()>& condition) {
  return tx::testing::PollUntil(condition, 10s);
}

TEST(FakeClock, TimeMovesOnlyOnAdvance) {
  FakeClock clock;
  Clock::TimePoint t0 = clock.Now();
  EXPECT_EQ(t0, clock.Now());
  clock.Advance(1500ms);
  EXPECT_EQ(t0 + 1500ms, clock.Now());
  clock.Advance(0ms);
  EXPECT_EQ(t0 + 1500ms, clock.Now());
}

TEST(FakeClock, StartsFarFromDefaultTimePoint) {
  FakeClock clock;
  EXPECT_GT(clock.Now() - Clock::TimePoint{}, 1h);
}

TEST(FakeClock, SystemTimeMovesWithMonotonicTime) {
  FakeClock clock;
  Clock::SystemTimePoint s0 = clock.SystemNow();
  EXPECT_EQ(1704067200, std::chrono::duration_cast<std::chrono::seconds>(s0.time_since_epoch())
                            .count());  // 2024-01-01T00:00:00Z
  clock.Advance(2s);
  EXPECT_EQ(s0 + 2s, clock.SystemNow());
}

TEST(FakeClock, NegativeAdvanceCrashes) {
  EXPECT_DEATH(
      {
        FakeClock clock;
        clock.Advance(-1ms);
      },
      "negative duration");
}

TEST(FakeClock, DestroyingWhileWaiterBoundCrashes) {
  EXPECT_DEATH(
      {
        auto* clock = new FakeClock();
        Waiter waiter(clock);
        delete clock;
      },
      "Waiter");
}

TEST(RealClock, IsMonotonicAndNearSystemTime) {
  Clock* clock = Clock::Real();
  Clock::TimePoint a = clock->Now();
  Clock::TimePoint b = clock->Now();
  EXPECT_LE(a, b);
  auto skew = clock->SystemNow() - std::chrono::system_clock::now();
  EXPECT_LT(std::chrono::abs(skew), 1s);
}

TEST(Waiter, NotifyBeforeWaitIsRememberedAndConsumed) {
  FakeClock clock;
  Waiter waiter(&clock);
  waiter.Notify();
  waiter.Notify();  // notifications do not stack
  EXPECT_TRUE(waiter.WaitUntil(clock.Now() + 1s));
  // Consumed: with the deadline already passed, the next wait times out at once.
  EXPECT_FALSE(waiter.WaitUntil(clock.Now()));
}

TEST(Waiter, PendingNotifyWinsOverPassedDeadline) {
  FakeClock clock;
  Waiter waiter(&clock);
  waiter.Notify();
  EXPECT_TRUE(waiter.WaitUntil(clock.Now() - 1s));
}

TEST(Waiter, PassedDeadlineReturnsFalseWithoutBlocking) {
  FakeClock clock;
  Waiter waiter(&clock);
  EXPECT_FALSE(waiter.WaitUntil(clock.Now()));
  EXPECT_FALSE(waiter.WaitFor(0ms));
  EXPECT_FALSE(waiter.WaitFor(-5ms));
}

TEST(Waiter, FakeDeadlinePassesOnlyWhenClockAdvancesPastIt) {
  FakeClock clock;
  Waiter waiter(&clock);
  Clock::TimePoint deadline = clock.Now() + 100ms;
  std::atomic<int> result{-1};
  std::thread t([&] { result = waiter.WaitUntil(deadline) ? 1 : 0; });
  ASSERT_TRUE(PollUntil([&] { return clock.blocked_waiters() == 1; }));
  clock.Advance(100ms);
  t.join();
  EXPECT_EQ(0, result.load());  // timed out, not notified
  EXPECT_EQ(0u, clock.blocked_waiters());
}

TEST(Waiter, FakeAdvanceShortOfDeadlineKeepsWaiting) {
  FakeClock clock;
  Waiter waiter(&clock);
  Clock::TimePoint deadline = clock.Now() + 100ms;
  std::atomic<int> result{-1};
  std::thread t([&] { result = waiter.WaitUntil(deadline) ? 1 : 0; });
  ASSERT_TRUE(PollUntil([&] { return clock.blocked_waiters() == 1; }));
  clock.Advance(99ms);
  // A waiter that wrongly timed out at 99 ms would have returned false; a correct one is still
  // waiting (or about to re-check) and is ended by the notification.
  waiter.Notify();
  t.join();
  EXPECT_EQ(1, result.load());
}

TEST(Waiter, RealClockNotifyFromAnotherThreadEndsUnboundedWait) {
  Waiter waiter(Clock::Real());
  std::thread t([&] { waiter.Notify(); });
  waiter.Wait();
  t.join();
}

TEST(Waiter, RealClockTimesOutNoEarlierThanDeadline) {
  Waiter waiter(Clock::Real());
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(waiter.WaitFor(20ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
}

TEST(Waiter, HugeTimeoutDoesNotOverflow) {
  FakeClock clock;
  Waiter waiter(&clock);
  std::atomic<int> result{-1};
  std::thread t([&] { result = waiter.WaitFor(Clock::Duration::max()) ? 1 : 0; });
  ASSERT_TRUE(PollUntil([&] { return clock.blocked_waiters() == 1; }));
  clock.Advance(1000h);  // an overflowed deadline would lie in the past and time out here
  waiter.Notify();
  t.join();
  EXPECT_EQ(1, result.load());
}

TEST(SleepUntil, FakeClockSleepEndsWhenAdvanced) {
  FakeClock clock;
  std::atomic<bool> done{false};
  std::thread t([&] {
    SleepFor(&clock, 5s);
    done = true;
  });
  ASSERT_TRUE(PollUntil([&] { return clock.blocked_waiters() == 1; }));
  EXPECT_FALSE(done.load());
  clock.Advance(5s);
  t.join();
  EXPECT_TRUE(done.load());
}

}  // namespace
}  // namespace tx
