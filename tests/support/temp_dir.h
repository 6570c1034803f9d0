// A directory for one test, removed with its contents when the object is destroyed.
// Created under $TMPDIR (or /tmp), which is on the real disk here, so fsync is real.

#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/check.h"

namespace tx::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/txtest.XXXXXX";
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
