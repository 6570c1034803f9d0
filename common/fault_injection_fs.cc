#include "common/fault_injection_fs.h"

#include <fmt/format.h>

namespace tx {

class FaultInjectionWritableFile final : public WritableFile {
 public:
  FaultInjectionWritableFile(FaultInjectionFileSystem* fs, std::string path,
                             std::unique_ptr<WritableFile> base)
      : fs_(fs), path_(std::move(path)), base_(std::move(base)) {}

  Status Append(std::string_view data) override {
    TX_RETURN_IF_ERROR(fs_->InjectedFailure(FaultInjectionFileSystem::Op::kAppend));
    uint64_t allowed = fs_->ReserveSpace(data.size());
    Status s = base_->Append(data.substr(0, allowed));
    if (s.ok() && allowed < data.size()) {
      s = Status::NoSpace(fmt::format("write {}: No space left on device (injected)", path_));
    }
    fs_->OnSizeChanged(path_, base_->Size());
    return s;
  }

  Status Sync() override {
    fs_->RunSyncHook();
    TX_RETURN_IF_ERROR(fs_->InjectedFailure(FaultInjectionFileSystem::Op::kSync));
    if (fs_->syncs_reach_disk()) TX_RETURN_IF_ERROR(base_->Sync());
    fs_->OnSynced(path_, base_->Size());
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    TX_RETURN_IF_ERROR(base_->Truncate(size));
    fs_->OnSizeChanged(path_, size);
    return Status::OK();
  }

  Status Preallocate(uint64_t size_bytes) override {
    TX_RETURN_IF_ERROR(fs_->InjectedFailure(FaultInjectionFileSystem::Op::kAppend));
    // Preallocation takes disk space like a write, but all of it or nothing.
    uint64_t wanted = size_bytes > base_->Size() ? size_bytes - base_->Size() : 0;
    if (!fs_->ReserveSpaceExactly(wanted)) {
      return Status::NoSpace(
          fmt::format("fallocate {}: No space left on device (injected)", path_));
    }
    return base_->Preallocate(size_bytes);
  }

  Status ZeroFill(uint64_t from, uint64_t to) override {
    TX_RETURN_IF_ERROR(fs_->InjectedFailure(FaultInjectionFileSystem::Op::kAppend));
    // Zeros past the append position: a crash (DropUnsyncedData) cuts the file back to what was
    // synced, and lost zeros read the same as none. Space: the log fills only space it
    // preallocated, which was counted then.
    TX_RETURN_IF_ERROR(base_->ZeroFill(from, to));
    fs_->OnZeroFilled(to - from);
    return Status::OK();
  }

  Status Close() override { return base_->Close(); }
  uint64_t Size() const override { return base_->Size(); }

 private:
  FaultInjectionFileSystem* const fs_;
  const std::string path_;
  std::unique_ptr<WritableFile> base_;
};

void FaultInjectionFileSystem::SetSpaceLimit(uint64_t bytes) {
  std::lock_guard lock(mu_);
  space_left_ = bytes;
}

void FaultInjectionFileSystem::SetSyncHook(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  sync_hook_ = std::move(hook);
}

void FaultInjectionFileSystem::RunSyncHook() {
  std::function<void()> hook;
  {
    std::lock_guard lock(mu_);
    hook = sync_hook_;
  }
  if (hook) hook();
}

void FaultInjectionFileSystem::ClearSpaceLimit() {
  std::lock_guard lock(mu_);
  space_left_.reset();
}

void FaultInjectionFileSystem::FailOperation(Op op, Status status) {
  TX_CHECK(!status.ok(), "an injected failure needs an error Status");
  std::lock_guard lock(mu_);
  failures_[op] = std::move(status);
}

void FaultInjectionFileSystem::ClearFailure(Op op) {
  std::lock_guard lock(mu_);
  failures_.erase(op);
}

Status FaultInjectionFileSystem::InjectedFailure(Op op) const {
  std::lock_guard lock(mu_);
  auto it = failures_.find(op);
  return it == failures_.end() ? Status::OK() : it->second;
}

uint64_t FaultInjectionFileSystem::ReserveSpace(uint64_t wanted) {
  std::lock_guard lock(mu_);
  if (!space_left_) return wanted;
  uint64_t granted = std::min(wanted, *space_left_);
  *space_left_ -= granted;
  return granted;
}

bool FaultInjectionFileSystem::ReserveSpaceExactly(uint64_t wanted) {
  std::lock_guard lock(mu_);
  if (!space_left_) return true;
  if (*space_left_ < wanted) return false;
  *space_left_ -= wanted;
  return true;
}

void FaultInjectionFileSystem::OnSynced(const std::string& path, uint64_t size) {
  std::lock_guard lock(mu_);
  ++sync_count_;
  synced_size_[path] = size;
}

void FaultInjectionFileSystem::OnSizeChanged(const std::string& path, uint64_t size) {
  std::lock_guard lock(mu_);
  // A truncation below the synced size is itself unsynced; keeping the larger synced size
  // would resurrect cut bytes on a crash, which a real file system may also do, but our
  // components always sync after truncating, so track the conservative (smaller) value.
  auto it = synced_size_.find(path);
  if (it != synced_size_.end() && size < it->second) it->second = size;
}

Status FaultInjectionFileSystem::DropUnsyncedData() {
  std::lock_guard lock(mu_);
  for (const std::string& path : unsynced_creations_) {
    if (base_->FileExists(path)) TX_RETURN_IF_ERROR(base_->RemoveFile(path));
    synced_size_.erase(path);
  }
  unsynced_creations_.clear();
  for (const auto& [path, synced] : synced_size_) {
    if (!base_->FileExists(path)) continue;
    TX_ASSIGN_OR_RETURN(uint64_t size, base_->FileSize(path));
    if (size <= synced) continue;
    TX_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->ReopenWritableFile(path));
    TX_RETURN_IF_ERROR(file->Truncate(synced));
    TX_RETURN_IF_ERROR(file->Sync());
    TX_RETURN_IF_ERROR(file->Close());
  }
  return Status::OK();
}

uint64_t FaultInjectionFileSystem::sync_count() const {
  std::lock_guard lock(mu_);
  return sync_count_;
}

uint64_t FaultInjectionFileSystem::sync_dir_count() const {
  std::lock_guard lock(mu_);
  return sync_dir_count_;
}

uint64_t FaultInjectionFileSystem::zero_filled_bytes() const {
  std::lock_guard lock(mu_);
  return zero_filled_bytes_;
}

void FaultInjectionFileSystem::OnZeroFilled(uint64_t bytes) {
  std::lock_guard lock(mu_);
  zero_filled_bytes_ += bytes;
}

StatusOr<std::unique_ptr<WritableFile>> FaultInjectionFileSystem::NewWritableFile(
    const std::string& path) {
  TX_RETURN_IF_ERROR(InjectedFailure(Op::kCreate));
  bool existed = base_->FileExists(path);
  TX_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->NewWritableFile(path));
  {
    std::lock_guard lock(mu_);
    synced_size_[path] = 0;
    if (!existed) unsynced_creations_.insert(path);
  }
  return std::unique_ptr<WritableFile>(new FaultInjectionWritableFile(this, path, std::move(file)));
}

StatusOr<std::unique_ptr<WritableFile>> FaultInjectionFileSystem::ReopenWritableFile(
    const std::string& path) {
  TX_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->ReopenWritableFile(path));
  {
    std::lock_guard lock(mu_);
    // A file found on disk at reopen is taken as durable as it stands.
    if (!synced_size_.contains(path)) synced_size_[path] = file->Size();
  }
  return std::unique_ptr<WritableFile>(new FaultInjectionWritableFile(this, path, std::move(file)));
}

StatusOr<std::unique_ptr<RandomAccessFile>> FaultInjectionFileSystem::NewRandomAccessFile(
    const std::string& path) {
  return base_->NewRandomAccessFile(path);
}

StatusOr<std::vector<std::string>> FaultInjectionFileSystem::ListDir(const std::string& dir) {
  return base_->ListDir(dir);
}

Status FaultInjectionFileSystem::CreateDirIfMissing(const std::string& dir) {
  TX_RETURN_IF_ERROR(InjectedFailure(Op::kCreate));
  return base_->CreateDirIfMissing(dir);
}

Status FaultInjectionFileSystem::RemoveFile(const std::string& path) {
  TX_RETURN_IF_ERROR(InjectedFailure(Op::kRemove));
  TX_RETURN_IF_ERROR(base_->RemoveFile(path));
  std::lock_guard lock(mu_);
  synced_size_.erase(path);
  unsynced_creations_.erase(path);
  return Status::OK();
}

Status FaultInjectionFileSystem::RenameFile(const std::string& from, const std::string& to) {
  TX_RETURN_IF_ERROR(InjectedFailure(Op::kRename));
  TX_RETURN_IF_ERROR(base_->RenameFile(from, to));
  std::lock_guard lock(mu_);
  auto it = synced_size_.find(from);
  if (it != synced_size_.end()) {
    synced_size_[to] = it->second;
    synced_size_.erase(it);
  }
  // Until the directory is synced the new name is not durable.
  unsynced_creations_.erase(from);
  unsynced_creations_.insert(to);
  return Status::OK();
}

StatusOr<uint64_t> FaultInjectionFileSystem::FileSize(const std::string& path) {
  return base_->FileSize(path);
}

bool FaultInjectionFileSystem::FileExists(const std::string& path) {
  return base_->FileExists(path);
}

Status FaultInjectionFileSystem::SyncDir(const std::string& dir) {
  TX_RETURN_IF_ERROR(InjectedFailure(Op::kSyncDir));
  if (syncs_reach_disk()) TX_RETURN_IF_ERROR(base_->SyncDir(dir));
  std::lock_guard lock(mu_);
  ++sync_dir_count_;
  for (auto it = unsynced_creations_.begin(); it != unsynced_creations_.end();) {
    if (DirName(*it) == DirName(JoinPath(dir, "x"))) {
      it = unsynced_creations_.erase(it);
    } else {
      ++it;
    }
  }
  return Status::OK();
}

StatusOr<std::unique_ptr<FileLock>> FaultInjectionFileSystem::LockFile(const std::string& path) {
  return base_->LockFile(path);
}

}  // namespace tx
