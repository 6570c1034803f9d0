// The leader's view of one follower's replication: how far its log is known to match
// (match_index), what to send next (next_index), and the flow-control state that decides
// whether more may be sent now.
//
// Internal to raft/core. Not thread-safe; owned by the leader's Raft object.
//
// States (as in etcd raft):
//   kProbe      next_index is a guess; at most one Append is outstanding (probe_sent) until the
//               follower answers or a heartbeat response arrives. Entered on election, after a
//               rejection, and after a snapshot.
//   kReplicate  the follower matched; Appends are pipelined optimistically, next_index moves
//               ahead of match_index, bounded by Inflights (message count and bytes).
//   kSnapshot   the entries the follower needs are compacted; snapshot chunks are streamed,
//               bounded by max_inflight_bytes of unacknowledged chunk data.

#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "raft/core/message.h"

namespace tx::raft {

// Bounded window of Append messages sent to one follower and not yet acknowledged.
// Full() when either bound is reached; each message is identified by its last entry index.
class Inflights {
 public:
  Inflights(uint32_t max_msgs, uint64_t max_bytes) : max_msgs_(max_msgs), max_bytes_(max_bytes) {}

  bool Full() const { return msgs_.size() - head_ >= max_msgs_ || bytes_ >= max_bytes_; }
  size_t count() const { return msgs_.size() - head_; }
  uint64_t bytes() const { return bytes_; }

  // `last_index` must be larger than every index already in flight.
  void Add(Index last_index, uint64_t bytes);
  // Acknowledges every message whose last index is <= `index`.
  void FreeLE(Index index);
  // Frees the oldest message so a stalled window can make progress after a loss.
  void FreeFirstOne();
  void Reset();

 private:
  struct Sent {
    Index last_index;
    uint64_t bytes;
  };
  const uint32_t max_msgs_;
  const uint64_t max_bytes_;
  std::vector<Sent> msgs_;  // [head_, size) are in flight; compacted when head_ grows
  size_t head_ = 0;
  uint64_t bytes_ = 0;
};

struct Progress {
  enum class State : uint8_t { kProbe, kReplicate, kSnapshot };

  Progress(Index next, uint32_t max_inflight_msgs, uint64_t max_inflight_bytes)
      : next_index(next), inflights(max_inflight_msgs, max_inflight_bytes) {}

  Index match_index = 0;
  Index next_index = 1;
  State state = State::kProbe;
  bool is_learner = false;
  // kProbe: an Append is outstanding; send nothing more until an answer or heartbeat.
  bool probe_sent = false;
  // The leader's tick count when the follower last answered (check-quorum, §6.2).
  uint64_t last_heard_tick = 0;
  // Highest ReadIndex confirmation round the follower acknowledged in this term.
  uint64_t read_seq_acked = 0;
  Inflights inflights;

  // kSnapshot: the snapshot being streamed and how far.
  SnapshotMetadata snapshot;
  std::shared_ptr<const std::string> snapshot_data;
  uint64_t snapshot_sent_offset = 0;      // next byte to send
  uint64_t snapshot_acked_offset = 0;     // bytes the follower confirmed holding
  bool snapshot_final_sent = false;       // the chunk with snapshot_done went out
  uint64_t snapshot_reported_offset = 0;  // what the latest answer said the follower holds
  // After a retransmit, no fast retransmit until acknowledgements reach this offset.
  uint64_t snapshot_recover_offset = 0;
  bool snapshot_acked_since_heartbeat = false;  // progress since the last heartbeat answer

  // Can another Append be sent now?
  bool IsPaused() const;

  void BecomeProbe();
  void BecomeReplicate();
  void BecomeSnapshot(const SnapshotMetadata& meta, std::shared_ptr<const std::string> data);

  // Follower acknowledged entries up to `index`. Returns true if match_index grew.
  bool MaybeUpdate(Index index);
  // Follower rejected an Append whose prev index was `rejected`; `match_hint` is where the logs
  // may match. Returns false if the rejection is stale (answers an earlier probe).
  bool MaybeDecrTo(Index rejected, Index match_hint);
  // Records an Append covering entries up to `last_index` (0 if empty) with `bytes` of entries.
  void OnAppendSent(Index last_index, uint64_t bytes);

  std::string ToString() const;
};

std::string_view ProgressStateName(Progress::State state);

}  // namespace tx::raft
