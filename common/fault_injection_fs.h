// A FileSystem for tests that wraps a real one and injects faults.
//
// - A space limit: appends past it write what fits and fail with NoSpace, as write(2) does on
//   a full disk.
// - Failing operations by kind (sync, directory sync, create, rename, remove) with a Status.
// - Crash simulation: DropUnsyncedData() cuts every file written through this layer back to
//   the length it had at its last successful Sync(), and removes files whose creation was
//   not made durable by a SyncDir() of their directory, as a power loss would.
//
// Thread-safe. Files opened through it must not outlive it.

#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "common/file_system.h"

namespace tx {

class FaultInjectionFileSystem final : public FileSystem {
 public:
  enum class Op { kSync, kSyncDir, kCreate, kRename, kRemove, kAppend };

  explicit FaultInjectionFileSystem(FileSystem* base = FileSystem::Default()) : base_(base) {}

  // Appends may add at most `bytes` more bytes in total (across all files) before NoSpace.
  void SetSpaceLimit(uint64_t bytes);
  void ClearSpaceLimit();

  // Every later operation of kind `op` fails with `status` until ClearFailure(op).
  void FailOperation(Op op, Status status);
  void ClearFailure(Op op);

  // Runs `hook` at the start of every WritableFile::Sync (outside any lock of this class), e.g.
  // to hold a sync back while a test checks that nothing was reported durable yet.
  void SetSyncHook(std::function<void()> hook);

  // With false, Sync and SyncDir succeed without reaching the disk (the bookkeeping for
  // DropUnsyncedData still happens). For tests of logic that run thousands of recoveries and
  // do not test durability itself; never in a test of what survives a real crash.
  void SetSyncsReachDisk(bool reach) { syncs_reach_disk_ = reach; }
  bool syncs_reach_disk() const { return syncs_reach_disk_; }

  // Simulates a power loss: unsynced appends vanish and unsynced new files disappear.
  // Open handles must not be used afterwards.
  Status DropUnsyncedData();

  // Counters, for asserting that a component synced as it promised.
  uint64_t sync_count() const;
  uint64_t sync_dir_count() const;
  // Bytes written as zeros ahead of the append position (WritableFile::ZeroFill).
  uint64_t zero_filled_bytes() const;

  // FileSystem:
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  StatusOr<std::unique_ptr<WritableFile>> ReopenWritableFile(const std::string& path) override;
  StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(const std::string& path) override;
  StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status CreateDirIfMissing(const std::string& dir) override;
  Status RemoveFile(const std::string& path) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  StatusOr<uint64_t> FileSize(const std::string& path) override;
  bool FileExists(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;

 private:
  friend class FaultInjectionWritableFile;

  void RunSyncHook();
  // Returns the injected failure for op, or OK.
  Status InjectedFailure(Op op) const;
  // How many of `wanted` bytes the space limit lets through.
  uint64_t ReserveSpace(uint64_t wanted);
  // All of `wanted` or nothing (false).
  bool ReserveSpaceExactly(uint64_t wanted);
  void OnSynced(const std::string& path, uint64_t size);
  void OnSizeChanged(const std::string& path, uint64_t size);
  void OnZeroFilled(uint64_t bytes);

  FileSystem* const base_;
  std::atomic<bool> syncs_reach_disk_{true};

  mutable std::mutex mu_;
  std::function<void()> sync_hook_;              // guarded by mu_
  std::optional<uint64_t> space_left_;           // guarded by mu_
  std::map<Op, Status> failures_;                // guarded by mu_
  std::map<std::string, uint64_t> synced_size_;  // guarded by mu_; files written through us
  std::set<std::string> unsynced_creations_;     // guarded by mu_; entries not yet SyncDir'ed
  uint64_t sync_count_ = 0;                      // guarded by mu_
  uint64_t sync_dir_count_ = 0;                  // guarded by mu_
  uint64_t zero_filled_bytes_ = 0;               // guarded by mu_
};

}  // namespace tx
