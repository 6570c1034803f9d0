#include "wal/log_format.h"

#include <fmt/format.h>

#include <charconv>

#include "common/check.h"
#include "common/crc32c.h"

namespace tx::wal {

std::string EncodeSegmentHeader(uint64_t first_index) {
  std::string header(kSegmentHeaderBytes, '\0');
  std::memcpy(header.data(), kSegmentMagic, sizeof(kSegmentMagic));
  EncodeFixed32(header.data() + 8, kFormatVersion);
  EncodeFixed64(header.data() + 16, first_index);
  EncodeFixed32(header.data() + kSegmentHeaderCrcOffset,
                crc32c::Mask(crc32c::Value(header.data(), kSegmentHeaderCrcOffset)));
  return header;
}

std::optional<uint64_t> DecodeSegmentHeader(std::string_view header) {
  if (header.size() < kSegmentHeaderBytes) return std::nullopt;
  if (std::memcmp(header.data(), kSegmentMagic, sizeof(kSegmentMagic)) != 0) return std::nullopt;
  if (DecodeFixed32(header.data() + 8) != kFormatVersion) return std::nullopt;
  if (DecodeFixed32(header.data() + 12) != 0 || DecodeFixed32(header.data() + 28) != 0) {
    return std::nullopt;
  }
  uint32_t stored = crc32c::Unmask(DecodeFixed32(header.data() + kSegmentHeaderCrcOffset));
  if (stored != crc32c::Value(header.data(), kSegmentHeaderCrcOffset)) return std::nullopt;
  return DecodeFixed64(header.data() + 16);
}

void AppendRecord(std::string* dst, uint64_t index, uint8_t type, std::string_view payload) {
  TX_CHECK(type != 0, "record type 0 is reserved for unwritten space");
  TX_CHECK(payload.size() <= kMaxRecordBytes, "payload of {} bytes exceeds the format's bound",
           payload.size());
  const size_t start = dst->size();
  dst->resize(start + kRecordHeaderBytes);
  char* h = dst->data() + start;
  EncodeFixed32(h + kRecordLengthOffset, static_cast<uint32_t>(payload.size()));
  h[kRecordTypeOffset] = static_cast<char>(type);
  h[kRecordReservedOffset] = h[kRecordReservedOffset + 1] = h[kRecordReservedOffset + 2] = 0;
  EncodeFixed64(h + kRecordIndexOffset, index);
  uint32_t crc = crc32c::Value(h + kRecordLengthOffset, kRecordHeaderBytes - kRecordLengthOffset);
  crc = crc32c::Extend(crc, payload.data(), payload.size());
  EncodeFixed32(h + kRecordCrcOffset, crc32c::Mask(crc));
  dst->append(payload);
}

std::string SegmentFileName(uint64_t first_index) {
  return fmt::format("{:016x}.wal", first_index);
}

std::optional<uint64_t> ParseSegmentFileName(std::string_view name) {
  constexpr std::string_view kSuffix = ".wal";
  if (name.size() != 16 + kSuffix.size() || !name.ends_with(kSuffix)) return std::nullopt;
  uint64_t index = 0;
  for (char c : name.substr(0, 16)) {
    // from_chars would accept upper case; the writer only produces lower case.
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  }
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + 16, index, 16);
  if (ec != std::errc() || ptr != name.data() + 16) return std::nullopt;
  return index;
}

}  // namespace tx::wal
