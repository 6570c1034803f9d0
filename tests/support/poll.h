// PollUntil: how a test waits for what other threads or processes do. It checks a condition
// until it holds or a deadline passes, instead of sleeping a fixed time and hoping: the test is
// as fast as the system and fails (rather than hangs) when the condition never comes.

#pragma once

#include <chrono>
#include <thread>

namespace tx::testing {

// Checks `condition` every `interval` until it returns true (then true) or `timeout` has passed
// (then one last check's result). `condition` runs on the calling thread.
template <typename Condition>
bool PollUntil(Condition condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds interval = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(interval);
  }
  return condition();
}

}  // namespace tx::testing
