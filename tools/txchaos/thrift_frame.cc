#include "tools/txchaos/thrift_frame.h"

namespace tx::chaos {
namespace {

uint32_t ReadU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

}  // namespace

uint32_t ReadFrameLength(const char* bytes) { return ReadU32(bytes); }

void AppendFrameLength(std::string* out, uint32_t length) {
  out->push_back(static_cast<char>((length >> 24) & 0xff));
  out->push_back(static_cast<char>((length >> 16) & 0xff));
  out->push_back(static_cast<char>((length >> 8) & 0xff));
  out->push_back(static_cast<char>(length & 0xff));
}

std::optional<MessageHeader> ParseMessageHeader(std::string_view payload, size_t max_name_bytes) {
  constexpr uint32_t kVersionMask = 0xffff0000u;
  constexpr uint32_t kVersion1 = 0x80010000u;
  if (payload.size() < 8) return std::nullopt;
  const uint32_t word = ReadU32(payload.data());
  if ((word & kVersionMask) != kVersion1) return std::nullopt;
  const uint32_t type = word & 0xffu;
  if (type < 1 || type > 4 || (word & 0xff00u) != 0) return std::nullopt;
  const uint32_t name_length = ReadU32(payload.data() + 4);
  if (name_length > max_name_bytes || name_length > payload.size() - 8) return std::nullopt;
  if (payload.size() - 8 - name_length < 4) return std::nullopt;
  MessageHeader h;
  h.type = static_cast<MessageType>(type);
  h.name.assign(payload.data() + 8, name_length);
  h.seqid = static_cast<int32_t>(ReadU32(payload.data() + 8 + name_length));
  return h;
}

std::string_view MethodOf(std::string_view name) {
  size_t colon = name.rfind(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

}  // namespace tx::chaos
