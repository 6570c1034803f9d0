// tx::raft::Raft: a deterministic Raft consensus core, driven by a runtime that does the I/O.
//
// The core is a state machine in the style of etcd's raft/RawNode. It owns no sockets, threads,
// clocks or files and draws randomness only from a PRNG seeded by Config::random_seed, so a
// sequence of inputs always produces the same outputs (the simulation in tests/sim relies on
// this). Inputs are method calls; outputs are collected into a Ready batch.
//
// ---------------------------------------------------------------------------------------------
// How a runtime drives it
// ---------------------------------------------------------------------------------------------
//   auto raft = Raft::Create(config, recovered_state);   // hard state + snapshot + entries
//   loop:
//     every tick interval:        raft->Tick();
//     for each received message:  raft->Step(msg);       // bad input -> non-OK Status
//     for each client request:    raft->Propose(data) / ProposeConfChange / ReadIndex ...
//     if (raft->HasReady()) {
//       Ready rd = raft->GetReady();
//       1. send rd.messages                      -- may start at once, in parallel with 2
//       2. persist, in this order, then fsync:
//            if rd.snapshot:        store it and DISCARD EVERY persisted log entry
//            if rd.truncate_from:   delete persisted entries with index >= rd.truncate_from
//            append rd.entries;     store rd.hard_state if set
//       3. send rd.messages_after_persist        -- only once 2 is durable
//       4. if rd.snapshot: restore the state machine from it (its data is the
//          application's snapshot produced on the leader);
//          apply rd.committed_entries in order   -- may run in parallel with 2: they were
//          durable before this Ready was built
//       5. serve rd.read_states once the state machine has applied up to their index
//       6. raft->Advance(rd);
//     }
//   Between GetReady and Advance the runtime may keep calling Tick, Step, Propose, etc.; their
//   effects go into the next Ready. HasReady() is false while a Ready is outstanding, so at
//   most one batch is being persisted at a time and batches are persisted in order.
//   TakeMessages() may be called at any time (e.g. while step 2 is in progress) to send the
//   leader's replication traffic without waiting for the next Ready, and
//   TakeCommittedEntries() to apply what an acknowledgement committed meanwhile (after the
//   outstanding Ready's committed entries, before the next one's).
//
// ---------------------------------------------------------------------------------------------
// The persistence contract (persist before send)
// ---------------------------------------------------------------------------------------------
// * messages_after_persist holds every message whose correctness depends on state in this or
//   an earlier Ready being durable: vote grants (the vote), vote requests (the candidate's own
//   term and self-vote), Append acknowledgements (the entries), and in general every message
//   from a replica that is not leader or whose term/vote are not yet durable.
// * messages holds only the leader's Append, Heartbeat, InstallSnapshot and TimeoutNow
//   messages sent while its term and vote are already durable. Sending entries before the
//   leader's own write is safe (§10.2.1 of Ongaro's dissertation): the leader counts itself
//   toward a commit quorum only for entries the runtime has acknowledged with Advance.
// * Committed entries are handed out only once they are durable locally, so the state machine
//   never runs ahead of the replica's own log.
// * A crash may lose any suffix of the writes of the Ready being persisted (and nothing that was
//   acknowledged with Advance). Create() accepts what survives; it is always a consistent state
//   because the writes are ordered as in step 2.
//
// ---------------------------------------------------------------------------------------------
// Protocol choices (docs/raft.md has the reasoning)
// ---------------------------------------------------------------------------------------------
// * Elections with pre-vote (§9.6) and check-quorum (§6.2): a leader steps down after an
//   election timeout without hearing from a quorum; a replica that heard from a leader within
//   the election timeout ignores vote requests (leader lease, §4.2.3), unless they come from a
//   leadership transfer.
// * Membership changes are single-server changes (§4.1): a configuration takes effect as soon as
//   its entry is in a replica's log (committed or not); the leader accepts a change only when
//   the previous one is committed and it has committed an entry of its own term (the fix for
//   the single-server bug reported on raft-dev in 2015). Conf-change entries carry the full
//   resulting configuration. Learners receive the log but do not vote; PromoteLearner requires
//   the learner to have caught up to the leader's commit index.
// * A new leader appends a no-op and serves ReadIndex and configuration changes only after it
//   committed an entry of its term; only entries of the current term are committed by counting
//   replicas (§5.4.2, Figure 8).
// * Linearizable reads use ReadIndex (§6.4): the read index is the commit index when the
//   request arrived; it is released once a quorum acknowledged a heartbeat sent after it.
//   Followers forward ReadIndex requests to the leader.
//
// ---------------------------------------------------------------------------------------------
// Thread-safety and errors
// ---------------------------------------------------------------------------------------------
// Not thread-safe: the runtime serializes all calls (one mutex or one thread). Errors caused by
// input (malformed or unexpected messages, bad arguments, requests to a non-leader) are returned
// as Status and leave the core unchanged. A broken protocol invariant (two leaders in one term,
// the commit index moving backwards, an entry conflicting with a committed one) aborts the
// process with TX_CHECK naming the values: continuing would risk the replicated data.

#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "raft/core/message.h"
#include "raft/core/progress.h"
#include "raft/core/raft_log.h"

namespace tx::raft {

struct Config {
  NodeId id = kNoNode;

  // The configuration at log index 0, used only when the durable state has neither a snapshot
  // nor a configuration entry: identical on every founding member and on every restart. Empty
  // for a replica that joins later (it learns its configuration from the leader).
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;

  // A follower that hears from no leader for a random number of ticks in
  // [election_timeout_ticks, 2 * election_timeout_ticks) starts an election. A leader sends
  // heartbeats every heartbeat_ticks and checks for a quorum every election_timeout_ticks.
  int election_timeout_ticks = 10;
  int heartbeat_ticks = 1;
  uint64_t random_seed = 0;  // mixed with `id`, so replicas may share one seed

  // Per-follower flow control: Append messages and entry bytes sent but not acknowledged.
  uint32_t max_inflight_msgs = 256;
  uint64_t max_inflight_bytes = 32 << 20;
  // Entry bytes per Append message (at least one entry is always sent).
  uint64_t max_entries_bytes_per_msg = 1 << 20;
  // Bytes of snapshot data per InstallSnapshot chunk.
  uint64_t snapshot_chunk_bytes = 1 << 20;
  // Largest snapshot a follower will assemble: bounds the memory a leader can make it use.
  uint64_t max_snapshot_bytes = uint64_t{1} << 30;

  bool pre_vote = true;
  bool check_quorum = true;

  // Leader: bytes of proposed entries not yet committed; Propose fails with ResourceExhausted
  // beyond it (back-pressure when followers or the leader's disk fall behind).
  uint64_t max_uncommitted_bytes = 64 << 20;
  // Largest single proposal.
  uint64_t max_proposal_bytes = 8 << 20;
  // Bytes of committed entries per Ready: bounds the memory of one batch.
  uint64_t max_committed_bytes_per_ready = 64 << 20;
  // Leader: ReadIndex requests waiting for confirmation (local and forwarded).
  uint32_t max_pending_reads = 4096;

  // InvalidArgument naming the first bad field.
  Status Validate() const;
};

// What a runtime recovered from disk: exactly what it was told to persist.
struct InitialState {
  HardState hard_state;
  // The latest snapshot. metadata.index == 0 means none (then the configuration comes from
  // Config::voters/learners). data may be null only when metadata.index == 0.
  SnapshotMetadata snapshot;
  std::shared_ptr<const std::string> snapshot_data;
  // Entries after snapshot.index, contiguous.
  std::vector<Entry> entries;
};

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
std::string_view RoleName(Role role);

// Volatile state a runtime may want to watch (leader hints for clients, metrics).
struct SoftState {
  NodeId leader = kNoNode;
  Role role = Role::kFollower;

  friend bool operator==(const SoftState&, const SoftState&) = default;
};

// Answer to ReadIndex: a read issued after the state machine applied `index` is linearizable.
struct ReadState {
  Index index = 0;
  std::string context;

  friend bool operator==(const ReadState&, const ReadState&) = default;
};

struct Snapshot {
  SnapshotMetadata metadata;
  std::shared_ptr<const std::string> data;  // never null in a Ready
};

struct EntryId {
  Index index = 0;
  Term term = 0;
};

// One batch of work for the runtime; see the contract at the top of this file.
struct Ready {
  uint64_t seq = 0;  // identifies the batch to Advance

  std::optional<SoftState> soft_state;  // set when leader or role changed
  std::optional<HardState> hard_state;  // set when it changed; persist it
  std::optional<Snapshot> snapshot;     // received from the leader; persist, then restore
  // When non-zero, persisted entries at indices >= truncate_from are stale and must be deleted
  // before `entries` are appended (a new leader overwrote an uncommitted suffix).
  Index truncate_from = 0;
  std::vector<Entry> entries;  // to append, contiguous
  std::vector<Message> messages;
  std::vector<Message> messages_after_persist;
  std::vector<Entry> committed_entries;  // to apply, in order, contiguous
  std::vector<ReadState> read_states;

  // Does this batch need a write (and an fsync) before messages_after_persist go out?
  bool MustPersist() const {
    return hard_state.has_value() || snapshot.has_value() || truncate_from != 0 || !entries.empty();
  }
};

// Introspection for status pages, tests and the simulation.
struct RaftStatus {
  NodeId id = kNoNode;
  Role role = Role::kFollower;
  NodeId leader = kNoNode;
  HardState hard_state;
  Index first_index = 0;
  Index last_index = 0;
  Index stable_index = 0;
  Index applied_index = 0;  // last index handed to the runtime to apply
  Index snapshot_index = 0;
  Configuration configuration;
  std::map<NodeId, Progress> progress;  // leader only
};

class Raft {
 public:
  // InvalidArgument for a bad Config; Corruption for an inconsistent InitialState (entries not
  // contiguous, commit beyond the log, undecodable configuration entry...).
  static StatusOr<std::unique_ptr<Raft>> Create(const Config& config, InitialState state);

  Raft(const Raft&) = delete;
  Raft& operator=(const Raft&) = delete;

  // Advances logical time by one tick: elections, heartbeats, check-quorum, transfer timeouts.
  void Tick();

  // Processes a message from a peer. InvalidArgument for malformed messages (wrong recipient,
  // non-contiguous entries, undecodable configuration, oversize snapshot...); the core is
  // unchanged then. Messages from stale terms are not errors: they are ignored or answered.
  Status Step(Message m);

  // Appends `data` to the leader's log. Errors: Unavailable if this replica is not the leader
  // (leader_hint() names the leader, if known) or a leadership transfer is in progress;
  // ResourceExhausted when max_uncommitted_bytes would be exceeded; InvalidArgument when the
  // proposal exceeds max_proposal_bytes. The entry is committed only if a later Ready hands it
  // out as committed at the returned (index, term).
  StatusOr<EntryId> Propose(std::string data);

  // Proposes a single-server membership change (see "Protocol choices"). Errors as Propose,
  // plus FailedPrecondition while another change is uncommitted, before the leader committed
  // an entry of its term, or when a learner to promote has not caught up; InvalidArgument for
  // a change that makes no sense (adding a member twice, removing the last voter...).
  StatusOr<EntryId> ProposeConfChange(const ConfChange& change);

  // Requests a linearizable read point; the answer arrives as a ReadState with the same
  // context in a later Ready (or never, if leadership is lost: callers time out and retry).
  // Unavailable when no leader is known; ResourceExhausted when too many reads are pending.
  Status ReadIndex(std::string context);

  // Leader: hands leadership to `target` once it has caught up (TimeoutNow). Proposals are
  // refused until the transfer ends (success or an election timeout). Unavailable if not
  // leader; InvalidArgument if target is not a voter.
  Status TransferLeadership(NodeId target);

  // Starts an election now (pre-vote first when enabled), as if the election timer fired.
  // FailedPrecondition if this replica is a leader or not a voter.
  Status Campaign();

  // The state machine has a snapshot covering the log up to `index` (which it has applied);
  // the core drops its in-memory entries up to `index` and sends `data` to followers that need
  // compacted entries. Returns the snapshot's metadata (term and configuration at `index`),
  // which the runtime persists with `data` before discarding its log up to `index`.
  // OutOfRange if index is not above the current snapshot or beyond what was applied;
  // FailedPrecondition while a snapshot received from the leader is not yet durable.
  StatusOr<SnapshotMetadata> OnSnapshotCreated(Index index,
                                               std::shared_ptr<const std::string> data);

  bool HasReady() const;
  Ready GetReady();
  // Acknowledges that `ready` has been processed as described above. Must be the last Ready.
  void Advance(const Ready& ready);
  // Leader traffic that may be sent before the outstanding Ready is persisted (the same
  // messages GetReady would put in Ready::messages).
  std::vector<Message> TakeMessages();
  // Committed entries that the next GetReady would hand out (committed, durable locally, the
  // snapshot base durable), in order, as many as fit in max_bytes (EntryBytes; none if the first
  // does not fit). Callable while a Ready is outstanding: an acknowledgement that commits
  // entries during the runtime's write need not wait for the next Ready to have them applied.
  // Each committed entry is handed out exactly once, here or by GetReady, in index order; the
  // runtime must apply what it takes here after the committed entries of every Ready it got
  // before and before those of every later one.
  std::vector<Entry> TakeCommittedEntries(uint64_t max_bytes);

  NodeId id() const { return id_; }
  Term term() const { return term_; }
  Role role() const { return role_; }
  NodeId leader_hint() const { return leader_; }
  Index commit_index() const { return log_.commit(); }
  const Configuration& configuration() const { return conf_; }
  const RaftLog& log() const { return log_; }
  RaftStatus GetStatus() const;

 private:
  struct PendingRead {
    uint64_t seq = 0;
    Index index = 0;
    std::string context;
    NodeId from = kNoNode;
  };
  struct InflightReady {
    uint64_t seq = 0;
    std::optional<HardState> hard_state;
    std::optional<EntryId> snapshot;
    std::optional<EntryId> last_entry;
    uint64_t restore_epoch = 0;
  };
  struct SnapshotAssembly {
    NodeId from = kNoNode;
    Term term = 0;
    SnapshotMetadata metadata;
    std::string data;
  };

  Raft(const Config& config, InitialState state, const HardState& on_disk, Configuration conf,
       Index conf_index);

  // Role transitions.
  void BecomeFollower(Term term, NodeId leader);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void Reset(Term term);
  void ResetRandomizedElectionTimeout();
  void StartElection(bool pre_vote, bool transfer);
  // Records a vote; returns +1 won, -1 lost, 0 pending.
  int Poll(NodeId from, bool granted);

  void TickElection();
  void TickHeartbeat();

  Status ValidateMessage(const Message& m) const;
  void StepLeader(Message& m);
  void StepCandidate(Message& m);
  void StepFollower(Message& m);
  void HandleVoteRequest(const Message& m);
  void HandleAppend(Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshotChunk(Message& m);
  void HandleAppendResponse(const Message& m, Progress& pr);
  void HandleHeartbeatResponse(const Message& m, Progress& pr);
  void HandleSnapshotResponse(const Message& m, Progress& pr);
  void HandleReadIndexRequest(NodeId from, std::string context);
  void NoteLeader(NodeId from, MessageType type);

  // Leader replication.
  bool SendAppend(NodeId to, bool send_if_empty);
  void SendAppendsWhileOpen(NodeId to);
  void BroadcastAppend();
  // Appends to `out` the committed, locally durable entries not handed out yet, in order, while
  // their EntryBytes total stays within max_bytes (with at_least_one, the first one regardless).
  void HandOutCommitted(uint64_t max_bytes, bool at_least_one, std::vector<Entry>* out);
  void BroadcastHeartbeat();
  void SendSnapshotChunks(NodeId to, Progress& pr);
  void SendTimeoutNow(NodeId to);
  bool MaybeCommit();
  void OnCommitAdvanced(Index old_commit);
  void AbortLeaderTransfer() {
    transferee_ = kNoNode;
    transfer_elapsed_ = 0;
  }
  void ReleaseConfirmedReads();
  void ReleaseRead(PendingRead read);
  void AppendLeaderEntry(EntryType type, std::string data);

  // Membership.
  void ApplyConfiguration(const Configuration& conf, Index index);
  void RecomputeConfigurationAfterTruncation();
  std::optional<std::pair<Configuration, Index>> LatestConfigIn(Index lo, Index hi) const;
  Configuration ConfigurationAt(Index index) const;
  bool IsVoter(NodeId id) const { return conf_.IsVoter(id); }
  size_t Quorum() const { return conf_.voters.size() / 2 + 1; }
  bool CommittedInCurrentTerm() const { return log_.TermAt(log_.commit()) == term_; }

  void Send(Message m);
  uint64_t NextRandom();

  // --- constant after construction ---
  const Config config_;
  const NodeId id_;

  // --- replicated protocol state (Figure 2) ---
  Term term_ = 0;
  NodeId vote_ = kNoNode;
  RaftLog log_;

  // --- membership: the latest configuration in the log or snapshot, and its index ---
  Configuration conf_;
  Index conf_index_ = 0;
  Configuration snapshot_conf_;  // configuration at log_.snapshot_index()
  std::shared_ptr<const std::string> snapshot_data_;

  // --- volatile role state ---
  Role role_ = Role::kFollower;
  NodeId leader_ = kNoNode;
  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  uint64_t rng_state_ = 0;
  std::map<NodeId, bool> votes_;  // candidate: responses this election

  // --- leader state ---
  std::map<NodeId, Progress> progress_;  // every member except this replica
  uint64_t leader_ticks_ = 0;            // ticks since becoming leader
  NodeId transferee_ = kNoNode;
  int transfer_elapsed_ = 0;
  uint64_t uncommitted_bytes_ = 0;
  bool need_broadcast_ = false;
  uint64_t read_seq_ = 0;
  // Bounded by config_.max_pending_reads (together with reads_awaiting_commit_).
  std::deque<PendingRead> pending_reads_;
  std::deque<PendingRead> reads_awaiting_commit_;  // before the first commit of the term

  // --- follower: snapshot being received ---
  std::optional<SnapshotAssembly> assembly_;

  // --- outputs and Ready bookkeeping ---
  std::vector<Message> msgs_;
  std::vector<Message> msgs_after_persist_;
  std::vector<ReadState> read_states_;
  bool snapshot_unhanded_ = false;  // a restored snapshot awaits a Ready
  bool snapshot_persisted_ = true;  // the current snapshot base is durable
  uint64_t restore_epoch_ = 0;      // bumped by every restore
  Index applied_ = 0;               // last index handed out to apply (or restored)
  HardState handed_hard_state_;     // last hard state handed out (or recovered)
  HardState durable_hard_state_;    // last hard state acknowledged durable
  SoftState handed_soft_state_;
  uint64_t next_ready_seq_ = 1;
  std::optional<InflightReady> outstanding_;
};

}  // namespace tx::raft
