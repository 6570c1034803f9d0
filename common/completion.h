// Completion: a one-shot "done" signal from one thread to the thread that waits for it, where the
// waiter owns the Completion and may destroy it as soon as Wait() returns (a request on the
// waiter's stack, handed to a worker thread that finishes it).
//
// That ownership decides where Finish() notifies: under the mutex. Once the waiter can see
// `done` it may return and free the object, so Finish() must not touch the object after it lets
// the mutex go. Notifying after unlocking is the classic bug: the waiter sees `done` (it checks
// before sleeping, or wakes spuriously), returns and frees the condition variable, and the late
// notify_one() then works on freed memory; glibc's pthread_cond_signal on such memory can block
// for good. A participant's writer thread hung that way, taking every later transaction and the
// agent's shutdown with it (docs/reliability.md, finding 3).
//
// Thread-safe: one Finish() (from any thread) and one Wait().

#pragma once

#include <condition_variable>
#include <mutex>

namespace tx {

// CondVar is std::condition_variable; tests substitute one that observes the notify.
template <typename CondVar>
class BasicCompletion {
 public:
  BasicCompletion() = default;
  BasicCompletion(const BasicCompletion&) = delete;
  BasicCompletion& operator=(const BasicCompletion&) = delete;

  // Marks it done and wakes the waiter. Must be called once.
  void Finish() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_one();  // under mu_: see the header comment
  }

  // Returns once Finish() was called (at once if it was). The caller may then destroy this.
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

  // For tests: the condition variable Finish() notifies.
  CondVar& condition_variable_for_testing() { return cv_; }

 private:
  std::mutex mu_;
  CondVar cv_;
  bool done_ = false;  // GUARDED_BY(mu_)
};

using Completion = BasicCompletion<std::condition_variable>;

}  // namespace tx
