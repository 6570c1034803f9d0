#include "participant/lock_manager.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/clock.h"

namespace tx::participant {
namespace {

using std::chrono::milliseconds;

// Waits (in real time, bounded) until `n` transactions are blocked in Acquire.
void WaitForWaiters(const LockManager& lm, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (lm.WaitingCount() < n) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "nobody started waiting";
    std::this_thread::yield();
  }
}

TEST(LockManager, SharedLocksAreCompatible) {
  FakeClock clock;
  LockManager lm(&clock);
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kShared));
  EXPECT_TRUE(*lm.TryAcquire(2, "k", LockMode::kShared));
  EXPECT_TRUE(lm.Holds(1, "k", LockMode::kShared));
  EXPECT_FALSE(lm.Holds(1, "k", LockMode::kExclusive));
  EXPECT_EQ(2u, lm.TotalLocks());
}

TEST(LockManager, ExclusiveExcludesEveryoneElse) {
  FakeClock clock;
  LockManager lm(&clock);
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  TxId blocker = 0;
  EXPECT_FALSE(*lm.TryAcquire(2, "k", LockMode::kShared, &blocker));
  EXPECT_EQ(1, blocker);
  EXPECT_FALSE(*lm.TryAcquire(2, "k", LockMode::kExclusive));
  // Re-acquiring what one holds is free, in either mode.
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kShared));
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  EXPECT_EQ(1u, lm.HeldCount(1));
  // Other keys are independent.
  EXPECT_TRUE(*lm.TryAcquire(2, "other", LockMode::kExclusive));
}

TEST(LockManager, SoleHolderUpgradesSharedToExclusive) {
  FakeClock clock;
  LockManager lm(&clock);
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kShared));
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  EXPECT_TRUE(lm.Holds(1, "k", LockMode::kExclusive));
  EXPECT_EQ(1u, lm.TotalLocks());
}

TEST(LockManager, UpgradeWaitsForOtherSharedHolders) {
  FakeClock clock;
  LockManager lm(&clock);
  EXPECT_TRUE(*lm.TryAcquire(1, "k", LockMode::kShared));
  EXPECT_TRUE(*lm.TryAcquire(2, "k", LockMode::kShared));
  EXPECT_FALSE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
}

TEST(LockManager, ReleaseGrantsTheWaiter) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  Status result = Status::Internal("not run");
  std::thread waiter([&] {
    result = lm.Acquire(2, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1));
  });
  WaitForWaiters(lm, 1);
  lm.ReleaseAll(1);
  waiter.join();
  EXPECT_TRUE(result.ok()) << result.ToString();
  EXPECT_TRUE(lm.Holds(2, "k", LockMode::kExclusive));
  lm.ReleaseAll(2);
  EXPECT_EQ(0u, lm.TotalLocks());
}

TEST(LockManager, WaitTimesOutAtDeadlineOnTheClock) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  Status result;
  std::thread waiter(
      [&] { result = lm.Acquire(2, "k", LockMode::kShared, clock.Now() + milliseconds(500)); });
  WaitForWaiters(lm, 1);
  clock.Advance(milliseconds(499));
  clock.Advance(milliseconds(1));
  waiter.join();
  EXPECT_TRUE(result.IsTimedOut()) << result.ToString();
  EXPECT_FALSE(lm.Holds(2, "k", LockMode::kShared));
  EXPECT_EQ(0u, lm.WaitingCount());
  // The abandoned request left no trace: releasing 1 frees the key entirely.
  lm.ReleaseAll(1);
  EXPECT_EQ(0u, lm.TotalLocks());
  EXPECT_TRUE(*lm.TryAcquire(3, "k", LockMode::kExclusive));
}

TEST(LockManager, WaitersAreGrantedInArrivalOrder) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  std::atomic<int> order{0};
  int got2 = 0, got3 = 0;
  std::thread t2([&] {
    ASSERT_TRUE(lm.Acquire(2, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1)).ok());
    got2 = ++order;
    lm.ReleaseAll(2);
  });
  WaitForWaiters(lm, 1);
  std::thread t3([&] {
    ASSERT_TRUE(lm.Acquire(3, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1)).ok());
    got3 = ++order;
    lm.ReleaseAll(3);
  });
  WaitForWaiters(lm, 2);
  lm.ReleaseAll(1);
  t2.join();
  t3.join();
  EXPECT_EQ(1, got2);
  EXPECT_EQ(2, got3);
}

TEST(LockManager, QueuedWriterIsNotStarvedByNewReaders) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "k", LockMode::kShared));
  std::thread writer([&] {
    ASSERT_TRUE(lm.Acquire(2, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1)).ok());
  });
  WaitForWaiters(lm, 1);
  // A new reader would be compatible with the holder but must queue behind the writer.
  EXPECT_FALSE(*lm.TryAcquire(3, "k", LockMode::kShared));
  lm.ReleaseAll(1);
  writer.join();
  EXPECT_TRUE(lm.Holds(2, "k", LockMode::kExclusive));
  lm.ReleaseAll(2);
}

TEST(LockManager, DeadlockIsDetectedAndTheRequesterIsTheVictim) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "a", LockMode::kExclusive));
  ASSERT_TRUE(*lm.TryAcquire(2, "b", LockMode::kExclusive));
  Status first;
  std::thread t1([&] {
    first = lm.Acquire(1, "b", LockMode::kExclusive, clock.Now() + std::chrono::hours(1));
  });
  WaitForWaiters(lm, 1);
  // 2 -> a would close the cycle 2 -> 1 -> 2: refused at once, no waiting.
  Status second = lm.Acquire(2, "a", LockMode::kExclusive, clock.Now() + std::chrono::hours(1));
  EXPECT_EQ(Status::Code::kAborted, second.code()) << second.ToString();
  EXPECT_NE(std::string::npos, second.message().find("deadlock"));
  // The victim aborts and releases; the survivor proceeds.
  lm.ReleaseAll(2);
  t1.join();
  EXPECT_TRUE(first.ok()) << first.ToString();
  lm.ReleaseAll(1);
}

TEST(LockManager, ThreeWayDeadlockIsDetected) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "a", LockMode::kExclusive));
  ASSERT_TRUE(*lm.TryAcquire(2, "b", LockMode::kExclusive));
  ASSERT_TRUE(*lm.TryAcquire(3, "c", LockMode::kShared));
  std::thread t1(
      [&] { (void)lm.Acquire(1, "b", LockMode::kExclusive, clock.Now() + std::chrono::hours(1)); });
  WaitForWaiters(lm, 1);
  std::thread t2(
      [&] { (void)lm.Acquire(2, "c", LockMode::kExclusive, clock.Now() + std::chrono::hours(1)); });
  WaitForWaiters(lm, 2);
  Status s = lm.Acquire(3, "a", LockMode::kShared, clock.Now() + std::chrono::hours(1));
  EXPECT_EQ(Status::Code::kAborted, s.code()) << s.ToString();
  lm.ReleaseAll(3);  // 2 gets c, finishes; then 1 gets b
  t2.join();
  lm.ReleaseAll(2);
  t1.join();
  lm.ReleaseAll(1);
}

TEST(LockManager, TwoSharedHoldersUpgradingDeadlock) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "k", LockMode::kShared));
  ASSERT_TRUE(*lm.TryAcquire(2, "k", LockMode::kShared));
  Status first;
  std::thread t1([&] {
    first = lm.Acquire(1, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1));
  });
  WaitForWaiters(lm, 1);
  Status second = lm.Acquire(2, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1));
  EXPECT_EQ(Status::Code::kAborted, second.code());
  lm.ReleaseAll(2);
  t1.join();
  EXPECT_TRUE(first.ok());
  EXPECT_TRUE(lm.Holds(1, "k", LockMode::kExclusive));
  lm.ReleaseAll(1);
}

TEST(LockManager, CancelInterruptsAWait) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "k", LockMode::kExclusive));
  Status result;
  std::thread waiter([&] {
    result = lm.Acquire(2, "k", LockMode::kExclusive, clock.Now() + std::chrono::hours(1));
  });
  WaitForWaiters(lm, 1);
  lm.Cancel(2);
  waiter.join();
  EXPECT_EQ(Status::Code::kCancelled, result.code());
  // Until released, every later request of the cancelled transaction fails too.
  EXPECT_EQ(Status::Code::kCancelled, lm.TryAcquire(2, "other", LockMode::kShared).status().code());
  lm.ReleaseAll(2);
  EXPECT_TRUE(*lm.TryAcquire(2, "other", LockMode::kShared));
  lm.ReleaseAll(2);
  lm.ReleaseAll(1);
}

TEST(LockManager, PerTransactionBoundIsEnforced) {
  FakeClock clock;
  LockManager lm(&clock, LockManager::Limits{3, 100});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(*lm.TryAcquire(1, std::to_string(i), LockMode::kShared));
  auto r = lm.TryAcquire(1, "3", LockMode::kShared);
  EXPECT_EQ(Status::Code::kResourceExhausted, r.status().code());
  // Upgrading a held lock is not a new lock.
  EXPECT_TRUE(*lm.TryAcquire(1, "0", LockMode::kExclusive));
  EXPECT_TRUE(*lm.TryAcquire(2, "x", LockMode::kShared));
  lm.ReleaseAll(1);
  lm.ReleaseAll(2);
}

TEST(LockManager, TotalBoundIsEnforced) {
  FakeClock clock;
  LockManager lm(&clock, LockManager::Limits{100, 2});
  ASSERT_TRUE(*lm.TryAcquire(1, "a", LockMode::kShared));
  ASSERT_TRUE(*lm.TryAcquire(2, "a", LockMode::kShared));
  EXPECT_EQ(Status::Code::kResourceExhausted,
            lm.TryAcquire(3, "b", LockMode::kShared).status().code());
  EXPECT_EQ(Status::Code::kResourceExhausted,
            lm.Acquire(3, "b", LockMode::kShared, clock.Now()).code());
  lm.ReleaseAll(1);
  lm.ReleaseAll(2);
  lm.ReleaseAll(3);
  EXPECT_EQ(0u, lm.TotalLocks());
}

TEST(LockManager, HeldLocksListsKeysAndModes) {
  FakeClock clock;
  LockManager lm(&clock);
  ASSERT_TRUE(*lm.TryAcquire(1, "b", LockMode::kShared));
  ASSERT_TRUE(*lm.TryAcquire(1, "a", LockMode::kExclusive));
  std::vector<LockRequest> held = lm.HeldLocks(1);
  ASSERT_EQ(2u, held.size());
  EXPECT_EQ((LockRequest{"a", LockMode::kExclusive}), held[0]);
  EXPECT_EQ((LockRequest{"b", LockMode::kShared}), held[1]);
  lm.ReleaseAll(1);
  EXPECT_TRUE(lm.HeldLocks(1).empty());
}

// Many transactions locking random pairs of keys in random order: with timeouts and deadlock
// detection nobody hangs, and exclusive holders never overlap.
TEST(LockManager, RandomContentionNeverHangsAndKeepsExclusion) {
  LockManager lm(Clock::Real());
  constexpr int kThreads = 8;
#ifdef TX_SANITIZE_BUILD
  constexpr int kRounds = 200;
#else
  constexpr int kRounds = 1000;
#endif
  std::atomic<int> inside[4] = {};
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint64_t seed = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(t + 1);
      for (int r = 0; r < kRounds; ++r) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int a = static_cast<int>((seed >> 33) % 4), b = static_cast<int>((seed >> 40) % 4);
        TxId txn = static_cast<TxId>(t * kRounds + r + 1);
        auto deadline = Clock::Real()->Now() + milliseconds(50);
        bool ok = lm.Acquire(txn, std::to_string(a), LockMode::kExclusive, deadline).ok() &&
                  lm.Acquire(txn, std::to_string(b), LockMode::kExclusive, deadline).ok();
        if (ok) {
          if (inside[a].fetch_add(1) != 0) violations++;
          if (a != b && inside[b].fetch_add(1) != 0) violations++;
          inside[a].fetch_sub(1);
          if (a != b) inside[b].fetch_sub(1);
        }
        lm.ReleaseAll(txn);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(0, violations.load());
  EXPECT_EQ(0u, lm.TotalLocks());
}

}  // namespace
}  // namespace tx::participant
