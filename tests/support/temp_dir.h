// A directory for one test, removed with its contents when the object is destroyed.
// By default created under $TMPDIR (or /tmp), which is on the real disk here, so fsync is real.

#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/check.h"

namespace tx::testing {

class TempDir {
 public:
  // Where a TempDir lives: on the real disk (durability tests), or in memory for tests of
  // logic that run thousands of file operations and must not wait on a busy disk's journal.
  enum class Medium { kDisk, kMemory };

  explicit TempDir(Medium medium = Medium::kDisk) {
    const char* base = std::getenv("TMPDIR");
    std::string root = base != nullptr ? base : "/tmp";
    if (medium == Medium::kMemory && ::access("/dev/shm", W_OK) == 0) root = "/dev/shm";
    std::string pattern = root + "/txtest.XXXXXX";
    TX_CHECK(::mkdtemp(pattern.data()) != nullptr, "mkdtemp {} failed", pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace tx::testing
