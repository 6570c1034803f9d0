// Exponential back-off with jitter, for reconnecting and retrying.
//
// The n-th consecutive failure (n >= 1) waits a uniformly random time in [d/2, d], where
// d = min(max, initial * 2^(n-1)). Randomness spreads the reconnects of many clients after a
// server restart; keeping at least d/2 keeps the delay growing with every failure.
//
// Not thread-safe: one instance per connection target, guarded by its owner's lock.

#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace tx::rpc {

struct BackoffOptions {
  std::chrono::milliseconds initial{20};
  std::chrono::milliseconds max{1000};
  uint64_t seed = 0;  // 0: seeded from std::random_device
};

class Backoff {
 public:
  explicit Backoff(const BackoffOptions& options);

  // Records a failure and returns how long to wait before the next attempt.
  std::chrono::milliseconds NextDelay();

  // Records a success: the next failure starts again from `initial`.
  void Reset() { failures_ = 0; }

  // Consecutive failures since the last Reset().
  uint32_t failures() const { return failures_; }

 private:
  const BackoffOptions options_;
  uint32_t failures_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace tx::rpc
