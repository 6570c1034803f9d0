// A segmented write-ahead log of opaque records with group commit.
//
// The log is a sequence of records with consecutive indexes [first_index(), last_index()].
// Each record has a user-chosen type (1..255) and an opaque payload; the log knows nothing
// about what they mean. Appending assigns the next index. A record is durable once an
// fdatasync that covers it has returned; durable_index() only ever reports such records, and
// Wait/OnDurable never report a record durable earlier.
//
// Group commit: any number of threads may append and wait concurrently; all records appended
// while one fdatasync runs are made durable together by the next one, so N waiting appenders
// share about one fdatasync instead of paying N. A caller with many records in flight (a server
// with many requests) gets the most from it through OnDurable: a thread blocked in WaitDurable
// costs a sleep and a wake-up per record, which on few CPUs can cost more than the log itself
// (figures in docs/benchmarks.md, "Write-ahead log").
//
// Files: segment files "<first index, 16 hex digits>.wal" and a LOCK file (one process per
// directory). A segment is closed (synced) and a new one created once it would grow past
// Options::segment_bytes. Creating, renaming and deleting segment files is followed by an
// fsync of the directory. Byte layout: wal/log_format.h and docs/wal-format.md.
//
// Recovery (Open): a torn or short record at the end of the newest segment (the trace of a
// write cut short by a crash) is truncated away and the log opens. A record that fails its
// checksum anywhere else, a gap between segments or a damaged segment header is Corruption:
// Open fails with a message naming the file and byte offset, and nothing is modified.
//
// Errors: every method returns a Status. If an fdatasync fails, the log stops accepting
// writes (the kernel may have dropped the dirty pages, so nothing after the last good sync
// can be trusted): Append/Sync/Wait return that error from then on, and the process should
// reopen the log, which recovers what is on disk. A failed write (e.g. NoSpace) is rolled
// back so that no part of the failed batch remains, and the log stays usable.
//
// Thread-safe. Callbacks registered with OnDurable run on the log's sync thread, in
// index order; they must not block for long or call Close().

#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_system.h"
#include "common/status.h"

namespace tx::wal {

struct Options {
  // Not owned; must outlive the log. Tests pass a FaultInjectionFileSystem.
  FileSystem* fs = FileSystem::Default();
  // A segment is rotated once appending the next record would take it past this size.
  // Bounded below so that a segment holds at least a header and a small record.
  uint64_t segment_bytes = 64ull << 20;
  // Payloads larger than this are refused with InvalidArgument. At most kMaxRecordBytes.
  uint32_t max_record_bytes = 16u << 20;
  // Index given to the first record of a log created in an empty directory.
  uint64_t initial_index = 1;
  // Allocate each segment's disk space when it is created (fallocate), so that appends
  // overwrite allocated blocks and an fdatasync need not commit a change of file size
  // (measured about 1.3x faster here), and a full disk is found when a segment is created
  // rather than in the middle of a write.
  bool preallocate = true;
};

// A record to append: a type in 1..255 and a payload the log does not interpret.
struct RecordView {
  uint8_t type = 1;
  std::string_view payload;
};

// A record read back.
struct Record {
  uint64_t index = 0;
  uint8_t type = 0;
  std::string payload;
};

class Wal {
 public:
  // Opens the log in `dir` (created if missing) and recovers it (see the file comment).
  static StatusOr<std::unique_ptr<Wal>> Open(const std::string& dir, const Options& options);

  // Syncs what was appended (best effort), fails pending callbacks with Cancelled and closes.
  ~Wal();

  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Appends the records, in order, after the last record; returns the index of the last one.
  // The batch is all-or-nothing: on error none of it is in the log. Not durable on return.
  // InvalidArgument for an empty batch, a type of 0 or a payload over max_record_bytes.
  StatusOr<uint64_t> Append(std::span<const RecordView> records);
  StatusOr<uint64_t> Append(const RecordView& record) { return Append(std::span(&record, 1)); }

  // Makes every record appended so far durable. Returns once they are.
  Status Sync();

  // Returns once record `index` is durable (sharing an fdatasync with concurrent callers).
  // OutOfRange if no record `index` exists (never appended, or truncated meanwhile, even if a
  // new record has taken its index since). The error of a failed fdatasync if the log failed.
  // Destroying the log releases blocked callers (with the outcome of the final sync) and waits
  // until they have returned.
  Status WaitDurable(uint64_t index);

  // Calls `done` on the sync thread once record `index` is durable, with OK, or with the
  // error that prevents it (a failed fdatasync, OutOfRange if the record was truncated away,
  // Cancelled at close). Starts an fdatasync if none is running.
  void OnDurable(uint64_t index, std::function<void(Status)> done);

  // Reads records with indexes in [lo, hi), in order, stopping early (but after at least one
  // record) once their payloads add up to more than max_bytes. OutOfRange unless
  // first_index() <= lo <= hi <= last_index() + 1. Corruption if the bytes on disk no longer
  // match their checksum.
  StatusOr<std::vector<Record>> Read(uint64_t lo, uint64_t hi,
                                     uint64_t max_bytes = UINT64_MAX) const;

  // Removes records [from, last_index()] so the next append gets index `from`. Durable on
  // return. Pending waits for removed records end with OutOfRange.
  // OutOfRange unless first_index() <= from <= last_index() + 1.
  Status TruncateSuffix(uint64_t from);

  // Drops records before `before` (compaction after a snapshot). Afterwards first_index() is
  // `before`. Whole segments below `before` are deleted; records that share a segment with
  // `before` stay on disk, so after a reopen first_index() may be lower than `before`.
  // If `before` > last_index() + 1 the log is emptied and the next append gets `before`.
  Status DropPrefix(uint64_t before);

  // Index of the first readable record. When the log is empty, first_index() ==
  // last_index() + 1.
  uint64_t first_index() const;
  // Index of the last record appended; first_index() - 1 when the log is empty.
  uint64_t last_index() const;
  // Every record with an index <= durable_index() is durable.
  uint64_t durable_index() const;

  // Number of segment files, for tests and metrics.
  size_t segment_count() const;
  // Number of threads blocked in WaitDurable or Sync right now, for tests and metrics.
  size_t blocked_waiter_count() const;

  const std::string& dir() const;

 private:
  class Impl;
  explicit Wal(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tx::wal
