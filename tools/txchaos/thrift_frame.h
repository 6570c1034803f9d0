// The few facts about our wire format that txchaos needs to see message boundaries without
// decoding messages: every connection carries Thrift framed transport (a 4-byte big-endian length,
// then that many bytes) and each frame holds one strict-binary message, which starts
//
//   i32  0x80010000 | type      (1 CALL, 2 REPLY, 3 EXCEPTION, 4 ONEWAY)
//   i32  name length, then the name ("Commit", or "raft:Deliver" when multiplexed)
//   i32  sequence id
//
// Pure functions; thread-safe.

#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tx::chaos {

inline constexpr size_t kFrameHeaderBytes = 4;

enum class MessageType : uint8_t { kCall = 1, kReply = 2, kException = 3, kOneway = 4 };

struct MessageHeader {
  MessageType type = MessageType::kCall;
  std::string name;  // as sent, with a multiplexing prefix ("raft:Deliver")
  int32_t seqid = 0;
};

// Reads the big-endian frame length at `bytes` (at least 4 bytes).
uint32_t ReadFrameLength(const char* bytes);
// Appends the 4-byte length prefix of a frame of `length` bytes.
void AppendFrameLength(std::string* out, uint32_t length);

// The message header at the start of a frame's payload (the bytes after the length), or nullopt
// when the payload does not start with a strict-binary header of a known type or the name is
// longer than `max_name_bytes` or than the payload.
std::optional<MessageHeader> ParseMessageHeader(std::string_view payload,
                                                size_t max_name_bytes = 256);

// The method name without a multiplexing prefix: "raft:Deliver" -> "Deliver".
std::string_view MethodOf(std::string_view name);

}  // namespace tx::chaos
