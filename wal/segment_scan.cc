#include "wal/segment_scan.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/crc32c.h"
#include "wal/log_format.h"

namespace tx::wal {
namespace {

bool AllZero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

// True if [begin, end) of the segment contains a whole, sector-aligned run of zeros, or starts
// with an all-zero record header: both are the signature of space that was never written.
bool HoldsUnwrittenSpace(std::string_view segment, uint64_t begin, uint64_t end) {
  if (end - begin >= kRecordHeaderBytes && AllZero(segment.substr(begin, kRecordHeaderBytes))) {
    return true;
  }
  uint64_t sector = (begin + kSectorBytes - 1) / kSectorBytes * kSectorBytes;
  for (; sector + kSectorBytes <= end; sector += kSectorBytes) {
    if (AllZero(segment.substr(sector, kSectorBytes))) return true;
  }
  return false;
}

// Offset of the first valid frame after `damaged` that carries an index >= expected_index, or
// nullopt. Any byte offset is tried, since the damaged frame's length cannot be trusted.
std::optional<uint64_t> FindValidFrameAfter(std::string_view segment, uint64_t damaged,
                                            uint64_t expected_index, uint32_t max_record_bytes) {
  const uint64_t size = segment.size();
  // No frame is smaller than a header, which bounds how far ahead an index can be.
  const uint64_t max_index_ahead = (size - damaged) / kRecordHeaderBytes + 1;
  for (uint64_t offset = damaged + 1; offset + kRecordHeaderBytes <= size; ++offset) {
    const char* h = segment.data() + offset;
    // Cheap filters first; the CRC is only computed for plausible headers.
    if (h[kRecordTypeOffset] == 0) continue;
    uint64_t index = DecodeFixed64(h + kRecordIndexOffset);
    if (index < expected_index || index - expected_index > max_index_ahead) continue;
    DecodedRecord ignored;
    if (!CheckFrame(segment, offset, index, max_record_bytes, &ignored)) return offset;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> CheckFrame(std::string_view segment, uint64_t offset,
                                      uint64_t expected_index, uint32_t max_record_bytes,
                                      DecodedRecord* out) {
  const uint64_t size = segment.size();
  if (offset + kRecordHeaderBytes > size) {
    return fmt::format("record header cut short ({} of {} bytes)", size - offset,
                       kRecordHeaderBytes);
  }
  const char* h = segment.data() + offset;
  const uint32_t length = DecodeFixed32(h + kRecordLengthOffset);
  if (length > max_record_bytes) {
    return fmt::format("record length {} exceeds the limit of {} bytes", length, max_record_bytes);
  }
  if (offset + kRecordHeaderBytes + length > size) {
    return fmt::format("record payload cut short ({} of {} bytes)",
                       size - offset - kRecordHeaderBytes, length);
  }
  uint32_t expected_crc =
      crc32c::Value(h + kRecordLengthOffset, kRecordHeaderBytes - kRecordLengthOffset + length);
  if (crc32c::Unmask(DecodeFixed32(h + kRecordCrcOffset)) != expected_crc) {
    return std::string("record checksum mismatch");
  }
  // The checks below can only fail for bytes a buggy writer produced with a valid checksum.
  const auto type = static_cast<uint8_t>(h[kRecordTypeOffset]);
  if (type == 0) return std::string("record type 0");
  if (h[kRecordReservedOffset] != 0 || h[kRecordReservedOffset + 1] != 0 ||
      h[kRecordReservedOffset + 2] != 0) {
    return std::string("reserved record bytes are not zero");
  }
  const uint64_t index = DecodeFixed64(h + kRecordIndexOffset);
  if (index != expected_index) {
    return fmt::format("record carries index {} where {} was expected", index, expected_index);
  }
  out->index = index;
  out->type = type;
  out->payload = segment.substr(offset + kRecordHeaderBytes, length);
  return std::nullopt;
}

std::optional<SegmentScan> ScanSegment(std::string_view segment, uint32_t max_record_bytes) {
  std::optional<uint64_t> first_index = DecodeSegmentHeader(segment);
  if (!first_index) return std::nullopt;
  SegmentScan scan;
  scan.first_index = *first_index;
  uint64_t offset = kSegmentHeaderBytes;
  uint64_t next_index = *first_index;
  while (offset < segment.size()) {
    DecodedRecord record;
    std::optional<std::string> problem =
        CheckFrame(segment, offset, next_index, max_record_bytes, &record);
    if (problem) {
      Damage damage{offset, std::move(*problem), false, false};
      damage.unwritten_tail = AllZero(segment.substr(offset));
      std::optional<uint64_t> next_valid;
      if (!damage.unwritten_tail) {
        next_valid = FindValidFrameAfter(segment, offset, next_index, max_record_bytes);
      }
      damage.looks_torn =
          damage.unwritten_tail || !next_valid || HoldsUnwrittenSpace(segment, offset, *next_valid);
      if (next_valid) {
        damage.reason += fmt::format(" (a valid record follows at offset {})", *next_valid);
      }
      scan.damage = std::move(damage);
      break;
    }
    scan.record_offsets.push_back(offset);
    offset += kRecordHeaderBytes + record.payload.size();
    ++next_index;
  }
  scan.valid_end = offset;
  return scan;
}

}  // namespace tx::wal
