// Durable state of one replica: the log in a WAL, the hard state and the latest snapshot in
// files replaced atomically. Implements step 2 of the core's Ready contract (raft/core/raft.h)
// and recovery.
//
// Layout of the data directory:
//   wal/        wal::Wal segments; record i is log entry i (node_format::EncodeEntryRecord)
//   hardstate   term, vote, commit (node_format::EncodeHardState)
//   snapshot    the latest snapshot: metadata + envelope (node_format::EncodeSnapshotFile)
//
// Persist(ready) writes, in the contract's order: the snapshot (then discards the whole log),
// the truncation, the entries (one WAL append, one fdatasync), then the hard state. The hard
// state file is rewritten only when the term or the vote changed: those must be durable before
// a vote or a message of the new term leaves. The commit index it also records is only a hint
// for restart (Figure 2 lists commitIndex as volatile), so a change of commit alone writes
// nothing; the recorded commit never exceeds the entries already durable in the WAL, so
// recovery never finds it beyond the log. The hard state is written after the WAL is synced:
// a crash in between leaves entries of a term newer than the recorded term, which the core
// adopts at Create (no vote of that term was ever sent).
//
// Recovery (Open) returns what the core needs for Create: hard state, snapshot, and the entries
// after the snapshot. A crash between writing a received snapshot and discarding the old log
// is repaired here: if the WAL's entry at the snapshot index has another term, the entries after
// it belong to a log the snapshot replaced and are truncated. Damaged files are Corruption with
// the file named; nothing is silently dropped except what the crash rules above allow.
//
// Thread-safety: Persist() is called by one thread at a time (whoever runs the node's Ready:
// the Ready loop, or a follower's RPC handler; see RunReadyLocked in node.cc); SaveSnapshot()
// (the apply thread) may run concurrently with it. Snapshot writes serialize on snapshot_mu_
// and never replace a snapshot with an older one.

#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/file_system.h"
#include "common/metrics.h"
#include "common/status.h"
#include "raft/core/raft.h"
#include "wal/wal.h"

namespace tx::raft {

struct StorageOptions {
  std::string dir;
  FileSystem* fs = FileSystem::Default();  // not owned
  uint64_t wal_segment_bytes = 64 << 20;
  // Observes the duration of each WAL append + fdatasync of a Ready; may be null.
  Histogram* fsync_seconds = nullptr;
};

class Storage {
 public:
  // Opens (creating if missing) and recovers. `recovered` receives the state for Raft::Create.
  static StatusOr<std::unique_ptr<Storage>> Open(const StorageOptions& options,
                                                 InitialState* recovered);

  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // Makes the persistent part of `rd` durable (see the file comment). On error the state on
  // disk is what a crash at that point would leave, and the node must stop using this Storage.
  Status Persist(const Ready& rd);

  // Stores a snapshot the local state machine produced (after Raft::OnSnapshotCreated) and
  // drops the WAL records it covers. A snapshot not newer than the stored one is ignored.
  Status SaveSnapshot(const SnapshotMetadata& metadata, const std::string& data);

  uint64_t snapshot_index() const;
  uint64_t wal_first_index() const { return wal_->first_index(); }
  uint64_t wal_last_index() const { return wal_->last_index(); }
  size_t wal_segment_count() const { return wal_->segment_count(); }

  static std::string HardStatePath(const std::string& dir);
  static std::string SnapshotPath(const std::string& dir);
  static std::string WalDir(const std::string& dir);

 private:
  Storage(const StorageOptions& options, std::unique_ptr<wal::Wal> wal);
  Status WriteSnapshotLocked(const SnapshotMetadata& metadata, const std::string& data);

  // Constant after Open.
  const StorageOptions options_;
  const std::unique_ptr<wal::Wal> wal_;

  // Touched only by Persist (one caller at a time): the term and vote in the hard state file.
  HardState disk_hard_state_;

  mutable std::mutex snapshot_mu_;
  uint64_t snapshot_index_ = 0;  // GUARDED_BY(snapshot_mu_): index of the snapshot file
};

}  // namespace tx::raft
