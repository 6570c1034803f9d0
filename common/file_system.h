// The file layer every durable component writes through.
//
// Code that stores data takes a FileSystem* so that tests can substitute a fault-injecting one
// (common/fault_injection_fs.h): full disks, failed fsyncs, crashes that lose unsynced data.
// FileSystem::Default() is the real POSIX implementation.
//
// Errors are Status values naming the operation and the path; ENOSPC maps to NoSpace.
// FileSystem implementations are thread-safe. A file handle is used by one thread at a time,
// except that Sync() may run concurrently with Append() on the same handle (it then makes at
// least the bytes appended before Sync() began durable).

#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tx {

// A file written only at its end.
class WritableFile {
 public:
  virtual ~WritableFile() = default;

  // Appends data at the end. On error a prefix of data may have been written; Size() then
  // reports what the file holds.
  virtual Status Append(std::string_view data) = 0;

  // Makes every byte appended so far durable (fdatasync).
  virtual Status Sync() = 0;

  // Cuts the file to `size` bytes (size <= Size()); the next Append continues there.
  // Not durable until Sync().
  virtual Status Truncate(uint64_t size) = 0;

  // Reserves disk blocks for bytes [0, size_bytes) and makes the file that long (zeros past the
  // data), without moving the append position: later appends overwrite allocated space, so an
  // fdatasync need not also commit a change of file size, and a full disk shows up here rather
  // than in the middle of a write. NoSpace if the disk is full. OK and no effect where the file
  // system cannot preallocate.
  virtual Status Preallocate(uint64_t size_bytes) = 0;

  // Writes zeros over bytes [from, to) past the append position (Size() <= from <= to), without
  // moving it, so that the file reads the same but its blocks there are written: ext4 keeps
  // fallocate'd blocks as "unwritten" extents, and the first write into one makes the next
  // fdatasync also commit the extent's conversion in the journal. A log that fills space ahead
  // of its appends (and syncs it) makes its later fdatasyncs data-only. Not durable until
  // Sync(); on error some of the range may hold zeros.
  virtual Status ZeroFill(uint64_t from, uint64_t to) = 0;

  // Closes the handle. Does not sync.
  virtual Status Close() = 0;

  // Bytes appended (or kept by Truncate) through this handle: the append position. A
  // preallocated file is longer on disk.
  virtual uint64_t Size() const = 0;
};

// A file read at arbitrary offsets. Thread-safe (pread).
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;

  // Reads up to n bytes at offset into scratch; returns the number read, short only at EOF.
  virtual StatusOr<size_t> Read(uint64_t offset, size_t n, char* scratch) const = 0;
};

// An advisory lock on a file, held until destroyed. Keeps two processes out of one directory.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // The POSIX implementation. Never null; lives for the whole process.
  static FileSystem* Default();

  // Creates `path` empty (truncating any existing file) and opens it for appending.
  virtual StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) = 0;

  // Opens an existing file for appending at its current end.
  virtual StatusOr<std::unique_ptr<WritableFile>> ReopenWritableFile(const std::string& path) = 0;

  virtual StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) = 0;

  // Names (not paths) of the entries in dir, without "." and "..", in no particular order.
  virtual StatusOr<std::vector<std::string>> ListDir(const std::string& dir) = 0;

  // Creates dir (and missing parents). OK if it exists already.
  virtual Status CreateDirIfMissing(const std::string& dir) = 0;

  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;

  // fsync on the directory, so that entries created, renamed or removed in it are durable.
  virtual Status SyncDir(const std::string& dir) = 0;

  // Takes an exclusive advisory lock on `path` (created if missing). Returns Unavailable if
  // another process (or another FileLock in this one) holds it.
  virtual StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
};

// Replaces `path` with `contents` so that a crash leaves either the old or the new contents:
// writes path + ".tmp", syncs it, renames it over path and syncs the directory.
Status WriteFileAtomically(FileSystem* fs, const std::string& path, std::string_view contents);

// Reads a whole file. NotFound if it does not exist.
StatusOr<std::string> ReadFileToString(FileSystem* fs, const std::string& path);

// "dir/name", without doubling a trailing slash.
std::string JoinPath(std::string_view dir, std::string_view name);

// The directory part of a path ("." when there is none).
std::string DirName(std::string_view path);

}  // namespace tx
