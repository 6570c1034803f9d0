// Per-row (and per-key) locks of participant transactions.
//
// A lock is named by an opaque byte string (participant/lock_keys.h builds them from a table,
// an index and key values) and held in shared (S) or exclusive (X) mode by transactions, until
// the transaction releases all of its locks at once (strict two-phase locking). Requests are
// granted in FIFO order per key, so a waiting writer is not starved by a stream of readers; a
// holder of S that asks for X (an upgrade) goes first when it is the only holder.
//
// Waits are bounded: Acquire gives up at its deadline (TimedOut). Before blocking, Acquire
// looks for a cycle in the wait-for graph (waiter -> holders of the key it waits for) and, if
// the new wait would close one, fails at once (Aborted, "deadlock"), making the requester the
// victim. Cycles that run through queue order rather than holders are not seen; the deadline
// breaks those.
//
// Thread-safe. A transaction may block in at most one Acquire at a time (callers serialize
// calls per transaction).

#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "participant/participant.h"

namespace tx::participant {

enum class LockMode : uint8_t { kShared = 1, kExclusive = 2 };

struct LockRequest {
  std::string key;
  LockMode mode = LockMode::kExclusive;
  friend bool operator==(const LockRequest&, const LockRequest&) = default;
};

class LockManager {
 public:
  struct Limits {
    // Bounds one transaction's lock memory (each lock costs ~100 bytes).
    size_t max_locks_per_txn = 200000;
    // Bounds the whole table: ~1 KB of memory per 10 locks, so ~100 MB at this bound.
    size_t max_total_locks = 1000000;
  };

  LockManager(Clock* clock, Limits limits);
  explicit LockManager(Clock* clock) : LockManager(clock, Limits{}) {}
  ~LockManager();
  LockManager(const LockManager&) = delete;
  LockManager& operator=(const LockManager&) = delete;

  // Grants at once if possible; otherwise returns false and, if blocker is non-null, sets it
  // to one transaction that stands in the way. Fails (ResourceExhausted) on a bound.
  StatusOr<bool> TryAcquire(TxId txn, const std::string& key, LockMode mode,
                            TxId* blocker = nullptr);

  // Blocks until granted (OK), `deadline` passes (TimedOut), the wait would deadlock
  // (Aborted), Cancel(txn) is called (Cancelled), or a bound is hit (ResourceExhausted).
  // On failure the transaction holds what it held before the call.
  Status Acquire(TxId txn, const std::string& key, LockMode mode, Clock::TimePoint deadline);

  // Makes the pending and every later Acquire of `txn` return Cancelled, until ReleaseAll.
  // Used to abort a transaction that is waiting.
  void Cancel(TxId txn);

  // Releases every lock of `txn` and forgets it; waiters that can now proceed are woken.
  void ReleaseAll(TxId txn);

  // True if `txn` holds `key` in `mode` or a stronger one.
  bool Holds(TxId txn, const std::string& key, LockMode mode) const;
  size_t HeldCount(TxId txn) const;
  // Every lock `txn` holds, sorted by key.
  std::vector<LockRequest> HeldLocks(TxId txn) const;
  size_t TotalLocks() const;
  // Transactions currently blocked in Acquire (for tests and metrics).
  size_t WaitingCount() const;

 private:
  struct Waiting;
  struct Entry {
    std::vector<std::pair<TxId, LockMode>> holders;
    std::deque<Waiting*> queue;
  };
  struct TxnState {
    std::unordered_set<std::string> held;
    Waiting* waiting = nullptr;  // the request it is blocked on, if any
    bool cancelled = false;
  };

  // All private helpers require mu_ held.
  static bool Compatible(const Entry& e, TxId txn, LockMode mode);
  static LockMode HeldMode(const Entry& e, TxId txn);  // 0 if not held
  void Grant(Entry& e, const std::string& key, TxId txn, LockMode mode);
  void GrantWaiters(Entry& e, const std::string& key);
  bool WouldDeadlock(TxId txn, const Entry& e, LockMode mode) const;
  Status CheckLimits(TxId txn) const;

  Clock* const clock_;
  const Limits limits_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> table_;  // GUARDED_BY(mu_)
  std::unordered_map<TxId, TxnState> txns_;       // GUARDED_BY(mu_)
  size_t total_locks_ = 0;                        // GUARDED_BY(mu_)
  size_t waiting_ = 0;                            // GUARDED_BY(mu_)
};

}  // namespace tx::participant
