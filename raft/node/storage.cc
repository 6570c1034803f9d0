#include "raft/node/storage.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "common/failpoint.h"
#include "raft/node/format.h"

namespace tx::raft {
namespace {

// Bytes read from the WAL per call during recovery: bounds the transient copy, not the total
// (the core holds the log after the snapshot in memory anyway).
constexpr uint64_t kRecoveryReadBytes = 64 << 20;

}  // namespace

std::string Storage::HardStatePath(const std::string& dir) { return JoinPath(dir, "hardstate"); }
std::string Storage::SnapshotPath(const std::string& dir) { return JoinPath(dir, "snapshot"); }
std::string Storage::WalDir(const std::string& dir) { return JoinPath(dir, "wal"); }

Storage::Storage(const StorageOptions& options, std::unique_ptr<wal::Wal> wal)
    : options_(options), wal_(std::move(wal)) {}

Storage::~Storage() = default;

StatusOr<std::unique_ptr<Storage>> Storage::Open(const StorageOptions& options,
                                                 InitialState* recovered) {
  FileSystem* fs = options.fs;
  TX_RETURN_IF_ERROR(fs->CreateDirIfMissing(options.dir));
  *recovered = InitialState{};

  const std::string hs_path = HardStatePath(options.dir);
  StatusOr<std::string> hs_bytes = ReadFileToString(fs, hs_path);
  if (hs_bytes.ok()) {
    StatusOr<HardState> hs = node_format::DecodeHardState(*hs_bytes);
    if (!hs.ok()) return hs.status().Annotate(hs_path);
    recovered->hard_state = *hs;
  } else if (!hs_bytes.status().IsNotFound()) {
    return hs_bytes.status();
  }

  const std::string snap_path = SnapshotPath(options.dir);
  StatusOr<std::string> snap_bytes = ReadFileToString(fs, snap_path);
  if (snap_bytes.ok()) {
    StatusOr<node_format::SnapshotFile> snap = node_format::DecodeSnapshotFile(*snap_bytes);
    if (!snap.ok()) return snap.status().Annotate(snap_path);
    recovered->snapshot = snap->metadata;
    recovered->snapshot_data = std::make_shared<const std::string>(std::move(snap->data));
  } else if (!snap_bytes.status().IsNotFound()) {
    return snap_bytes.status();
  }

  wal::Options wal_options;
  wal_options.fs = fs;
  wal_options.segment_bytes = options.wal_segment_bytes;
  TX_ASSIGN_OR_RETURN(std::unique_ptr<wal::Wal> wal,
                      wal::Wal::Open(WalDir(options.dir), wal_options));

  const uint64_t snap_index = recovered->snapshot.index;
  if (snap_index > 0) {
    const uint64_t first = wal->first_index();
    const uint64_t last = wal->last_index();
    if (first <= snap_index && snap_index <= last) {
      TX_ASSIGN_OR_RETURN(std::vector<wal::Record> at, wal->Read(snap_index, snap_index + 1));
      TX_ASSIGN_OR_RETURN(Entry e,
                          node_format::DecodeEntryRecord(snap_index, at[0].type, at[0].payload));
      if (e.term != recovered->snapshot.term) {
        // A crash came between storing a snapshot received from the leader and discarding the
        // log it replaces: the WAL holds that older log. Entry snap_index goes too, or the
        // mismatch would be found again at the next start, after new entries were appended.
        spdlog::warn(
            "raft storage {}: WAL entry {} has term {} but the snapshot there has term {}; "
            "dropping WAL entries {}..{} that the snapshot replaced",
            options.dir, snap_index, e.term, recovered->snapshot.term, snap_index, last);
        TX_RETURN_IF_ERROR(wal->TruncateSuffix(snap_index));
      }
    } else if (first > snap_index + 1) {
      return Status::Corruption(
          fmt::format("{}: WAL starts at entry {} but the snapshot ends at entry {}: entries "
                      "{}..{} are missing",
                      options.dir, first, snap_index, snap_index + 1, first - 1));
    }
    // Entries up to the snapshot are covered by it (and a WAL wholly below it is emptied).
    TX_RETURN_IF_ERROR(wal->DropPrefix(snap_index + 1));
  } else if (wal->first_index() != 1) {
    return Status::Corruption(
        fmt::format("{}: WAL starts at entry {} but there is no snapshot file", options.dir,
                    wal->first_index()));
  }

  for (uint64_t lo = wal->first_index(), end = wal->last_index() + 1; lo < end;) {
    TX_ASSIGN_OR_RETURN(std::vector<wal::Record> records, wal->Read(lo, end, kRecoveryReadBytes));
    for (wal::Record& r : records) {
      TX_ASSIGN_OR_RETURN(Entry e, node_format::DecodeEntryRecord(r.index, r.type, r.payload));
      recovered->entries.push_back(std::move(e));
    }
    lo += records.size();
  }

  auto storage = std::unique_ptr<Storage>(new Storage(options, std::move(wal)));
  storage->disk_hard_state_ = recovered->hard_state;
  storage->snapshot_index_ = snap_index;
  spdlog::info(
      "raft storage {}: recovered term {} vote {} commit {}, snapshot at {}, {} entries "
      "after it",
      options.dir, recovered->hard_state.term, recovered->hard_state.vote,
      recovered->hard_state.commit, snap_index, recovered->entries.size());
  return storage;
}

Status Storage::WriteSnapshotLocked(const SnapshotMetadata& metadata, const std::string& data) {
  TX_RETURN_IF_ERROR(WriteFileAtomically(options_.fs, SnapshotPath(options_.dir),
                                         node_format::EncodeSnapshotFile(metadata, data)));
  snapshot_index_ = metadata.index;
  return Status::OK();
}

Status Storage::Persist(const Ready& rd) {
  if (rd.snapshot.has_value()) {
    const SnapshotMetadata& meta = rd.snapshot->metadata;
    std::lock_guard lock(snapshot_mu_);
    TX_CHECK(meta.index > snapshot_index_,
             "received snapshot at {} is not newer than the stored {}", meta.index,
             snapshot_index_);
    TX_RETURN_IF_ERROR(WriteSnapshotLocked(meta, *rd.snapshot->data));
    TX_FAILPOINT("raft.storage.after_snapshot_file");
    // The snapshot replaces the whole log: empty the WAL, then let it continue after the
    // snapshot index.
    if (wal_->last_index() >= wal_->first_index()) {
      TX_RETURN_IF_ERROR(wal_->TruncateSuffix(wal_->first_index()));
    }
    TX_RETURN_IF_ERROR(wal_->DropPrefix(meta.index + 1));
    TX_CHECK(wal_->last_index() + 1 == meta.index + 1,
             "WAL continues at {} after the snapshot at {}", wal_->last_index() + 1, meta.index);
  }
  if (rd.truncate_from != 0) {
    TX_CHECK(rd.truncate_from > snapshot_index() && rd.truncate_from <= wal_->last_index() + 1,
             "truncate_from {} outside the WAL's ({}, {}]", rd.truncate_from, snapshot_index(),
             wal_->last_index() + 1);
    TX_RETURN_IF_ERROR(wal_->TruncateSuffix(rd.truncate_from));
  }
  if (!rd.entries.empty()) {
    TX_CHECK(rd.entries.front().index == wal_->last_index() + 1,
             "entries start at {} but the WAL ends at {}", rd.entries.front().index,
             wal_->last_index());
    std::vector<std::string> payloads;
    payloads.reserve(rd.entries.size());
    std::vector<wal::RecordView> views;
    views.reserve(rd.entries.size());
    for (const Entry& e : rd.entries) {
      payloads.push_back(node_format::EncodeEntryRecord(e));
      views.push_back(wal::RecordView{node_format::kEntryRecordType, payloads.back()});
    }
    auto start = std::chrono::steady_clock::now();
    TX_ASSIGN_OR_RETURN(uint64_t last, wal_->Append(views));
    TX_CHECK(last == rd.entries.back().index, "WAL gave entry {} index {}", rd.entries.back().index,
             last);
    TX_FAILPOINT_RETURN_IF_ERROR("raft.storage.before_sync");
    TX_RETURN_IF_ERROR(wal_->Sync());
    if (options_.fsync_seconds != nullptr) {
      options_.fsync_seconds->ObserveDuration(std::chrono::steady_clock::now() - start);
    }
  }
  if (rd.hard_state.has_value() && (rd.hard_state->term != disk_hard_state_.term ||
                                    rd.hard_state->vote != disk_hard_state_.vote)) {
    HardState hs = *rd.hard_state;
    // Only entries already durable may be claimed committed on disk (see the file comment).
    hs.commit = std::min(hs.commit, wal_->durable_index());
    TX_RETURN_IF_ERROR(WriteFileAtomically(options_.fs, HardStatePath(options_.dir),
                                           node_format::EncodeHardState(hs)));
    disk_hard_state_ = hs;
  }
  return Status::OK();
}

Status Storage::SaveSnapshot(const SnapshotMetadata& metadata, const std::string& data) {
  std::lock_guard lock(snapshot_mu_);
  if (metadata.index <= snapshot_index_) return Status::OK();
  TX_CHECK(metadata.index <= wal_->durable_index(),
           "snapshot at {} covers entries beyond the durable WAL index {}", metadata.index,
           wal_->durable_index());
  TX_RETURN_IF_ERROR(WriteSnapshotLocked(metadata, data));
  TX_FAILPOINT("raft.storage.after_local_snapshot_file");
  return wal_->DropPrefix(metadata.index + 1);
}

uint64_t Storage::snapshot_index() const {
  std::lock_guard lock(snapshot_mu_);
  return snapshot_index_;
}

}  // namespace tx::raft
