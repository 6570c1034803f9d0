#include "common/file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "common/check.h"

namespace tx {
namespace {

int RetryOnEintr(auto&& syscall) {
  int r;
  do {
    r = syscall();
  } while (r < 0 && errno == EINTR);
  return r;
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::string_view data) override {
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, fmt::format("write {}", path_));
      }
      p += n;
      left -= static_cast<size_t>(n);
      size_ += static_cast<uint64_t>(n);
    }
    return Status::OK();
  }

  Status Sync() override {
    if (RetryOnEintr([&] { return ::fdatasync(fd_); }) < 0) {
      return Status::FromErrno(errno, fmt::format("fdatasync {}", path_));
    }
    return Status::OK();
  }

  Status Truncate(uint64_t size) override {
    if (RetryOnEintr([&] { return ::ftruncate(fd_, static_cast<off_t>(size)); }) < 0) {
      return Status::FromErrno(errno, fmt::format("ftruncate {} to {}", path_, size));
    }
    // O_APPEND is not used, so move the write position to the new end explicitly.
    if (::lseek(fd_, static_cast<off_t>(size), SEEK_SET) < 0) {
      return Status::FromErrno(errno, fmt::format("lseek {}", path_));
    }
    size_ = size;
    return Status::OK();
  }

  Status Preallocate(uint64_t size_bytes) override {
    if (size_bytes <= size_) return Status::OK();
    int r = RetryOnEintr([&] { return ::fallocate(fd_, 0, 0, static_cast<off_t>(size_bytes)); });
    if (r < 0) {
      if (errno == EOPNOTSUPP || errno == ENOSYS) return Status::OK();  // e.g. tmpfs on old kernels
      return Status::FromErrno(errno, fmt::format("fallocate {} to {} bytes", path_, size_bytes));
    }
    return Status::OK();
  }

  Status ZeroFill(uint64_t from, uint64_t to) override {
    TX_CHECK(size_ <= from && from <= to, "ZeroFill [{}, {}) of {} with {} bytes appended", from,
             to, path_, size_);
    static const std::string zeros(64 << 10, '\0');
    while (from < to) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(to - from, zeros.size()));
      const ssize_t w = ::pwrite(fd_, zeros.data(), n, static_cast<off_t>(from));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        return Status::FromErrno(errno, fmt::format("write zeros to {} at {}", path_, from));
      }
      from += static_cast<uint64_t>(w);
    }
    return Status::OK();
  }

  Status Close() override {
    if (fd_ < 0) return Status::OK();
    int r = ::close(fd_);
    fd_ = -1;
    if (r < 0) return Status::FromErrno(errno, fmt::format("close {}", path_));
    return Status::OK();
  }

  uint64_t Size() const override { return size_; }

 private:
  const std::string path_;
  int fd_;
  uint64_t size_;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }

  StatusOr<size_t> Read(uint64_t offset, size_t n, char* scratch) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, scratch + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, fmt::format("pread {} at {}", path_, offset + done));
      }
      if (r == 0) break;  // EOF
      done += static_cast<size_t>(r);
    }
    return done;
  }

 private:
  const std::string path_;
  const int fd_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }

 private:
  const int fd_;
};

class PosixFileSystem final : public FileSystem {
 public:
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    int fd = RetryOnEintr(
        [&] { return ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); });
    if (fd < 0) return Status::FromErrno(errno, fmt::format("create {}", path));
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd, 0));
  }

  StatusOr<std::unique_ptr<WritableFile>> ReopenWritableFile(const std::string& path) override {
    int fd = RetryOnEintr([&] { return ::open(path.c_str(), O_WRONLY | O_CLOEXEC); });
    if (fd < 0) return Status::FromErrno(errno, fmt::format("open {}", path));
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) {
      Status s = Status::FromErrno(errno, fmt::format("lseek {}", path));
      ::close(fd);
      return s;
    }
    return std::unique_ptr<WritableFile>(
        new PosixWritableFile(path, fd, static_cast<uint64_t>(end)));
  }

  StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override {
    int fd = RetryOnEintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); });
    if (fd < 0) return Status::FromErrno(errno, fmt::format("open {}", path));
    return std::unique_ptr<RandomAccessFile>(new PosixRandomAccessFile(path, fd));
  }

  StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return Status::FromErrno(errno, fmt::format("opendir {}", dir));
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* entry = ::readdir(d)) {
      std::string_view name = entry->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) return Status::FromErrno(err, fmt::format("readdir {}", dir));
    return names;
  }

  Status CreateDirIfMissing(const std::string& dir) override {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Status::FromErrno(ec.value(), fmt::format("mkdir {}", dir));
    return Status::OK();
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) < 0) return Status::FromErrno(errno, fmt::format("unlink {}", path));
    return Status::OK();
  }

  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) < 0) {
      return Status::FromErrno(errno, fmt::format("rename {} to {}", from, to));
    }
    return Status::OK();
  }

  StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) < 0)
      return Status::FromErrno(errno, fmt::format("stat {}", path));
    return static_cast<uint64_t>(st.st_size);
  }

  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  Status SyncDir(const std::string& dir) override {
    int fd = RetryOnEintr([&] { return ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
    if (fd < 0) return Status::FromErrno(errno, fmt::format("open directory {}", dir));
    int r = RetryOnEintr([&] { return ::fsync(fd); });
    int err = errno;
    ::close(fd);
    if (r < 0) return Status::FromErrno(err, fmt::format("fsync directory {}", dir));
    return Status::OK();
  }

  StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    int fd = RetryOnEintr([&] { return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644); });
    if (fd < 0) return Status::FromErrno(errno, fmt::format("open lock file {}", path));
    if (RetryOnEintr([&] { return ::flock(fd, LOCK_EX | LOCK_NB); }) < 0) {
      int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status::Unavailable(
            fmt::format("{} is locked: another process is using this directory", path));
      }
      return Status::FromErrno(err, fmt::format("flock {}", path));
    }
    return std::unique_ptr<FileLock>(new PosixFileLock(fd));
  }
};

}  // namespace

FileSystem* FileSystem::Default() {
  static PosixFileSystem* const kPosix = new PosixFileSystem();
  return kPosix;
}

Status WriteFileAtomically(FileSystem* fs, const std::string& path, std::string_view contents) {
  const std::string tmp = path + ".tmp";
  TX_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, fs->NewWritableFile(tmp));
  TX_RETURN_IF_ERROR(file->Append(contents));
  TX_RETURN_IF_ERROR(file->Sync());
  TX_RETURN_IF_ERROR(file->Close());
  TX_RETURN_IF_ERROR(fs->RenameFile(tmp, path));
  return fs->SyncDir(DirName(path));
}

StatusOr<std::string> ReadFileToString(FileSystem* fs, const std::string& path) {
  TX_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, fs->NewRandomAccessFile(path));
  TX_ASSIGN_OR_RETURN(uint64_t size, fs->FileSize(path));
  std::string contents(size, '\0');
  TX_ASSIGN_OR_RETURN(size_t n, file->Read(0, size, contents.data()));
  contents.resize(n);
  return contents;
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty() && out.back() != '/') out.push_back('/');
  out.append(name);
  return out;
}

std::string DirName(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

}  // namespace tx
