#include "participant/registrar.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "common/clock.h"

namespace tx::participant {
namespace {

using std::chrono::milliseconds;

// Polls `cond` in real time, up to 10 s, for the Registrar's thread to get somewhere.
void Eventually(const std::function<bool()>& cond, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!cond()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "timed out waiting for " << what;
    std::this_thread::sleep_for(milliseconds(1));
  }
}

TEST(Registrar, RetriesWithBackOffUntilALeaderAccepts) {
  FakeClock clock;
  std::atomic<int> calls{0};
  Registrar registrar(
      [&] { return ++calls < 3 ? Status::Unavailable("no leader yet") : Status::OK(); }, &clock,
      milliseconds(100), milliseconds(1000));
  registrar.Start();
  Eventually([&] { return calls == 1 && clock.blocked_waiters() == 1; }, "the first failure");
  EXPECT_FALSE(registrar.registered());
  clock.Advance(milliseconds(99));  // the back-off has not passed yet
  Eventually([&] { return clock.blocked_waiters() == 1; }, "the wait to resume");
  EXPECT_EQ(1, calls.load());
  clock.Advance(milliseconds(1));
  Eventually([&] { return calls == 2 && clock.blocked_waiters() == 1; }, "the second failure");
  clock.Advance(milliseconds(200));  // doubled back-off
  Eventually([&] { return registrar.registered(); }, "registration");
  EXPECT_EQ(3, registrar.attempts());
  registrar.Stop();
}

TEST(Registrar, StopEndsTheAttemptsWithoutRegistering) {
  FakeClock clock;
  std::atomic<int> calls{0};
  Registrar registrar(
      [&] {
        ++calls;
        return Status::InvalidArgument("bad name");
      },
      &clock);
  registrar.Start();
  Eventually([&] { return calls == 1 && clock.blocked_waiters() == 1; }, "the first refusal");
  registrar.Stop();
  EXPECT_FALSE(registrar.registered());
  EXPECT_EQ(1, calls.load());
}

}  // namespace
}  // namespace tx::participant
