// The on-disk format of the write-ahead log, in one place.
//
// docs/wal-format.md describes the same bytes with a worked example; keep the two in step.
//
// A log directory holds segment files named "<first index as 16 lower-case hex digits>.wal",
// plus a LOCK file. Every integer is little-endian.
//
// Segment header (kSegmentHeaderBytes = 32):
//   [0, 8)    magic "TXWALSEG"
//   [8, 12)   format version (kFormatVersion)
//   [12, 16)  reserved, zero
//   [16, 24)  index of the first record in this segment
//   [24, 28)  masked CRC-32C of bytes [0, 24)
//   [28, 32)  reserved, zero
//
// Record (kRecordHeaderBytes = 20, then the payload):
//   [0, 4)    masked CRC-32C of bytes [4, 20 + length): covers everything after itself
//   [4, 8)    payload length in bytes
//   [8, 9)    record type, chosen by the user, 1..255 (0 never appears in a valid record,
//             so an all-zero header is recognisably unwritten space)
//   [9, 12)   reserved, zero
//   [12, 20)  record index (the first record of a segment carries the header's first index,
//             each next record the previous index + 1)
//   [20, 20 + length) payload
//
// Records follow each other with no padding. A record never spans two segments.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace tx::wal {

inline constexpr char kSegmentMagic[8] = {'T', 'X', 'W', 'A', 'L', 'S', 'E', 'G'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 32;
inline constexpr size_t kSegmentHeaderCrcOffset = 24;

inline constexpr size_t kRecordCrcOffset = 0;
inline constexpr size_t kRecordLengthOffset = 4;
inline constexpr size_t kRecordTypeOffset = 8;
inline constexpr size_t kRecordReservedOffset = 9;
inline constexpr size_t kRecordIndexOffset = 12;
inline constexpr size_t kRecordHeaderBytes = 20;

// Bounds the memory a reader or recovery needs for one record, whatever the length field says.
inline constexpr uint32_t kMaxRecordBytes = 64u << 20;

// Sectors are the unit a disk writes atomically; a sector of zeros inside a record means the
// write never reached the disk (see the torn-tail rule in docs/wal-format.md).
inline constexpr size_t kSectorBytes = 512;

static_assert(sizeof(kSegmentMagic) == 8);
static_assert(kSegmentHeaderCrcOffset + 4 <= kSegmentHeaderBytes);
static_assert(kRecordLengthOffset == kRecordCrcOffset + 4);
static_assert(kRecordTypeOffset == kRecordLengthOffset + 4);
static_assert(kRecordReservedOffset == kRecordTypeOffset + 1);
static_assert(kRecordIndexOffset == kRecordReservedOffset + 3);
static_assert(kRecordHeaderBytes == kRecordIndexOffset + 8);
static_assert(uint64_t{kRecordHeaderBytes} + kMaxRecordBytes < (uint64_t{1} << 32),
              "a whole record frame must fit a uint32_t");

inline void EncodeFixed32(char* dst, uint32_t v) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__);
  std::memcpy(dst, &v, sizeof(v));
}
inline void EncodeFixed64(char* dst, uint64_t v) { std::memcpy(dst, &v, sizeof(v)); }
inline uint32_t DecodeFixed32(const char* src) {
  uint32_t v;
  std::memcpy(&v, src, sizeof(v));
  return v;
}
inline uint64_t DecodeFixed64(const char* src) {
  uint64_t v;
  std::memcpy(&v, src, sizeof(v));
  return v;
}

// The 32 header bytes of a segment whose first record has index first_index.
std::string EncodeSegmentHeader(uint64_t first_index);

// Returns the first index, or nullopt if the bytes are not a valid header of this version.
std::optional<uint64_t> DecodeSegmentHeader(std::string_view header);

// Appends one record frame (header and payload) to *dst.
void AppendRecord(std::string* dst, uint64_t index, uint8_t type, std::string_view payload);

// "0000000000000001.wal" for first index 1, and back. nullopt for names that are not segments.
std::string SegmentFileName(uint64_t first_index);
std::optional<uint64_t> ParseSegmentFileName(std::string_view name);

}  // namespace tx::wal
