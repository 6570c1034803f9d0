// RaftService: how coordinator replicas exchange Raft messages. The wire form of
// raft/core/message.h, mapped 1:1 (same field meanings, same enum numbers); raft/node/convert.h
// converts both ways and validates what arrives before it reaches the core.
//
// Integers: ids, terms and indices are unsigned 64-bit in the core and i64 here. A negative
// value, or one at or above 2^62 (no real cluster gets near it, and it keeps index arithmetic
// from overflowing), is rejected as malformed.
//
// Evolution rules as in common.thrift: field ids are never reused, new fields are optional or
// default to the old behaviour, an unknown enum value is an error, never a crash.

namespace cpp tx.raft_api

enum MessageType {
  APPEND = 0,
  APPEND_RESPONSE = 1,
  HEARTBEAT = 2,
  HEARTBEAT_RESPONSE = 3,
  PRE_VOTE = 4,
  PRE_VOTE_RESPONSE = 5,
  VOTE = 6,
  VOTE_RESPONSE = 7,
  SNAPSHOT = 8,
  SNAPSHOT_RESPONSE = 9,
  TIMEOUT_NOW = 10,
  READ_INDEX = 11,
  READ_INDEX_RESPONSE = 12,
}

enum EntryType {
  NORMAL = 0,
  NO_OP = 1,
  CONF_CHANGE = 2,
}

struct Entry {
  1: i64 term = 0
  2: i64 index = 0
  3: EntryType type = EntryType.NORMAL
  4: binary data = ""
}

struct Configuration {
  1: list<i64> voters = []
  2: list<i64> learners = []
}

struct SnapshotMetadata {
  1: i64 index = 0
  2: i64 term = 0
  3: Configuration configuration
}

// raft::Message. Which fields a type uses is tabled in raft/core/message.h; unused fields keep
// their defaults and are not checked.
struct Message {
  1: MessageType type
  2: i64 from_node = 0
  3: i64 to_node = 0
  4: i64 term = 0
  5: i64 log_term = 0
  6: i64 index = 0
  7: list<Entry> entries = []
  8: i64 commit = 0
  9: bool reject = false
  10: i64 reject_hint = 0
  11: bool leader_transfer = false
  12: i64 read_seq = 0
  13: binary context = ""
  14: SnapshotMetadata snapshot
  15: i64 snapshot_offset = 0
  16: binary snapshot_data = ""
  17: bool snapshot_done = false
}

// Messages from one replica to another, in the order the sender's core produced them.
struct MessageBatch {
  1: i64 from_node
  2: i64 to_node
  // "host:port" where the sender serves RaftService: lets a replica that joined with no address
  // book reply to a leader it has not heard of. Ignored for ids whose address is known.
  3: string from_address = ""
  4: list<Message> messages = []
}

enum RaftErrorCode {
  INVALID_ARGUMENT = 1,  // malformed batch or message: nothing of the batch was delivered
  WRONG_NODE = 2,        // the batch is addressed to another replica id
  UNAVAILABLE = 3,       // the replica is stopping or its storage failed
}

exception RaftError {
  1: RaftErrorCode code
  2: string message
}

// Not oneway, on purpose: a sender keeps one batch in flight per peer and learns when it was
// taken, which gives each peer link back-pressure (queued messages coalesce into the next
// batch while one is in flight, which is how many proposals end up in one AppendEntries) and
// shows a dead or restarted peer at once, so the connection is closed and re-made with
// back-off. The price, one loopback round trip (~25 µs) per batch, is hidden by the batching.
// A oneway call would give neither: its errors surface only on a later write.
service RaftService {
  // Steps every message of the batch, in order. A batch with any malformed message is refused
  // whole (INVALID_ARGUMENT) and nothing of it reaches the core; a message the core itself
  // refuses is skipped, the rest stepped, and the call ends with INVALID_ARGUMENT naming it.
  // When a follower receives log entries it replies once they are durable (bounded at 20 ms),
  // which paces the sender to the follower's disk, and the reply carries the messages the
  // receiver had queued for the sender by then: its acknowledgement of those entries, so it
  // needs no RPC of its own (from_node/to_node swapped; validated like a request). Other
  // messages travel in the receiver's own batches. (Until this reply carried messages it was
  // void: replicas of both kinds cannot be mixed in one cluster.)
  MessageBatch Deliver(1: MessageBatch batch) throws (1: RaftError error)
}
