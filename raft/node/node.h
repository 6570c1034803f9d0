// tx::raft::RaftNode: a Raft replica as a service. It owns the deterministic core
// (raft/core/raft.h), stores the log and the hard state on disk, talks to its peers over Thrift
// (thrift/raft.thrift), ticks the core from a timer and applies committed entries to a
// StateMachine that the application provides.
//
//   ExampleStateMachine sm;
//   NodeOptions options;
//   options.id = 1;
//   options.data_dir = "/var/lib/txcoord/raft";
//   options.peers = {{1, {"10.0.0.1", 7001}}, {2, {"10.0.0.2", 7001}}, {3, {"10.0.0.3", 7001}}};
//   options.listen = {"0.0.0.0", 7001};
//   TX_ASSIGN_OR_RETURN(auto node, RaftNode::Create(options, &sm));
//   TX_RETURN_IF_ERROR(node->Start());
//   ProposalResult r = node->Propose(data, std::chrono::seconds(1));
//   if (r.status.ok()) use(r.result);           // committed and applied, with Apply's answer
//   else if (r.not_leader) redirect(r.leader);  // never entered the log: try the leader
//
// docs/raft.md ("Runtime") describes the threads, the Ready loop, the files on disk, recovery
// and the transport. In short: proposals from any number of threads are appended to the core at
// once and replicated by per-peer sender threads, which coalesce whatever accumulated while
// their previous batch was in flight; one Ready-loop thread persists each batch of the core's
// output with one WAL write and one fdatasync and then releases the messages that depended on
// it (a follower's RPC handler does this itself for the entries it received when the loop is
// idle); one apply thread applies committed entries in log order and completes the proposals.
//
// Thread-safety: every public method may be called from any thread, concurrently. Callbacks
// (ProposeAsync, ReadIndexAsync) run on the node's threads, never under a node lock; they must be
// quick and must not call Stop() or destroy the node.
//
// Errors: a storage failure (a failed fdatasync, a full disk) stops the node: it stops voting
// and accepting proposals (they fail with Unavailable naming the error) and health() reports
// it; the process should restart, and recovery reads back what is durable. A malformed message
// from the network is refused with an error and never reaches the core.

#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/file_system.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/status.h"
#include "raft/core/message.h"

namespace apache::thrift {
class TProcessor;
}

namespace tx::raft {

// The replicated application. Called only from the node's apply thread, one call at a time,
// in log order; the application may read its own state from other threads under its own lock.
class StateMachine {
 public:
  virtual ~StateMachine() = default;

  // Applies the committed entry at `index` (indices increase but may skip: no-ops, membership
  // changes and the node's own bookkeeping entries are not shown). Must be deterministic: every
  // replica applies the same entries in the same order and must reach the same state. The
  // returned bytes go to the proposer, if it is waiting on this replica.
  virtual std::string Apply(uint64_t index, std::string_view data) = 0;

  // The state after the last applied entry, serialized. An error skips this snapshot (the log
  // is compacted at a later one).
  virtual StatusOr<std::string> Snapshot() = 0;

  // Replaces the whole state with one produced by Snapshot() (here or on another replica) at
  // log index `index`. An error here means the replicated state is unusable: the node crashes
  // with the message, since carrying on would diverge from the other replicas.
  virtual Status Restore(uint64_t index, std::string_view data) = 0;
};

// What a transport fault hook decides for one outgoing message.
struct FaultDecision {
  enum class Action : uint8_t { kDeliver, kDrop, kDelay, kDuplicate };
  Action action = Action::kDeliver;
  std::chrono::milliseconds delay{0};  // kDelay only; at most kMaxFaultDelay

  static FaultDecision Deliver() { return {}; }
  static FaultDecision Drop() { return {Action::kDrop, {}}; }
  static FaultDecision Delay(std::chrono::milliseconds d) { return {Action::kDelay, d}; }
  static FaultDecision Duplicate() { return {Action::kDuplicate, {}}; }
};

// Bounds how long an injected delay can hold a message (and the memory it holds).
inline constexpr std::chrono::milliseconds kMaxFaultDelay{60'000};

// For failure injection (txchaos): consulted for every outgoing message while installed, on the
// sending peer's thread. Must be thread-safe and quick. Partitions are simpler with
// RaftNode::BlockPeer.
class TransportFaultHook {
 public:
  virtual ~TransportFaultHook() = default;
  virtual FaultDecision OnSend(NodeId from, NodeId to, MessageType type) = 0;
};

struct NodeOptions {
  NodeId id = kNoNode;
  // Holds the log (wal/), the hard state and the snapshot; created if missing. One node per
  // directory (the WAL locks it).
  std::string data_dir;

  // Addresses of the replicas this node may talk to, by id (its own included, or see
  // `advertise`). Members added later with AddVoter/AddLearner are learned through the log.
  std::map<NodeId, HostPort> peers;
  // The founding configuration, used only when data_dir holds no state yet: identical on every
  // founding member. Empty (and `join` false): every id in `peers` is a voter. A node started
  // to be added to a running cluster sets `join` and starts with no configuration; it learns
  // it from the leader once the leader's AddVoter/AddLearner reaches it.
  std::vector<NodeId> initial_voters;
  bool join = false;

  // Where this node serves RaftService when it runs its own server (listen.port != 0, or
  // port 0 to let the kernel pick); with listen unset (empty host) the node starts no server and
  // the owner serves processor() itself, e.g. multiplexed with its own service on one port.
  HostPort listen;
  // How peers reach this node, sent with every batch; defaults to peers[id].
  HostPort advertise;
  // Non-empty: peers serve RaftService inside a TMultiplexedProcessor under this name, so
  // requests are sent through a TMultiplexedProtocol with it.
  std::string multiplexed_service_name;

  // Time. One tick drives the core's election and heartbeat timers.
  std::chrono::milliseconds tick_interval{10};
  int election_timeout_ticks = 15;  // elections start after 150-300 ms without a leader
  int heartbeat_ticks = 3;
  // Take a snapshot (and compact the log) every this many applied entries; 0 never.
  uint64_t snapshot_every_entries = 10000;

  // Proposals waiting to be applied (each holds its callback): past this, ProposeAsync fails at
  // once with ResourceExhausted. With max_uncommitted_bytes it bounds a leader's memory when
  // followers or its own disk fall behind.
  size_t max_pending_proposals = 1 << 16;
  uint64_t max_uncommitted_bytes = 64 << 20;
  uint64_t max_proposal_bytes = 8 << 20;
  // ReadIndex requests waiting for their index to be applied (each holds its callback).
  size_t max_pending_reads = 4096;

  // Per-peer flow control and batching. A peer's queue holds what its sender has not yet sent;
  // past max_peer_queue_bytes new messages to it are dropped (Raft retransmits), so a dead peer
  // costs bounded memory. A batch (one RPC) carries at most max_batch_bytes of messages, which
  // stays well below the RPC frame limit.
  uint64_t max_peer_queue_bytes = 64 << 20;
  uint64_t max_batch_bytes = 4 << 20;
  uint32_t max_inflight_msgs = 256;
  uint64_t max_entries_bytes_per_msg = 1 << 20;
  uint64_t snapshot_chunk_bytes = 1 << 20;
  // Peer connections: timeouts and reconnect back-off. One sender thread per peer uses one
  // connection. Timeouts are short because a Raft RPC only steps messages (microseconds): a
  // peer that does not answer within a second is as good as down, and a short timeout keeps
  // Stop() and the reaction to a paused peer quick.
  rpc::RpcClientOptions client = [] {
    rpc::RpcClientOptions o;
    o.connect_timeout = std::chrono::milliseconds(500);
    o.recv_timeout = std::chrono::milliseconds(2000);
    o.send_timeout = std::chrono::milliseconds(2000);
    o.max_connections = 2;
    o.max_idle_connections = 1;
    o.backoff.initial = std::chrono::milliseconds(10);
    o.backoff.max = std::chrono::milliseconds(500);
    return o;
  }();

  // A follower returns its acknowledgement of a batch of entries in the reply to that batch
  // (thrift/raft.thrift, Deliver) instead of sending it in an RPC of its own. false only to
  // measure the difference (txbench raft --acks-in-replies false).
  bool acks_in_replies = true;
  // A follower's RPC handler that receives entries persists them itself when no Ready is in
  // progress, instead of waking the Ready loop and waiting to be woken back. false only to
  // measure the difference (txbench raft --persist-on-handler false).
  bool persist_on_handler = true;
  // When a follower acknowledges entries for which at least two proposals still wait on the
  // leader, the leader holds that follower's next batch until as many new entries have been
  // proposed (the proposers that were waiting come back), for at most two round trips of the
  // link and at most this long. Trades up to that much latency at moderate load for batches
  // that carry every proposer in a closed loop instead of half of them. Zero: never hold.
  Clock::Duration max_append_gather = std::chrono::milliseconds(1);

  uint64_t wal_segment_bytes = 64 << 20;
  uint64_t random_seed = 0;  // 0: from std::random_device

  // Leadership notifications for the application, on the apply thread, in order with
  // StateMachine::Apply: (true, term) once this replica, as leader of `term`, has applied the
  // no-op that opens the term -- its state machine then holds every entry committed before the
  // term began, so it may act as leader on it (e.g. re-drive unfinished work); (false, term)
  // when it stops leading that term. Must be quick; may call ProposeAsync.
  std::function<void(bool is_leader, uint64_t term)> on_leadership;

  // Not owned; must outlive the node.
  FileSystem* fs = FileSystem::Default();
  Clock* clock = Clock::Real();
  MetricsRegistry* metrics = MetricsRegistry::Default();
};

// Role of a replica, as RaftNode reports it.
enum class NodeRole : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
std::string_view NodeRoleName(NodeRole role);

struct LeaderInfo {
  NodeId id = kNoNode;  // kNoNode when no leader is known
  HostPort address;     // empty host when the address is unknown
};

// Outcome of a proposal.
//   OK                  committed and applied here; `result` is what Apply returned.
//   Unavailable         not_leader: never entered the log; `leader` names the leader if known.
//                       Otherwise the node is stopping or its storage failed (not accepted).
//   ResourceExhausted   back-pressure (too many pending proposals or uncommitted bytes); not
//                       accepted.
//   InvalidArgument     larger than max_proposal_bytes; not accepted.
//   Aborted             entered the log but a new leader overwrote it: it will never commit.
//   TimedOut            the deadline passed first: the entry may still commit (or not).
//   Cancelled           the node stopped first: the entry may have committed (or not).
//   Unknown             (code Internal) the replica installed a snapshot covering the entry,
//                       so whether it was the entry that committed cannot be told here.
struct ProposalResult {
  Status status;
  std::string result;
  bool not_leader = false;
  LeaderInfo leader;
  uint64_t index = 0;  // where the entry went in the log (0 if it never did)
  uint64_t term = 0;
};

struct PeerStatus {
  NodeId id = kNoNode;
  HostPort address;
  bool is_learner = false;
  uint64_t match_index = 0;
  uint64_t next_index = 0;
  std::string state;  // "probe", "replicate" or "snapshot"
};

// A consistent view for operators (txctl status) and tests.
struct NodeStatus {
  NodeId id = kNoNode;
  NodeRole role = NodeRole::kFollower;
  uint64_t term = 0;
  LeaderInfo leader;
  uint64_t commit_index = 0;
  uint64_t applied_index = 0;  // applied by the StateMachine
  uint64_t first_index = 0;
  uint64_t last_index = 0;
  uint64_t snapshot_index = 0;
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;
  std::vector<PeerStatus> peers;  // leader only: replication progress of every other member
  Status health;                  // not OK once storage failed
};

class RaftNode {
 public:
  // Opens data_dir and recovers the hard state, snapshot and log (StateMachine::Restore is
  // called with the snapshot, if any). Starts nothing. InvalidArgument for bad options;
  // Corruption (naming the file and offset) when the files on disk are damaged.
  static StatusOr<std::unique_ptr<RaftNode>> Create(NodeOptions options, StateMachine* sm);

  ~RaftNode();  // Stop()
  RaftNode(const RaftNode&) = delete;
  RaftNode& operator=(const RaftNode&) = delete;

  // Starts the threads (and the server, if `listen` is set). IOError if the port cannot be
  // bound. Call once.
  Status Start();
  // Stops serving, finishes the batch being persisted, fails waiting proposals and reads with
  // Cancelled and joins every thread. Idempotent. Programs call it on SIGTERM.
  void Stop();

  // RaftService for the owner's server (e.g. in a TMultiplexedProcessor). Valid until the node
  // is destroyed; after Stop() it refuses batches with UNAVAILABLE.
  std::shared_ptr<apache::thrift::TProcessor> processor();
  // The bound address of the node's own server (port filled in when 0 was asked for).
  HostPort listen_address() const;

  // Proposes `data` for the log. `done` is called exactly once, on a node thread or (for
  // immediate refusals) on the calling thread, with the outcome (see ProposalResult).
  using ProposeCallback = std::function<void(ProposalResult)>;
  void ProposeAsync(std::string data, Clock::TimePoint deadline, ProposeCallback done);
  // Blocking form.
  ProposalResult Propose(std::string data, Clock::Duration timeout);

  // Linearizable read barrier (ReadIndex, §6.4): `done(OK)` once this replica's state machine
  // has applied everything committed when the call was made, so a read of it that follows
  // sees every write acknowledged before the call. Works on followers (the leader confirms).
  // Unavailable when no leader is known; TimedOut if no confirmation comes in time (e.g. the
  // leader changed); ResourceExhausted past max_pending_reads.
  void ReadIndexAsync(Clock::TimePoint deadline, std::function<void(Status)> done);
  Status ReadBarrier(Clock::Duration timeout);

  // Hands leadership to `target` and waits until this node sees it as leader. Unavailable if
  // this node is not the leader; TimedOut if the transfer does not complete in time.
  Status TransferLeadership(NodeId target, Clock::Duration timeout);
  // Starts an election now (tests and operators).
  Status Campaign();

  // Single-server membership changes, on the leader. Each returns once the change is committed
  // and applied here. Unavailable (with the leader in the message) on a follower;
  // FailedPrecondition while another change is pending or, for PromoteLearner, while the
  // learner is behind (retry). `address` is how members reach the new node; it is replicated
  // through the log, so every replica (and later leaders) learn it.
  Status AddVoter(NodeId id, const HostPort& address, Clock::Duration timeout);
  Status AddLearner(NodeId id, const HostPort& address, Clock::Duration timeout);
  Status PromoteLearner(NodeId id, Clock::Duration timeout);
  Status RemoveNode(NodeId id, Clock::Duration timeout);

  NodeStatus GetStatus() const;
  LeaderInfo leader() const;
  bool is_leader() const;
  // OK, or the storage error that stopped the node (for /healthz).
  Status health() const;

  // --- transport fault injection (txchaos). Cheap when unused. -----------------------------
  enum class Direction : uint8_t { kOutgoing, kIncoming, kBoth };
  // Drops every message to (outgoing) and/or from (incoming) `peer` until unblocked.
  void BlockPeer(NodeId peer, Direction direction);
  void UnblockPeer(NodeId peer, Direction direction);
  void UnblockAllPeers();
  // Installs (or, with nullptr, removes) a hook consulted for every outgoing message.
  void SetFaultHook(std::shared_ptr<TransportFaultHook> hook);

  class Impl;

 private:
  explicit RaftNode(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tx::raft
