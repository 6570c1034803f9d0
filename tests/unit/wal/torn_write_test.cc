// Torn-write sweep: the log is cut at every byte offset of its last records, and each bit of
// them is flipped. Each time, recovery must keep the record or truncate from it, never return
// a wrong record, and never lose an earlier one.

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <string>
#include <vector>

#include "common/fault_injection_fs.h"
#include "common/file_system.h"
#include "tests/support/temp_dir.h"
#include "wal/log_format.h"
#include "wal/wal.h"

namespace tx::wal {
namespace {

constexpr int kRecords = 12;
constexpr int kSweptRecords = 3;  // the last ones, whose bytes are cut and flipped

// Sizes chosen so the swept records include an empty payload and one spanning sectors.
size_t PayloadSize(int i) {
  if (i == kRecords - 3) return 0;
  if (i == kRecords - 2) return 33;
  if (i == kRecords - 1) return 700;
  return 50 + i;
}

std::string Payload(int i) {
  std::string p(PayloadSize(i), '\0');
  for (size_t k = 0; k < p.size(); ++k) p[k] = static_cast<char>('A' + (i * 7 + k) % 50);
  return p;
}

class TornWriteSweep : public ::testing::Test {
 protected:
  void SetUp() override {
    // Each of the thousands of recoveries below logs a truncation warning; keep output readable.
    spdlog::set_level(spdlog::level::err);
    // Thousands of recoveries follow; what they test is the recovery logic, not the disk.
    fs_.SetSyncsReachDisk(false);
    auto wal = Wal::Open(dir_.path(), options());
    ASSERT_TRUE(wal.ok());
    for (int i = 0; i < kRecords; ++i) {
      std::string p = Payload(i);
      ASSERT_TRUE((*wal)->Append(RecordView{1, p}).ok());
    }
    ASSERT_TRUE((*wal)->Sync().ok());
    wal->reset();
    path_ = JoinPath(dir_.path(), SegmentFileName(1));
    original_ = *ReadFileToString(FileSystem::Default(), path_);
    uint64_t offset = kSegmentHeaderBytes;
    for (int i = 0; i < kRecords; ++i) {
      record_start_.push_back(offset);
      offset += kRecordHeaderBytes + PayloadSize(i);
    }
    record_start_.push_back(offset);
    ASSERT_EQ(original_.size(), offset);
  }

  // Number of records that lie wholly before `offset`.
  int RecordsBefore(uint64_t offset) const {
    int n = 0;
    while (n < kRecords && record_start_[n + 1] <= offset) ++n;
    return n;
  }

  // Opens the log over `bytes`; checks that whatever it returns is a correct prefix of the
  // original records of length at least `min_records`. Returns the Status of Open and, when it
  // opened, the number of records found.
  Status OpenAndCheck(const std::string& bytes, int min_records, int* found) {
    // Each case gets a directory of its own: rewriting one file in place would make ext4 flush
    // it on close (auto_da_alloc), which costs more than the whole recovery under test.
    const std::string dir = JoinPath(dir_.path(), "case" + std::to_string(++cases_));
    EXPECT_TRUE(fs_.CreateDirIfMissing(dir).ok());
    path_ = JoinPath(dir, SegmentFileName(1));
    auto file = fs_.NewWritableFile(path_);
    EXPECT_TRUE(file.ok());
    EXPECT_TRUE((*file)->Append(bytes).ok());
    EXPECT_TRUE((*file)->Close().ok());
    auto wal = Wal::Open(dir, options());
    if (!wal.ok()) return wal.status();
    *found = static_cast<int>((*wal)->last_index());
    EXPECT_GE(*found, min_records);
    auto records = (*wal)->Read(1, (*wal)->last_index() + 1);
    EXPECT_TRUE(records.ok()) << records.status().ToString();
    if (records.ok()) {
      for (int i = 0; i < static_cast<int>(records->size()); ++i) {
        EXPECT_EQ(Payload(i), (*records)[i].payload) << "record " << i + 1 << " is wrong";
      }
    }
    // The log must accept appends after recovery: the tail is clean.
    std::string next = "after recovery";
    auto index = (*wal)->Append(RecordView{1, next});
    EXPECT_TRUE(index.ok());
    if (index.ok()) {
      EXPECT_EQ(static_cast<uint64_t>(*found + 1), *index);
    }
    return Status::OK();
  }

  void TearDown() override { spdlog::set_level(spdlog::level::info); }

  Options options() {
    Options o;
    o.fs = &fs_;
    o.preallocate = false;
    return o;
  }

  FaultInjectionFileSystem fs_;

  // Recovery logic, not durability, is under test: keep the thousands of cases off the disk.
  tx::testing::TempDir dir_{tx::testing::TempDir::Medium::kMemory};
  int cases_ = 0;
  std::string path_;  // the segment of the latest case
  std::string original_;
  std::vector<uint64_t> record_start_;  // record i starts at [i]; [kRecords] is the end
};

TEST_F(TornWriteSweep, CutAtEveryOffsetKeepsEveryWholeRecord) {
  const uint64_t sweep_start = record_start_[kRecords - kSweptRecords];
  for (uint64_t cut = sweep_start; cut <= original_.size(); ++cut) {
    SCOPED_TRACE("cut at offset " + std::to_string(cut));
    int found = -1;
    const int whole = RecordsBefore(cut);
    Status s = OpenAndCheck(original_.substr(0, cut), whole, &found);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(whole, found);
  }
}

TEST_F(TornWriteSweep, FlippedBitIsTruncatedAtTheTailAndCorruptionBeforeIt) {
  const int first_swept = kRecords - kSweptRecords;
  const uint64_t sweep_start = record_start_[first_swept];
#ifdef TX_SANITIZE_BUILD
  const uint64_t stride = 3;  // the sanitizer build checks every third bit
#else
  const uint64_t stride = 1;
#endif
  int opened = 0, refused = 0;
  for (uint64_t bit = sweep_start * 8; bit < original_.size() * 8; bit += stride) {
    const uint64_t byte = bit / 8;
    const int damaged_record = RecordsBefore(byte);  // 0-based index of the damaged record
    SCOPED_TRACE("flip bit " + std::to_string(bit % 8) + " of byte " + std::to_string(byte) +
                 " (record " + std::to_string(damaged_record + 1) + ")");
    std::string bytes = original_;
    bytes[byte] = static_cast<char>(bytes[byte] ^ (1 << (bit % 8)));
    int found = -1;
    Status s = OpenAndCheck(bytes, damaged_record, &found);
    if (damaged_record == kRecords - 1) {
      // The last record is the tail: recovery truncates from it and opens.
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(damaged_record, found);
      ++opened;
    } else {
      // Valid records follow the damaged one, so it was once written whole: refuse to open,
      // naming the file and offset, rather than drop records that may have been durable.
      ASSERT_TRUE(s.IsCorruption()) << s.ToString();
      EXPECT_NE(std::string::npos, s.message().find(path_)) << s.ToString();
      EXPECT_NE(std::string::npos,
                s.message().find("offset " + std::to_string(record_start_[damaged_record])))
          << s.ToString();
      ++refused;
    }
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace tx::wal
