// Client side of raft_example_server, shared by the real-process Raft test and `txbench raft`:
// finds the leader of a replica set, follows NOT_LEADER hints and never re-sends a proposal
// that may have reached a server (so every acknowledged item was proposed exactly once).
//
// Thread-safe: one ExampleClusterClient may serve many threads (each call takes a pooled
// connection of its own).

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "RaftExample.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/status.h"

namespace tx::raft::example {

// RaftExampleClient speaking through the "example" name of the server's multiplexer.
class MultiplexedExampleClient : public raft_example::RaftExampleClient {
 public:
  explicit MultiplexedExampleClient(std::shared_ptr<apache::thrift::protocol::TProtocol> protocol);
};

struct ProposeOutcome {
  // OK: committed and applied. Otherwise the error of the last attempt; `maybe_committed`
  // says whether the item may still have entered the log (the request reached a server and
  // no definite refusal came back).
  Status status;
  bool maybe_committed = false;
  uint64_t leader = 0;  // replica that acknowledged
  int64_t index = 0;
  int64_t position = 0;
  int64_t checksum = 0;
};

// The server's bound on the items of one ProposeMany call.
inline constexpr size_t kMaxProposeManyItems = 4096;

class ExampleClusterClient {
 public:
  ExampleClusterClient(std::map<uint64_t, HostPort> replicas, rpc::RpcClientOptions options = {});

  // Proposes `item`, retrying on other replicas only while no attempt may have reached a
  // leader, until `timeout`.
  ProposeOutcome Propose(const std::string& item, std::chrono::milliseconds timeout);

  // Proposes every item, in one ProposeMany call per attempt (each item its own log entry),
  // with Propose's rules per item: items a replica refused as not leader go to the leader it
  // names; an item that may have reached a leader is never sent again. results[i] is items[i]'s
  // outcome. At most kMaxProposeManyItems items.
  std::vector<ProposeOutcome> ProposeMany(const std::vector<std::string>& items,
                                          std::chrono::milliseconds timeout);

  StatusOr<raft_example::NodeInfo> Info(uint64_t id);
  // The whole list held by replica `id` (paged), with its checksum.
  StatusOr<std::vector<std::string>> ReadAll(uint64_t id, int64_t* checksum);
  StatusOr<raft_example::ReadResponse> ReadHead(uint64_t id);  // totals only
  Status TransferLeadership(uint64_t from, uint64_t to, std::chrono::milliseconds timeout);

  // The replica every running one names as leader (and which says it leads), or 0.
  uint64_t FindLeader();
  uint64_t leader_hint() const { return leader_hint_.load(); }

 private:
  using Pool = rpc::ClientPool<MultiplexedExampleClient>;
  Pool* PoolFor(uint64_t id) { return pools_.at(id).get(); }

  const std::map<uint64_t, HostPort> replicas_;
  std::map<uint64_t, std::unique_ptr<Pool>> pools_;  // constant after construction
  std::atomic<uint64_t> leader_hint_{0};
};

}  // namespace tx::raft::example
