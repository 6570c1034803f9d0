#include "wal/log_format.h"

#include <gtest/gtest.h>

#include <string>

#include "wal/segment_scan.h"

namespace tx::wal {
namespace {

std::string Hex(std::string_view bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (!out.empty()) out.push_back(' ');
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// The worked example of docs/wal-format.md, byte for byte. If this test fails, the on-disk
// format changed: old logs would no longer open.
TEST(LogFormat, WorkedExampleMatchesTheDocumentation) {
  EXPECT_EQ(
      "54 58 57 41 4c 53 45 47 01 00 00 00 00 00 00 00 "
      "01 00 00 00 00 00 00 00 73 f7 a6 a2 00 00 00 00",
      Hex(EncodeSegmentHeader(1)));
  std::string record;
  AppendRecord(&record, 1, 1, "hello");
  EXPECT_EQ(
      "71 79 99 29 05 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00 "
      "68 65 6c 6c 6f",
      Hex(record));
}

TEST(LogFormat, SegmentHeaderRoundTripsAndRejectsDamage) {
  std::string header = EncodeSegmentHeader(0x1234567890ull);
  ASSERT_EQ(kSegmentHeaderBytes, header.size());
  EXPECT_EQ(0x1234567890ull, DecodeSegmentHeader(header));
  for (size_t byte = 0; byte < header.size(); ++byte) {
    std::string damaged = header;
    damaged[byte] ^= 0x10;
    EXPECT_FALSE(DecodeSegmentHeader(damaged)) << "byte " << byte;
  }
  EXPECT_FALSE(DecodeSegmentHeader(header.substr(0, 31)));
}

TEST(LogFormat, SegmentFileNamesRoundTrip) {
  EXPECT_EQ("0000000000000001.wal", SegmentFileName(1));
  EXPECT_EQ("00000000000000ff.wal", SegmentFileName(255));
  EXPECT_EQ(255u, ParseSegmentFileName("00000000000000ff.wal"));
  EXPECT_FALSE(ParseSegmentFileName("00000000000000FF.wal"));
  EXPECT_FALSE(ParseSegmentFileName("00000000000000ff.wal.tmp"));
  EXPECT_FALSE(ParseSegmentFileName("LOCK"));
  EXPECT_FALSE(ParseSegmentFileName("0000000000000x01.wal"));
}

std::string SegmentWith(int records, uint64_t first_index = 1) {
  std::string bytes = EncodeSegmentHeader(first_index);
  for (int i = 0; i < records; ++i) {
    AppendRecord(&bytes, first_index + i, 1, std::string(10 + i, static_cast<char>('a' + i)));
  }
  return bytes;
}

TEST(SegmentScan, ReadsEveryRecordOfAnIntactSegment) {
  std::string bytes = SegmentWith(5, 10);
  auto scan = ScanSegment(bytes, kMaxRecordBytes);
  ASSERT_TRUE(scan);
  EXPECT_EQ(10u, scan->first_index);
  EXPECT_EQ(5u, scan->record_offsets.size());
  EXPECT_EQ(bytes.size(), scan->valid_end);
  EXPECT_FALSE(scan->damage);
}

TEST(SegmentScan, RecordWithUnexpectedIndexIsDamage) {
  std::string bytes = EncodeSegmentHeader(1);
  AppendRecord(&bytes, 1, 1, "one");
  AppendRecord(&bytes, 3, 1, "three");  // a stale or misplaced record
  auto scan = ScanSegment(bytes, kMaxRecordBytes);
  ASSERT_TRUE(scan);
  EXPECT_EQ(1u, scan->record_offsets.size());
  ASSERT_TRUE(scan->damage);
  EXPECT_NE(std::string::npos, scan->damage->reason.find("index 3"));
}

TEST(SegmentScan, ShortTailLooksTorn) {
  std::string bytes = SegmentWith(3);
  bytes.resize(bytes.size() - 4);
  auto scan = ScanSegment(bytes, kMaxRecordBytes);
  ASSERT_TRUE(scan && scan->damage);
  EXPECT_TRUE(scan->damage->looks_torn);
  EXPECT_EQ(2u, scan->record_offsets.size());
}

TEST(SegmentScan, FlippedBitFollowedByValidRecordsIsCorruption) {
  std::string bytes = SegmentWith(3);
  const uint64_t second = ScanSegment(bytes, kMaxRecordBytes)->record_offsets[1];
  bytes[second + kRecordHeaderBytes] ^= 0x04;
  auto scan = ScanSegment(bytes, kMaxRecordBytes);
  ASSERT_TRUE(scan && scan->damage);
  EXPECT_FALSE(scan->damage->looks_torn);
  EXPECT_EQ(second, scan->damage->offset);
}

TEST(SegmentScan, ZeroFilledRecordFollowedByValidOnesLooksTorn) {
  // A power loss can persist a later page of a write but not an earlier one: the earlier
  // record reads back as zeros.
  std::string bytes = SegmentWith(3);
  auto offsets = ScanSegment(bytes, kMaxRecordBytes)->record_offsets;
  std::fill(bytes.begin() + offsets[1], bytes.begin() + offsets[2], '\0');
  auto scan = ScanSegment(bytes, kMaxRecordBytes);
  ASSERT_TRUE(scan && scan->damage);
  EXPECT_TRUE(scan->damage->looks_torn);
  EXPECT_EQ(offsets[1], scan->damage->offset);
}

TEST(SegmentScan, OversizeLengthFieldIsDamageNotAnAllocation) {
  std::string bytes = SegmentWith(1);
  EncodeFixed32(bytes.data() + kSegmentHeaderBytes + kRecordLengthOffset, 0xfffffff0u);
  auto scan = ScanSegment(bytes, kMaxRecordBytes);
  ASSERT_TRUE(scan && scan->damage);
  EXPECT_NE(std::string::npos, scan->damage->reason.find("exceeds"));
}

}  // namespace
}  // namespace tx::wal
