#include "common/file_system.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/fault_injection_fs.h"
#include "tests/support/temp_dir.h"

namespace tx {
namespace {

// A new, empty file "f" in a temporary directory, opened for writing.
class PosixWritableFile : public ::testing::Test {
 protected:
  void SetUp() override {
    auto file = fs_->NewWritableFile(path_);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    file_ = std::move(file).value();
  }

  testing::TempDir dir_;
  FileSystem* const fs_ = FileSystem::Default();
  const std::string path_ = JoinPath(dir_.path(), "f");
  std::unique_ptr<WritableFile> file_;
};

TEST_F(PosixWritableFile, AppendSyncReadBack) {
  ASSERT_TRUE(file_->Append("hello ").ok());
  ASSERT_TRUE(file_->Append("world").ok());
  ASSERT_TRUE(file_->Sync().ok());
  EXPECT_EQ(11u, file_->Size());
  auto contents = ReadFileToString(fs_, path_);
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ("hello world", *contents);
}

TEST_F(PosixWritableFile, TruncateThenAppendContinuesAtNewEnd) {
  ASSERT_TRUE(file_->Append("abcdef").ok());
  ASSERT_TRUE(file_->Truncate(2).ok());
  ASSERT_TRUE(file_->Append("XY").ok());
  EXPECT_EQ("abXY", *ReadFileToString(fs_, path_));
}

TEST_F(PosixWritableFile, ZeroFillWritesZerosAheadWithoutMovingTheAppendPosition) {
  ASSERT_TRUE(file_->Append("abc").ok());
  ASSERT_TRUE(file_->Preallocate(4096).ok());
  ASSERT_TRUE(file_->ZeroFill(3, 70000).ok());  // past the preallocated space too
  EXPECT_EQ(3u, file_->Size());
  ASSERT_TRUE(file_->Append("de").ok());  // over the zeros, not after them
  ASSERT_TRUE(file_->Sync().ok());
  EXPECT_EQ(5u, file_->Size());
  auto contents = ReadFileToString(fs_, path_);
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ("abcde" + std::string(70000 - 5, '\0'), *contents);
}

TEST(PosixFileSystem, MissingFileIsNotFound) {
  testing::TempDir dir;
  auto r = FileSystem::Default()->NewRandomAccessFile(JoinPath(dir.path(), "nope"));
  EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
}

TEST(PosixFileSystem, SecondLockOnSameFileIsUnavailable) {
  testing::TempDir dir;
  FileSystem* fs = FileSystem::Default();
  std::string path = JoinPath(dir.path(), "LOCK");
  auto first = fs->LockFile(path);
  ASSERT_TRUE(first.ok());
  auto second = fs->LockFile(path);
  EXPECT_TRUE(second.status().IsUnavailable()) << second.status().ToString();
  first->reset();
  EXPECT_TRUE(fs->LockFile(path).ok());
}

TEST(PosixFileSystem, WriteFileAtomicallyReplacesContents) {
  testing::TempDir dir;
  FileSystem* fs = FileSystem::Default();
  std::string path = JoinPath(dir.path(), "state");
  ASSERT_TRUE(WriteFileAtomically(fs, path, "one").ok());
  ASSERT_TRUE(WriteFileAtomically(fs, path, "two").ok());
  EXPECT_EQ("two", *ReadFileToString(fs, path));
  EXPECT_FALSE(fs->FileExists(path + ".tmp"));
}

TEST(FaultInjectionFileSystem, SpaceLimitWritesPrefixThenNoSpace) {
  testing::TempDir dir;
  FaultInjectionFileSystem fs;
  std::string path = JoinPath(dir.path(), "f");
  auto file = fs.NewWritableFile(path);
  ASSERT_TRUE(file.ok());
  fs.SetSpaceLimit(4);
  Status s = (*file)->Append("abcdefgh");
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(4u, (*file)->Size());
  EXPECT_EQ("abcd", *ReadFileToString(&fs, path));
}

TEST(FaultInjectionFileSystem, DropUnsyncedDataCutsToLastSync) {
  testing::TempDir dir;
  FaultInjectionFileSystem fs;
  std::string path = JoinPath(dir.path(), "f");
  auto file = fs.NewWritableFile(path);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE(fs.SyncDir(dir.path()).ok());
  ASSERT_TRUE((*file)->Append("durable").ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Append("-lost").ok());
  ASSERT_TRUE(fs.DropUnsyncedData().ok());
  EXPECT_EQ("durable", *ReadFileToString(&fs, path));
}

TEST(FaultInjectionFileSystem, DropUnsyncedDataRemovesFilesWhoseCreationWasNotSynced) {
  testing::TempDir dir;
  FaultInjectionFileSystem fs;
  std::string path = JoinPath(dir.path(), "new");
  auto file = fs.NewWritableFile(path);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append("x").ok());
  ASSERT_TRUE((*file)->Sync().ok());  // data synced, but the directory entry is not
  ASSERT_TRUE(fs.DropUnsyncedData().ok());
  EXPECT_FALSE(fs.FileExists(path));
}

TEST(FaultInjectionFileSystem, InjectedSyncFailureIsReturned) {
  testing::TempDir dir;
  FaultInjectionFileSystem fs;
  auto file = fs.NewWritableFile(JoinPath(dir.path(), "f"));
  ASSERT_TRUE(file.ok());
  fs.FailOperation(FaultInjectionFileSystem::Op::kSync, Status::IOError("injected EIO"));
  EXPECT_TRUE((*file)->Sync().IsIOError());
  fs.ClearFailure(FaultInjectionFileSystem::Op::kSync);
  EXPECT_TRUE((*file)->Sync().ok());
}

TEST(Paths, JoinAndDirName) {
  EXPECT_EQ("a/b", JoinPath("a", "b"));
  EXPECT_EQ("a/b", JoinPath("a/", "b"));
  EXPECT_EQ("a", DirName("a/b"));
  EXPECT_EQ(".", DirName("b"));
  EXPECT_EQ("/", DirName("/b"));
}

}  // namespace
}  // namespace tx
