#include "wal/wal.h"

#include <fmt/format.h>
#include <linux/futex.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "common/failpoint.h"
#include "wal/log_format.h"
#include "wal/segment_scan.h"

namespace tx::wal {
namespace {

constexpr std::string_view kLockFileName = "LOCK";
constexpr std::string_view kTempSuffix = ".tmp";
// A segment must hold its header and at least one small record.
constexpr uint64_t kMinSegmentBytes = 4096;
// Appended bytes waiting for the next group-commit round. Past this, appenders wait for a
// round to write them out: bounds the memory a burst of appends can take.
constexpr uint64_t kMaxPendingBytes = 8ull << 20;
// Longest the sync thread holds a round back to gather appenders the previous round released
// (see SyncLoop). Bounds the latency the gathering can add.
constexpr std::chrono::microseconds kMaxGatherWindow{200};
// Zero-filling ahead of the appends (see SyncRoundLocked): a round that ends within
// kZeroFillAheadBytes of the filled space fills the next kZeroFillChunkBytes. One chunk's
// conversion costs one round a longer fdatasync; the next hundred or so rounds (64 records of
// 128 bytes are 9.5 KiB) then sync data only.
constexpr uint64_t kZeroFillChunkBytes = 1 << 20;
constexpr uint64_t kZeroFillAheadBytes = 256 << 10;

// Threads blocked in WaitDurable sleep on one shared futex word rather than each on its own
// condition variable, so that the sync thread releases a whole round of them with one system
// call instead of one wake-up (and one mutex hand-off) per waiter, while no fdatasync runs.
// Raw futexes rather than std::atomic::wait: libstdc++ spins with sched_yield before it sleeps,
// which took the CPU from the sync thread on two cores. Each waiter sleeps on one bit of the
// bitset, chosen by the round expected to cover its record, so that a wake-up reaches the
// waiters the round released and leaves those waiting for the next round asleep.
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
              std::atomic<uint32_t>::is_always_lock_free);
constexpr uint32_t kFutexBits = 32;

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, uint32_t bits) {
  // Returns at once if *word != expected (a wake-up was published in between), on a wake-up
  // of any of `bits`, or spuriously (EINTR); the caller re-checks its condition either way.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_BITSET_PRIVATE, expected,
            nullptr, nullptr, bits);
}

void FutexWake(std::atomic<uint32_t>* word, uint32_t bits) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_BITSET_PRIVATE, INT_MAX,
            nullptr, nullptr, bits);
}

}  // namespace

class Wal::Impl {
 public:
  Impl(std::string dir, const Options& options)
      : dir_(std::move(dir)), options_(options), fs_(options.fs) {}

  ~Impl() { Close(); }

  Status Recover();
  void StartSyncThread() {
    sync_thread_ = std::thread([this] { SyncLoop(); });
  }

  StatusOr<uint64_t> Append(std::span<const RecordView> records);
  Status WaitDurable(uint64_t index);
  Status Sync();
  void OnDurable(uint64_t index, std::function<void(Status)> done);
  StatusOr<std::vector<Record>> Read(uint64_t lo, uint64_t hi, uint64_t max_bytes);
  Status TruncateSuffix(uint64_t from);
  Status DropPrefix(uint64_t before);

  uint64_t first_index() const {
    std::lock_guard lock(mu_);
    return first_index_;
  }
  uint64_t last_index() const {
    std::lock_guard lock(mu_);
    return LastIndexLocked();
  }
  uint64_t durable_index() const {
    std::lock_guard lock(mu_);
    return durable_index_;
  }
  size_t blocked_waiter_count() const {
    std::lock_guard lock(mu_);
    return blocked_.size();
  }
  size_t segment_count() const {
    std::lock_guard lock(mu_);
    return segments_.size();
  }
  const std::string& dir() const { return dir_; }

 private:
  struct Segment {
    uint64_t first_index = 0;
    std::string path;
    std::vector<uint64_t> record_offsets;  // offset of record first_index + i
    uint64_t size_bytes = 0;               // bytes of header and records, including pending_ ones
    // Opened by the first Read; cached (under mu_) even though Read is const.
    mutable std::shared_ptr<RandomAccessFile> reader;

    uint64_t next_index() const { return first_index + record_offsets.size(); }
    uint64_t RecordEnd(size_t i) const {
      return i + 1 < record_offsets.size() ? record_offsets[i + 1] : size_bytes;
    }
  };

  // A thread blocked in WaitDurable. Lives on that thread's stack and is listed in blocked_
  // until settled: whoever settles it (holding mu_) writes `result`, then sets `settled`, and
  // then must not touch it again, since the waiter may return and free it at once.
  struct BlockedWaiter {
    uint64_t index = 0;
    uint32_t wake_bit = 0;  // the futex bit it sleeps on; constant once listed
    Status result;
    std::atomic<bool> settled{false};
  };
  // Waiters that SettleBlockedLocked released: how many, and the futex bits to wake.
  struct Released {
    size_t count = 0;
    uint32_t wake_bits = 0;
  };

  uint64_t LastIndexLocked() const { return segments_.back().next_index() - 1; }
  std::string SegmentPath(uint64_t first_index) const {
    return JoinPath(dir_, SegmentFileName(first_index));
  }

  // Creates a segment file durably (written under a temporary name, synced, renamed, directory
  // synced), opens it for appending and makes it the active segment.
  Status AddSegmentLocked(uint64_t first_index);
  // Opens a segment's file for appending after its last record and preallocates it.
  StatusOr<std::shared_ptr<WritableFile>> OpenActiveSegment(const Segment& segment);
  // Writes out and syncs the active segment, then starts a new one at the next index.
  // Requires !sync_running_; keeps mu_ held throughout.
  Status RotateLocked();
  // True if appending `records` would have to rotate the active segment.
  bool BatchNeedsRotationLocked(std::span<const RecordView> records) const;
  // Undoes the records [batch_first, ...) of an append that failed part-way.
  void RollBackLocked(uint64_t batch_first);
  Status TruncateSuffixLocked(uint64_t from);
  // One group-commit round, run by the sync thread (or, to write without syncing, by a reader
  // or rotation that needs the file to itself): writes the pending
  // bytes to the active segment with one write and, if `sync`, makes them durable with one
  // fdatasync. Releases mu_ during the I/O. Requires !sync_running_. Any I/O error stops the
  // log (see FailLocked).
  Status SyncRoundLocked(std::unique_lock<std::mutex>& lock, bool sync = true);
  // Waits until no sync round runs, so that the caller may change files exclusively.
  void WaitForSyncRoundLocked(std::unique_lock<std::mutex>& lock);
  Status FailLocked(Status cause);
  // Removes callbacks whose record is gone or whose fate is known; caller runs them unlocked.
  std::vector<std::pair<std::function<void(Status)>, Status>> TakeSettledCallbacksLocked();
  // Settles the blocked waiters whose record is durable, was truncated away, or can no longer
  // become durable (the log failed; or, with `closing`, the log is closing); the caller then
  // wakes them with WakeBlocked(released.wake_bits), with or without mu_ held.
  Released SettleBlockedLocked(bool closing = false);
  void WakeBlocked(uint32_t wake_bits);
  // The sync thread: runs a round whenever a waiter or callback wants a record that is not
  // durable yet, then wakes exactly the waiters the round satisfied. Waiters do not run rounds
  // themselves (a herd of them would fight over mu_ after every fdatasync), except a lone one
  // while the sync thread is idle (see WaitDurable).
  void SyncLoop();
  void Close();

  // Constant after construction.
  const std::string dir_;
  const Options options_;
  FileSystem* const fs_;
  std::unique_ptr<FileLock> dir_lock_;
  std::thread sync_thread_;

  mutable std::mutex mu_;
  std::condition_variable sync_done_cv_;  // a sync round or exclusive file change ended
  std::condition_variable work_cv_;       // wakes the sync thread: a round may be wanted
  std::deque<Segment> segments_;          // guarded by mu_; never empty once recovered
  // guarded by mu_; segments_.back(), open to append. Shared so that a sync round can finish on
  // a file that an append has meanwhile rotated out.
  std::shared_ptr<WritableFile> active_;
  // guarded by mu_: frames appended to the active segment but not yet written to its file; they
  // occupy bytes [flushed_bytes_, segments_.back().size_bytes) of it.
  std::string pending_;
  uint64_t pending_records_ = 0;  // guarded by mu_; records in pending_
  uint64_t flushed_bytes_ = 0;    // guarded by mu_; bytes of the active segment in its file
  // guarded by mu_: the active segment's bytes past flushed_bytes_ and below this are written
  // zeros (WritableFile::ZeroFill), not merely preallocated; 0 when none are known to be.
  uint64_t zero_filled_to_ = 0;
  uint64_t writing_bytes_ = 0;     // guarded by mu_; bytes a sync round is writing right now
  uint64_t first_index_ = 0;       // guarded by mu_
  uint64_t durable_index_ = 0;     // guarded by mu_
  bool sync_running_ = false;      // guarded by mu_
  Status failed_;                  // guarded by mu_; sticky once an fdatasync failed
  uint64_t truncation_count_ = 0;  // guarded by mu_; lets Read detect a concurrent cut
  // guarded by mu_: OnDurable callbacks by the record they wait for.
  std::multimap<uint64_t, std::function<void(Status)>> callbacks_;
  // guarded by mu_: callbacks of records that a truncation removed, to run with OutOfRange.
  std::vector<std::function<void(Status)>> truncated_callbacks_;
  // guarded by mu_: the threads blocked in WaitDurable, unordered. Bounded by the number of
  // threads in the process.
  std::vector<BlockedWaiter*> blocked_;
  // guarded by mu_: synced rounds begun so far, and the last record the running round covers
  // (meaningful while sync_running_ && round_syncs_). They pick a new waiter's futex bit.
  uint64_t sync_rounds_begun_ = 0;
  uint64_t round_target_ = 0;
  bool round_syncs_ = false;
  // The futex word blocked waiters sleep on; bumped before every wake-up so that a waiter about
  // to sleep notices one published since it last looked. Not guarded: atomic.
  std::atomic<uint32_t> wake_word_{0};
  // Threads inside WaitDurable's blocking part. Close waits for it to reach zero, so that no
  // waiter still touches this object (wake_word_) once the destructor returns. Atomic.
  std::atomic<uint32_t> waiters_inside_{0};
  bool sync_thread_idle_ = false;  // guarded by mu_; lets OnDurable skip needless wake-ups
  // guarded by mu_: group-commit gathering (see SyncLoop). While gathering_, the sync thread
  // waits for pending_records_ to reach gather_target_ or for gather_deadline_.
  bool gathering_ = false;
  uint64_t gather_target_ = 0;
  std::chrono::steady_clock::time_point gather_deadline_;
  std::chrono::nanoseconds fsync_ewma_{0};  // smoothed duration of an fdatasync
  bool closing_ = false;                    // guarded by mu_
  bool closed_ = false;                     // guarded by mu_
};

Status Wal::Impl::Recover() {
  if (options_.segment_bytes < kMinSegmentBytes) {
    return Status::InvalidArgument(fmt::format("segment_bytes {} is below the minimum {}",
                                               options_.segment_bytes, kMinSegmentBytes));
  }
  if (options_.max_record_bytes > kMaxRecordBytes) {
    return Status::InvalidArgument(fmt::format("max_record_bytes {} exceeds the limit of {}",
                                               options_.max_record_bytes, kMaxRecordBytes));
  }
  if (options_.initial_index == 0) return Status::InvalidArgument("initial_index must be >= 1");

  TX_RETURN_IF_ERROR(
      fs_->CreateDirIfMissing(dir_).Annotate("cannot create write-ahead log directory"));
  TX_ASSIGN_OR_RETURN(dir_lock_, fs_->LockFile(JoinPath(dir_, kLockFileName)));
  TX_ASSIGN_OR_RETURN(std::vector<std::string> names, fs_->ListDir(dir_));

  std::vector<uint64_t> firsts;
  bool removed_temp = false;
  for (const std::string& name : names) {
    if (name.ends_with(kTempSuffix)) {
      // A segment whose creation did not finish: it never held records.
      TX_RETURN_IF_ERROR(fs_->RemoveFile(JoinPath(dir_, name)));
      removed_temp = true;
    } else if (auto first = ParseSegmentFileName(name)) {
      firsts.push_back(*first);
    }
  }
  if (removed_temp) TX_RETURN_IF_ERROR(fs_->SyncDir(dir_));
  std::sort(firsts.begin(), firsts.end());

  std::lock_guard lock(mu_);
  if (firsts.empty()) {
    TX_RETURN_IF_ERROR(AddSegmentLocked(options_.initial_index));
    first_index_ = options_.initial_index;
    durable_index_ = first_index_ - 1;
    return Status::OK();
  }

  for (size_t i = 0; i < firsts.size(); ++i) {
    const bool newest = i + 1 == firsts.size();
    const std::string path = SegmentPath(firsts[i]);
    TX_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(fs_, path));
    // Recovery accepts any length the format allows, whatever this process's write limit.
    std::optional<SegmentScan> scan = ScanSegment(bytes, kMaxRecordBytes);
    if (!scan || scan->first_index != firsts[i]) {
      return Status::Corruption(
          fmt::format("write-ahead log segment {} has an invalid header (offset 0)", path));
    }
    if (!segments_.empty() && scan->first_index != segments_.back().next_index() && newest &&
        scan->record_offsets.empty() && !scan->damage) {
      // A segment created for records that a failed append then rolled back: it never held a
      // record, so nothing is lost by removing it.
      spdlog::warn("write-ahead log: removing empty segment {} that does not follow index {}", path,
                   segments_.back().next_index() - 1);
      TX_RETURN_IF_ERROR(fs_->RemoveFile(path));
      TX_RETURN_IF_ERROR(fs_->SyncDir(dir_));
      break;
    }
    if (!segments_.empty() && scan->first_index != segments_.back().next_index()) {
      return Status::Corruption(fmt::format(
          "write-ahead log segment {} starts at index {} but the previous segment ends at {}", path,
          scan->first_index, segments_.back().next_index() - 1));
    }
    if (scan->damage && scan->damage->unwritten_tail && !newest) {
      // Preallocated space of a segment that was rotated out before its file was trimmed.
      scan->damage.reset();
    }
    if (scan->damage) {
      const Damage& damage = *scan->damage;
      if (!newest || !damage.looks_torn) {
        return Status::Corruption(
            fmt::format("write-ahead log segment {} is corrupt at offset {}: {}", path,
                        damage.offset, damage.reason));
      }
      // Opening the newest segment for appends (below) cuts the file to its valid records.
      if (!damage.unwritten_tail) {
        spdlog::warn("write-ahead log: truncating torn tail of {} at offset {} ({} bytes): {}",
                     path, damage.offset, bytes.size() - damage.offset, damage.reason);
      }
    }
    Segment segment;
    segment.first_index = scan->first_index;
    segment.path = path;
    segment.record_offsets = std::move(scan->record_offsets);
    segment.size_bytes = scan->valid_end;
    segments_.push_back(std::move(segment));
  }

  // Also syncs what was read back, which may still sit only in the page cache of a crashed
  // predecessor.
  TX_ASSIGN_OR_RETURN(active_, OpenActiveSegment(segments_.back()));
  flushed_bytes_ = segments_.back().size_bytes;
  zero_filled_to_ = 0;
  TX_CHECK(active_->Size() == flushed_bytes_, "{} is {} bytes after recovery, expected {}",
           segments_.back().path, active_->Size(), flushed_bytes_);
  first_index_ = segments_.front().first_index;
  durable_index_ = LastIndexLocked();
  return Status::OK();
}

Status Wal::Impl::AddSegmentLocked(uint64_t first_index) {
  const std::string path = SegmentPath(first_index);
  const std::string temp = path + std::string(kTempSuffix);
  {
    TX_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, fs_->NewWritableFile(temp));
    Status s = file->Append(EncodeSegmentHeader(first_index));
    if (s.ok()) s = file->Sync();
    if (s.ok()) s = file->Close();
    if (s.ok()) s = fs_->RenameFile(temp, path);
    if (!s.ok()) {
      (void)fs_->RemoveFile(temp);  // best effort; recovery removes leftovers too
      return s;
    }
  }
  TX_RETURN_IF_ERROR(fs_->SyncDir(dir_));
  Segment segment;
  segment.first_index = first_index;
  segment.path = path;
  segment.size_bytes = kSegmentHeaderBytes;
  StatusOr<std::shared_ptr<WritableFile>> file = OpenActiveSegment(segment);
  if (!file.ok()) {
    // Typically NoSpace from the preallocation. Remove the segment, or recovery would find it
    // after a gap once the caller rolls back the records that led to it.
    // Best effort: recovery also discards an empty newest segment that does not follow on.
    if (fs_->RemoveFile(path).ok()) (void)fs_->SyncDir(dir_);
    return file.status();
  }
  TX_CHECK(pending_.empty(), "{} pending bytes would land in the wrong segment", pending_.size());
  flushed_bytes_ = kSegmentHeaderBytes;
  zero_filled_to_ = 0;
  segments_.push_back(std::move(segment));
  active_ = std::move(file).value();
  return Status::OK();
}

StatusOr<std::shared_ptr<WritableFile>> Wal::Impl::OpenActiveSegment(const Segment& segment) {
  TX_ASSIGN_OR_RETURN(std::shared_ptr<WritableFile> file, fs_->ReopenWritableFile(segment.path));
  // Drop anything past the valid records (a torn tail, unused preallocated space), so that the
  // append position is the end of the last record.
  if (file->Size() != segment.size_bytes) TX_RETURN_IF_ERROR(file->Truncate(segment.size_bytes));
  if (options_.preallocate) TX_RETURN_IF_ERROR(file->Preallocate(options_.segment_bytes));
  // Commits the truncation and the allocation now rather than in the first group commit.
  TX_RETURN_IF_ERROR(file->Sync());
  return file;
}

Status Wal::Impl::RotateLocked() {
  TX_CHECK(!sync_running_, "rotation during a sync round");
  // Every segment but the active one is fully durable; durable_index_ relies on it. Its
  // unused preallocated space is cut so that recovery reads it as a whole segment.
  Status s = active_->Append(pending_);
  if (s.ok()) s = active_->Truncate(segments_.back().size_bytes);
  if (s.ok()) s = active_->Sync();
  if (!s.ok()) return FailLocked(s);
  flushed_bytes_ += pending_.size();
  pending_.clear();
  pending_records_ = 0;
  durable_index_ = LastIndexLocked();
  sync_done_cv_.notify_all();
  work_cv_.notify_one();
  return AddSegmentLocked(segments_.back().next_index());
}

bool Wal::Impl::BatchNeedsRotationLocked(std::span<const RecordView> records) const {
  const Segment& segment = segments_.back();
  uint64_t size = segment.size_bytes;
  bool has_records = !segment.record_offsets.empty();
  for (const RecordView& r : records) {
    const uint64_t frame_bytes = kRecordHeaderBytes + r.payload.size();
    if (has_records && size + frame_bytes > options_.segment_bytes) return true;
    size += frame_bytes;
    has_records = true;
  }
  return false;
}

StatusOr<uint64_t> Wal::Impl::Append(std::span<const RecordView> records) {
  if (records.empty()) return Status::InvalidArgument("append of an empty batch");
  uint64_t batch_bytes = 0;
  for (const RecordView& r : records) {
    if (r.type == 0) return Status::InvalidArgument("record type 0 is reserved");
    if (r.payload.size() > options_.max_record_bytes) {
      return Status::InvalidArgument(fmt::format("record of {} bytes exceeds the limit of {} bytes",
                                                 r.payload.size(), options_.max_record_bytes));
    }
    batch_bytes += kRecordHeaderBytes + r.payload.size();
  }

  std::unique_lock lock(mu_);
  // A batch gets consecutive indexes, so mu_ is held from its first record to its last. Any
  // waiting happens before: for a running round to end when the batch must rotate the segment
  // (rotation needs the file to itself), or for the pending bytes to drain below their bound.
  for (;;) {
    if (closed_) return Status::FailedPrecondition("write-ahead log is closed");
    TX_RETURN_IF_ERROR(failed_);
    const bool over_bound = !pending_.empty() && pending_.size() + batch_bytes > kMaxPendingBytes;
    if (!sync_running_ && over_bound) {
      (void)SyncRoundLocked(lock);  // an error stops the log; the loop then returns it
      continue;
    }
    if (!sync_running_ || (!over_bound && !BatchNeedsRotationLocked(records))) break;
    sync_done_cv_.wait(lock);
  }

  const uint64_t batch_first = LastIndexLocked() + 1;
  uint64_t index = batch_first;
  for (const RecordView& r : records) {
    const uint64_t frame_bytes = kRecordHeaderBytes + r.payload.size();
    Segment* segment = &segments_.back();
    if (!segment->record_offsets.empty() &&
        segment->size_bytes + frame_bytes > options_.segment_bytes) {
      Status s = RotateLocked();
      if (!s.ok()) {
        RollBackLocked(batch_first);
        return s;
      }
      segment = &segments_.back();
    }
    segment->record_offsets.push_back(segment->size_bytes);
    AppendRecord(&pending_, index++, r.type, r.payload);
    ++pending_records_;
    segment->size_bytes += frame_bytes;
  }
  if (gathering_ && pending_records_ >= gather_target_) work_cv_.notify_one();
  TX_CHECK(flushed_bytes_ + writing_bytes_ + pending_.size() == segments_.back().size_bytes,
           "active segment accounting: {} flushed + {} being written + {} pending != {}",
           flushed_bytes_, writing_bytes_, pending_.size(), segments_.back().size_bytes);
  return index - 1;
}

void Wal::Impl::RollBackLocked(uint64_t batch_first) {
  if (!failed_.ok()) return;  // the log is stopped; recovery will sort out the files
  Status s = TruncateSuffixLocked(std::min(batch_first, LastIndexLocked() + 1));
  if (!s.ok()) {
    (void)FailLocked(s.Annotate("cannot roll back a failed append"));
  }
}

Status Wal::Impl::FailLocked(Status cause) {
  if (failed_.ok()) {
    failed_ = cause.Annotate("write-ahead log " + dir_ + " stopped accepting writes");
    spdlog::error("{}", failed_.ToString());
    WakeBlocked(SettleBlockedLocked().wake_bits);
    sync_done_cv_.notify_all();
    work_cv_.notify_one();
  }
  return failed_;
}

Status Wal::Impl::SyncRoundLocked(std::unique_lock<std::mutex>& lock, bool sync) {
  TX_CHECK(!sync_running_, "two group-commit leaders at once");
  sync_running_ = true;
  const uint64_t target = LastIndexLocked();
  round_syncs_ = sync;
  round_target_ = target;
  if (sync) ++sync_rounds_begun_;
  std::shared_ptr<WritableFile> file = active_;
  std::string frames;
  frames.swap(pending_);
  pending_records_ = 0;
  const uint64_t write_offset = flushed_bytes_;
  writing_bytes_ = frames.size();
  // Segments are preallocated with fallocate, which leaves "unwritten" extents: the first write
  // into one makes the fdatasync after it commit the extent's conversion in the file system's
  // journal too, about doubling it (wal_bench --extent-cases: 159 us against 79 us for a
  // 64 x 128 B round). So a syncing round that nears the end of the zero-filled space writes
  // zeros over the next chunk as well; its fdatasync converts the chunk once, and the rounds
  // after it write into converted space.
  const uint64_t end = write_offset + frames.size();
  uint64_t zero_from = 0, zero_to = 0;
  if (sync && options_.preallocate && end + kZeroFillAheadBytes > zero_filled_to_) {
    zero_from = std::max(end, zero_filled_to_);
    zero_to = std::min<uint64_t>(options_.segment_bytes, zero_from + kZeroFillChunkBytes);
  }
  lock.unlock();
  // Appenders go on filling pending_ meanwhile; this round covers the records up to `target`,
  // which are in `frames` or were written by earlier rounds.
  Status s = frames.empty() ? Status::OK() : file->Append(frames);
  if (s.ok() && zero_to > zero_from) s = file->ZeroFill(zero_from, zero_to);
  if (s.ok() && sync) s = TX_FAILPOINT_STATUS("wal.before_fsync");
  const auto sync_start = std::chrono::steady_clock::now();
  if (s.ok() && sync) s = file->Sync();
  const auto sync_time = std::chrono::steady_clock::now() - sync_start;
  lock.lock();
  sync_running_ = false;
  writing_bytes_ = 0;
  if (s.ok()) {
    flushed_bytes_ = write_offset + frames.size();
    zero_filled_to_ = std::max(zero_filled_to_, zero_to);
    if (sync) {
      durable_index_ = std::max(durable_index_, target);
      fsync_ewma_ =
          fsync_ewma_ == fsync_ewma_.zero() ? sync_time : (fsync_ewma_ * 7 + sync_time) / 8;
    }
  } else {
    // Cut a partial write so the file ends on a record boundary; recovery would do it anyway.
    (void)file->Truncate(write_offset);  // best effort: the log stops either way
    s = FailLocked(s);
  }
  sync_done_cv_.notify_all();
  work_cv_.notify_one();
  return s;
}

void Wal::Impl::WaitForSyncRoundLocked(std::unique_lock<std::mutex>& lock) {
  sync_done_cv_.wait(lock, [this] { return !sync_running_; });
}

Status Wal::Impl::WaitDurable(uint64_t index) {
  BlockedWaiter waiter;
  {
    std::unique_lock lock(mu_);
    if (!failed_.ok()) return failed_;
    if (index > LastIndexLocked()) {
      return Status::OutOfRange(fmt::format("no record {} in the write-ahead log (last is {})",
                                            index, LastIndexLocked()));
    }
    if (index <= durable_index_) return Status::OK();
    if (closing_ || closed_) return Status::Cancelled("write-ahead log is closed");
    // A lone waiter runs the round itself when the sync thread has nothing to do (no one else
    // waits, so it will not start a round, and it is not gathering the appenders its last round
    // released): handing the round over and being woken back would cost two wake-ups and
    // context switches, 20-30 us on a 100-200 us fdatasync. Only then: with others waiting,
    // rounds stay on the sync thread, which gathers them.
    if (!sync_running_ && blocked_.empty() && callbacks_.empty() &&
        (pending_records_ >= gather_target_ ||
         std::chrono::steady_clock::now() >= gather_deadline_)) {
      gather_target_ = 0;
      (void)SyncRoundLocked(lock);  // covers `index`; an error stops the log (failed_)
      if (!failed_.ok()) return failed_;
      TX_CHECK(index <= durable_index_, "record {} not durable after a round of its own ({})",
               index, durable_index_);
      return Status::OK();
    }
    // The running round covers the record if it was pending when the round began; otherwise
    // the next round will.
    const bool running_round_covers = sync_running_ && round_syncs_ && index <= round_target_;
    const uint64_t round = sync_rounds_begun_ + (running_round_covers ? 0 : 1);
    waiter.index = index;
    waiter.wake_bit = 1u << (round % kFutexBits);
    blocked_.push_back(&waiter);
    waiters_inside_.fetch_add(1, std::memory_order_relaxed);
    if (sync_thread_idle_) work_cv_.notify_one();
  }
  // Whoever settles the waiter sets `settled` before it bumps wake_word_ and wakes: a waiter
  // that read the word before the bump finds it changed in FutexWait and looks again.
  while (!waiter.settled.load(std::memory_order_acquire)) {
    const uint32_t seen = wake_word_.load(std::memory_order_seq_cst);
    if (waiter.settled.load(std::memory_order_seq_cst)) break;
    FutexWait(&wake_word_, seen, waiter.wake_bit);
  }
  Status result = std::move(waiter.result);
  // The last access to *this: Close may destroy the log as soon as it sees the count drop.
  waiters_inside_.fetch_sub(1, std::memory_order_release);
  return result;
}

Wal::Impl::Released Wal::Impl::SettleBlockedLocked(bool closing) {
  Released released;
  for (size_t i = 0; i < blocked_.size();) {
    BlockedWaiter* waiter = blocked_[i];
    Status outcome;
    if (!failed_.ok()) {
      outcome = failed_;
    } else if (waiter->index > LastIndexLocked()) {
      outcome = Status::OutOfRange(
          fmt::format("record {} was truncated from the write-ahead log", waiter->index));
    } else if (waiter->index <= durable_index_) {
      // OK
    } else if (closing) {
      outcome = Status::Cancelled("write-ahead log closed");
    } else {
      ++i;
      continue;
    }
    ++released.count;
    released.wake_bits |= waiter->wake_bit;
    waiter->result = std::move(outcome);
    waiter->settled.store(true, std::memory_order_seq_cst);  // *waiter may be gone from here on
    blocked_[i] = blocked_.back();
    blocked_.pop_back();
  }
  return released;
}

void Wal::Impl::WakeBlocked(uint32_t wake_bits) {
  if (wake_bits == 0) return;
  wake_word_.fetch_add(1, std::memory_order_seq_cst);
  FutexWake(&wake_word_, wake_bits);
}

Status Wal::Impl::Sync() {
  uint64_t last;
  {
    std::lock_guard lock(mu_);
    TX_RETURN_IF_ERROR(failed_);
    last = LastIndexLocked();
    if (last <= durable_index_) return Status::OK();
  }
  return WaitDurable(last);
}

void Wal::Impl::OnDurable(uint64_t index, std::function<void(Status)> done) {
  Status immediate;
  {
    std::lock_guard lock(mu_);
    if (!failed_.ok()) {
      immediate = failed_;
    } else if (index > LastIndexLocked()) {
      immediate = Status::OutOfRange(fmt::format("no record {} in the write-ahead log (last is {})",
                                                 index, LastIndexLocked()));
    } else if (closing_ || closed_) {
      immediate = Status::Cancelled("write-ahead log is closed");
    } else if (index > durable_index_) {
      callbacks_.emplace(index, std::move(done));
      if (sync_thread_idle_) work_cv_.notify_one();
      return;
    }
  }
  done(immediate);
}

std::vector<std::pair<std::function<void(Status)>, Status>>
Wal::Impl::TakeSettledCallbacksLocked() {
  std::vector<std::pair<std::function<void(Status)>, Status>> settled;
  for (auto& done : truncated_callbacks_) {
    settled.emplace_back(std::move(done),
                         Status::OutOfRange("the record was truncated from the write-ahead log"));
  }
  truncated_callbacks_.clear();
  while (!callbacks_.empty()) {
    auto it = callbacks_.begin();
    Status outcome;
    if (!failed_.ok()) {
      outcome = failed_;
    } else if (it->first > LastIndexLocked()) {
      outcome = Status::OutOfRange(
          fmt::format("record {} was truncated from the write-ahead log", it->first));
    } else if (it->first > durable_index_) {
      break;
    }
    settled.emplace_back(std::move(it->second), std::move(outcome));
    callbacks_.erase(it);
  }
  // Truncated records have the highest indexes; settle them even if lower ones wait.
  for (auto it = callbacks_.upper_bound(LastIndexLocked()); it != callbacks_.end();) {
    settled.emplace_back(std::move(it->second),
                         Status::OutOfRange(fmt::format(
                             "record {} was truncated from the write-ahead log", it->first)));
    it = callbacks_.erase(it);
  }
  return settled;
}

void Wal::Impl::SyncLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    auto settled = TakeSettledCallbacksLocked();
    const Released released = SettleBlockedLocked();
    if (!settled.empty() || released.count > 0) {
      // Gathering: the waiters released here are likely to append again at once (a thread
      // that commits in a loop, a pipeline of requests). If the next round started right away
      // it would cover only the records appended during this one, and the released appenders
      // would wait a whole extra round: batches would alternate at half size. So the next round
      // waits until as many records are pending as there were waiters, or for one fdatasync's
      // time (at most kMaxGatherWindow): an appender that misses the round waits a whole round
      // (an fdatasync and more), so holding the round that long costs the punctual appenders
      // less than it saves the late ones. (Half an fdatasync cut rounds short: with 64
      // appenders on two CPUs, re-appending takes about as long as the fdatasync, and rounds
      // settled at 45-55 records of 64 with some runs stuck at 44 and two thirds the rate.)
      // A lone appender comes back at once, so it never waits.
      gather_target_ = pending_records_ + settled.size() + released.count;
      gather_deadline_ = std::chrono::steady_clock::now() +
                         std::min<std::chrono::nanoseconds>(fsync_ewma_, kMaxGatherWindow);
      lock.unlock();
      WakeBlocked(released.wake_bits);
      for (auto& [done, status] : settled) done(status);
      lock.lock();
      continue;
    }
    if ((!callbacks_.empty() || !blocked_.empty()) && !sync_running_) {
      if (!closing_ && pending_records_ < gather_target_ &&
          std::chrono::steady_clock::now() < gather_deadline_) {
        gathering_ = true;
        work_cv_.wait_until(lock, gather_deadline_);
        gathering_ = false;
        continue;
      }
      gather_target_ = 0;
      (void)SyncRoundLocked(lock);  // the outcome reaches the callbacks through failed_
      continue;
    }
    if (closing_) return;
    sync_thread_idle_ = true;
    work_cv_.wait(lock);
    sync_thread_idle_ = false;
  }
}

StatusOr<std::vector<Record>> Wal::Impl::Read(uint64_t lo, uint64_t hi, uint64_t max_bytes) {
  struct Span {
    std::shared_ptr<RandomAccessFile> reader;
    std::string path;
    uint64_t first_index;  // index of the record at `begin`
    uint64_t begin;
    uint64_t end;
    size_t count;
  };
  std::vector<Span> spans;
  uint64_t generation;
  {
    std::unique_lock lock(mu_);
    // Records still in pending_ are not in the file yet: write them out (without a sync) first.
    for (;;) {
      const Segment& active = segments_.back();
      const bool unwritten = hi > active.first_index && hi - 1 < active.next_index() &&
                             active.record_offsets[hi - 1 - active.first_index] >= flushed_bytes_;
      if (!unwritten || !failed_.ok()) break;
      if (sync_running_) {
        sync_done_cv_.wait(lock);
      } else {
        (void)SyncRoundLocked(lock, /*sync=*/false);  // on error failed_ ends the loop
      }
    }
    if (lo < first_index_ || lo > hi || hi > LastIndexLocked() + 1) {
      return Status::OutOfRange(
          fmt::format("read of [{}, {}) outside the write-ahead log's range [{}, {}]", lo, hi,
                      first_index_, LastIndexLocked() + 1));
    }
    generation = truncation_count_;
    uint64_t payload_bytes = 0;
    uint64_t index = lo;
    for (const Segment& segment : segments_) {
      if (index >= hi) break;
      if (segment.next_index() <= index) continue;
      if (!segment.reader) {
        TX_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> reader,
                            fs_->NewRandomAccessFile(segment.path));
        segment.reader = std::move(reader);
      }
      size_t i = index - segment.first_index;
      Span span{segment.reader, segment.path, index, segment.record_offsets[i], 0, 0};
      for (; i < segment.record_offsets.size() && index < hi; ++i, ++index) {
        if (index > lo && payload_bytes > max_bytes) break;
        const uint64_t end = segment.RecordEnd(i);
        payload_bytes += end - segment.record_offsets[i] - kRecordHeaderBytes;
        span.end = end;
        ++span.count;
        if (payload_bytes > max_bytes) {
          ++i;
          ++index;
          break;
        }
      }
      spans.push_back(std::move(span));
      if (payload_bytes > max_bytes) break;
    }
  }

  std::vector<Record> records;
  for (const Span& span : spans) {
    std::string bytes(span.end - span.begin, '\0');
    TX_ASSIGN_OR_RETURN(size_t n, span.reader->Read(span.begin, bytes.size(), bytes.data()));
    bytes.resize(n);
    uint64_t offset = 0;
    for (size_t k = 0; k < span.count; ++k) {
      DecodedRecord record;
      std::optional<std::string> problem =
          CheckFrame(bytes, offset, span.first_index + k, kMaxRecordBytes, &record);
      if (problem) {
        std::lock_guard lock(mu_);
        if (truncation_count_ != generation) {
          return Status::OutOfRange("the write-ahead log was truncated during the read");
        }
        return Status::Corruption(
            fmt::format("write-ahead log segment {} is corrupt at offset {}: {}", span.path,
                        span.begin + offset, *problem));
      }
      records.push_back(Record{record.index, record.type, std::string(record.payload)});
      offset += kRecordHeaderBytes + record.payload.size();
    }
  }
  std::lock_guard lock(mu_);
  if (truncation_count_ != generation) {
    return Status::OutOfRange("the write-ahead log was truncated during the read");
  }
  return records;
}

Status Wal::Impl::TruncateSuffix(uint64_t from) {
  std::unique_lock lock(mu_);
  if (closed_) return Status::FailedPrecondition("write-ahead log is closed");
  TX_RETURN_IF_ERROR(failed_);
  if (from < first_index_ || from > LastIndexLocked() + 1) {
    return Status::OutOfRange(fmt::format("cannot truncate from {}: the log holds [{}, {}]", from,
                                          first_index_, LastIndexLocked()));
  }
  if (from == LastIndexLocked() + 1) return Status::OK();
  WaitForSyncRoundLocked(lock);
  TX_RETURN_IF_ERROR(failed_);
  Status s = TruncateSuffixLocked(from);
  if (!s.ok()) return FailLocked(s.Annotate("truncation failed"));
  return Status::OK();
}

Status Wal::Impl::TruncateSuffixLocked(uint64_t from) {
  bool removed = false;
  // Newest first, so that a crash part-way leaves a contiguous log.
  while (segments_.size() > 1 && segments_.back().first_index >= from) {
    active_.reset();
    TX_RETURN_IF_ERROR(fs_->RemoveFile(segments_.back().path));
    segments_.pop_back();
    removed = true;
  }
  Segment& segment = segments_.back();
  if (removed) {
    // pending_ belonged to a deleted segment; older segments were written out whole.
    pending_.clear();
    pending_records_ = 0;
    TX_RETURN_IF_ERROR(fs_->SyncDir(dir_));
    TX_ASSIGN_OR_RETURN(active_, OpenActiveSegment(segment));
    flushed_bytes_ = segment.size_bytes;
    zero_filled_to_ = 0;
  }
  TX_CHECK(from >= segment.first_index, "truncation point {} precedes segment {}", from,
           segment.path);
  if (from < segment.next_index()) {
    const size_t keep = from - segment.first_index;
    segment.size_bytes = segment.record_offsets[keep];
    segment.record_offsets.resize(keep);
  }
  if (segment.size_bytes >= flushed_bytes_) {
    pending_.resize(segment.size_bytes - flushed_bytes_);  // the file is untouched
    pending_records_ = 0;
    for (uint64_t offset : segment.record_offsets) pending_records_ += offset >= flushed_bytes_;
  } else {
    pending_.clear();
    pending_records_ = 0;
    TX_RETURN_IF_ERROR(active_->Truncate(segment.size_bytes));
    if (options_.preallocate) TX_RETURN_IF_ERROR(active_->Preallocate(options_.segment_bytes));
    TX_RETURN_IF_ERROR(active_->Sync());
    flushed_bytes_ = segment.size_bytes;
    zero_filled_to_ = 0;
  }
  segment.reader.reset();  // its cached view may predate the cut
  durable_index_ = std::min(durable_index_, from - 1);
  ++truncation_count_;
  // Waits for removed records end now, before a new record can take their index.
  WakeBlocked(SettleBlockedLocked().wake_bits);
  for (auto it = callbacks_.lower_bound(from); it != callbacks_.end();) {
    truncated_callbacks_.push_back(std::move(it->second));
    it = callbacks_.erase(it);
  }
  sync_done_cv_.notify_all();
  work_cv_.notify_one();
  return Status::OK();
}

Status Wal::Impl::DropPrefix(uint64_t before) {
  std::unique_lock lock(mu_);
  if (closed_) return Status::FailedPrecondition("write-ahead log is closed");
  TX_RETURN_IF_ERROR(failed_);
  if (before <= first_index_) return Status::OK();
  WaitForSyncRoundLocked(lock);
  TX_RETURN_IF_ERROR(failed_);

  Status s;
  if (before > LastIndexLocked() + 1) {
    // Everything goes; the log restarts at `before`. Old segments are deleted first (oldest
    // first), so a crash leaves a suffix of the old log or an empty directory, never a gap.
    active_.reset();
    pending_.clear();
    pending_records_ = 0;
    while (s.ok() && !segments_.empty()) {
      s = fs_->RemoveFile(segments_.front().path);
      if (s.ok()) segments_.pop_front();
    }
    if (s.ok()) s = AddSegmentLocked(before);
    if (!s.ok()) return FailLocked(s.Annotate("cannot reset the write-ahead log"));
    durable_index_ = before - 1;
    work_cv_.notify_one();  // waits for the dropped records are settled
  } else {
    bool removed = false;
    while (segments_.size() > 1 && segments_[1].first_index <= before) {
      s = fs_->RemoveFile(segments_.front().path);
      if (!s.ok()) return s;  // nothing is lost: the segment is merely kept
      segments_.pop_front();
      removed = true;
    }
    if (removed) TX_RETURN_IF_ERROR(fs_->SyncDir(dir_));
  }
  first_index_ = before;
  return Status::OK();
}

void Wal::Impl::Close() {
  {
    std::unique_lock lock(mu_);
    if (closed_) return;
    WaitForSyncRoundLocked(lock);
    if (active_ && failed_.ok() && durable_index_ < LastIndexLocked()) {
      (void)SyncRoundLocked(lock);  // best effort at close
    }
    // Releases the waiters that round covered even if the sync thread is busy in a callback.
    WakeBlocked(SettleBlockedLocked().wake_bits);
    closing_ = true;
    work_cv_.notify_one();
  }
  if (sync_thread_.joinable()) sync_thread_.join();
  std::multimap<uint64_t, std::function<void(Status)>> orphans;
  std::vector<std::function<void(Status)>> truncated;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    orphans.swap(callbacks_);
    truncated.swap(truncated_callbacks_);
    WakeBlocked(SettleBlockedLocked(/*closing=*/true).wake_bits);
    active_.reset();  // closes the file; nothing unsynced remains to lose
  }
  for (auto& done : truncated) {
    done(Status::OutOfRange("the record was truncated from the write-ahead log"));
  }
  for (auto& [index, done] : orphans) done(Status::Cancelled("write-ahead log closed"));
  // Every blocked waiter is settled and woken by now, and none can register any more; they read
  // wake_word_ until they return, so the log must outlive them. They return within a scheduling
  // delay; a poll (rather than a yield loop, which can keep a lower-priority waiter off a lone
  // CPU) since this happens once per log.
  while (waiters_inside_.load(std::memory_order_acquire) != 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

Wal::Wal(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Wal::~Wal() = default;

StatusOr<std::unique_ptr<Wal>> Wal::Open(const std::string& dir, const Options& options) {
  auto impl = std::make_unique<Impl>(dir, options);
  TX_RETURN_IF_ERROR(impl->Recover());
  impl->StartSyncThread();
  return std::unique_ptr<Wal>(new Wal(std::move(impl)));
}

StatusOr<uint64_t> Wal::Append(std::span<const RecordView> records) {
  return impl_->Append(records);
}
Status Wal::Sync() { return impl_->Sync(); }
Status Wal::WaitDurable(uint64_t index) { return impl_->WaitDurable(index); }
void Wal::OnDurable(uint64_t index, std::function<void(Status)> done) {
  impl_->OnDurable(index, std::move(done));
}
StatusOr<std::vector<Record>> Wal::Read(uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  return impl_->Read(lo, hi, max_bytes);
}
Status Wal::TruncateSuffix(uint64_t from) { return impl_->TruncateSuffix(from); }
Status Wal::DropPrefix(uint64_t before) { return impl_->DropPrefix(before); }
uint64_t Wal::first_index() const { return impl_->first_index(); }
uint64_t Wal::last_index() const { return impl_->last_index(); }
uint64_t Wal::durable_index() const { return impl_->durable_index(); }
size_t Wal::segment_count() const { return impl_->segment_count(); }
size_t Wal::blocked_waiter_count() const { return impl_->blocked_waiter_count(); }
const std::string& Wal::dir() const { return impl_->dir(); }

}  // namespace tx::wal
