// Decoding and validation of one segment's bytes, used by recovery and by readers.
//
// Internal to wal/: other modules use wal/wal.h.

#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tx::wal {

struct DecodedRecord {
  uint64_t index = 0;
  uint8_t type = 0;
  std::string_view payload;  // points into the scanned bytes
};

// Checks the record frame that starts at `offset` of a segment's bytes. On success stores the
// record in *out and returns nullopt; otherwise returns why the frame is invalid.
// `expected_index` is the index the record must carry; `max_record_bytes` bounds the length.
std::optional<std::string> CheckFrame(std::string_view segment, uint64_t offset,
                                      uint64_t expected_index, uint32_t max_record_bytes,
                                      DecodedRecord* out);

// The first invalid frame of a segment and how to read it.
struct Damage {
  uint64_t offset = 0;  // where the invalid frame starts
  std::string reason;   // what is wrong with it
  // True when the damage looks like a write that never completed: nothing valid follows it,
  // or the damaged bytes hold a whole zero sector or an all-zero record header (space that was
  // allocated but never written, as a power loss leaves it). False means corruption: a record
  // that was once written whole no longer matches its checksum.
  bool looks_torn = false;
  // True when every byte from `offset` to the end of the segment is zero: space preallocated
  // for records that were never written. Implies looks_torn.
  bool unwritten_tail = false;
};

// The result of reading a segment from its header to its end.
struct SegmentScan {
  uint64_t first_index = 0;
  std::vector<uint64_t> record_offsets;  // offset of record first_index + i
  uint64_t valid_end = 0;                // just past the last valid record
  std::optional<Damage> damage;          // set when valid_end < segment size
};

// Scans the bytes of a whole segment file. Returns nullopt if the segment header is invalid.
// Stops at the first invalid frame and classifies it (see Damage).
std::optional<SegmentScan> ScanSegment(std::string_view segment, uint32_t max_record_bytes);

}  // namespace tx::wal
