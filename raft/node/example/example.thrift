// RaftExample: the control interface of raft_example_server, a replicated append-only list used
// by the real-process Raft test (tests/integration/raft_failover_test.cc) and `txbench raft`.
// Served on the same port as RaftService, multiplexed under the name "example", and with
// raft_example_server --client-listen also alone on a client port (an epoll server that accepts
// the "example:" prefix or none).

namespace cpp tx.raft_example

exception ExampleError {
  1: i32 code            // tx::Status::Code
  2: string message
  3: bool not_leader = false
  4: i64 leader_id = 0   // with not_leader: the leader's id, 0 if unknown
  5: string leader_address = ""
}

struct ProposeResponse {
  1: i64 index      // Raft log index of the entry
  2: i64 position   // 1-based position of the item in the list
  3: i64 checksum   // checksum of the list up to and including the item
}

// The outcome of one item of a ProposeMany call. code 0 (tx::Status::Code::kOk): committed and
// applied, with index/position/checksum as in ProposeResponse. Otherwise the proposal failed
// with that code; not_leader (and leader_id/leader_address) as in ExampleError: a definite
// refusal, the item never entered the log.
struct ProposeItemResult {
  1: i32 code = 0
  2: string message = ""
  3: bool not_leader = false
  4: i64 leader_id = 0
  5: string leader_address = ""
  6: i64 index = 0
  7: i64 position = 0
  8: i64 checksum = 0
}

struct ReadResponse {
  1: i64 total          // items in the list
  2: i64 checksum       // checksum of the whole list
  3: i64 applied_index  // the Raft index the list reflects
  4: list<binary> items // items [offset, offset + items.size())
}

struct NodeInfo {
  1: i64 id
  2: string role
  3: i64 term
  4: i64 leader_id
  5: string leader_address
  6: i64 commit_index
  7: i64 applied_index
  8: i64 last_index
  9: i64 snapshot_index
  10: string health
}

service RaftExample {
  // Appends `item` to the list through Raft; returns once it is committed and applied here.
  ProposeResponse Propose(1: binary item, 2: i32 timeout_ms) throws (1: ExampleError error)
  // Proposes every item (at most 4096, each its own log entry, in this order) at once, and
  // returns once each has an outcome: results[i] is items[i]'s. One call carrying many
  // independent proposals, the way one HTTP/2 connection carries many gRPC calls: the proposals
  // share a round trip and a handler thread instead of paying one each. A whole-call error
  // (bad arguments) is thrown; per-item outcomes are never thrown.
  list<ProposeItemResult> ProposeMany(1: list<binary> items, 2: i32 timeout_ms)
      throws (1: ExampleError error)
  // Items from `offset`, at most max_items (<= 10000). With linearizable, a ReadIndex barrier
  // runs first.
  ReadResponse Read(1: i64 offset, 2: i32 max_items, 3: bool linearizable)
      throws (1: ExampleError error)
  NodeInfo Info()
  // Asks this replica (the leader) to hand leadership to `target`.
  void TransferLeadership(1: i64 target, 2: i32 timeout_ms) throws (1: ExampleError error)
}
