// First-committer-wins bookkeeping: for each row recently committed, the commit sequence
// number of its last commit.
//
// A transaction records the sequence number visible when it began (start_seq). When it
// locks a row for writing, the row must not have been committed after start_seq; if it was,
// another transaction committed first, and this one must abort (or, if it has not yet shown
// the client anything, restart from a fresh start_seq).
//
// Memory is bounded two ways: entries no live transaction can ask about (seq <= the oldest
// start_seq of a live transaction) are pruned exactly; and beyond max_entries the oldest are
// dropped, raising a floor: a row not found is then assumed committed at the floor, which
// aborts only transactions older than the floor (safe, never a lost update).
//
// Thread-safe.

#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "participant/lock_manager.h"

namespace tx::participant {

class CommitVersions {
 public:
  // ~100 bytes per entry: ~100 MB at the default bound, and at 3,000 commits/s of one row
  // each it covers about five minutes of history, beyond any sane idle timeout.
  static constexpr size_t kDefaultMaxEntries = 1000000;

  explicit CommitVersions(size_t max_entries = kDefaultMaxEntries) : max_entries_(max_entries) {}

  // Records that rows (lock keys starting with 'R') in `keys` were committed at `seq`.
  // Sequence numbers must not decrease between calls.
  void Publish(const std::vector<LockRequest>& keys, uint64_t seq);

  // The first exclusive row lock in `locks` whose row was (or may have been) committed after
  // `since`, if any.
  std::optional<std::string> FindNewer(const std::vector<LockRequest>& locks, uint64_t since) const;

  // Forgets entries with seq <= watermark: no live transaction started before it.
  void Prune(uint64_t watermark);

  size_t size() const;

 private:
  const size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> latest_;    // GUARDED_BY(mu_)
  std::deque<std::pair<uint64_t, std::string>> order_;  // GUARDED_BY(mu_), by seq
  uint64_t floor_ = 0;                                  // GUARDED_BY(mu_)
  uint64_t last_seq_ = 0;                               // GUARDED_BY(mu_)
};

}  // namespace tx::participant
