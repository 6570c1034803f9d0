#include "common/shutdown.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "tests/support/poll.h"

namespace tx {
namespace {

using namespace std::chrono_literals;

bool PollUntil(const std::function<bool()>& condition) {
  return tx::testing::PollUntil(condition, 10s);
}

TEST(ShutdownSignal, RequestSetsFlagKeepsFirstReasonAndWakesWaiters) {
  ShutdownSignal signal;
  EXPECT_FALSE(signal.requested());
  EXPECT_FALSE(signal.WaitFor(0ms));
  std::thread waiter([&] { signal.Wait(); });
  signal.Request("first");
  signal.Request("second");
  waiter.join();
  EXPECT_TRUE(signal.requested());
  EXPECT_EQ("first", signal.reason());
  EXPECT_TRUE(signal.WaitFor(0ms));
}

TEST(ShutdownSignal, CallbacksRunOnceNewestFirst) {
  ShutdownSignal signal;
  std::vector<int> order;
  auto a = signal.OnShutdown([&] { order.push_back(1); });
  auto b = signal.OnShutdown([&] { order.push_back(2); });
  auto c = signal.OnShutdown([&] { order.push_back(3); });
  signal.Request("test");
  signal.Request("again");
  EXPECT_EQ((std::vector<int>{3, 2, 1}), order);
}

TEST(ShutdownSignal, DroppedRegistrationDoesNotRun) {
  ShutdownSignal signal;
  int runs = 0;
  {
    auto r = signal.OnShutdown([&] { ++runs; });
  }
  auto kept = signal.OnShutdown([&] { runs += 10; });
  signal.Request("test");
  EXPECT_EQ(10, runs);
}

TEST(ShutdownSignal, MovedRegistrationStaysRegistered) {
  ShutdownSignal signal;
  int runs = 0;
  ShutdownSignal::Registration outer;
  {
    auto inner = signal.OnShutdown([&] { ++runs; });
    outer = std::move(inner);
  }
  signal.Request("test");
  EXPECT_EQ(1, runs);
}

TEST(ShutdownSignal, LateRegistrationRunsImmediately) {
  ShutdownSignal signal;
  signal.Request("test");
  bool ran = false;
  auto r = signal.OnShutdown([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(ShutdownSignal, ThrowingCallbackDoesNotStopTheOthers) {
  ShutdownSignal signal;
  bool ran = false;
  auto a = signal.OnShutdown([&] { ran = true; });
  auto b = signal.OnShutdown([] { throw std::runtime_error("boom"); });
  signal.Request("test");
  EXPECT_TRUE(ran);
  EXPECT_TRUE(signal.WaitFor(0ms));
}

TEST(ShutdownSignal, CallbackMayDropItsOwnRegistration) {
  ShutdownSignal signal;
  ShutdownSignal::Registration self;
  bool ran = false;
  self = signal.OnShutdown([&] {
    ran = true;
    self = ShutdownSignal::Registration();  // must not wait for itself
  });
  signal.Request("test");
  EXPECT_TRUE(ran);
}

TEST(ShutdownSignal, DroppingRegistrationWaitsForRunningCallback) {
  ShutdownSignal signal;
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
  auto registration = std::make_unique<ShutdownSignal::Registration>(signal.OnShutdown([&] {
    started = true;
    while (!release) std::this_thread::yield();
    finished = true;
  }));
  std::thread requester([&] { signal.Request("test"); });
  ASSERT_TRUE(PollUntil([&] { return started.load(); }));
  std::atomic<bool> finished_when_dropped{false};
  std::thread dropper([&] {
    registration.reset();
    finished_when_dropped = finished.load();
  });
  release = true;
  dropper.join();
  requester.join();
  EXPECT_TRUE(finished_when_dropped.load());
}

// The tests below change process-wide signal state, so each runs in a child process (a death
// test in "threadsafe" style re-executes the test binary) and reports through its exit status.

// In a fresh child: installs the handlers, sends `signo` to itself and exits 0 if shutdown
// completed with the callback run and the signal's name as the reason.
void SignalRequestsShutdownInChild(int signo, const char* name) {
  if (!InstallShutdownHandlers().ok() || !InstallShutdownHandlers().ok()) ::_exit(10);
  std::atomic<bool> stopped{false};
  auto r = ShutdownSignal::Process().OnShutdown([&] { stopped = true; });
  if (::kill(::getpid(), signo) != 0) ::_exit(11);
  if (!ShutdownSignal::Process().WaitFor(10s)) ::_exit(12);
  if (!stopped.load()) ::_exit(13);
  if (ShutdownSignal::Process().reason() != name) ::_exit(14);
  std::fprintf(stderr, "clean shutdown after %s\n", name);
  ::_exit(0);
}

TEST(ShutdownHandlers, SigtermRequestsShutdownAndRunsCallbacks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(SignalRequestsShutdownInChild(SIGTERM, "SIGTERM"), ::testing::ExitedWithCode(0),
              "clean shutdown after SIGTERM");
}

TEST(ShutdownHandlers, SigintRequestsShutdownAndRunsCallbacks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(SignalRequestsShutdownInChild(SIGINT, "SIGINT"), ::testing::ExitedWithCode(0),
              "clean shutdown after SIGINT");
}

TEST(ShutdownHandlers, SecondSignalDuringHungShutdownExitsAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (!InstallShutdownHandlers().ok()) ::_exit(1);
        std::atomic<bool> hung{false};
        auto r = ShutdownSignal::Process().OnShutdown([&] {
          hung = true;
          while (true) std::this_thread::sleep_for(1s);  // a stop that never finishes
        });
        ::kill(::getpid(), SIGTERM);
        while (!hung) std::this_thread::yield();
        ::kill(::getpid(), SIGINT);
        while (true) std::this_thread::sleep_for(1s);
      },
      ::testing::ExitedWithCode(128 + SIGINT), "received SIGINT again during shutdown");
}

TEST(ShutdownHandlers, SigpipeIsIgnoredSoWritesFailWithEpipe) {
  ASSERT_TRUE(InstallShutdownHandlers().ok());
  int fds[2];
  ASSERT_EQ(0, ::pipe(fds));
  ::close(fds[0]);
  char byte = 'x';
  EXPECT_EQ(-1, ::write(fds[1], &byte, 1));
  EXPECT_EQ(EPIPE, errno);
  ::close(fds[1]);
}

}  // namespace
}  // namespace tx
