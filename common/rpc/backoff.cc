#include "common/rpc/backoff.h"

#include <algorithm>

#include "common/check.h"

namespace tx::rpc {

Backoff::Backoff(const BackoffOptions& options)
    : options_(options), rng_(options.seed != 0 ? options.seed : std::random_device{}()) {
  TX_CHECK(options.initial.count() > 0 && options.max >= options.initial,
           "bad back-off: initial {} ms, max {} ms", options.initial.count(), options.max.count());
}

std::chrono::milliseconds Backoff::NextDelay() {
  if (failures_ < UINT32_MAX) ++failures_;
  // Doubling stops once max is reached, so it cannot overflow.
  int64_t ceiling = options_.initial.count();
  for (uint32_t i = 1; i < failures_ && ceiling < options_.max.count(); ++i) ceiling *= 2;
  ceiling = std::min<int64_t>(ceiling, options_.max.count());
  std::uniform_int_distribution<int64_t> jitter((ceiling + 1) / 2, ceiling);
  return std::chrono::milliseconds(jitter(rng_));
}

}  // namespace tx::rpc
