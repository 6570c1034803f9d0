#include "raft/core/progress.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/check.h"

namespace tx::raft {

void Inflights::Add(Index last_index, uint64_t bytes) {
  TX_CHECK(count() == 0 || msgs_.back().last_index < last_index,
           "in-flight append to {} not after previous {}", last_index, msgs_.back().last_index);
  msgs_.push_back({last_index, bytes});
  bytes_ += bytes;
}

void Inflights::FreeLE(Index index) {
  while (head_ < msgs_.size() && msgs_[head_].last_index <= index) {
    bytes_ -= msgs_[head_].bytes;
    ++head_;
  }
  // Amortized O(1): compact once the freed prefix dominates.
  if (head_ == msgs_.size()) {
    msgs_.clear();
    head_ = 0;
  } else if (head_ > 64 && head_ * 2 > msgs_.size()) {
    msgs_.erase(msgs_.begin(), msgs_.begin() + static_cast<long>(head_));
    head_ = 0;
  }
}

void Inflights::FreeFirstOne() {
  if (count() > 0) FreeLE(msgs_[head_].last_index);
}

void Inflights::Reset() {
  msgs_.clear();
  head_ = 0;
  bytes_ = 0;
}

bool Progress::IsPaused() const {
  switch (state) {
    case State::kProbe:
      return probe_sent;
    case State::kReplicate:
      return inflights.Full();
    case State::kSnapshot:
      return true;
  }
  return true;
}

void Progress::BecomeProbe() {
  if (state == State::kSnapshot) {
    next_index = std::max(match_index + 1, snapshot.index + 1);
  } else {
    next_index = match_index + 1;
  }
  state = State::kProbe;
  probe_sent = false;
  inflights.Reset();
  snapshot_data.reset();
}

void Progress::BecomeReplicate() {
  next_index = match_index + 1;
  state = State::kReplicate;
  probe_sent = false;
  inflights.Reset();
  snapshot_data.reset();
}

void Progress::BecomeSnapshot(const SnapshotMetadata& meta,
                              std::shared_ptr<const std::string> data) {
  state = State::kSnapshot;
  probe_sent = false;
  inflights.Reset();
  snapshot = meta;
  snapshot_data = std::move(data);
  snapshot_sent_offset = 0;
  snapshot_acked_offset = 0;
  snapshot_final_sent = false;
  snapshot_recover_offset = 0;
  snapshot_reported_offset = 0;
  snapshot_acked_since_heartbeat = true;
}

bool Progress::MaybeUpdate(Index index) {
  bool updated = false;
  if (match_index < index) {
    match_index = index;
    updated = true;
    probe_sent = false;
  }
  next_index = std::max(next_index, index + 1);
  return updated;
}

bool Progress::MaybeDecrTo(Index rejected, Index match_hint) {
  if (state == State::kReplicate) {
    // A rejection of something already matched is stale (reordered or duplicated).
    if (rejected <= match_index) return false;
    next_index = match_index + 1;
    return true;
  }
  // In probe state only the answer to the outstanding probe counts.
  if (next_index == 0 || next_index - 1 != rejected) return false;
  next_index = std::max(std::min(rejected, match_hint + 1), match_index + 1);
  probe_sent = false;
  return true;
}

void Progress::OnAppendSent(Index last_index, uint64_t bytes) {
  switch (state) {
    case State::kReplicate:
      if (last_index != 0) {
        next_index = last_index + 1;
        inflights.Add(last_index, bytes);
      }
      break;
    case State::kProbe:
      probe_sent = true;
      break;
    case State::kSnapshot:
      TX_CHECK(false, "append sent to a follower in snapshot state");
  }
}

std::string_view ProgressStateName(Progress::State state) {
  switch (state) {
    case Progress::State::kProbe:
      return "probe";
    case Progress::State::kReplicate:
      return "replicate";
    case Progress::State::kSnapshot:
      return "snapshot";
  }
  return "?";
}

std::string Progress::ToString() const {
  return fmt::format("{} match={} next={} inflight={}/{}B{}{}", ProgressStateName(state),
                     match_index, next_index, inflights.count(), inflights.bytes(),
                     is_learner ? " learner" : "", probe_sent ? " paused" : "");
}

}  // namespace tx::raft
