// The in-memory Raft log of one replica: a snapshot base plus the entries after it, the commit
// index, and the bookkeeping that tells the core which entries the runtime has been handed for
// persistence and which it has acknowledged as durable.
//
// Internal to raft/core (included only by the core and its tests).
//
// Indices: entries cover the half-open range [first_index(), last_index() + 1); the entry at
// snapshot_index() is represented only by its term. Invariants, checked with TX_CHECK:
//   snapshot_index() <= commit() <= last_index()
//   snapshot_index() <= stable_index() <= handed_index() <= last_index()
//   terms never decrease along the log
// Not thread-safe; owned by one Raft object.

#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "raft/core/message.h"

namespace tx::raft {

// Bytes an entry counts for in message, in-flight and uncommitted budgets: its payload plus a
// fixed allowance for the index, term and framing, so that empty entries are not free.
inline constexpr uint64_t kEntryOverheadBytes = 32;
inline uint64_t EntryBytes(const Entry& e) { return e.data.size() + kEntryOverheadBytes; }

class RaftLog {
 public:
  // `entries` must directly follow (snapshot_index, snapshot_term).
  RaftLog(Index snapshot_index, Term snapshot_term, std::vector<Entry> entries, Index commit);

  Index snapshot_index() const { return snapshot_index_; }
  Term snapshot_term() const { return snapshot_term_; }
  Index first_index() const { return snapshot_index_ + 1; }
  Index last_index() const { return snapshot_index_ + entries_.size(); }
  Term last_term() const { return entries_.empty() ? snapshot_term_ : entries_.back().term; }
  Index commit() const { return commit_; }

  // Term of the entry at `index`, or nullopt if it is compacted (below the snapshot) or beyond
  // the end of the log.
  std::optional<Term> TermAt(Index index) const;
  bool MatchTerm(Index index, Term term) const {
    std::optional<Term> t = TermAt(index);
    return t.has_value() && *t == term;
  }
  // §5.4.1: is a log ending at (last_index, last_term) at least as up-to-date as ours?
  bool IsUpToDate(Index index, Term term) const {
    return term > last_term() || (term == last_term() && index >= last_index());
  }

  // Entry at `index`; `index` must lie in [first_index(), last_index()].
  const Entry& At(Index index) const;

  // Copies of the entries in [lo, hi), stopping before the total EntryBytes would exceed
  // max_bytes, but always at least one entry when lo < hi. lo must be >= first_index().
  std::vector<Entry> Slice(Index lo, Index hi, uint64_t max_bytes) const;

  // Index of the first entry of `entries` whose term differs from ours at that index or that
  // lies beyond our last index; 0 if every entry is already present. Entries at or below the
  // snapshot are treated as present (they are committed).
  Index FindConflict(const std::vector<Entry>& entries) const;

  // Largest index <= `index` whose term is <= `term`, with that term: where the logs may match
  // when a leader's probe at `index` with prev term `term` was rejected. Returns (index, 0)
  // when the answer lies in the compacted prefix.
  std::pair<Index, Term> FindConflictByTerm(Index index, Term term) const;

  // Appends `entries` (contiguous, entries[0].index in [first_index(), last_index() + 1]),
  // first discarding our entries at and after entries[0].index. Discarding a committed entry is
  // a broken invariant (TX_CHECK).
  void TruncateAndAppend(std::vector<Entry> entries);
  void Append(Entry entry);

  // Raises the commit index; lowering it is a no-op (stale information), raising it past the
  // last index is a broken invariant.
  void CommitTo(Index index);

  // Drops entries up to and including `index` (which must be <= the stable index) after the
  // state machine snapshotted them.
  void CompactTo(Index index);

  // Replaces the whole log with a snapshot base (InstallSnapshot): commit = index, and nothing
  // after the base is handed or stable. (Whether the base itself is durable is the core's
  // business: it hands the snapshot to the runtime separately.)
  void RestoreSnapshot(Index index, Term term);

  // --- persistence bookkeeping ------------------------------------------------------------
  // Entries in (stable_index, last_index] are not yet acknowledged durable; those in
  // (handed_index, last_index] have not been handed to the runtime yet.
  Index stable_index() const { return stable_index_; }
  Index handed_index() const { return handed_index_; }
  // Lowest index at which entries already handed to the runtime were replaced; 0 if none
  // since the last TakeUnhanded.
  Index truncated_from() const { return truncated_from_; }
  bool HasUnhanded() const { return handed_index_ < last_index() || truncated_from_ != 0; }
  // Entries to hand to the runtime now, with the first index it must overwrite (0 = none);
  // marks them handed.
  std::vector<Entry> TakeUnhanded(Index* truncate_from);
  // The runtime made entries up to (index, term) durable. Ignored if that entry has since been
  // replaced (the log no longer holds `term` at `index`).
  void StableTo(Index index, Term term);

 private:
  Index snapshot_index_;
  Term snapshot_term_;
  std::deque<Entry> entries_;  // entries_[i].index == snapshot_index_ + 1 + i
  Index commit_;
  Index stable_index_;
  Index handed_index_;
  Index truncated_from_ = 0;
};

}  // namespace tx::raft
