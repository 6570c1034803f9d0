#include "raft/core/raft_log.h"

#include <algorithm>

#include "common/check.h"

namespace tx::raft {

RaftLog::RaftLog(Index snapshot_index, Term snapshot_term, std::vector<Entry> entries, Index commit)
    : snapshot_index_(snapshot_index),
      snapshot_term_(snapshot_term),
      entries_(std::make_move_iterator(entries.begin()), std::make_move_iterator(entries.end())),
      commit_(commit),
      stable_index_(last_index()),
      handed_index_(last_index()) {
  Term prev = snapshot_term_;
  for (size_t i = 0; i < entries_.size(); ++i) {
    TX_CHECK(entries_[i].index == snapshot_index_ + 1 + i, "log entry {} has index {}, expected {}",
             i, entries_[i].index, snapshot_index_ + 1 + i);
    TX_CHECK(entries_[i].term >= prev, "log term goes backwards at index {}: {} after {}",
             entries_[i].index, entries_[i].term, prev);
    prev = entries_[i].term;
  }
  TX_CHECK(commit_ >= snapshot_index_ && commit_ <= last_index(),
           "commit {} outside [snapshot {}, last {}]", commit_, snapshot_index_, last_index());
}

std::optional<Term> RaftLog::TermAt(Index index) const {
  if (index == snapshot_index_) return snapshot_term_;
  if (index < snapshot_index_ || index > last_index()) return std::nullopt;
  return entries_[index - snapshot_index_ - 1].term;
}

const Entry& RaftLog::At(Index index) const {
  TX_CHECK(index > snapshot_index_ && index <= last_index(),
           "log entry {} requested outside [{}, {}]", index, first_index(), last_index());
  return entries_[index - snapshot_index_ - 1];
}

std::vector<Entry> RaftLog::Slice(Index lo, Index hi, uint64_t max_bytes) const {
  TX_CHECK(lo >= first_index() && hi <= last_index() + 1 && lo <= hi,
           "slice [{}, {}) outside log [{}, {}]", lo, hi, first_index(), last_index() + 1);
  std::vector<Entry> out;
  uint64_t bytes = 0;
  for (Index i = lo; i < hi; ++i) {
    const Entry& e = At(i);
    bytes += EntryBytes(e);
    if (!out.empty() && bytes > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

Index RaftLog::FindConflict(const std::vector<Entry>& entries) const {
  for (const Entry& e : entries) {
    if (e.index <= snapshot_index_) continue;
    if (!MatchTerm(e.index, e.term)) return e.index;
  }
  return 0;
}

std::pair<Index, Term> RaftLog::FindConflictByTerm(Index index, Term term) const {
  index = std::min(index, last_index());
  for (;;) {
    std::optional<Term> t = TermAt(index);
    if (!t.has_value()) return {index, 0};
    if (*t <= term) return {index, *t};
    if (index == 0) return {0, 0};
    --index;
  }
}

void RaftLog::TruncateAndAppend(std::vector<Entry> entries) {
  if (entries.empty()) return;
  Index from = entries.front().index;
  TX_CHECK(from > snapshot_index_ && from <= last_index() + 1,
           "append at {} leaves a gap or rewrites the snapshot (log [{}, {}])", from, first_index(),
           last_index());
  if (from <= last_index()) {
    TX_CHECK(from > commit_,
             "entry ({}, term {}) conflicts with committed entry (term {}); commit index {}", from,
             entries.front().term, *TermAt(from), commit_);
    entries_.resize(from - snapshot_index_ - 1);
    if (from <= handed_index_) {
      truncated_from_ = truncated_from_ == 0 ? from : std::min(truncated_from_, from);
      handed_index_ = from - 1;
    }
    stable_index_ = std::min(stable_index_, from - 1);
  }
  for (Entry& e : entries) Append(std::move(e));
}

void RaftLog::Append(Entry entry) {
  TX_CHECK(entry.index == last_index() + 1, "append of index {} after last index {}", entry.index,
           last_index());
  TX_CHECK(entry.term >= last_term(), "append of term {} after term {} at index {}", entry.term,
           last_term(), entry.index);
  entries_.push_back(std::move(entry));
}

void RaftLog::CommitTo(Index index) {
  if (index <= commit_) return;
  TX_CHECK(index <= last_index(),
           "commit index {} beyond last index {}: the log lost acknowledged entries", index,
           last_index());
  commit_ = index;
}

void RaftLog::CompactTo(Index index) {
  if (index <= snapshot_index_) return;
  TX_CHECK(index <= stable_index_ && index <= commit_,
           "compaction to {} beyond stable index {} or commit {}", index, stable_index_, commit_);
  Term term = *TermAt(index);
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<long>(index - snapshot_index_));
  snapshot_index_ = index;
  snapshot_term_ = term;
}

void RaftLog::RestoreSnapshot(Index index, Term term) {
  TX_CHECK(index > commit_, "snapshot at {} would move commit index {} backwards", index, commit_);
  entries_.clear();
  snapshot_index_ = index;
  snapshot_term_ = term;
  commit_ = index;
  stable_index_ = index;
  handed_index_ = index;
  truncated_from_ = 0;
}

std::vector<Entry> RaftLog::TakeUnhanded(Index* truncate_from) {
  *truncate_from = truncated_from_;
  truncated_from_ = 0;
  std::vector<Entry> out;
  if (handed_index_ < last_index()) {
    out.reserve(last_index() - handed_index_);
    for (Index i = handed_index_ + 1; i <= last_index(); ++i) out.push_back(At(i));
  }
  handed_index_ = last_index();
  return out;
}

void RaftLog::StableTo(Index index, Term term) {
  if (index <= stable_index_ || index > handed_index_) return;
  if (!MatchTerm(index, term)) return;
  stable_index_ = index;
}

}  // namespace tx::raft
