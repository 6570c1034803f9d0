#include "raft/node/node.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <thrift/TProcessor.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>
#include <utility>

#include "RaftService.h"
#include "common/failpoint.h"
#include "common/rpc/server.h"
#include "raft/core/raft.h"
#include "raft/node/convert.h"
#include "raft/node/format.h"
#include "raft/node/storage.h"
#include "raft/node/transport.h"

namespace tx::raft {

std::string_view NodeRoleName(NodeRole role) {
  switch (role) {
    case NodeRole::kFollower:
      return "follower";
    case NodeRole::kPreCandidate:
      return "pre-candidate";
    case NodeRole::kCandidate:
      return "candidate";
    case NodeRole::kLeader:
      return "leader";
  }
  return "?";
}

namespace {

NodeRole ToNodeRole(Role r) {
  switch (r) {
    case Role::kFollower:
      return NodeRole::kFollower;
    case Role::kPreCandidate:
      return NodeRole::kPreCandidate;
    case Role::kCandidate:
      return NodeRole::kCandidate;
    case Role::kLeader:
      return NodeRole::kLeader;
  }
  return NodeRole::kFollower;
}

// Committed entries queued for the apply thread: past this the Ready loop waits for it, so a
// slow state machine slows replication down instead of growing memory.
constexpr uint64_t kMaxApplyQueueBytes = 64 << 20;
// Longest a follower holds the reply to a batch of entries until they are durable (see
// StepBatch): long enough for a slow fdatasync on a busy machine, far below the sender's
// receive timeout, so a stalled disk degrades to ordinary pipelining instead of an RPC error.
constexpr std::chrono::milliseconds kMaxDeliverHold{20};
// Bytes of committed entries the core hands out per Ready (bounds one apply task).
constexpr uint64_t kMaxCommittedBytesPerReady = 8 << 20;

uint64_t EntriesBytes(const std::vector<Entry>& entries) {
  uint64_t bytes = 0;
  for (const Entry& e : entries) bytes += e.data.size() + 32;
  return bytes;
}

}  // namespace

struct HandlerGate;

// The node's state and threads (docs/raft.md, "Runtime"). Thread-safe like RaftNode: every
// public method may be called from any thread. The core is touched only under mu_, held for
// microseconds and never across I/O or a callback; callbacks run after every lock is released.
// Owns the storage, the transport and the threads; the StateMachine is the caller's.
class RaftNode::Impl {
 public:
  Impl(NodeOptions options, StateMachine* sm);
  ~Impl();

  Status Init();
  Status Start();
  void Stop();

  NodeId id() const { return options_.id; }
  std::shared_ptr<apache::thrift::TProcessor> processor() const { return processor_; }
  HostPort listen_address() const { return listen_address_; }

  void ProposeAsync(std::string data, Clock::TimePoint deadline, ProposeCallback done);
  void ReadIndexAsync(Clock::TimePoint deadline, std::function<void(Status)> done);
  Status TransferLeadership(NodeId target, Clock::Duration timeout);
  Status Campaign();
  Status ChangeMembership(ConfChange change, const HostPort* address, Clock::Duration timeout);
  NodeStatus GetStatus() const;
  LeaderInfo leader() const;
  bool is_leader() const;
  Status health() const;

  // Called by the RaftService handler with a converted batch. *replies receives the messages
  // for `from` to return in the reply (its acknowledgement, when the batch carried entries).
  Status StepBatch(NodeId from, const std::string& from_address, std::vector<Message> messages,
                   std::vector<Message>* replies);
  // Messages a peer returned in its reply to our batch (Transport::SetReplyCallback), on that
  // peer's sender thread; may hold the sender to gather the peer's next batch (see below).
  void StepReplies(NodeId from, std::vector<Message> messages, std::chrono::nanoseconds round_trip);

  Transport* transport() { return transport_.get(); }
  Clock* clock() const { return options_.clock; }

 private:
  struct PendingProposal {
    Term term = 0;
    Clock::TimePoint start;  // for the commit latency histogram
    ProposeCallback done;
    std::multimap<Clock::TimePoint, Index>::iterator deadline_it;
  };
  struct PendingRead {
    std::function<void(Status)> done;
    std::multimap<Clock::TimePoint, uint64_t>::iterator deadline_it;
  };
  struct ApplyTask {
    std::optional<Term> lost_leadership;  // this replica stopped leading that term
    std::optional<Snapshot> snapshot;
    std::vector<Entry> entries;
    std::vector<ReadState> read_states;
    uint64_t bytes = 0;
  };
  // Callbacks gathered under a lock and run after it is released.
  struct Completions {
    std::vector<std::pair<ProposeCallback, ProposalResult>> proposals;
    std::vector<std::pair<std::function<void(Status)>, Status>> reads;
    void Run() {
      for (auto& [done, result] : proposals) done(std::move(result));
      for (auto& [done, status] : reads) done(status);
      proposals.clear();
      reads.clear();
    }
  };

  void ReadyLoop();
  // Runs one Ready: takes the core's output, sends what may leave now, hands committed entries
  // to the apply thread, persists, then releases what depended on the write and advances the
  // core. Called by the Ready loop, or by a follower's RPC handler that would otherwise wait for
  // the loop (StepBatch). Requires mu_ (held through `lock`, released while persisting and
  // held again on return) and ready_running_ false. Returns false when Readies must stop:
  // the node is stopping or its storage failed (the waiters were then failed).
  // noexcept: an exception half-way would leave ready_running_ set and the node silently stuck
  // (a Thrift handler's exception is caught and answered); terminating is what the Ready loop
  // thread would do anyway.
  bool RunReadyLocked(std::unique_lock<std::mutex>& lock) noexcept;
  // Requires apply_mu_. Whether a task of `bytes` may join the apply queue now (an empty queue
  // takes any task, so that one larger than the bound still goes through).
  bool ApplyQueueFitsLocked(uint64_t bytes) const {
    return apply_queue_bytes_ == 0 || apply_queue_bytes_ + bytes <= kMaxApplyQueueBytes;
  }
  // Whether the apply queue could take a Ready's committed entries without waiting.
  bool ApplyQueueHasRoom() {
    std::lock_guard alock(apply_mu_);
    return ApplyQueueFitsLocked(kMaxCommittedBytesPerReady);
  }
  // Requires apply_mu_. Appends the task to the apply queue and wakes the apply thread.
  void EnqueueApplyTaskLocked(ApplyTask task) {
    apply_queue_bytes_ += task.bytes;
    apply_queue_.push_back(std::move(task));
    apply_cv_.notify_one();
  }
  void ApplyLoop();
  void TickLoop();

  // Requires mu_. Sends what the core has for the network now.
  void FlushLocked() { transport_->Send(raft_->TakeMessages()); }
  // Lets the next idle peer sender take the core's messages (Transport::RequestPull): on a
  // busy leader, the Appends of everything proposed while a link was busy leave together.
  void RequestFlush() { transport_->RequestPull(); }
  // Requires mu_. Rejects messages the core would accept but that could trip its invariant
  // checks: they can only come from a broken or hostile peer.
  Status CheckAgainstLogLocked(const Message& m) const;
  // Requires mu_. Checks and steps each message; returns how many were refused (the first
  // error in *first_error) and logs a sample of refusals.
  size_t StepMessagesLocked(NodeId from, std::vector<Message>& messages, Status* first_error);
  // Leader, on `from`'s sender thread, after `from` acknowledged entries up to `acked_to` in the
  // reply to a batch that took `round_trip`: holds that sender until as many new entries have
  // been proposed as there are proposals still waiting here among the newly acknowledged
  // entries (at least two), for at most kAppendGatherRoundTrips round trips and at most
  // max_append_gather (NodeOptions). Without it, under a closed loop of proposers the
  // proposals split into two cohorts that take turns: those just committed come back only
  // after the next batch has left with the others, so each batch carries half of them and each
  // proposal waits two follower round trips. Requires mu_ (held through `lock`; released while
  // waiting).
  void GatherNextBatchLocked(std::unique_lock<std::mutex>& lock, NodeId from, Index acked_to,
                             std::chrono::nanoseconds round_trip);
  // Leader: queues for the apply thread the entries that acknowledgements committed while a
  // Ready is being persisted, instead of leaving them for the next GetReady, which comes only
  // after the fdatasync (130-145 µs from commit to the apply queue on average, measured at 64
  // proposals in flight). Requires mu_; takes apply_mu_ (lock order: mu_, then apply_mu_).
  void QueueCommittedDuringPersistLocked();
  LeaderInfo LeaderLocked() const;
  ProposalResult NotLeaderLocked() const;
  // Stops the node after a storage error (requires mu_). The caller then fails the waiters
  // with FailAllWaiters() once it holds no lock.
  void FailLocked(const Status& s);

  // Proposal and read registries (require waiters_mu_).
  void RegisterProposalLocked(EntryId id, Clock::TimePoint deadline, ProposeCallback done,
                              Completions* out);
  void CompleteProposalLocked(Index index, ProposalResult result, Completions* out);
  void CompleteReadLocked(uint64_t ctx, Status status, Completions* out);
  void ExpireDeadlines();
  void FailAllWaiters(const Status& status);

  // Apply thread.
  void Apply(ApplyTask& task);
  void ApplyEntry(Entry& e, Completions* out);
  void MaybeSnapshot();
  void SaveLoop();

  void CountProposal(const ProposalResult& r);

  // --- constant after Init() ---
  const NodeOptions options_;
  StateMachine* const sm_;
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<Transport> transport_;
  std::shared_ptr<apache::thrift::TProcessor> processor_;
  std::shared_ptr<HandlerGate> gate_;
  HostPort advertise_;

  // Metrics (pointers into options_.metrics, constant after Init()).
  Gauge* term_gauge_ = nullptr;
  Gauge* role_gauge_ = nullptr;
  Gauge* commit_gauge_ = nullptr;
  Gauge* applied_gauge_ = nullptr;
  Gauge* last_index_gauge_ = nullptr;
  Counter* entries_persisted_ = nullptr;
  Counter* step_errors_ = nullptr;
  Counter* snapshots_created_ = nullptr;
  Counter* snapshots_installed_ = nullptr;
  Counter* handler_readies_ = nullptr;
  Counter* early_applies_ = nullptr;
  Counter* gathers_filled_ = nullptr;
  Counter* gathers_timed_out_ = nullptr;
  Histogram* fsync_seconds_ = nullptr;
  Histogram* commit_seconds_ = nullptr;
  std::map<std::string, Counter*> proposal_counters_;  // by result; filled in Init()

  // --- the core ---
  mutable std::mutex mu_;
  std::unique_ptr<Raft> raft_;        // GUARDED_BY(mu_)
  std::condition_variable ready_cv_;  // the Ready loop waits on it (with mu_)
  std::condition_variable state_cv_;  // soft-state changes (with mu_)
  bool running_ = false;              // GUARDED_BY(mu_): Start() ran and Stop() did not
  bool stopping_ = false;             // GUARDED_BY(mu_)
  Status failed_;                     // GUARDED_BY(mu_): storage error that stopped us
  uint64_t next_read_ctx_ = 1;        // GUARDED_BY(mu_)
  // Ready batches taken from the core, and of those the ones persisted and advanced; a
  // follower's RPC handler waits on persisted_cv_ for its entries to be durable (StepBatch).
  uint64_t readies_started_ = 0;  // GUARDED_BY(mu_)
  // A Ready is between GetReady and Advance (RunReadyLocked); Readies run one at a time, in
  // order, on the Ready loop or on a follower's handler thread.
  bool ready_running_ = false;  // GUARDED_BY(mu_)
  // False from a Ready's GetReady until its apply task is queued: committed entries taken
  // meanwhile (QueueCommittedDuringPersistLocked) must queue after that task.
  bool ready_apply_task_queued_ = true;   // GUARDED_BY(mu_)
  uint64_t readies_persisted_ = 0;        // GUARDED_BY(mu_)
  int persist_waiters_ = 0;               // GUARDED_BY(mu_)
  std::condition_variable persisted_cv_;  // with mu_
  // Append gathering (GatherNextBatchLocked): the highest index each follower acknowledged in
  // a reply, and the log index each gathering sender waits for; ProposeAsync wakes them.
  struct AckedTo {
    Term term = 0;
    Index index = 0;
  };
  std::map<NodeId, AckedTo> peer_acked_to_;  // GUARDED_BY(mu_)
  std::multiset<Index> gather_targets_;      // GUARDED_BY(mu_)
  std::condition_variable gather_cv_;        // with mu_
  uint64_t step_errors_logged_ = 0;          // GUARDED_BY(mu_)
  std::atomic<bool> stop_requested_{false};
  // Whoever runs the Ready (ready_running_): the term this replica leads (0 when it does not).
  Term leading_term_ = 0;

  // --- waiting proposals and reads. Lock order: mu_ before waiters_mu_. ---
  mutable std::mutex waiters_mu_;
  std::map<Index, PendingProposal> proposals_;                 // GUARDED_BY(waiters_mu_)
  std::multimap<Clock::TimePoint, Index> proposal_deadlines_;  // GUARDED_BY(waiters_mu_)
  std::map<uint64_t, PendingRead> reads_;                      // GUARDED_BY(waiters_mu_)
  std::multimap<Clock::TimePoint, uint64_t> read_deadlines_;   // GUARDED_BY(waiters_mu_)
  std::multimap<Index, uint64_t> reads_by_index_;              // GUARDED_BY(waiters_mu_)

  // --- apply queue ---
  std::mutex apply_mu_;
  std::condition_variable apply_cv_;        // work for the apply thread
  std::condition_variable apply_space_cv_;  // room for the Ready loop
  std::deque<ApplyTask> apply_queue_;       // GUARDED_BY(apply_mu_)
  uint64_t apply_queue_bytes_ = 0;          // GUARDED_BY(apply_mu_)

  // --- apply thread state (only the apply thread touches these after Start) ---
  Index applied_ = 0;
  Index last_snapshot_index_ = 0;
  node_format::AddressBook address_book_;
  std::atomic<Index> applied_index_{0};  // applied_, for other threads

  // --- snapshots handed from the apply thread to the saver thread ---
  struct PendingSave {
    SnapshotMetadata metadata;
    std::shared_ptr<const std::string> data;
  };
  std::mutex save_mu_;
  std::condition_variable save_cv_;
  std::optional<PendingSave> pending_save_;  // GUARDED_BY(save_mu_)

  // --- threads ---
  Waiter tick_waiter_;
  std::thread ready_thread_;
  std::thread apply_thread_;
  std::thread tick_thread_;
  std::thread save_thread_;
  std::unique_ptr<rpc::RpcServer> server_;
  HostPort listen_address_;
  std::mutex stop_mu_;  // serializes Stop()
};

// Lets the RaftService handler outlive the node safely: after the node is gone, calls fail
// with UNAVAILABLE instead of touching freed memory.
struct HandlerGate {
  std::shared_mutex mu;
  RaftNode::Impl* impl = nullptr;  // GUARDED_BY(mu)
};

namespace {

[[noreturn]] void ThrowRaftError(raft_api::RaftErrorCode::type code, const std::string& message) {
  raft_api::RaftError e;
  e.code = code;
  e.message = message;
  throw e;
}

class RaftServiceHandler final : public raft_api::RaftServiceIf {
 public:
  explicit RaftServiceHandler(std::shared_ptr<HandlerGate> gate) : gate_(std::move(gate)) {}

  void Deliver(raft_api::MessageBatch& reply, const raft_api::MessageBatch& batch) override {
    std::shared_lock lock(gate_->mu);
    RaftNode::Impl* impl = gate_->impl;
    if (impl == nullptr) ThrowRaftError(raft_api::RaftErrorCode::UNAVAILABLE, "node is gone");
    const NodeId self = impl->id();
    if (batch.to_node != static_cast<int64_t>(self)) {
      ThrowRaftError(raft_api::RaftErrorCode::WRONG_NODE,
                     fmt::format("batch for node {} reached node {}", batch.to_node, self));
    }
    const std::string from_address = batch.from_address;
    // The generated processor hands us a reference to its own non-const argument object, which
    // it discards after the call; moving the payloads out saves copying every entry.
    auto& owned = const_cast<raft_api::MessageBatch&>(batch);
    StatusOr<std::vector<Message>> messages = FromThriftBatch(owned, self);
    if (!messages.ok()) {
      spdlog::warn("raft node {}: refused a batch: {}", self, messages.status().ToString());
      ThrowRaftError(raft_api::RaftErrorCode::INVALID_ARGUMENT, messages.status().ToString());
    }
    NodeId from = static_cast<NodeId>(batch.from_node);
    std::vector<Message> replies;
    Status s = impl->StepBatch(from, from_address, std::move(messages).value(), &replies);
    if (s.ok()) {
      reply.from_node = static_cast<int64_t>(self);
      reply.to_node = batch.from_node;
      reply.messages.reserve(replies.size());
      for (Message& m : replies) reply.messages.push_back(ToThrift(std::move(m)));
      return;
    }
    // Refused messages: the error goes back instead, and the replies leave through our sender.
    if (!replies.empty()) impl->transport()->Send(std::move(replies));
    ThrowRaftError(s.IsInvalidArgument() ? raft_api::RaftErrorCode::INVALID_ARGUMENT
                                         : raft_api::RaftErrorCode::UNAVAILABLE,
                   s.ToString());
  }

 private:
  const std::shared_ptr<HandlerGate> gate_;
};

}  // namespace

RaftNode::Impl::Impl(NodeOptions options, StateMachine* sm)
    : options_(std::move(options)), sm_(sm), tick_waiter_(options_.clock) {}

RaftNode::Impl::~Impl() {
  Stop();
  if (gate_ != nullptr) {
    std::unique_lock lock(gate_->mu);
    gate_->impl = nullptr;
  }
}

Status RaftNode::Impl::Init() {
  const std::string node = std::to_string(options_.id);
  MetricsRegistry* m = options_.metrics;
  term_gauge_ =
      m->AddGaugeFamily("tx_raft_term", "Current Raft term.", {"node"})->WithLabels({node});
  role_gauge_ =
      m->AddGaugeFamily("tx_raft_role",
                        "Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.", {"node"})
          ->WithLabels({node});
  commit_gauge_ =
      m->AddGaugeFamily("tx_raft_commit_index", "Raft commit index.", {"node"})->WithLabels({node});
  applied_gauge_ =
      m->AddGaugeFamily("tx_raft_applied_index",
                        "Index of the last entry applied to the state machine.", {"node"})
          ->WithLabels({node});
  last_index_gauge_ =
      m->AddGaugeFamily("tx_raft_last_index", "Index of the last log entry.", {"node"})
          ->WithLabels({node});
  entries_persisted_ = m->AddCounterFamily("tx_raft_entries_persisted_total",
                                           "Log entries written to the WAL.", {"node"})
                           ->WithLabels({node});
  step_errors_ = m->AddCounterFamily("tx_raft_step_errors_total",
                                     "Messages from peers refused as malformed.", {"node"})
                     ->WithLabels({node});
  auto* snapshots = m->AddCounterFamily("tx_raft_snapshots_total",
                                        "Snapshots created or installed.", {"node", "kind"});
  snapshots_created_ = snapshots->WithLabels({node, "created"});
  snapshots_installed_ = snapshots->WithLabels({node, "installed"});
  auto* gathers = m->AddCounterFamily(
      "tx_raft_append_gathers_total",
      "Times the leader held a follower's next batch to gather new entries "
      "(GatherNextBatchLocked), "
      "by whether enough entries came (filled) or the window ended (timed_out).",
      {"node", "outcome"});
  gathers_filled_ = gathers->WithLabels({node, "filled"});
  gathers_timed_out_ = gathers->WithLabels({node, "timed_out"});
  early_applies_ = m->AddCounterFamily("tx_raft_entries_applied_during_persist_total",
                                       "Committed entries a leader queued for the apply thread "
                                       "while a Ready was being persisted, without waiting for "
                                       "the next Ready.",
                                       {"node"})
                       ->WithLabels({node});
  handler_readies_ =
      m->AddCounterFamily("tx_raft_handler_readies_total",
                          "Ready batches a follower's RPC handler persisted itself (the Ready "
                          "loop was idle) instead of waiting for the Ready loop.",
                          {"node"})
          ->WithLabels({node});
  fsync_seconds_ =
      m->AddHistogramFamily("tx_raft_fsync_seconds", "WAL append + fdatasync of one Ready batch.",
                            {"node"}, kLatencyBucketsSeconds)
          ->WithLabels({node});
  commit_seconds_ = m->AddHistogramFamily("tx_raft_commit_seconds",
                                          "From Propose to the entry applied on this replica.",
                                          {"node"}, kLatencyBucketsSeconds)
                        ->WithLabels({node});
  auto* proposals =
      m->AddCounterFamily("tx_raft_proposals_total", "Proposals by outcome.", {"node", "result"});
  for (const char* r : {"ok", "not_leader", "rejected", "aborted", "timed_out", "cancelled",
                        "unknown", "unavailable"}) {
    proposal_counters_[r] = proposals->WithLabels({node, r});
  }

  StorageOptions so;
  so.dir = options_.data_dir;
  so.fs = options_.fs;
  so.wal_segment_bytes = options_.wal_segment_bytes;
  so.fsync_seconds = fsync_seconds_;
  InitialState state;
  TX_ASSIGN_OR_RETURN(storage_, Storage::Open(so, &state));

  if (state.snapshot.index > 0) {
    StatusOr<node_format::Envelope> env = node_format::DecodeEnvelope(*state.snapshot_data);
    if (!env.ok()) {
      return Status::Corruption(
          fmt::format("{}: {}", Storage::SnapshotPath(options_.data_dir), env.status().message()));
    }
    address_book_ = env->addresses;
    TX_RETURN_IF_ERROR(sm_->Restore(state.snapshot.index, env->app_snapshot)
                           .Annotate("restoring the state machine from the snapshot"));
  }
  applied_ = last_snapshot_index_ = state.snapshot.index;
  applied_index_.store(applied_);
  // The configured addresses win over remembered ones: an operator may have moved a replica.
  for (const auto& [id, hp] : options_.peers) address_book_[id] = hp;

  advertise_ = options_.advertise;
  if (advertise_.host.empty()) {
    auto it = options_.peers.find(options_.id);
    if (it != options_.peers.end()) {
      advertise_ = it->second;
    } else if (!options_.listen.host.empty() && options_.listen.port != 0) {
      advertise_ = options_.listen;
    }
  }

  TransportOptions to;
  to.self = options_.id;
  to.advertise = advertise_;
  to.service_name = options_.multiplexed_service_name;
  to.client = options_.client;
  to.max_queue_bytes = options_.max_peer_queue_bytes;
  to.max_batch_bytes = options_.max_batch_bytes;
  to.clock = options_.clock;
  to.metrics = options_.metrics;
  transport_ = std::make_unique<Transport>(to);
  transport_->SetPullCallback([this] {
    std::lock_guard lock(mu_);
    if (!stopping_ && failed_.ok()) FlushLocked();
  });
  transport_->SetReplyCallback(
      [this](NodeId from, std::vector<Message> messages, std::chrono::nanoseconds round_trip) {
        StepReplies(from, std::move(messages), round_trip);
      });
  for (const auto& [id, hp] : address_book_) {
    if (id != options_.id) transport_->SetAddress(id, hp);
  }

  Config c;
  c.id = options_.id;
  if (!options_.join) {
    if (!options_.initial_voters.empty()) {
      c.voters = options_.initial_voters;
    } else {
      for (const auto& [id, hp] : options_.peers) c.voters.push_back(id);
      if (options_.peers.count(options_.id) == 0) c.voters.push_back(options_.id);
    }
  }
  c.election_timeout_ticks = options_.election_timeout_ticks;
  c.heartbeat_ticks = options_.heartbeat_ticks;
  c.random_seed = options_.random_seed != 0 ? options_.random_seed : std::random_device{}();
  c.max_inflight_msgs = options_.max_inflight_msgs;
  c.max_entries_bytes_per_msg = options_.max_entries_bytes_per_msg;
  c.snapshot_chunk_bytes = options_.snapshot_chunk_bytes;
  c.max_uncommitted_bytes = options_.max_uncommitted_bytes;
  c.max_proposal_bytes = options_.max_proposal_bytes + 1;  // + the payload tag
  c.max_committed_bytes_per_ready = kMaxCommittedBytesPerReady;
  c.max_pending_reads = static_cast<uint32_t>(options_.max_pending_reads);
  TX_ASSIGN_OR_RETURN(raft_, Raft::Create(c, std::move(state)));
  RaftStatus st = raft_->GetStatus();
  term_gauge_->Set(static_cast<double>(st.hard_state.term));
  commit_gauge_->Set(static_cast<double>(st.hard_state.commit));
  last_index_gauge_->Set(static_cast<double>(st.last_index));
  applied_gauge_->Set(static_cast<double>(applied_));

  gate_ = std::make_shared<HandlerGate>();
  gate_->impl = this;
  processor_ =
      std::make_shared<raft_api::RaftServiceProcessor>(std::make_shared<RaftServiceHandler>(gate_));
  return Status::OK();
}

Status RaftNode::Impl::Start() {
  {
    std::lock_guard lock(mu_);
    if (running_ || stopping_) return Status::FailedPrecondition("RaftNode::Start called twice");
  }
  if (!options_.listen.host.empty()) {
    rpc::RpcServerOptions so;
    so.name = fmt::format("raft node {}", options_.id);
    so.listen = options_.listen;
    TX_ASSIGN_OR_RETURN(server_, rpc::RpcServer::Start(processor_, so));
    listen_address_ = server_->address();
  }
  {
    std::lock_guard lock(mu_);
    running_ = true;
  }
  ready_thread_ = std::thread([this] { ReadyLoop(); });
  apply_thread_ = std::thread([this] { ApplyLoop(); });
  tick_thread_ = std::thread([this] { TickLoop(); });
  save_thread_ = std::thread([this] { SaveLoop(); });
  spdlog::info("raft node {} started (advertised as {}, data in {})", options_.id, advertise_,
               options_.data_dir);
  return Status::OK();
}

void RaftNode::Impl::Stop() {
  std::lock_guard stop_lock(stop_mu_);
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_requested_.store(true);
  // Wake every waiter first: the server's Stop() waits for handlers, some of which may be
  // holding a reply until their entries are durable (StepBatch).
  ready_cv_.notify_all();
  state_cv_.notify_all();
  persisted_cv_.notify_all();
  gather_cv_.notify_all();
  {
    // A handler running a Ready (StepBatch) may be waiting for room in the apply queue.
    std::lock_guard lock(apply_mu_);
    apply_space_cv_.notify_all();
  }
  if (server_ != nullptr) server_->Stop();
  tick_waiter_.Notify();
  if (tick_thread_.joinable()) tick_thread_.join();
  {
    std::lock_guard lock(apply_mu_);
    apply_space_cv_.notify_all();
    apply_cv_.notify_all();
  }
  if (ready_thread_.joinable()) ready_thread_.join();
  if (apply_thread_.joinable()) apply_thread_.join();
  {
    std::lock_guard lock(save_mu_);
    save_cv_.notify_all();
  }
  if (save_thread_.joinable()) save_thread_.join();
  if (transport_ != nullptr) transport_->Stop();
  FailAllWaiters(Status::Cancelled(fmt::format("raft node {} stopped", options_.id)));
  spdlog::info("raft node {} stopped", options_.id);
}

// ---------------------------------------------------------------------------------------------
// The Ready loop
// ---------------------------------------------------------------------------------------------

void RaftNode::Impl::ReadyLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    ready_cv_.wait(
        lock, [&] { return stopping_ || (failed_.ok() && !ready_running_ && raft_->HasReady()); });
    if (stopping_) return;
    if (!RunReadyLocked(lock)) return;
  }
}

bool RaftNode::Impl::RunReadyLocked(std::unique_lock<std::mutex>& lock) noexcept {
  TX_CHECK(!ready_running_, "two Readies at once");
  ready_running_ = true;
  Ready rd = raft_->GetReady();
  ++readies_started_;
  if (rd.soft_state.has_value()) {
    spdlog::info("raft node {}: {} in term {} (leader: {})", options_.id,
                 RoleName(rd.soft_state->role), raft_->term(), rd.soft_state->leader);
    role_gauge_->Set(static_cast<double>(rd.soft_state->role));
    state_cv_.notify_all();
  }
  std::optional<Term> lost_leadership;
  if (raft_->role() == Role::kLeader) {
    leading_term_ = raft_->term();
  } else if (leading_term_ != 0) {
    lost_leadership = leading_term_;
    leading_term_ = 0;
  }
  term_gauge_->Set(static_cast<double>(raft_->term()));
  const bool has_apply_task = lost_leadership.has_value() || rd.snapshot.has_value() ||
                              !rd.committed_entries.empty() || !rd.read_states.empty();
  ready_apply_task_queued_ = !has_apply_task;
  // 1. The leader's replication traffic goes out now, in parallel with its own write.
  transport_->Send(std::move(rd.messages));
  lock.unlock();

  // 4 (early). Committed entries were durable before this batch was built, so the apply
  // thread may apply them while this batch is persisted.
  ApplyTask task;
  task.lost_leadership = lost_leadership;
  task.snapshot = rd.snapshot;
  task.entries = std::move(rd.committed_entries);
  task.read_states = std::move(rd.read_states);
  task.bytes =
      EntriesBytes(task.entries) + (task.snapshot.has_value() ? task.snapshot->data->size() : 0);
  if (has_apply_task) {
    std::unique_lock alock(apply_mu_);
    apply_space_cv_.wait(
        alock, [&] { return stop_requested_.load() || ApplyQueueFitsLocked(task.bytes); });
    if (stop_requested_.load()) {
      alock.unlock();
      lock.lock();
      ready_running_ = false;  // stopping: this Ready is abandoned, nothing runs another
      return false;
    }
    EnqueueApplyTaskLocked(std::move(task));
    alock.unlock();
    lock.lock();
    ready_apply_task_queued_ = true;
    lock.unlock();
  }

  // 2. Persist: snapshot, truncation, entries (one WAL write + fdatasync), hard state.
  Status s;
  if (rd.MustPersist()) {
    s = TX_FAILPOINT_STATUS("raft.node.before_persist");
    if (s.ok()) s = storage_->Persist(rd);
    if (s.ok()) {
      entries_persisted_->Increment(rd.entries.size());
      if (!rd.entries.empty()) {
        last_index_gauge_->Set(static_cast<double>(rd.entries.back().index));
      }
      if (rd.snapshot.has_value()) snapshots_installed_->Increment();
    }
    // Crash here: durable, but neither acknowledged to the core nor to any peer.
    TX_FAILPOINT("raft.node.after_persist");
  }

  lock.lock();
  ready_running_ = false;
  if (!s.ok()) {
    FailLocked(s);
    Status failed = failed_;
    lock.unlock();
    FailAllWaiters(Status::Unavailable(failed.message()));
    lock.lock();
    return false;
  }
  // 3. What depended on the batch being durable.
  transport_->Send(std::move(rd.messages_after_persist));
  // 6.
  raft_->Advance(rd);
  readies_persisted_ = readies_started_;
  if (persist_waiters_ > 0) persisted_cv_.notify_all();
  commit_gauge_->Set(static_cast<double>(raft_->commit_index()));
  FlushLocked();
  // Whatever arrived meanwhile goes to the Ready loop (which, when a handler ran this Ready,
  // may have been woken and found ready_running_ set).
  if (raft_->HasReady()) ready_cv_.notify_one();
  return true;
}

void RaftNode::Impl::FailLocked(const Status& s) {
  failed_ =
      s.Annotate(fmt::format("raft node {} storage failed; restart the process", options_.id));
  spdlog::error("{}", failed_.ToString());
  state_cv_.notify_all();
  persisted_cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Ticks and deadlines
// ---------------------------------------------------------------------------------------------

void RaftNode::Impl::TickLoop() {
  Clock* clock = options_.clock;
  const Clock::Duration tick = options_.tick_interval;
  Clock::TimePoint next = clock->Now() + tick;
  while (!stop_requested_.load()) {
    (void)tick_waiter_.WaitUntil(next);  // notified only to stop
    if (stop_requested_.load()) return;
    Clock::TimePoint now = clock->Now();
    if (now >= next) {
      bool leader = false;
      {
        std::lock_guard lock(mu_);
        if (!stopping_ && failed_.ok()) raft_->Tick();
        leader = raft_->role() == Role::kLeader;
      }
      if (leader) RequestFlush();  // heartbeats; other roles send only through the Ready loop
      ready_cv_.notify_one();
      next += tick;
      if (next <= now) next = now + tick;  // fell behind (a stalled machine): do not burst
    }
    ExpireDeadlines();
  }
}

void RaftNode::Impl::ExpireDeadlines() {
  Completions out;
  {
    std::lock_guard lock(waiters_mu_);
    Clock::TimePoint now = options_.clock->Now();
    while (!proposal_deadlines_.empty() && proposal_deadlines_.begin()->first <= now) {
      Index index = proposal_deadlines_.begin()->second;
      auto it = proposals_.find(index);
      ProposalResult r;
      r.status = Status::TimedOut(
          fmt::format("entry {} not applied before the deadline; it may still commit", index));
      r.index = index;
      r.term = it->second.term;
      CompleteProposalLocked(index, std::move(r), &out);
    }
    while (!read_deadlines_.empty() && read_deadlines_.begin()->first <= now) {
      CompleteReadLocked(read_deadlines_.begin()->second,
                         Status::TimedOut("read index not confirmed before the deadline"), &out);
    }
  }
  for (auto& [done, result] : out.proposals) CountProposal(result);
  out.Run();
}

void RaftNode::Impl::FailAllWaiters(const Status& status) {
  Completions out;
  {
    std::lock_guard lock(waiters_mu_);
    while (!proposals_.empty()) {
      auto it = proposals_.begin();
      ProposalResult r;
      r.status = status;
      r.index = it->first;
      r.term = it->second.term;
      CompleteProposalLocked(it->first, std::move(r), &out);
    }
    while (!reads_.empty()) CompleteReadLocked(reads_.begin()->first, status, &out);
  }
  for (auto& [done, result] : out.proposals) CountProposal(result);
  out.Run();
}

// ---------------------------------------------------------------------------------------------
// Proposals
// ---------------------------------------------------------------------------------------------

void RaftNode::Impl::CountProposal(const ProposalResult& r) {
  const char* key = "rejected";
  if (r.status.ok()) {
    key = "ok";
  } else if (r.not_leader) {
    key = "not_leader";
  } else {
    switch (r.status.code()) {
      case Status::Code::kAborted:
        key = "aborted";
        break;
      case Status::Code::kTimedOut:
        key = "timed_out";
        break;
      case Status::Code::kCancelled:
        key = "cancelled";
        break;
      case Status::Code::kInternal:
        key = "unknown";
        break;
      case Status::Code::kUnavailable:
        key = "unavailable";
        break;
      default:
        break;
    }
  }
  proposal_counters_.at(key)->Increment();
}

LeaderInfo RaftNode::Impl::LeaderLocked() const {
  LeaderInfo info;
  info.id = raft_->leader_hint();
  if (info.id == options_.id) {
    info.address = advertise_;
  } else if (info.id != kNoNode) {
    if (auto hp = transport_->Address(info.id)) info.address = *hp;
  }
  return info;
}

ProposalResult RaftNode::Impl::NotLeaderLocked() const {
  ProposalResult r;
  r.not_leader = true;
  r.leader = LeaderLocked();
  r.status = Status::Unavailable(
      r.leader.id == kNoNode
          ? fmt::format("raft node {} is not the leader and knows no leader", options_.id)
          : fmt::format(
                "raft node {} is not the leader; the leader is node {} at {}", options_.id,
                r.leader.id,
                r.leader.address.host.empty() ? "an unknown address" : ToString(r.leader.address)));
  return r;
}

void RaftNode::Impl::RegisterProposalLocked(EntryId id, Clock::TimePoint deadline,
                                            ProposeCallback done, Completions* out) {
  auto existing = proposals_.find(id.index);
  if (existing != proposals_.end()) {
    // Our own log dropped the earlier entry at this index (a leader of a later term overwrote
    // it, or had a shorter log): by Leader Completeness it was never committed.
    ProposalResult r;
    r.status =
        Status::Aborted(fmt::format("entry {} of term {} was overwritten before it committed",
                                    id.index, existing->second.term));
    r.index = id.index;
    r.term = existing->second.term;
    CompleteProposalLocked(id.index, std::move(r), out);
  }
  PendingProposal p;
  p.term = id.term;
  p.start = options_.clock->Now();
  p.done = std::move(done);
  p.deadline_it = proposal_deadlines_.emplace(deadline, id.index);
  proposals_.emplace(id.index, std::move(p));
}

void RaftNode::Impl::CompleteProposalLocked(Index index, ProposalResult result, Completions* out) {
  auto it = proposals_.find(index);
  if (it == proposals_.end()) return;
  proposal_deadlines_.erase(it->second.deadline_it);
  if (result.status.ok()) {
    commit_seconds_->ObserveDuration(options_.clock->Now() - it->second.start);
  }
  out->proposals.emplace_back(std::move(it->second.done), std::move(result));
  proposals_.erase(it);
}

void RaftNode::Impl::ProposeAsync(std::string data, Clock::TimePoint deadline,
                                  ProposeCallback done) {
  auto refuse = [&](ProposalResult r) {
    CountProposal(r);
    done(std::move(r));
  };
  if (data.size() > options_.max_proposal_bytes) {
    ProposalResult r;
    r.status = Status::InvalidArgument(fmt::format("proposal of {} bytes exceeds the {} byte limit",
                                                   data.size(), options_.max_proposal_bytes));
    return refuse(std::move(r));
  }
  if (options_.clock->Now() >= deadline) {
    ProposalResult r;
    r.status = Status::TimedOut("deadline passed before the proposal was made");
    return refuse(std::move(r));
  }
  std::string payload = node_format::EncodeUserPayload(data);
  Completions out;
  std::optional<ProposalResult> refusal;
  {
    std::lock_guard lock(mu_);
    if (!running_ || stopping_ || !failed_.ok()) {
      ProposalResult r;
      r.status = !failed_.ok()
                     ? Status::Unavailable(failed_.message())
                     : Status::Unavailable(fmt::format("raft node {} is not running", options_.id));
      refusal = std::move(r);
    } else if (raft_->role() != Role::kLeader) {
      refusal = NotLeaderLocked();
    } else {
      std::lock_guard wlock(waiters_mu_);
      if (proposals_.size() >= options_.max_pending_proposals) {
        ProposalResult r;
        r.status = Status::ResourceExhausted(
            fmt::format("{} proposals are waiting to be applied (limit)", proposals_.size()));
        refusal = std::move(r);
      } else {
        StatusOr<EntryId> id = raft_->Propose(std::move(payload));
        if (!id.ok()) {
          if (id.status().IsUnavailable()) {
            // Not the leader, or a leadership transfer is in progress.
            refusal = NotLeaderLocked();
            refusal->status = id.status();
          } else {
            ProposalResult r;
            r.status = id.status();
            refusal = std::move(r);
          }
        } else {
          RegisterProposalLocked(*id, deadline, std::move(done), &out);
          if (!gather_targets_.empty() && id->index >= *gather_targets_.begin()) {
            gather_cv_.notify_all();
          }
        }
      }
    }
  }
  if (refusal.has_value()) {
    refuse(std::move(*refusal));
  } else {
    RequestFlush();
    ready_cv_.notify_one();
  }
  for (auto& [cb, result] : out.proposals) CountProposal(result);
  out.Run();
}

// ---------------------------------------------------------------------------------------------
// Reads, transfer, membership, status
// ---------------------------------------------------------------------------------------------

void RaftNode::Impl::CompleteReadLocked(uint64_t ctx, Status status, Completions* out) {
  auto it = reads_.find(ctx);
  if (it == reads_.end()) return;
  read_deadlines_.erase(it->second.deadline_it);
  out->reads.emplace_back(std::move(it->second.done), std::move(status));
  reads_.erase(it);
}

void RaftNode::Impl::ReadIndexAsync(Clock::TimePoint deadline, std::function<void(Status)> done) {
  Status refusal;
  {
    std::lock_guard lock(mu_);
    if (!running_ || stopping_ || !failed_.ok()) {
      refusal = Status::Unavailable(fmt::format("raft node {} is not running", options_.id));
    } else {
      std::lock_guard wlock(waiters_mu_);
      if (reads_.size() >= options_.max_pending_reads) {
        refusal = Status::ResourceExhausted(
            fmt::format("{} reads are waiting (limit)", options_.max_pending_reads));
      } else {
        uint64_t ctx = next_read_ctx_++;
        std::string context(reinterpret_cast<const char*>(&ctx), sizeof(ctx));
        refusal = raft_->ReadIndex(std::move(context));
        if (refusal.ok()) {
          PendingRead r;
          r.done = std::move(done);
          r.deadline_it = read_deadlines_.emplace(deadline, ctx);
          reads_.emplace(ctx, std::move(r));
          FlushLocked();
        }
      }
    }
  }
  if (!refusal.ok()) {
    done(refusal);
    return;
  }
  ready_cv_.notify_one();
}

Status RaftNode::Impl::TransferLeadership(NodeId target, Clock::Duration timeout) {
  Clock::TimePoint deadline = options_.clock->Now() + timeout;
  std::unique_lock lock(mu_);
  if (!running_ || stopping_) return Status::Unavailable("raft node is not running");
  TX_RETURN_IF_ERROR(raft_->TransferLeadership(target));
  FlushLocked();
  ready_cv_.notify_one();
  while (raft_->leader_hint() != target) {
    if (stopping_) return Status::Cancelled("raft node stopped");
    if (options_.clock->Now() >= deadline) {
      return Status::TimedOut(fmt::format("node {} did not become leader in time (leader: {})",
                                          target, raft_->leader_hint()));
    }
    state_cv_.wait_for(lock, std::chrono::milliseconds(5));
  }
  return Status::OK();
}

Status RaftNode::Impl::Campaign() {
  {
    std::lock_guard lock(mu_);
    if (!running_ || stopping_) return Status::Unavailable("raft node is not running");
    TX_RETURN_IF_ERROR(raft_->Campaign());
    FlushLocked();
  }
  ready_cv_.notify_one();
  return Status::OK();
}

Status RaftNode::Impl::ChangeMembership(ConfChange change, const HostPort* address,
                                        Clock::Duration timeout) {
  if (address != nullptr &&
      (address->host.empty() || address->host.size() > node_format::kMaxHostBytes ||
       address->port == 0)) {
    return Status::InvalidArgument(
        fmt::format("bad address {} for node {}", *address, change.node_id));
  }
  std::promise<ProposalResult> promise;
  std::future<ProposalResult> future = promise.get_future();
  Completions out;
  Status refusal;
  {
    std::lock_guard lock(mu_);
    if (!running_ || stopping_ || !failed_.ok()) {
      return Status::Unavailable(fmt::format("raft node {} is not running", options_.id));
    }
    if (raft_->role() != Role::kLeader) return NotLeaderLocked().status;
    if (address != nullptr) {
      // The leader needs the address at once (the new member is replicated to as soon as the
      // change is in its log); the others learn it by applying this entry, which precedes the
      // change in the log.
      transport_->SetAddress(change.node_id, *address);
      refusal =
          raft_->Propose(node_format::EncodePeerAddressPayload(change.node_id, *address)).status();
    }
    if (refusal.ok()) {
      StatusOr<EntryId> id = raft_->ProposeConfChange(change);
      if (id.ok()) {
        std::lock_guard wlock(waiters_mu_);
        RegisterProposalLocked(
            *id, options_.clock->Now() + timeout,
            [&promise](ProposalResult r) { promise.set_value(std::move(r)); }, &out);
      } else {
        refusal = id.status();
      }
    }
    FlushLocked();
  }
  ready_cv_.notify_one();
  for (auto& [cb, result] : out.proposals) CountProposal(result);
  out.Run();
  if (!refusal.ok()) return refusal;
  return future.get().status;
}

NodeStatus RaftNode::Impl::GetStatus() const {
  NodeStatus s;
  std::lock_guard lock(mu_);
  RaftStatus rs = raft_->GetStatus();
  s.id = rs.id;
  s.role = ToNodeRole(rs.role);
  s.term = rs.hard_state.term;
  s.leader = LeaderLocked();
  s.commit_index = rs.hard_state.commit;
  s.applied_index = applied_index_.load();
  s.first_index = rs.first_index;
  s.last_index = rs.last_index;
  s.snapshot_index = rs.snapshot_index;
  s.voters = rs.configuration.voters;
  s.learners = rs.configuration.learners;
  for (const auto& [id, pr] : rs.progress) {
    PeerStatus p;
    p.id = id;
    if (auto hp = transport_->Address(id)) p.address = *hp;
    p.is_learner = pr.is_learner;
    p.match_index = pr.match_index;
    p.next_index = pr.next_index;
    p.state = std::string(ProgressStateName(pr.state));
    s.peers.push_back(std::move(p));
  }
  s.health = failed_;
  return s;
}

LeaderInfo RaftNode::Impl::leader() const {
  std::lock_guard lock(mu_);
  return LeaderLocked();
}

bool RaftNode::Impl::is_leader() const {
  std::lock_guard lock(mu_);
  return raft_->role() == Role::kLeader;
}

Status RaftNode::Impl::health() const {
  std::lock_guard lock(mu_);
  return failed_;
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

Status RaftNode::Impl::CheckAgainstLogLocked(const Message& m) const {
  // The core raises its commit index to a heartbeat's commit and CHECKs that it stays within
  // the log; a leader never sends more than the follower's match index (so no more than the
  // follower holds), so anything beyond our log is a broken or forged heartbeat.
  if (m.type == MessageType::kHeartbeat && m.commit > raft_->log().last_index()) {
    return Status::InvalidArgument(
        fmt::format("heartbeat from {} claims commit index {} beyond our last index {}", m.from,
                    m.commit, raft_->log().last_index()));
  }
  return Status::OK();
}

size_t RaftNode::Impl::StepMessagesLocked(NodeId from, std::vector<Message>& messages,
                                          Status* first_error) {
  size_t refused = 0;
  for (Message& m : messages) {
    Status s = CheckAgainstLogLocked(m);
    if (s.ok()) s = raft_->Step(std::move(m));
    if (!s.ok()) {
      ++refused;
      if (first_error->ok()) *first_error = s;
    }
  }
  if (refused > 0 && (step_errors_logged_ < 10 || step_errors_logged_ % 1000 == 0)) {
    spdlog::warn("raft node {}: refused {} of {} message(s) from node {}: {}", options_.id, refused,
                 messages.size(), from, first_error->ToString());
  }
  if (refused > 0) {
    ++step_errors_logged_;
    step_errors_->Increment(refused);
  }
  return refused;
}

Status RaftNode::Impl::StepBatch(NodeId from, const std::string& from_address,
                                 std::vector<Message> messages, std::vector<Message>* replies) {
  if (transport_->IncomingBlocked(from)) return Status::OK();  // lost, as a partition would
  if (!from_address.empty()) {
    StatusOr<HostPort> hp = ParseHostPort(from_address);
    if (hp.ok() && hp->port != 0 && hp->host.size() <= node_format::kMaxHostBytes) {
      transport_->LearnAddress(from, *hp);
    }
  }
  Status first_error;
  size_t refused = 0;
  bool leader = false;
  bool durable = false;
  bool held = false;
  {
    std::unique_lock lock(mu_);
    if (!running_ || stopping_ || !failed_.ok()) {
      return Status::Unavailable(fmt::format("raft node {} is not running", options_.id));
    }
    bool carried_entries = false;
    bool carried_snapshot = false;
    for (const Message& m : messages) {
      carried_entries |= m.type == MessageType::kAppend && !m.entries.empty();
      carried_snapshot |= m.type == MessageType::kSnapshot;
    }
    refused = StepMessagesLocked(from, messages, &first_error);
    leader = raft_->role() == Role::kLeader;
    const bool wait_durable = carried_entries && !leader;
    // Run the Ready here rather than hand it to the Ready loop and wait: the loop's wake-up and
    // ours afterwards are two context switches on every follower batch's path (and so on every
    // commit's). Only when the loop is idle, not for a snapshot, whose installation may take
    // longer than the sender waits for its reply, and only when the apply queue has room for
    // the Ready's committed entries, so that the Ready cannot wait on the state machine. (A
    // stalled fdatasync still delays the reply itself, past kMaxDeliverHold; the sender's
    // receive timeout then fails the batch and Raft resends, as for a dead peer.)
    const bool run_here = wait_durable && !ready_running_ && !carried_snapshot &&
                          options_.persist_on_handler && raft_->HasReady() && ApplyQueueHasRoom();
    if (!run_here) ready_cv_.notify_one();
    if (wait_durable) {
      // Hold the reply until the entries are durable here (the Ready that takes them starts
      // after this point), at most kMaxDeliverHold. The sender keeps one batch in flight, so
      // this paces it to our disk: whatever the leader produces meanwhile comes in the next
      // batch, which arrives just as we can persist it, instead of as one small RPC per
      // proposal that would only wait in the core for the same fdatasync.
      const uint64_t target = readies_started_ + 1;
      held = options_.acks_in_replies;
      if (held) transport_->HoldReplies(from);
      if (run_here) {
        handler_readies_->Increment();
        (void)RunReadyLocked(lock);  // a failure stops the node: failed_ is set, waiters failed
      } else {
        ++persist_waiters_;
        (void)persisted_cv_.wait_until(
            lock, std::chrono::steady_clock::now() + kMaxDeliverHold,
            [&] { return readies_persisted_ >= target || stopping_ || !failed_.ok(); });
        --persist_waiters_;
      }
      durable = readies_persisted_ >= target && failed_.ok();
    }
  }
  // Our acknowledgement of the entries was queued for `from` when they became durable (the
  // Ready loop sends messages_after_persist before it counts the Ready as persisted): it goes
  // back in this reply, saving our sender an RPC and the leader a handler wake-up on every
  // commit's path. What our sender already took, it sends itself; both orders are fine for
  // Raft, which tolerates reordering.
  if (held) transport_->ReleaseReplies(from, durable ? replies : nullptr);
  // Only a leader has traffic to pull (TakeMessages); a follower's answers leave through the
  // Ready loop once persisted, so waking its senders here would be wasted.
  if (leader) RequestFlush();
  if (refused > 0) {
    return Status::InvalidArgument(fmt::format("{} of {} message(s) refused; first: {}", refused,
                                               messages.size(), first_error.message()));
  }
  return Status::OK();
}

void RaftNode::Impl::StepReplies(NodeId from, std::vector<Message> messages,
                                 std::chrono::nanoseconds round_trip) {
  bool leader = false;
  {
    std::unique_lock lock(mu_);
    if (!running_ || stopping_ || !failed_.ok()) return;
    // What this reply acknowledges in the current term (before stepping consumes it).
    Index acked_to = 0;
    for (const Message& m : messages) {
      if (m.type == MessageType::kAppendResponse && !m.reject && m.term == raft_->term()) {
        acked_to = std::max(acked_to, m.index);
      }
    }
    Status first_error;
    (void)StepMessagesLocked(from, messages, &first_error);
    leader = raft_->role() == Role::kLeader;
    if (leader) QueueCommittedDuringPersistLocked();
    if (leader && acked_to > 0) {
      ready_cv_.notify_one();  // before gathering: the entries just committed must be applied
      GatherNextBatchLocked(lock, from, acked_to, round_trip);
      leader = raft_->role() == Role::kLeader;
    }
  }
  ready_cv_.notify_one();
  // We are on a sender thread, which pulls right after this returns; the request reaches the
  // other peers' senders too (the commit index advanced).
  if (leader) RequestFlush();
}

void RaftNode::Impl::QueueCommittedDuringPersistLocked() {
  // Only while a Ready is inside its write (otherwise the next GetReady comes at once), and
  // only once that Ready's own committed entries are queued, so that the apply thread gets
  // entries in index order.
  if (!ready_running_ || !ready_apply_task_queued_) return;
  std::lock_guard alock(apply_mu_);
  if (stop_requested_.load() || apply_queue_bytes_ >= kMaxApplyQueueBytes) return;
  ApplyTask task;
  task.entries = raft_->TakeCommittedEntries(kMaxApplyQueueBytes - apply_queue_bytes_);
  if (task.entries.empty()) return;
  task.bytes = EntriesBytes(task.entries);
  early_applies_->Increment(task.entries.size());
  EnqueueApplyTaskLocked(std::move(task));
}

// How long, in round trips of the link, a leader may hold a follower's next batch: an entry
// that misses the batch waits for a whole round trip and the next gathering, so holding the batch
// that long costs the entries already waiting less than it saves the late ones. One round trip
// cut most gathers short in txbench raft (64 proposers): the proposers come back a commit, an
// apply, a reply and a new proposal after the acknowledgement, which took longer than the
// follower's round trip on two shared CPUs.
constexpr int kAppendGatherRoundTrips = 2;

void RaftNode::Impl::GatherNextBatchLocked(std::unique_lock<std::mutex>& lock, NodeId from,
                                           Index acked_to, std::chrono::nanoseconds round_trip) {
  // The first acknowledgement in a term only sets the baseline: what it covers is not known to
  // have come from proposers who will come back.
  auto [it_acked, first] = peer_acked_to_.try_emplace(from, AckedTo{raft_->term(), acked_to});
  AckedTo& previous = it_acked->second;
  if (first || previous.term != raft_->term()) {
    previous = AckedTo{raft_->term(), acked_to};
    return;
  }
  const Index from_index = previous.index;
  previous.index = std::max(previous.index, acked_to);
  if (acked_to <= from_index || options_.max_append_gather <= Clock::Duration::zero()) return;
  // The proposers expected back: those of the newly acknowledged entries still waiting here for
  // their outcome (not the no-ops, nor proposals already answered, as when this follower lags
  // and the other one committed them long ago).
  size_t waiting;
  {
    std::lock_guard wlock(waiters_mu_);
    waiting = static_cast<size_t>(
        std::distance(proposals_.upper_bound(from_index), proposals_.upper_bound(acked_to)));
  }
  // Fewer than two: no concurrency to gather (a lone proposer comes back to an idle link, and
  // its next entry leaves at once).
  if (waiting < 2) return;
  const auto window = std::min<std::chrono::nanoseconds>(
      kAppendGatherRoundTrips * round_trip,
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.max_append_gather));
  const Index target = raft_->log().last_index() + waiting;
  auto target_it = gather_targets_.insert(target);
  gather_cv_.wait_until(lock, std::chrono::steady_clock::now() + window, [&] {
    return stopping_ || raft_->role() != Role::kLeader || raft_->log().last_index() >= target;
  });
  gather_targets_.erase(target_it);
  (raft_->log().last_index() >= target ? gathers_filled_ : gathers_timed_out_)->Increment();
}

// ---------------------------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------------------------

void RaftNode::Impl::ApplyLoop() {
  while (true) {
    ApplyTask task;
    {
      std::unique_lock lock(apply_mu_);
      apply_cv_.wait(lock, [&] { return stop_requested_.load() || !apply_queue_.empty(); });
      if (stop_requested_.load()) return;
      task = std::move(apply_queue_.front());
      apply_queue_.pop_front();
      apply_queue_bytes_ -= task.bytes;
    }
    apply_space_cv_.notify_one();
    Apply(task);
  }
}

void RaftNode::Impl::Apply(ApplyTask& task) {
  Completions out;
  if (task.lost_leadership.has_value() && options_.on_leadership) {
    options_.on_leadership(false, *task.lost_leadership);
  }
  if (task.snapshot.has_value()) {
    const SnapshotMetadata& meta = task.snapshot->metadata;
    StatusOr<node_format::Envelope> env = node_format::DecodeEnvelope(*task.snapshot->data);
    TX_CHECK(env.ok(), "raft node {}: snapshot at {} from the leader is unusable: {}", options_.id,
             meta.index, env.status().ToString());
    Status s = sm_->Restore(meta.index, env->app_snapshot);
    TX_CHECK(s.ok(), "raft node {}: state machine cannot restore the snapshot at {}: {}",
             options_.id, meta.index, s.ToString());
    address_book_ = env->addresses;
    for (const auto& [id, hp] : address_book_) {
      if (id != options_.id) transport_->SetAddress(id, hp);
    }
    spdlog::info("raft node {}: installed snapshot at {} (term {}, {})", options_.id, meta.index,
                 meta.term, meta.configuration.ToString());
    applied_ = last_snapshot_index_ = meta.index;
    std::lock_guard lock(waiters_mu_);
    while (!proposals_.empty() && proposals_.begin()->first <= meta.index) {
      auto it = proposals_.begin();
      ProposalResult r;
      r.status = Status::Internal(fmt::format(
          "outcome unknown: entry {} was replaced by a snapshot received from the leader",
          it->first));
      r.index = it->first;
      r.term = it->second.term;
      CompleteProposalLocked(it->first, std::move(r), &out);
    }
  }
  for (Entry& e : task.entries) ApplyEntry(e, &out);
  applied_index_.store(applied_);
  applied_gauge_->Set(static_cast<double>(applied_));
  {
    std::lock_guard lock(waiters_mu_);
    for (ReadState& rs : task.read_states) {
      uint64_t ctx = 0;
      if (rs.context.size() != sizeof(ctx)) continue;
      std::memcpy(&ctx, rs.context.data(), sizeof(ctx));
      if (reads_.count(ctx) == 0) continue;  // timed out meanwhile
      reads_by_index_.emplace(rs.index, ctx);
    }
    while (!reads_by_index_.empty() && reads_by_index_.begin()->first <= applied_) {
      CompleteReadLocked(reads_by_index_.begin()->second, Status::OK(), &out);
      reads_by_index_.erase(reads_by_index_.begin());
    }
  }
  for (auto& [done, result] : out.proposals) CountProposal(result);
  out.Run();
  MaybeSnapshot();
}

void RaftNode::Impl::ApplyEntry(Entry& e, Completions* out) {
  TX_CHECK(e.index == applied_ + 1, "raft node {}: applying entry {} after entry {}", options_.id,
           e.index, applied_);
  TX_FAILPOINT("raft.node.before_apply");
  std::string result;
  switch (e.type) {
    case EntryType::kNormal: {
      StatusOr<node_format::Payload> p = node_format::DecodePayload(e.data);
      TX_CHECK(p.ok(), "raft node {}: committed entry {} is undecodable: {}", options_.id, e.index,
               p.status().ToString());
      if (p->tag == node_format::PayloadTag::kUser) {
        result = sm_->Apply(e.index, p->user_data);
      } else {
        address_book_[p->peer_id] = p->peer_address;
        if (p->peer_id != options_.id) transport_->SetAddress(p->peer_id, p->peer_address);
      }
      break;
    }
    case EntryType::kConfChange: {
      StatusOr<ConfChangeEntry> cc = DecodeConfChange(e.data);
      TX_CHECK(cc.ok(), "raft node {}: committed configuration entry {} is undecodable: {}",
               options_.id, e.index, cc.status().ToString());
      spdlog::info("raft node {}: configuration at {} is {}", options_.id, e.index,
                   cc->configuration.ToString());
      for (auto it = address_book_.begin(); it != address_book_.end();) {
        // Forget removed members so snapshots stay bounded; founding members given in the
        // options stay (the owner's configuration names them).
        bool keep = cc->configuration.Contains(it->first) || options_.peers.count(it->first) != 0;
        it = keep ? std::next(it) : address_book_.erase(it);
      }
      break;
    }
    case EntryType::kNoOp:
      if (options_.on_leadership) {
        bool leading_this_term;
        {
          std::lock_guard lock(mu_);
          leading_this_term = raft_->role() == Role::kLeader && raft_->term() == e.term;
        }
        // Applied in log order: every entry before this no-op is in the state machine.
        if (leading_this_term) options_.on_leadership(true, e.term);
      }
      break;
  }
  applied_ = e.index;
  std::lock_guard lock(waiters_mu_);
  auto it = proposals_.find(e.index);
  if (it != proposals_.end()) {
    ProposalResult r;
    r.index = e.index;
    r.term = it->second.term;
    if (it->second.term == e.term) {
      r.result = std::move(result);
    } else {
      r.status =
          Status::Aborted(fmt::format("entry {} of term {} was overwritten by an entry of term {}",
                                      e.index, it->second.term, e.term));
    }
    CompleteProposalLocked(e.index, std::move(r), out);
  }
}

void RaftNode::Impl::MaybeSnapshot() {
  if (options_.snapshot_every_entries == 0 ||
      applied_ < last_snapshot_index_ + options_.snapshot_every_entries) {
    return;
  }
  const Index index = applied_;
  StatusOr<std::string> app = sm_->Snapshot();
  if (!app.ok()) {
    spdlog::warn("raft node {}: state machine snapshot at {} failed: {}", options_.id, index,
                 app.status().ToString());
    last_snapshot_index_ = index;  // try again after another interval
    return;
  }
  auto data = std::make_shared<const std::string>(node_format::EncodeEnvelope(address_book_, *app));
  StatusOr<SnapshotMetadata> meta = Status::Cancelled("stopping");
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !failed_.ok()) return;
    meta = raft_->OnSnapshotCreated(index, data);
  }
  if (!meta.ok()) {
    // A snapshot from the leader is being installed, or already covers this index.
    spdlog::debug("raft node {}: snapshot at {} skipped: {}", options_.id, index,
                  meta.status().ToString());
    return;
  }
  last_snapshot_index_ = index;
  // Writing the file costs a write and two fsyncs; the saver thread does it so that applying
  // (and so every proposal's completion) does not stall meanwhile. Until it is written the WAL
  // still holds the entries, so a crash in between recovers from the previous snapshot.
  {
    std::lock_guard lock(save_mu_);
    pending_save_ = PendingSave{*meta, std::move(data)};  // replaces an older one not yet saved
  }
  save_cv_.notify_one();
}

void RaftNode::Impl::SaveLoop() {
  while (true) {
    PendingSave save;
    {
      std::unique_lock lock(save_mu_);
      save_cv_.wait(lock, [&] { return stop_requested_.load() || pending_save_.has_value(); });
      if (stop_requested_.load()) return;  // the WAL still covers an unsaved snapshot
      save = std::move(*pending_save_);
      pending_save_.reset();
    }
    Status s = storage_->SaveSnapshot(save.metadata, *save.data);
    if (!s.ok()) {
      Status failed;
      {
        std::lock_guard lock(mu_);
        FailLocked(s);
        failed = failed_;
      }
      FailAllWaiters(Status::Unavailable(failed.message()));
      return;
    }
    snapshots_created_->Increment();
    spdlog::info("raft node {}: snapshot at {} ({} bytes); WAL now starts at {}", options_.id,
                 save.metadata.index, save.data->size(), storage_->wal_first_index());
  }
}

// ---------------------------------------------------------------------------------------------
// RaftNode
// ---------------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<RaftNode>> RaftNode::Create(NodeOptions options, StateMachine* sm) {
  if (options.id == kNoNode || options.id >= kMaxWireValue) {
    return Status::InvalidArgument(fmt::format("raft node id {} is invalid", options.id));
  }
  if (options.data_dir.empty()) return Status::InvalidArgument("raft node needs a data_dir");
  if (sm == nullptr) return Status::InvalidArgument("raft node needs a state machine");
  if (options.tick_interval.count() <= 0) {
    return Status::InvalidArgument("raft node tick_interval must be positive");
  }
  if (options.max_pending_proposals == 0 || options.max_pending_reads == 0 ||
      options.max_peer_queue_bytes == 0 || options.max_batch_bytes == 0) {
    return Status::InvalidArgument("raft node limits must be positive");
  }
  // A batch always carries at least one message, and one message at least one entry or chunk:
  // each must fit an RPC frame with room for the rest of the batch, or it could never be sent.
  constexpr uint64_t kMaxPayloadBytes = rpc::kDefaultMaxMessageBytes / 2;
  if (options.max_proposal_bytes > kMaxPayloadBytes || options.max_batch_bytes > kMaxPayloadBytes ||
      options.max_entries_bytes_per_msg > kMaxPayloadBytes ||
      options.snapshot_chunk_bytes > kMaxPayloadBytes) {
    return Status::InvalidArgument(
        fmt::format("raft node proposal, batch, append and snapshot chunk sizes must be at most "
                    "{} bytes (half an RPC frame)",
                    kMaxPayloadBytes));
  }
  for (const auto& [id, hp] : options.peers) {
    if (id == kNoNode || id >= kMaxWireValue || hp.host.empty() ||
        hp.host.size() > node_format::kMaxHostBytes || hp.port == 0) {
      return Status::InvalidArgument(fmt::format("bad peer {}={}", id, hp));
    }
  }
  auto impl = std::make_unique<Impl>(std::move(options), sm);
  TX_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<RaftNode>(new RaftNode(std::move(impl)));
}

RaftNode::RaftNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RaftNode::~RaftNode() = default;

Status RaftNode::Start() { return impl_->Start(); }
void RaftNode::Stop() { impl_->Stop(); }
std::shared_ptr<apache::thrift::TProcessor> RaftNode::processor() { return impl_->processor(); }
HostPort RaftNode::listen_address() const { return impl_->listen_address(); }

void RaftNode::ProposeAsync(std::string data, Clock::TimePoint deadline, ProposeCallback done) {
  impl_->ProposeAsync(std::move(data), deadline, std::move(done));
}

ProposalResult RaftNode::Propose(std::string data, Clock::Duration timeout) {
  std::promise<ProposalResult> promise;
  std::future<ProposalResult> future = promise.get_future();
  impl_->ProposeAsync(std::move(data), impl_->clock()->Now() + timeout,
                      [&promise](ProposalResult r) { promise.set_value(std::move(r)); });
  return future.get();
}

void RaftNode::ReadIndexAsync(Clock::TimePoint deadline, std::function<void(Status)> done) {
  impl_->ReadIndexAsync(deadline, std::move(done));
}

Status RaftNode::ReadBarrier(Clock::Duration timeout) {
  std::promise<Status> promise;
  std::future<Status> future = promise.get_future();
  impl_->ReadIndexAsync(impl_->clock()->Now() + timeout,
                        [&promise](Status s) { promise.set_value(std::move(s)); });
  return future.get();
}

Status RaftNode::TransferLeadership(NodeId target, Clock::Duration timeout) {
  return impl_->TransferLeadership(target, timeout);
}
Status RaftNode::Campaign() { return impl_->Campaign(); }

Status RaftNode::AddVoter(NodeId id, const HostPort& address, Clock::Duration timeout) {
  return impl_->ChangeMembership({ConfChangeType::kAddVoter, id}, &address, timeout);
}
Status RaftNode::AddLearner(NodeId id, const HostPort& address, Clock::Duration timeout) {
  return impl_->ChangeMembership({ConfChangeType::kAddLearner, id}, &address, timeout);
}
Status RaftNode::PromoteLearner(NodeId id, Clock::Duration timeout) {
  return impl_->ChangeMembership({ConfChangeType::kPromoteLearner, id}, nullptr, timeout);
}
Status RaftNode::RemoveNode(NodeId id, Clock::Duration timeout) {
  return impl_->ChangeMembership({ConfChangeType::kRemoveNode, id}, nullptr, timeout);
}

NodeStatus RaftNode::GetStatus() const { return impl_->GetStatus(); }
LeaderInfo RaftNode::leader() const { return impl_->leader(); }
bool RaftNode::is_leader() const { return impl_->is_leader(); }
Status RaftNode::health() const { return impl_->health(); }

void RaftNode::BlockPeer(NodeId peer, Direction direction) {
  impl_->transport()->Block(peer, direction != Direction::kIncoming,
                            direction != Direction::kOutgoing);
}
void RaftNode::UnblockPeer(NodeId peer, Direction direction) {
  impl_->transport()->Unblock(peer, direction != Direction::kIncoming,
                              direction != Direction::kOutgoing);
}
void RaftNode::UnblockAllPeers() { impl_->transport()->UnblockAll(); }
void RaftNode::SetFaultHook(std::shared_ptr<TransportFaultHook> hook) {
  impl_->transport()->SetFaultHook(std::move(hook));
}

}  // namespace tx::raft
