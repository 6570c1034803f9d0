// Completion (common/completion.h): the waiter may destroy it as soon as Wait() returns, so
// Finish() must be done with it by then.

#include "common/completion.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <thread>

namespace tx {
namespace {

using namespace std::chrono_literals;

// A condition variable whose notify_one() first gives the waiter a chance to return (up to
// `window`), and records whether it did. If the waiter can return while the notify is still to
// come, it could free the object under the notify: the bug of finding 3.
class ObservedCondVar {
 public:
  void notify_one() {
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (!waiter_returned->load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    waiter_returned_before_notify = waiter_returned->load();
    cv_.notify_one();
  }
  template <typename Predicate>
  void wait(std::unique_lock<std::mutex>& lock, Predicate done) {
    cv_.wait(lock, done);
  }

  std::chrono::milliseconds window{300};
  std::atomic<bool>* waiter_returned = nullptr;
  bool waiter_returned_before_notify = false;

 private:
  std::condition_variable cv_;
};

// Regression test for finding 3 (docs/reliability.md): the participant's writer marked a job
// done, unlocked, and only then notified; the submitter could see `done`, return and destroy the
// job (on its stack) first, and the writer thread hung in the notify on freed memory.
TEST(Completion, WaiterCannotReturnBeforeFinishIsDoneWithIt) {
  BasicCompletion<ObservedCondVar> completion;
  std::atomic<bool> returned{false};
  completion.condition_variable_for_testing().waiter_returned = &returned;
  std::thread finisher([&] { completion.Finish(); });
  completion.Wait();
  returned.store(true);
  finisher.join();
  EXPECT_FALSE(completion.condition_variable_for_testing().waiter_returned_before_notify)
      << "Wait() returned while Finish() still had the condition variable to notify";
}

TEST(Completion, WaitReturnsAtOnceWhenAlreadyFinished) {
  Completion completion;
  completion.Finish();
  completion.Wait();
}

// Many handshakes, each Completion freed the moment Wait() returns (as a job on a submitter's
// stack is): under the sanitizers a notify on freed memory is reported.
TEST(Completion, WaiterMayFreeItAsSoonAsWaitReturns) {
  for (int i = 0; i < 500; ++i) {
    auto completion = std::make_unique<Completion>();
    std::thread finisher([c = completion.get()] { c->Finish(); });
    completion->Wait();
    completion.reset();
    finisher.join();
  }
}

}  // namespace
}  // namespace tx
