#include "wal/wal.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "common/failpoint.h"
#include "common/fault_injection_fs.h"
#include "tests/support/poll.h"
#include "tests/support/temp_dir.h"
#include "wal/log_format.h"

namespace tx::wal {
namespace {

using Op = FaultInjectionFileSystem::Op;
using tx::testing::PollUntil;

std::string PayloadFor(uint64_t n, size_t size = 0) {
  std::string p = "record-" + std::to_string(n) + "-";
  if (size == 0) size = 10 + n % 50;
  while (p.size() < size) p.push_back(static_cast<char>('a' + (n + p.size()) % 26));
  p.resize(size);
  return p;
}

// Holds the log's sync thread inside an OnDurable callback until Release(), and keeps a
// second callback pending (so that a lone waiter does not run a round itself either): no
// group-commit round starts meanwhile, which lets a test line waiters up deterministically.
// Appends two records of its own, 1 and 2 in a new log.
class SyncThreadParker {
 public:
  explicit SyncThreadParker(Wal* wal) {
    auto index = wal->Append(RecordView{1, "parker"});
    EXPECT_TRUE(index.ok()) << index.status().ToString();
    wal->OnDurable(*index, [this](Status) {
      entered_.count_down();
      released_.wait();
    });
    entered_.wait();
    auto pending = wal->Append(RecordView{1, "pending"});
    EXPECT_TRUE(pending.ok()) << pending.status().ToString();
    wal->OnDurable(*pending, [](Status) {});
  }
  ~SyncThreadParker() { Release(); }
  void Release() {
    if (!released_flag_) {
      released_flag_ = true;
      release_.set_value();
    }
  }

 private:
  std::latch entered_{1};
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  bool released_flag_ = false;
};

constexpr auto kWaitLimit = std::chrono::seconds(10);

class WalTest : public ::testing::Test {
 protected:
  std::unique_ptr<Wal> OpenOrDie(Options options = {}) {
    if (options.fs == FileSystem::Default()) options.fs = &fs_;
    auto wal = Wal::Open(dir_.path(), options);
    EXPECT_TRUE(wal.ok()) << wal.status().ToString();
    return wal.ok() ? std::move(wal).value() : nullptr;
  }

  // Appends records n in [first_n, first_n + count) one per batch; returns the last index.
  uint64_t AppendMany(Wal* wal, uint64_t first_n, uint64_t count, size_t size = 0) {
    uint64_t last = 0;
    for (uint64_t n = first_n; n < first_n + count; ++n) {
      std::string payload = PayloadFor(n, size);
      auto index = wal->Append(RecordView{static_cast<uint8_t>(1 + n % 3), payload});
      EXPECT_TRUE(index.ok()) << index.status().ToString();
      last = *index;
    }
    return last;
  }

  void ExpectRecords(Wal* wal, uint64_t lo, uint64_t hi, uint64_t first_n, size_t size = 0) {
    auto records = wal->Read(lo, hi);
    ASSERT_TRUE(records.ok()) << records.status().ToString();
    ASSERT_EQ(hi - lo, records->size());
    for (uint64_t i = 0; i < hi - lo; ++i) {
      const Record& r = (*records)[i];
      EXPECT_EQ(lo + i, r.index);
      EXPECT_EQ(PayloadFor(first_n + i, size), r.payload) << "index " << r.index;
      EXPECT_EQ(1 + (first_n + i) % 3, r.type);
    }
  }

  tx::testing::TempDir dir_;
  FaultInjectionFileSystem fs_;
};

TEST_F(WalTest, EmptyDirectoryStartsAtInitialIndex) {
  Options options;
  options.initial_index = 7;
  auto wal = OpenOrDie(options);
  EXPECT_EQ(7u, wal->first_index());
  EXPECT_EQ(6u, wal->last_index());
  EXPECT_EQ(6u, wal->durable_index());
  EXPECT_EQ(1u, wal->segment_count());
  EXPECT_TRUE(fs_.FileExists(JoinPath(dir_.path(), "0000000000000007.wal")));
}

TEST_F(WalTest, AppendAssignsConsecutiveIndexesAndBatchesReturnTheirLast) {
  auto wal = OpenOrDie();
  std::string a = "a", b = "bb", c = "ccc";
  EXPECT_EQ(1u, *wal->Append(RecordView{1, a}));
  std::vector<RecordView> batch = {{2, b}, {3, c}};
  EXPECT_EQ(3u, *wal->Append(batch));
  auto records = wal->Read(1, 4);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(3u, records->size());
  EXPECT_EQ("a", (*records)[0].payload);
  EXPECT_EQ("ccc", (*records)[2].payload);
  EXPECT_EQ(3, (*records)[2].type);
}

TEST_F(WalTest, EmptyAndZeroLengthRecords) {
  auto wal = OpenOrDie();
  EXPECT_TRUE(wal->Append(std::span<const RecordView>()).status().IsInvalidArgument());
  EXPECT_EQ(1u, *wal->Append(RecordView{1, ""}));
  wal.reset();
  wal = OpenOrDie();
  auto records = wal->Read(1, 2);
  ASSERT_TRUE(records.ok());
  EXPECT_EQ("", (*records)[0].payload);
}

TEST_F(WalTest, ReopenRecoversEveryRecord) {
  {
    auto wal = OpenOrDie();
    AppendMany(wal.get(), 1, 100);
    ASSERT_TRUE(wal->Sync().ok());
  }
  auto wal = OpenOrDie();
  EXPECT_EQ(1u, wal->first_index());
  EXPECT_EQ(100u, wal->last_index());
  EXPECT_EQ(100u, wal->durable_index());
  ExpectRecords(wal.get(), 1, 101, 1);
  EXPECT_EQ(101u, AppendMany(wal.get(), 101, 1));
}

TEST_F(WalTest, DurableIndexAdvancesOnlyThroughSync) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 5);
  EXPECT_EQ(0u, wal->durable_index());
  ASSERT_TRUE(wal->WaitDurable(3).ok());
  EXPECT_GE(wal->durable_index(), 3u);
  ASSERT_TRUE(wal->Sync().ok());
  EXPECT_EQ(5u, wal->durable_index());
  EXPECT_TRUE(wal->WaitDurable(6).IsOutOfRange());
}

TEST_F(WalTest, RecordIsNotReportedDurableBeforeItsFdatasyncReturns) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::latch sync_started(1);
  std::atomic<bool> first{true};
  fs_.SetSyncHook([&] {
    if (first.exchange(false)) {
      sync_started.count_down();
      released.wait();
    }
  });
  std::atomic<bool> callback_ran{false};
  wal->OnDurable(1, [&](Status s) {
    EXPECT_TRUE(s.ok());
    callback_ran = true;
  });
  auto waiter = std::async(std::launch::async, [&] { return wal->WaitDurable(1); });
  sync_started.wait();
  // The fdatasync is in progress (held by the hook): nothing may claim durability yet.
  EXPECT_EQ(0u, wal->durable_index());
  EXPECT_FALSE(callback_ran.load());
  EXPECT_EQ(std::future_status::timeout, waiter.wait_for(std::chrono::milliseconds(20)));
  release.set_value();
  EXPECT_TRUE(waiter.get().ok());
  EXPECT_EQ(1u, wal->durable_index());
  fs_.SetSyncHook(nullptr);
  // The callback runs on the log's thread once the sync returned; wait for it with a deadline.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!callback_ran && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(callback_ran.load());
}

TEST_F(WalTest, ConcurrentAppendersShareFdatasyncs) {
  auto wal = OpenOrDie();
  constexpr int kThreads = 16;
  constexpr int kPerThread = 40;
  const uint64_t syncs_before = fs_.sync_count();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string payload = PayloadFor(t * 1000 + i);
        auto index = wal->Append(RecordView{1, payload});
        if (!index.ok() || !wal->WaitDurable(*index).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(0, failures.load());
  EXPECT_EQ(uint64_t{kThreads * kPerThread}, wal->durable_index());
  const uint64_t syncs = fs_.sync_count() - syncs_before;
  // One fdatasync per record would be 640; waiting appenders must share them.
  EXPECT_LT(syncs, uint64_t{kThreads * kPerThread / 2}) << syncs << " fdatasyncs";
}

TEST_F(WalTest, OnDurableCallbacksRunInIndexOrderAfterSync) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 20);
  std::mutex mu;
  std::vector<uint64_t> order;
  std::latch done(20);
  for (uint64_t i = 20; i >= 1; --i) {
    wal->OnDurable(i, [&, i](Status s) {
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_GE(wal->durable_index(), i);
      std::lock_guard lock(mu);
      order.push_back(i);
      done.count_down();
    });
  }
  done.wait();
  std::lock_guard lock(mu);
  for (size_t k = 1; k < order.size(); ++k) EXPECT_LT(order[k - 1], order[k]);
  // Already durable: runs at once, on the caller's thread.
  bool ran = false;
  wal->OnDurable(5, [&](Status s) { ran = s.ok(); });
  EXPECT_TRUE(ran);
}

TEST_F(WalTest, WaitersOfTheRunningAndOfTheNextRoundAreBothReleased) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::latch sync_started(1);
  std::atomic<bool> first{true};
  fs_.SetSyncHook([&] {
    if (first.exchange(false)) {
      sync_started.count_down();
      released.wait();
    }
  });
  // A callback first, so that the sync thread runs the round (a lone waiter would run it).
  std::promise<Status> callback;
  wal->OnDurable(1, [&](Status s) { callback.set_value(s); });
  sync_started.wait();  // the round that covers record 1 is in its fdatasync
  auto covered = std::async(std::launch::async, [&] { return wal->WaitDurable(1); });
  AppendMany(wal.get(), 2, 1);
  // Record 2 came after that round began: only the next round covers it, so this waiter sleeps
  // on another wake-up bit than the first.
  auto next = std::async(std::launch::async, [&] { return wal->WaitDurable(2); });
  ASSERT_TRUE(PollUntil([&] { return wal->blocked_waiter_count() == 2; }, kWaitLimit));
  EXPECT_EQ(0u, wal->durable_index());
  release.set_value();
  ASSERT_EQ(std::future_status::ready, covered.wait_for(kWaitLimit));
  ASSERT_EQ(std::future_status::ready, next.wait_for(kWaitLimit));
  EXPECT_TRUE(covered.get().ok());
  EXPECT_TRUE(next.get().ok());
  EXPECT_TRUE(callback.get_future().get().ok());
  EXPECT_EQ(2u, wal->durable_index());
  EXPECT_EQ(0u, wal->blocked_waiter_count());
  fs_.SetSyncHook(nullptr);
}

TEST_F(WalTest, LoneWaiterRunsTheRoundItselfAndIsNotReportedDurableBeforeItsFdatasync) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 1);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> synced_on_caller{false};
  std::atomic<int> syncs{0};
  fs_.SetSyncHook([&] {
    ++syncs;
    if (std::this_thread::get_id() == caller) synced_on_caller = true;
    // Nothing may be reported durable while the fdatasync that covers it runs.
    EXPECT_EQ(0u, wal->durable_index());
  });
  ASSERT_TRUE(PollUntil([&] { return wal->blocked_waiter_count() == 0; }, kWaitLimit));
  ASSERT_TRUE(wal->WaitDurable(1).ok());
  EXPECT_EQ(1u, wal->durable_index());
  EXPECT_EQ(1, syncs.load());
  EXPECT_TRUE(synced_on_caller.load());  // no hand-off to the sync thread and back
  fs_.SetSyncHook(nullptr);
}

TEST_F(WalTest, ManyBlockedWaitersAllGetTheErrorOfAFailedFdatasync) {
  auto wal = OpenOrDie();
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::latch sync_started(1);
  std::atomic<bool> first{true};
  fs_.SetSyncHook([&] {
    if (first.exchange(false)) {
      sync_started.count_down();
      released.wait();
    }
  });
  // A callback first, so that the sync thread runs the round (a lone waiter would run it).
  AppendMany(wal.get(), 1, 1);
  std::promise<Status> callback;
  wal->OnDurable(1, [&](Status s) { callback.set_value(s); });
  sync_started.wait();
  constexpr int kWaiters = 16;
  std::vector<std::future<Status>> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(std::async(std::launch::async, [&, i] {
      std::string payload = PayloadFor(i);
      auto index = wal->Append(RecordView{1, payload});
      return index.ok() ? wal->WaitDurable(*index) : index.status();
    }));
  }
  ASSERT_TRUE(PollUntil([&] { return wal->blocked_waiter_count() == kWaiters; }, kWaitLimit));
  fs_.FailOperation(Op::kSync, Status::IOError("injected EIO"));
  release.set_value();
  Status c = callback.get_future().get();
  EXPECT_TRUE(c.IsIOError()) << c.ToString();
  for (auto& waiter : waiters) {
    ASSERT_EQ(std::future_status::ready, waiter.wait_for(kWaitLimit));
    Status s = waiter.get();
    EXPECT_TRUE(s.IsIOError()) << s.ToString();
  }
  EXPECT_EQ(0u, wal->durable_index());
  EXPECT_EQ(0u, wal->blocked_waiter_count());
  fs_.SetSyncHook(nullptr);
  fs_.ClearFailure(Op::kSync);
}

TEST_F(WalTest, TruncationEndsWaitsForRemovedRecordsEvenIfTheirIndexIsReused) {
  auto wal = OpenOrDie();
  SyncThreadParker parker(wal.get());  // records 1-2; no round can start until released
  AppendMany(wal.get(), 3, 1);
  auto waiter = std::async(std::launch::async, [&] { return wal->WaitDurable(3); });
  std::promise<Status> callback;
  wal->OnDurable(3, [&](Status s) { callback.set_value(s); });
  ASSERT_TRUE(PollUntil([&] { return wal->blocked_waiter_count() == 1; }, kWaitLimit));
  ASSERT_TRUE(wal->TruncateSuffix(3).ok());
  EXPECT_EQ(3u, AppendMany(wal.get(), 100, 1));  // a different record takes index 3
  // The wait ends at the truncation, not with the new record's fdatasync (none can run yet).
  ASSERT_EQ(std::future_status::ready, waiter.wait_for(kWaitLimit));
  Status s = waiter.get();
  EXPECT_TRUE(s.IsOutOfRange()) << s.ToString();
  parker.Release();
  // The callback runs on the sync thread once it is free, with OutOfRange all the same.
  Status c = callback.get_future().get();
  EXPECT_TRUE(c.IsOutOfRange()) << c.ToString();
  EXPECT_TRUE(wal->WaitDurable(3).ok());
  ExpectRecords(wal.get(), 3, 4, 100);
}

TEST_F(WalTest, DestroyingTheLogReleasesABlockedWaiterWithTheFinalSyncsOutcome) {
  auto wal = OpenOrDie();
  auto parker = std::make_unique<SyncThreadParker>(wal.get());  // records 1-2
  AppendMany(wal.get(), 3, 1);
  auto waiter = std::async(std::launch::async, [&] { return wal->WaitDurable(3); });
  ASSERT_TRUE(PollUntil([&] { return wal->blocked_waiter_count() == 1; }, kWaitLimit));
  // Closing syncs record 3 itself and releases the waiter, though the sync thread is parked.
  auto destroyer = std::async(std::launch::async, [&] { wal.reset(); });
  ASSERT_EQ(std::future_status::ready, waiter.wait_for(kWaitLimit));
  Status s = waiter.get();
  EXPECT_TRUE(s.ok()) << s.ToString();
  // The destructor is still joining the parked sync thread.
  EXPECT_EQ(std::future_status::timeout, destroyer.wait_for(std::chrono::seconds(0)));
  parker->Release();
  destroyer.get();
  parker.reset();
  wal = OpenOrDie();
  EXPECT_EQ(3u, wal->last_index());
  ExpectRecords(wal.get(), 3, 4, 3);
}

TEST_F(WalTest, WaitersRacingTruncationsAllReturnOkOrOutOfRange) {
  fs_.SetSyncsReachDisk(false);  // exercises the hand-offs, not the disk
  auto wal = OpenOrDie();
#ifdef TX_SANITIZE_BUILD
  constexpr int kPerThread = 60;
#else
  constexpr int kPerThread = 400;
#endif
  constexpr int kThreads = 8;
  // Appenders go on past kPerThread until this many truncations raced with them.
  constexpr int kMinTruncations = 20;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::atomic<int> waits{0}, ok{0}, out_of_range{0}, other{0}, truncations{0};
  std::atomic<int> appenders_left{kThreads};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop && (i < kPerThread || truncations.load() < kMinTruncations); ++i) {
        std::string payload = PayloadFor(t * 100000 + i);
        auto index = wal->Append(RecordView{1, payload});
        Status s = index.ok() ? wal->WaitDurable(*index) : index.status();
        ++waits;
        if (s.ok()) {
          ++ok;
        } else if (s.IsOutOfRange()) {
          ++out_of_range;
        } else {
          ++other;
          ADD_FAILURE() << s.ToString();
        }
      }
      --appenders_left;
    });
  }
  while (appenders_left.load() > 0) {
    if (std::chrono::steady_clock::now() > deadline) stop = true;
    const uint64_t last = wal->last_index();
    if (last >= wal->first_index() + 3) {
      Status s = wal->TruncateSuffix(last - 2);
      EXPECT_TRUE(s.ok()) << s.ToString();
      ++truncations;
    }
    std::this_thread::yield();
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(stop.load()) << "the appenders did not finish within 20 s";
  EXPECT_EQ(waits.load(), ok + out_of_range);
  EXPECT_EQ(0, other.load());
  EXPECT_GE(truncations.load(), kMinTruncations);
  EXPECT_EQ(0u, wal->blocked_waiter_count());
  ASSERT_TRUE(wal->Sync().ok());
  EXPECT_EQ(wal->last_index(), wal->durable_index());
}

TEST_F(WalTest, SegmentsRotateAtSizeLimitAndReadsSpanThem) {
  Options options;
  options.segment_bytes = 4096;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 300, 100);
    EXPECT_GT(wal->segment_count(), 5u);
    auto records = wal->Read(1, 301);
    ASSERT_TRUE(records.ok()) << records.status().ToString();
    ASSERT_EQ(300u, records->size());
    for (uint64_t i = 0; i < 300; ++i) EXPECT_EQ(PayloadFor(i + 1, 100), (*records)[i].payload);
    ASSERT_TRUE(wal->Sync().ok());
  }
  auto names = fs_.ListDir(dir_.path());
  ASSERT_TRUE(names.ok());
  for (const std::string& name : *names) {
    if (!ParseSegmentFileName(name)) continue;
    auto size = fs_.FileSize(JoinPath(dir_.path(), name));
    ASSERT_TRUE(size.ok());
    EXPECT_LE(*size, options.segment_bytes) << name;
  }
  auto wal = OpenOrDie(options);
  EXPECT_EQ(300u, wal->last_index());
  auto records = wal->Read(150, 160);
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(PayloadFor(150, 100), records->front().payload);
}

TEST_F(WalTest, BatchSpanningARotationIsReadBackWhole) {
  Options options;
  options.segment_bytes = 4096;
  auto wal = OpenOrDie(options);
  std::vector<std::string> payloads;
  for (int i = 0; i < 100; ++i) payloads.push_back(PayloadFor(i, 200));
  std::vector<RecordView> batch;
  for (const auto& p : payloads) batch.push_back(RecordView{1, p});
  EXPECT_EQ(100u, *wal->Append(batch));
  EXPECT_GT(wal->segment_count(), 1u);
  auto records = wal->Read(1, 101);
  ASSERT_TRUE(records.ok());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(payloads[i], (*records)[i].payload);
}

TEST_F(WalTest, ReadStopsAtMaxBytesButReturnsAtLeastOneRecord) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 10, 100);
  auto some = wal->Read(1, 11, 250);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(3u, some->size());  // 300 bytes is the first total over 250
  auto one = wal->Read(4, 11, 1);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(1u, one->size());
  EXPECT_EQ(4u, one->front().index);
}

TEST_F(WalTest, ReadOutsideRangeIsOutOfRange) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 5);
  EXPECT_TRUE(wal->Read(0, 2).status().IsOutOfRange());
  EXPECT_TRUE(wal->Read(3, 7).status().IsOutOfRange());
  EXPECT_TRUE(wal->Read(4, 3).status().IsOutOfRange());
  auto empty = wal->Read(6, 6);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_F(WalTest, TruncateSuffixInsideASegmentThenOverwrite) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 10);
  ASSERT_TRUE(wal->TruncateSuffix(6).ok());
  EXPECT_EQ(5u, wal->last_index());
  EXPECT_TRUE(wal->Read(6, 7).status().IsOutOfRange());
  EXPECT_EQ(7u, AppendMany(wal.get(), 106, 2));  // new records 6 and 7
  ExpectRecords(wal.get(), 1, 6, 1);
  ExpectRecords(wal.get(), 6, 8, 106);
  wal.reset();
  wal = OpenOrDie();
  EXPECT_EQ(7u, wal->last_index());
  ExpectRecords(wal.get(), 6, 8, 106);
}

TEST_F(WalTest, TruncateSuffixAcrossSegmentsDeletesNewerSegments) {
  Options options;
  options.segment_bytes = 4096;
  auto wal = OpenOrDie(options);
  AppendMany(wal.get(), 1, 200, 100);
  const size_t segments_before = wal->segment_count();
  ASSERT_TRUE(wal->TruncateSuffix(20).ok());
  EXPECT_LT(wal->segment_count(), segments_before);
  EXPECT_EQ(19u, wal->last_index());
  EXPECT_LE(wal->durable_index(), 19u);
  EXPECT_EQ(20u, *wal->Append(RecordView{1, "new twenty"}));
  wal.reset();
  wal = OpenOrDie(options);
  EXPECT_EQ(20u, wal->last_index());
  auto r = wal->Read(20, 21);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ("new twenty", r->front().payload);
}

TEST_F(WalTest, TruncateEverythingLeavesAnEmptyLogAtTheSameStart) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 10);
  ASSERT_TRUE(wal->TruncateSuffix(1).ok());
  EXPECT_EQ(0u, wal->last_index());
  wal.reset();
  wal = OpenOrDie();
  EXPECT_EQ(1u, wal->first_index());
  EXPECT_EQ(0u, wal->last_index());
}

TEST_F(WalTest, TruncateSuffixOutOfRangeIsRefused) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 10);
  ASSERT_TRUE(wal->DropPrefix(5).ok());
  EXPECT_TRUE(wal->TruncateSuffix(3).IsOutOfRange());
  EXPECT_TRUE(wal->TruncateSuffix(12).IsOutOfRange());
  EXPECT_TRUE(wal->TruncateSuffix(11).ok());  // nothing to remove
  EXPECT_EQ(10u, wal->last_index());
}

TEST_F(WalTest, TruncatedRecordsCannotBeWaitedFor) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 6);
  ASSERT_TRUE(wal->TruncateSuffix(5).ok());
  EXPECT_TRUE(wal->WaitDurable(5).IsOutOfRange());
  std::promise<Status> late;
  wal->OnDurable(6, [&](Status st) { late.set_value(st); });
  EXPECT_TRUE(late.get_future().get().IsOutOfRange());
  EXPECT_TRUE(wal->WaitDurable(4).ok());
}

TEST_F(WalTest, DropPrefixDeletesWholeSegmentsBelowTheIndex) {
  Options options;
  options.segment_bytes = 4096;
  auto wal = OpenOrDie(options);
  AppendMany(wal.get(), 1, 300, 100);
  ASSERT_TRUE(wal->Sync().ok());
  const size_t before = wal->segment_count();
  ASSERT_TRUE(wal->DropPrefix(200).ok());
  EXPECT_EQ(200u, wal->first_index());
  EXPECT_LT(wal->segment_count(), before);
  EXPECT_TRUE(wal->Read(199, 201).status().IsOutOfRange());
  auto r = wal->Read(200, 301);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(101u, r->size());
  wal.reset();
  wal = OpenOrDie(options);
  // Compaction is per segment: the segment holding 200 may start a little earlier.
  EXPECT_LE(wal->first_index(), 200u);
  EXPECT_GT(wal->first_index(), 150u);
  EXPECT_EQ(300u, wal->last_index());
}

TEST_F(WalTest, DropPrefixBeyondTheEndRestartsTheLogThere) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 10);
  ASSERT_TRUE(wal->DropPrefix(1000).ok());
  EXPECT_EQ(1000u, wal->first_index());
  EXPECT_EQ(999u, wal->last_index());
  EXPECT_EQ(1000u, *wal->Append(RecordView{1, "after snapshot"}));
  ASSERT_TRUE(wal->Sync().ok());
  wal.reset();
  wal = OpenOrDie();
  EXPECT_EQ(1000u, wal->first_index());
  EXPECT_EQ(1000u, wal->last_index());
  EXPECT_EQ(1u, wal->segment_count());
}

TEST_F(WalTest, OversizeRecordIsRefusedAndNothingIsAppended) {
  Options options;
  options.max_record_bytes = 1000;
  auto wal = OpenOrDie(options);
  std::string big(1001, 'x'), ok(1000, 'y');
  std::vector<RecordView> batch = {{1, ok}, {1, big}};
  EXPECT_TRUE(wal->Append(batch).status().IsInvalidArgument());
  EXPECT_EQ(0u, wal->last_index());
  EXPECT_EQ(1u, *wal->Append(RecordView{1, ok}));
  EXPECT_TRUE(wal->Append(RecordView{0, ok}).status().IsInvalidArgument());
}

TEST_F(WalTest, InvalidOptionsAreRefused) {
  Options options;
  options.segment_bytes = 100;
  EXPECT_TRUE(Wal::Open(dir_.path(), options).status().IsInvalidArgument());
  options = Options();
  options.max_record_bytes = kMaxRecordBytes + 1;
  EXPECT_TRUE(Wal::Open(dir_.path(), options).status().IsInvalidArgument());
}

TEST_F(WalTest, UnwritableDirectoryIsAnError) {
  // A path below a regular file cannot be created, even by root.
  std::string file = JoinPath(dir_.path(), "plain-file");
  ASSERT_TRUE(WriteFileAtomically(&fs_, file, "x").ok());
  auto wal = Wal::Open(JoinPath(file, "wal"), Options());
  EXPECT_FALSE(wal.ok());
  EXPECT_NE(std::string::npos, wal.status().message().find("plain-file"))
      << wal.status().ToString();

  fs_.FailOperation(Op::kCreate, Status::IOError("injected: read-only file system"));
  Options options;
  options.fs = &fs_;
  auto refused = Wal::Open(JoinPath(dir_.path(), "other"), options);
  EXPECT_TRUE(refused.status().IsIOError()) << refused.status().ToString();
}

TEST_F(WalTest, SecondOpenOfTheSameDirectoryIsUnavailable) {
  auto wal = OpenOrDie();
  Options options;
  options.fs = &fs_;
  EXPECT_TRUE(Wal::Open(dir_.path(), options).status().IsUnavailable());
}

TEST_F(WalTest, FullDiskStopsTheLogAndLeavesNoPartialRecord) {
  {
    auto wal = OpenOrDie();
    AppendMany(wal.get(), 1, 5);
    ASSERT_TRUE(wal->Sync().ok());
    fs_.SetSpaceLimit(30);  // the next 60-byte frame only half fits
    std::string payload(40, 'z');
    auto index = wal->Append(RecordView{1, payload});
    ASSERT_TRUE(index.ok());  // appends are buffered until the group-commit round writes them
    EXPECT_TRUE(wal->WaitDurable(*index).IsNoSpace());
    EXPECT_EQ(5u, wal->durable_index());
    fs_.ClearSpaceLimit();
    // The log stays stopped: records after the failed write were never made durable.
    EXPECT_TRUE(wal->Append(RecordView{1, payload}).status().IsNoSpace());
    EXPECT_TRUE(wal->Sync().IsNoSpace());
  }
  auto wal = OpenOrDie();
  EXPECT_EQ(5u, wal->last_index());
  ExpectRecords(wal.get(), 1, 6, 1);
  EXPECT_EQ(6u, AppendMany(wal.get(), 6, 1));
}

TEST_F(WalTest, FullDiskDuringRotationKeepsTheDurablePrefix) {
  Options options;
  options.segment_bytes = 4096;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 10, 100);
    ASSERT_TRUE(wal->Sync().ok());
    fs_.SetSpaceLimit(5000);  // fills the first segment, not the second
    std::vector<std::string> payloads(60, std::string(100, 'q'));
    std::vector<RecordView> batch;
    for (const auto& p : payloads) batch.push_back(RecordView{1, p});
    auto appended = wal->Append(batch);
    Status s = appended.ok() ? wal->Sync() : appended.status();
    EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
    fs_.ClearSpaceLimit();
  }
  auto wal = OpenOrDie(options);
  EXPECT_GE(wal->last_index(), 10u);
  ExpectRecords(wal.get(), 1, 11, 1, 100);
  auto rest = wal->Read(11, wal->last_index() + 1);
  ASSERT_TRUE(rest.ok());
  for (const Record& r : *rest) EXPECT_EQ(std::string(100, 'q'), r.payload);
}

TEST_F(WalTest, FailedSegmentCreationRollsBackTheWholeBatch) {
  Options options;
  options.segment_bytes = 4096;
  auto wal = OpenOrDie(options);
  AppendMany(wal.get(), 1, 10, 100);
  std::vector<std::string> payloads(60, std::string(100, 'q'));
  std::vector<RecordView> batch;
  for (const auto& p : payloads) batch.push_back(RecordView{1, p});
  fs_.FailOperation(Op::kCreate, Status::NoSpace("injected: no space for a new segment"));
  EXPECT_TRUE(wal->Append(batch).status().IsNoSpace());
  EXPECT_EQ(10u, wal->last_index());
  fs_.ClearFailure(Op::kCreate);
  // Nothing was lost and the log is usable: the batch goes in once segments can be created.
  ExpectRecords(wal.get(), 1, 11, 1, 100);
  EXPECT_EQ(70u, *wal->Append(batch));
  ASSERT_TRUE(wal->Sync().ok());
  wal.reset();
  wal = OpenOrDie(options);
  EXPECT_EQ(70u, wal->last_index());
  ExpectRecords(wal.get(), 1, 11, 1, 100);
}

TEST_F(WalTest, FailedFdatasyncStopsTheLogUntilReopen) {
  {
    auto wal = OpenOrDie();
    AppendMany(wal.get(), 1, 3);
    ASSERT_TRUE(wal->Sync().ok());
    AppendMany(wal.get(), 4, 2);
    fs_.FailOperation(Op::kSync, Status::IOError("injected EIO"));
    EXPECT_TRUE(wal->Sync().IsIOError());
    EXPECT_EQ(3u, wal->durable_index());
    fs_.ClearFailure(Op::kSync);
    // Sticky: the pages behind the failed sync cannot be trusted any more.
    EXPECT_TRUE(wal->Sync().IsIOError());
    EXPECT_TRUE(wal->Append(RecordView{1, "x"}).status().IsIOError());
    std::promise<Status> cb;
    wal->OnDurable(4, [&](Status s) { cb.set_value(s); });
    EXPECT_TRUE(cb.get_future().get().IsIOError());
  }
  auto wal = OpenOrDie();
  EXPECT_GE(wal->last_index(), 3u);
  ExpectRecords(wal.get(), 1, 4, 1);
}

TEST_F(WalTest, FailpointBeforeFsyncFailsTheRoundAndReportsNothingDurable) {
  auto wal = OpenOrDie();
  AppendMany(wal.get(), 1, 2);
  ASSERT_TRUE(wal->Sync().ok());
  AppendMany(wal.get(), 3, 1);
  ASSERT_TRUE(ArmFailPoint("wal.before_fsync", "error(IOError),times=1").ok());
  EXPECT_TRUE(wal->WaitDurable(3).IsIOError());
  EXPECT_EQ(2u, wal->durable_index());
  ASSERT_TRUE(ArmFailPoint("wal.before_fsync", "off").ok());
}

TEST_F(WalTest, PowerLossKeepsEveryDurableRecord) {
  {
    auto wal = OpenOrDie();
    AppendMany(wal.get(), 1, 50);
    ASSERT_TRUE(wal->WaitDurable(50).ok());
    AppendMany(wal.get(), 51, 30);  // never synced
    ASSERT_TRUE(fs_.DropUnsyncedData().ok());
    // The object now looks at files that lost data; a real process would be dead. Stop it
    // without syncing by failing syncs first.
    fs_.FailOperation(Op::kSync, Status::IOError("power is off"));
  }
  fs_.ClearFailure(Op::kSync);
  auto wal = OpenOrDie();
  EXPECT_EQ(50u, wal->last_index());
  ExpectRecords(wal.get(), 1, 51, 1);
}

TEST_F(WalTest, PowerLossDuringRotationKeepsEveryDurableRecord) {
  Options options;
  options.segment_bytes = 4096;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 100, 100);
    ASSERT_TRUE(wal->Sync().ok());
    AppendMany(wal.get(), 101, 100, 100);
    ASSERT_TRUE(fs_.DropUnsyncedData().ok());
    fs_.FailOperation(Op::kSync, Status::IOError("power is off"));
  }
  fs_.ClearFailure(Op::kSync);
  auto wal = OpenOrDie(options);
  EXPECT_GE(wal->last_index(), 100u);
  auto records = wal->Read(1, wal->last_index() + 1);
  ASSERT_TRUE(records.ok());
  for (uint64_t i = 0; i < records->size(); ++i) {
    EXPECT_EQ(PayloadFor(i + 1, 100), (*records)[i].payload);
  }
}

TEST_F(WalTest, ChecksumMismatchBeforeTheTailRefusesToOpenNamingFileAndOffset) {
  Options options;
  options.segment_bytes = 4096;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 100, 100);
  }
  // Damage one byte of the oldest segment's third record payload.
  const std::string path = JoinPath(dir_.path(), SegmentFileName(1));
  auto bytes = ReadFileToString(&fs_, path);
  ASSERT_TRUE(bytes.ok());
  const uint64_t record_size = kRecordHeaderBytes + 100;
  const uint64_t third = kSegmentHeaderBytes + 2 * record_size;
  (*bytes)[third + kRecordHeaderBytes + 5] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomically(&fs_, path, *bytes).ok());
  auto wal = Wal::Open(dir_.path(), options);
  ASSERT_TRUE(wal.status().IsCorruption()) << wal.status().ToString();
  EXPECT_NE(std::string::npos, wal.status().message().find(path)) << wal.status().ToString();
  EXPECT_NE(std::string::npos, wal.status().message().find("offset " + std::to_string(third)))
      << wal.status().ToString();
}

TEST_F(WalTest, MissingMiddleSegmentIsCorruption) {
  Options options;
  options.segment_bytes = 4096;
  std::string middle;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 200, 100);
  }
  auto names = fs_.ListDir(dir_.path());
  ASSERT_TRUE(names.ok());
  std::vector<std::string> segments;
  for (const auto& n : *names) {
    if (ParseSegmentFileName(n)) segments.push_back(n);
  }
  std::sort(segments.begin(), segments.end());
  ASSERT_GE(segments.size(), 3u);
  ASSERT_TRUE(fs_.RemoveFile(JoinPath(dir_.path(), segments[1])).ok());
  auto wal = Wal::Open(dir_.path(), options);
  EXPECT_TRUE(wal.status().IsCorruption()) << wal.status().ToString();
  EXPECT_NE(std::string::npos, wal.status().message().find(segments[2]));
}

TEST_F(WalTest, EmptyNewestSegmentAfterAGapIsRemovedAtOpen) {
  {
    auto wal = OpenOrDie();
    AppendMany(wal.get(), 1, 10);
  }
  // What a rolled-back append whose new segment could not be deleted leaves behind.
  const std::string stray = JoinPath(dir_.path(), SegmentFileName(34));
  ASSERT_TRUE(WriteFileAtomically(&fs_, stray, EncodeSegmentHeader(34)).ok());
  auto wal = OpenOrDie();
  EXPECT_FALSE(fs_.FileExists(stray));
  EXPECT_EQ(10u, wal->last_index());
  ExpectRecords(wal.get(), 1, 11, 1);
}

TEST_F(WalTest, PreallocatedSegmentsReopenWithoutLosingOrInventingRecords) {
  Options options;
  options.segment_bytes = 1 << 20;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 10);
    ASSERT_TRUE(wal->Sync().ok());
  }
  // The file is preallocated to the segment size; the zeros after the records are not records.
  auto size = fs_.FileSize(JoinPath(dir_.path(), SegmentFileName(1)));
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(options.segment_bytes, *size);
  auto wal = OpenOrDie(options);
  EXPECT_EQ(10u, wal->last_index());
  EXPECT_EQ(11u, AppendMany(wal.get(), 11, 1));
  ExpectRecords(wal.get(), 1, 12, 1);
}

// Writes into fallocate'd space cost each fdatasync an extent conversion, so the log writes
// zeros ahead of its appends, a chunk at a time, within the segment. The records must read back
// the same, before and after a crash, and the zeros must never be taken for records.
TEST_F(WalTest, ZeroFillsAheadOfItsAppendsWithinTheSegment) {
  Options options;
  options.segment_bytes = 3 << 20;
  {
    auto wal = OpenOrDie(options);
    AppendMany(wal.get(), 1, 10, 100);
    ASSERT_TRUE(wal->Sync().ok());
    const uint64_t first_chunk = fs_.zero_filled_bytes();
    EXPECT_GE(first_chunk, 512u << 10) << "no zeros written ahead of the first round";
    // About 1.3 MiB of records, synced a round at a time: the filling keeps ahead of them.
    for (uint64_t n = 11; n < 11 + 1300; n += 100) {
      AppendMany(wal.get(), n, 100, 1000);
      ASSERT_TRUE(wal->Sync().ok());
    }
    EXPECT_GT(fs_.zero_filled_bytes(), first_chunk);
    EXPECT_LE(fs_.zero_filled_bytes(), options.segment_bytes);
    AppendMany(wal.get(), 1311, 5, 1000);  // never synced
    ASSERT_TRUE(fs_.DropUnsyncedData().ok());
    fs_.FailOperation(Op::kSync, Status::IOError("power is off"));
  }
  fs_.ClearFailure(Op::kSync);
  auto wal = OpenOrDie(options);
  EXPECT_EQ(1310u, wal->last_index());
  ExpectRecords(wal.get(), 1, 11, 1, 100);
  ExpectRecords(wal.get(), 11, 1311, 11, 1000);
}

TEST_F(WalTest, LeftoverTemporarySegmentIsRemovedAtOpen) {
  {
    auto wal = OpenOrDie();
    AppendMany(wal.get(), 1, 3);
  }
  std::string temp = JoinPath(dir_.path(), SegmentFileName(4) + ".tmp");
  ASSERT_TRUE(WriteFileAtomically(&fs_, temp, "half a header").ok());
  auto wal = OpenOrDie();
  EXPECT_FALSE(fs_.FileExists(temp));
  EXPECT_EQ(3u, wal->last_index());
}

TEST_F(WalTest, SegmentCreationSyncsTheDirectory) {
  Options options;
  options.segment_bytes = 4096;
  auto wal = OpenOrDie(options);
  const uint64_t dir_syncs = fs_.sync_dir_count();
  const size_t segments = wal->segment_count();
  AppendMany(wal.get(), 1, 100, 100);
  const size_t created = wal->segment_count() - segments;
  ASSERT_GT(created, 0u);
  EXPECT_GE(fs_.sync_dir_count() - dir_syncs, created);
}

}  // namespace
}  // namespace tx::wal
