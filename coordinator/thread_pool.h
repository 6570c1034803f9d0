// A fixed set of threads running queued tasks, with a bounded queue. The coordinator runs its
// blocking Thrift calls to participants on it, so one Commit's Prepares run in parallel.
//
// Thread-safe. The destructor stops accepting tasks, lets the threads finish what is queued and
// joins them.

#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tx::coordinator {

class ThreadPool {
 public:
  ThreadPool(size_t threads, size_t max_queued);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task` (moving from it); false, leaving `task` untouched, when max_queued tasks
  // wait already or the pool is stopping.
  bool Submit(std::function<void()>&& task);

  size_t queued() const;

 private:
  void Loop();

  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;
};

}  // namespace tx::coordinator
