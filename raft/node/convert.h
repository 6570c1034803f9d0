// Conversion between the core's messages (raft/core/message.h) and their Thrift form
// (thrift/raft.thrift), both ways, with the validation a message from the network needs before
// it may reach the core.
//
// FromThrift checks what the wire can get wrong and the core cannot: negative or absurdly large
// numbers (>= kMaxWireValue), unknown enum values, a configuration that is not a set, fields a
// type never uses carrying payload (entries outside APPEND, snapshot data outside SNAPSHOT),
// a batch not addressed to this replica or whose messages claim another sender. The core's own
// Step() validation (contiguous entries, decodable configuration changes, snapshot bounds)
// runs after it. Errors are InvalidArgument naming the message and field.
//
// Internal to raft/node. Thread-compatible (pure functions).

#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "raft/core/message.h"
#include "raft_types.h"

namespace tx::raft {

// Ids, terms and indices from the network must be below this. No real cluster gets near 2^62,
// and the bound keeps the core's index arithmetic (index + 1, index + entries) from overflowing.
inline constexpr uint64_t kMaxWireValue = uint64_t{1} << 62;

// Bounds the messages in one batch. Senders cut batches well below it (max_batch_bytes); the
// RPC frame limit bounds the bytes.
inline constexpr size_t kMaxMessagesPerBatch = 1 << 16;

raft_api::Message ToThrift(Message m);

// The From* functions take the wire struct by reference and move its payloads (entries'
// data, context, snapshot data) out, so a batch is not copied. They read enum fields as raw
// integers and never copy or move a wire struct whole: a peer may send any i32 there, and
// loading an out-of-range value as the enum type is undefined behaviour (UBSan stops the
// process on it).
StatusOr<Message> FromThrift(raft_api::Message& w);

// Validates the batch header (addressed to `self`, from a real other replica, every message
// carrying the same from/to) and converts every message. All or nothing.
StatusOr<std::vector<Message>> FromThriftBatch(raft_api::MessageBatch& batch, NodeId self);

}  // namespace tx::raft
