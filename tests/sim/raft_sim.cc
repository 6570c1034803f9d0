#include "tests/sim/raft_sim.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "raft/core/raft.h"

namespace tx::raft::sim {
namespace {

constexpr int kTickUnits = 10;  // simulated time units per replica tick
constexpr int kElectionTicks = 10;
constexpr int kMaxExtraNodes = 4;          // ids above the founders available for joins
constexpr size_t kMaxReadiesPerStep = 64;  // bounds a replica's work per step

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x2545f4914f6cdd1dULL + 1) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  int Range(int lo, int hi) { return lo + static_cast<int>(Uniform(hi - lo + 1)); }
  bool Chance(double p) { return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p; }
  double Real(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(Next() >> 11) * 0x1.0p-53;
  }

 private:
  uint64_t state_;
};

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}

uint64_t HashBytes(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ULL;
  return h;
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(std::string_view s, size_t pos) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(s[pos + i])} << (8 * i);
  return v;
}

// The replicated state machine: the sequence of proposal ids applied, with a hash chain over
// every applied entry so two replicas at one index can be compared in O(1).
struct StateMachine {
  Index applied = 0;
  uint64_t hash = 0;
  std::vector<uint64_t> ids;
  Configuration conf;

  std::string Encode() const {
    std::string out;
    PutU64(&out, applied);
    PutU64(&out, hash);
    PutU64(&out, ids.size());
    for (uint64_t id : ids) PutU64(&out, id);
    return out;
  }
  static StateMachine Decode(const std::string& data, const SnapshotMetadata& meta) {
    StateMachine sm;
    sm.applied = GetU64(data, 0);
    sm.hash = GetU64(data, 8);
    uint64_t n = GetU64(data, 16);
    for (uint64_t i = 0; i < n; ++i) sm.ids.push_back(GetU64(data, 24 + 8 * i));
    sm.conf = meta.configuration;
    return sm;
  }
};

// What a replica's disk holds: only writes that completed (or survived a crash).
struct Disk {
  HardState hard_state;
  SnapshotMetadata snapshot;
  std::shared_ptr<const std::string> snapshot_data;
  std::vector<Entry> entries;

  Index LastIndex() const { return snapshot.index + entries.size(); }
};

struct DiskOp {
  enum class Kind { kSnapshot, kTruncate, kAppend, kHardState };
  Kind kind;
  Snapshot snapshot;
  Index index = 0;
  Entry entry;
  HardState hard_state;
};

struct PendingWrite {
  Ready ready;
  std::vector<DiskOp> ops;
  uint64_t done_at = 0;
};

struct SimNode {
  NodeId id = kNoNode;
  Config config;
  bool up = false;
  bool decommissioned = false;
  bool removed = false;  // its removal was proposed or committed
  uint64_t incarnation = 0;
  uint64_t restart_at = 0;
  uint64_t decommission_at = 0;  // when an operator stops it for good (after its removal)
  uint64_t tick_phase = 0;
  std::unique_ptr<Raft> raft;
  Disk disk;
  std::optional<PendingWrite> write;
  StateMachine sm;
  Index snapshot_every = 0;
  // Checker state.
  Index commit_seen = 0;
  Term leader_check_term = 0;
  size_t leader_check_pos = 0;
  Role role_seen = Role::kFollower;
};

struct InFlight {
  uint64_t deliver_at;
  uint64_t order;  // random tie-break: same-time messages arrive in any order
  Message msg;
};
struct InFlightLater {
  bool operator()(const InFlight& a, const InFlight& b) const {
    return a.deliver_at != b.deliver_at ? a.deliver_at > b.deliver_at : a.order > b.order;
  }
};

struct AppliedRecord {
  bool set = false;
  Term term = 0;
  uint64_t data_hash = 0;
  uint64_t sm_hash = 0;
};

struct CommitRecord {
  Index index;
  Term term;
  Term commit_term;  // term of the replica that first saw it committed
};

struct Proposal {
  NodeId proposer;
  uint64_t incarnation;
  Index index;
  Term term;
  bool acked = false;
};

struct PendingRead {
  NodeId node;
  uint64_t incarnation;
  Index min_index;
};

struct LogKey {
  Index index;
  Term term;
  bool operator==(const LogKey& o) const { return index == o.index && term == o.term; }
};
struct LogKeyHash {
  size_t operator()(const LogKey& k) const { return Mix(k.index, k.term); }
};
struct LogValue {
  uint64_t data_hash;
  Term prev_term;
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& options) : options_(options), rng_(options.seed) {}

  SimResult Run();

 private:
  // --- setup ---
  void ChooseProfile();
  Config MakeConfig(NodeId id, bool founder);
  SimNode& CreateNode(NodeId id, bool founder);
  void Start(SimNode& n);

  // --- per step ---
  void Step();
  void InjectFaults();
  void DeliverDue();
  void ProcessNode(SimNode& n);
  void HandleReady(SimNode& n, Ready rd);
  void CompleteWrite(SimNode& n);
  void Crash(SimNode& n, bool permanently);
  void Send(std::vector<Message>& msgs);
  void Apply(SimNode& n, const Entry& e);
  void RestoreSnapshot(SimNode& n, const Snapshot& s);
  void MaybeSnapshot(SimNode& n);

  // --- fault and workload actions ---
  void Partition();
  void LeaderFault();
  void IsolateWithBuddy(NodeId id);
  void Propose();
  void ChangeMembership();
  void Transfer();
  void Read();
  SimNode* AnyLeader();

  // --- checks ---
  void CheckInvariants();
  void CheckEntries(SimNode& n, const Ready& rd);
  bool Liveness();
  void Fail(std::string property, std::string detail);
  template <typename... Args>
  void Trace(fmt::format_string<Args...> f, Args&&... args) {
    if (options_.trace == nullptr) return;
    fmt::print(options_.trace, "[{:>6}] ", now_);
    fmt::print(options_.trace, f, std::forward<Args>(args)...);
    fmt::print(options_.trace, "\n");
  }

  const SimOptions options_;
  Rng rng_;
  uint64_t now_ = 0;
  bool chaos_ = true;
  SimResult result_;

  // Profile (per seed).
  double drop_p_ = 0, dup_p_ = 0, long_delay_p_ = 0;
  int max_delay_ = 1, max_disk_latency_ = 1;
  double partition_p_ = 0, heal_p_ = 0, crash_p_ = 0, leader_fault_p_ = 0, propose_p_ = 0,
         conf_p_ = 0, transfer_p_ = 0, read_p_ = 0;
  double isolate_on_commit_p_ = 0, isolate_after_propose_p_ = 0;
  bool pre_vote_ = true, check_quorum_ = true;

  std::map<NodeId, SimNode> nodes_;
  NodeId next_id_ = 0;
  std::priority_queue<InFlight, std::vector<InFlight>, InFlightLater> network_;
  std::set<std::pair<NodeId, NodeId>> blocked_;

  // Checker state.
  std::map<Term, NodeId> leaders_;
  std::unordered_map<LogKey, LogValue, LogKeyHash> log_entries_;
  std::vector<AppliedRecord> applied_;  // by index
  Index max_applied_ = 0;
  std::unordered_map<uint64_t, Index> applied_at_;  // proposal id -> index
  std::vector<std::optional<Term>> committed_;      // by index
  std::vector<CommitRecord> commit_list_;
  std::unordered_map<uint64_t, Proposal> proposals_;
  uint64_t next_proposal_ = 1;
  std::unordered_map<uint64_t, PendingRead> reads_;
  uint64_t next_read_ = 1;
  std::optional<uint64_t> final_proposal_;
};

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

void Simulation::ChooseProfile() {
  drop_p_ = rng_.Chance(0.6) ? rng_.Real(0, 0.15) : 0;
  dup_p_ = rng_.Chance(0.4) ? rng_.Real(0, 0.05) : 0;
  long_delay_p_ = rng_.Chance(0.5) ? rng_.Real(0, 0.05) : 0;
  max_delay_ = rng_.Range(1, 20);
  max_disk_latency_ = rng_.Range(1, 15);
  partition_p_ = rng_.Real(0.0003, 0.003);
  heal_p_ = rng_.Real(0.002, 0.01);
  crash_p_ = rng_.Real(0.0002, 0.002);
  // Faults aimed at the leader produce what safety bugs need: uncommitted suffixes of old
  // terms on some replicas, and leaders lost right after they counted something.
  leader_fault_p_ = rng_.Real(0.0002, 0.003);
  if (rng_.Chance(0.25)) {
    // High churn: leadership changes every few election timeouts.
    double churn = rng_.Real(3, 10);
    partition_p_ *= churn;
    crash_p_ *= churn;
    leader_fault_p_ *= churn;
    heal_p_ *= churn;
  }
  // Triggered faults: cut a leader off just after it counted a commit or accepted a proposal,
  // dropping what it has in flight (Figure 8 of the Raft paper needs exactly that).
  if (rng_.Chance(0.3)) isolate_on_commit_p_ = rng_.Real(0.01, 0.1);
  if (rng_.Chance(0.3)) isolate_after_propose_p_ = rng_.Real(0.01, 0.05);
  propose_p_ = rng_.Real(0.02, 0.12);
  conf_p_ = rng_.Real(0.0005, 0.004);
  transfer_p_ = rng_.Real(0.0002, 0.002);
  read_p_ = rng_.Real(0.003, 0.02);
  pre_vote_ = rng_.Chance(0.8);
  check_quorum_ = rng_.Chance(0.8);
  Trace(
      "profile: drop={:.3f} dup={:.3f} long_delay={:.3f} max_delay={} disk<={} pre_vote={} "
      "check_quorum={}",
      drop_p_, dup_p_, long_delay_p_, max_delay_, max_disk_latency_, pre_vote_, check_quorum_);
}

Config Simulation::MakeConfig(NodeId id, bool founder) {
  Config c;
  c.id = id;
  if (founder) {
    for (NodeId v = 1; v <= static_cast<NodeId>(options_.nodes); ++v) c.voters.push_back(v);
  }
  c.election_timeout_ticks = kElectionTicks;
  c.heartbeat_ticks = rng_.Range(1, 3);
  c.random_seed = options_.seed;
  // Small limits so batching, flow control, chunking and back-pressure all engage.
  c.max_inflight_msgs = static_cast<uint32_t>(rng_.Range(1, 8));
  c.max_inflight_bytes = static_cast<uint64_t>(rng_.Range(200, 5000));
  c.max_entries_bytes_per_msg = static_cast<uint64_t>(rng_.Range(40, 1000));
  // Dozens of chunks per snapshot, but not so many that stop-and-wait transfers (one message
  // in flight) outlast the liveness deadline.
  c.snapshot_chunk_bytes = static_cast<uint64_t>(rng_.Range(32, 512));
  c.max_uncommitted_bytes = static_cast<uint64_t>(rng_.Range(1000, 20000));
  c.max_pending_reads = 64;
  c.pre_vote = pre_vote_;
  c.check_quorum = check_quorum_;
  return c;
}

SimNode& Simulation::CreateNode(NodeId id, bool founder) {
  SimNode& n = nodes_[id];
  n.id = id;
  n.config = MakeConfig(id, founder);
  n.tick_phase = rng_.Uniform(kTickUnits);
  n.snapshot_every = static_cast<Index>(rng_.Range(4, 40));
  Start(n);
  return n;
}

void Simulation::Start(SimNode& n) {
  InitialState s;
  s.hard_state = n.disk.hard_state;
  s.snapshot = n.disk.snapshot;
  s.snapshot_data = n.disk.snapshot_data;
  s.entries = n.disk.entries;
  StatusOr<std::unique_ptr<Raft>> r = Raft::Create(n.config, std::move(s));
  if (!r.ok()) {
    Fail("Recovery",
         fmt::format("node {} cannot restart from its disk: {}", n.id, r.status().ToString()));
    return;
  }
  n.raft = std::move(r).value();
  n.up = true;
  ++n.incarnation;
  n.commit_seen = n.raft->commit_index();
  n.leader_check_term = 0;
  n.role_seen = Role::kFollower;
  if (n.disk.snapshot.index > 0) {
    n.sm = StateMachine::Decode(*n.disk.snapshot_data, n.disk.snapshot);
  } else {
    n.sm = StateMachine{};
    n.sm.conf = Configuration{n.config.voters, n.config.learners};
  }
  Trace("node {} starts (incarnation {}) term={} commit={} log=[{},{}]", n.id, n.incarnation,
        n.raft->term(), n.raft->commit_index(), n.raft->log().first_index(),
        n.raft->log().last_index());
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

SimResult Simulation::Run() {
  ChooseProfile();
  for (NodeId id = 1; id <= static_cast<NodeId>(options_.nodes); ++id) CreateNode(id, true);
  next_id_ = static_cast<NodeId>(options_.nodes) + 1;

  for (int i = 0; i < options_.chaos_steps && result_.ok; ++i) Step();
  if (!result_.ok) return result_;

  // Heal everything: no more faults, every replica that may come back comes back.
  chaos_ = false;
  blocked_.clear();
  Trace("--- healing: network repaired, all replicas restarted ---");
  for (auto& [id, n] : nodes_) {
    if (!n.up && !n.decommissioned) Start(n);
  }
  for (int i = 0; i < options_.liveness_steps && result_.ok; ++i) {
    Step();
    if (result_.ok && Liveness()) {
      result_.stats.steps = now_;
      return result_;
    }
  }
  if (result_.ok) {
    std::string detail = "the healed cluster did not converge:";
    for (auto& [id, n] : nodes_) {
      if (n.decommissioned) continue;
      detail += fmt::format(" [node {} {} term={} commit={} applied={} conf={}]", id,
                            n.up ? RoleName(n.raft->role()) : "down", n.up ? n.raft->term() : 0,
                            n.up ? n.raft->commit_index() : 0, n.sm.applied, n.sm.conf.ToString());
      if (n.up && n.raft->role() == Role::kLeader) {
        for (const auto& [peer, pr] : n.raft->GetStatus().progress) {
          detail += fmt::format(" (progress of {}: {})", peer, pr.ToString());
        }
        detail +=
            fmt::format(" (log [{}, {}])", n.raft->log().first_index(), n.raft->log().last_index());
      }
    }
    Fail("Liveness", detail);
  }
  return result_;
}

void Simulation::Step() {
  ++now_;
  if (chaos_) InjectFaults();
  for (auto& [id, n] : nodes_) {
    if (!n.decommissioned && n.decommission_at != 0 && now_ >= n.decommission_at) {
      if (n.up) {
        Crash(n, true);
      } else {
        n.decommissioned = true;
      }
      Trace("node {} decommissioned", id);
    }
    if (!n.up && !n.decommissioned && chaos_ && n.restart_at != 0 && now_ >= n.restart_at) {
      n.restart_at = 0;
      Start(n);
    }
  }
  for (auto& [id, n] : nodes_) {
    if (n.up && (now_ + n.tick_phase) % kTickUnits == 0) n.raft->Tick();
  }
  DeliverDue();
  for (auto& [id, n] : nodes_) {
    if (!result_.ok) return;
    if (n.up && n.write.has_value() && n.write->done_at <= now_) CompleteWrite(n);
    if (n.up) ProcessNode(n);
  }
  if (result_.ok) CheckInvariants();
  result_.stats.steps = now_;
}

void Simulation::InjectFaults() {
  if (rng_.Chance(partition_p_)) Partition();
  if (!blocked_.empty() && rng_.Chance(heal_p_)) {
    blocked_.clear();
    Trace("network healed");
  }
  if (rng_.Chance(crash_p_)) {
    std::vector<SimNode*> up;
    for (auto& [id, n] : nodes_) {
      if (n.up) up.push_back(&n);
    }
    if (!up.empty()) Crash(*up[rng_.Uniform(up.size())], false);
  }
  if (rng_.Chance(leader_fault_p_)) LeaderFault();
  if (rng_.Chance(propose_p_)) Propose();
  if (rng_.Chance(conf_p_)) {
    // Operators race: sometimes several changes arrive together (all but one must be refused).
    int burst = rng_.Chance(0.3) ? rng_.Range(2, 3) : 1;
    for (int i = 0; i < burst; ++i) ChangeMembership();
  }
  if (rng_.Chance(transfer_p_)) Transfer();
  if (rng_.Chance(read_p_)) Read();
}

void Simulation::Partition() {
  std::vector<NodeId> live;
  for (auto& [id, n] : nodes_) {
    if (!n.decommissioned) live.push_back(id);
  }
  blocked_.clear();
  switch (rng_.Uniform(3)) {
    case 0: {  // isolate one replica
      NodeId x = live[rng_.Uniform(live.size())];
      for (NodeId y : live) {
        if (y != x) blocked_.insert({x, y}), blocked_.insert({y, x});
      }
      Trace("partition: isolate {}", x);
      break;
    }
    case 1: {  // split into two random groups
      std::set<NodeId> a;
      for (NodeId x : live) {
        if (rng_.Chance(0.5)) a.insert(x);
      }
      for (NodeId x : live) {
        for (NodeId y : live) {
          if (a.count(x) != a.count(y)) blocked_.insert({x, y});
        }
      }
      Trace("partition: split, group A has {} of {}", a.size(), live.size());
      break;
    }
    default: {  // one-way links
      int links = rng_.Range(1, static_cast<int>(live.size()));
      for (int i = 0; i < links; ++i) {
        NodeId x = live[rng_.Uniform(live.size())];
        NodeId y = live[rng_.Uniform(live.size())];
        if (x != y) blocked_.insert({x, y});
      }
      Trace("partition: {} one-way links cut", blocked_.size());
      break;
    }
  }
}

void Simulation::LeaderFault() {
  SimNode* leader = AnyLeader();
  if (leader == nullptr) return;
  switch (rng_.Uniform(3)) {
    case 0:
      Crash(*leader, false);
      break;
    default:
      IsolateWithBuddy(leader->id);
      break;
  }
}

void Simulation::IsolateWithBuddy(NodeId id) {
  // Cut the replica off, alone or with one other it can keep replicating to (a minority that
  // accumulates entries the majority side will overwrite).
  NodeId buddy = kNoNode;
  if (rng_.Chance(0.5)) {
    std::vector<NodeId> others;
    for (auto& [other, n] : nodes_) {
      if (other != id && !n.decommissioned) others.push_back(other);
    }
    if (!others.empty()) buddy = others[rng_.Uniform(others.size())];
  }
  blocked_.clear();
  for (auto& [x, nx] : nodes_) {
    for (auto& [y, ny] : nodes_) {
      bool x_side = x == id || x == buddy;
      bool y_side = y == id || y == buddy;
      if (x_side != y_side) blocked_.insert({x, y});
    }
  }
  Trace("partition: isolate {} with {}", id, buddy);
}

void Simulation::Crash(SimNode& n, bool permanently) {
  if (!n.up) return;
  // The disk keeps the completed writes plus a prefix of the one in progress (a torn tail).
  if (n.write.has_value()) {
    size_t keep = rng_.Uniform(n.write->ops.size() + 1);
    for (size_t i = 0; i < keep; ++i) {
      const DiskOp& op = n.write->ops[i];
      Disk& d = n.disk;
      switch (op.kind) {
        case DiskOp::Kind::kSnapshot:
          d.snapshot = op.snapshot.metadata;
          d.snapshot_data = op.snapshot.data;
          d.entries.clear();
          break;
        case DiskOp::Kind::kTruncate:
          if (op.index <= d.LastIndex()) d.entries.resize(op.index - d.snapshot.index - 1);
          break;
        case DiskOp::Kind::kAppend:
          d.entries.push_back(op.entry);
          break;
        case DiskOp::Kind::kHardState:
          d.hard_state = op.hard_state;
          break;
      }
    }
    Trace("node {} crashes; {} of {} unsynced writes survive", n.id, keep, n.write->ops.size());
    n.write.reset();
  } else {
    Trace("node {} crashes", n.id);
  }
  n.raft.reset();
  n.up = false;
  ++result_.stats.crashes;
  if (permanently) {
    n.decommissioned = true;
  } else {
    n.restart_at = now_ + static_cast<uint64_t>(rng_.Range(20, 600));
  }
}

void Simulation::Send(std::vector<Message>& msgs) {
  for (Message& m : msgs) {
    uint64_t delay = static_cast<uint64_t>(rng_.Range(1, max_delay_));
    if (rng_.Chance(long_delay_p_)) delay += rng_.Uniform(200);
    network_.push(InFlight{now_ + delay, rng_.Next(), std::move(m)});
  }
  msgs.clear();
}

void Simulation::DeliverDue() {
  while (!network_.empty() && network_.top().deliver_at <= now_ && result_.ok) {
    InFlight f = network_.top();
    network_.pop();
    Message& m = f.msg;
    auto it = nodes_.find(m.to);
    bool faulty = chaos_ && (rng_.Chance(drop_p_) || blocked_.count({m.from, m.to}) != 0);
    if (it == nodes_.end() || !it->second.up || faulty) {
      ++result_.stats.messages_dropped;
      continue;
    }
    if (chaos_ && rng_.Chance(dup_p_)) {
      network_.push(
          InFlight{now_ + static_cast<uint64_t>(rng_.Range(1, max_delay_ * 4)), rng_.Next(), m});
    }
    ++result_.stats.messages_delivered;
    if (options_.trace != nullptr) Trace("deliver {}", DescribeMessage(m));
    Status s = it->second.raft->Step(std::move(m));
    if (!s.ok()) Fail("Valid messages", "a replica rejected a peer's message: " + s.ToString());
  }
}

// ---------------------------------------------------------------------------------------------
// The simulated runtime
// ---------------------------------------------------------------------------------------------

void Simulation::ProcessNode(SimNode& n) {
  if (n.write.has_value()) {
    // The leader's replication traffic need not wait for its own disk.
    std::vector<Message> msgs = n.raft->TakeMessages();
    Send(msgs);
    return;
  }
  for (size_t i = 0;
       i < kMaxReadiesPerStep && result_.ok && n.up && !n.write.has_value() && n.raft->HasReady();
       ++i) {
    HandleReady(n, n.raft->GetReady());
  }
}

void Simulation::HandleReady(SimNode& n, Ready rd) {
  if (rd.soft_state.has_value()) {
    Trace("node {} is {} (leader {}) in term {}", n.id, RoleName(rd.soft_state->role),
          rd.soft_state->leader, n.raft->term());
  }
  CheckEntries(n, rd);
  if (!result_.ok) return;
  Send(rd.messages);
  if (rd.snapshot.has_value()) RestoreSnapshot(n, *rd.snapshot);
  for (const Entry& e : rd.committed_entries) {
    Apply(n, e);
    if (!result_.ok) return;
  }
  for (const ReadState& r : rd.read_states) {
    uint64_t ctx = GetU64(r.context, 0);
    auto it = reads_.find(ctx);
    if (it == reads_.end()) continue;
    if (r.index < it->second.min_index) {
      Fail("Linearizable ReadIndex",
           fmt::format("node {} got read index {} for read {}, but index {} was already "
                       "applied when the read was issued",
                       n.id, r.index, ctx, it->second.min_index));
      return;
    }
    ++result_.stats.reads_served;
    reads_.erase(it);
  }
  MaybeSnapshot(n);
  if (rd.MustPersist()) {
    PendingWrite w;
    if (rd.snapshot.has_value()) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kSnapshot, *rd.snapshot, 0, {}, {}});
    }
    if (rd.truncate_from != 0) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kTruncate, {}, rd.truncate_from, {}, {}});
    }
    for (const Entry& e : rd.entries) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kAppend, {}, 0, e, {}});
    }
    if (rd.hard_state.has_value()) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kHardState, {}, 0, {}, *rd.hard_state});
    }
    w.done_at = now_ + static_cast<uint64_t>(rng_.Range(1, max_disk_latency_));
    w.ready = std::move(rd);
    n.write = std::move(w);
    return;
  }
  Send(rd.messages_after_persist);
  n.raft->Advance(rd);
}

void Simulation::CompleteWrite(SimNode& n) {
  PendingWrite w = std::move(*n.write);
  n.write.reset();
  Disk& d = n.disk;
  for (const DiskOp& op : w.ops) {
    switch (op.kind) {
      case DiskOp::Kind::kSnapshot:
        d.snapshot = op.snapshot.metadata;
        d.snapshot_data = op.snapshot.data;
        d.entries.clear();
        break;
      case DiskOp::Kind::kTruncate:
        if (op.index <= d.snapshot.index) {
          Fail("Ready contract", fmt::format("node {} asked to truncate at {} below snapshot {}",
                                             n.id, op.index, d.snapshot.index));
          return;
        }
        if (op.index <= d.LastIndex()) d.entries.resize(op.index - d.snapshot.index - 1);
        break;
      case DiskOp::Kind::kAppend:
        if (op.entry.index != d.LastIndex() + 1) {
          Fail("Ready contract",
               fmt::format("node {} asked to append index {} after persisted index {}", n.id,
                           op.entry.index, d.LastIndex()));
          return;
        }
        d.entries.push_back(op.entry);
        break;
      case DiskOp::Kind::kHardState:
        d.hard_state = op.hard_state;
        break;
    }
  }
  Send(w.ready.messages_after_persist);
  n.raft->Advance(w.ready);
}

void Simulation::Apply(SimNode& n, const Entry& e) {
  StateMachine& sm = n.sm;
  if (e.index != sm.applied + 1) {
    Fail("State Machine Safety",
         fmt::format("node {} applies index {} after {}", n.id, e.index, sm.applied));
    return;
  }
  uint64_t data_hash = HashBytes(e.data);
  sm.applied = e.index;
  sm.hash = Mix(Mix(Mix(sm.hash, e.index), e.term), data_hash);
  if (applied_.size() <= e.index) applied_.resize(e.index + 1);
  AppliedRecord& rec = applied_[e.index];
  bool first = !rec.set;
  if (first) {
    rec = AppliedRecord{true, e.term, data_hash, sm.hash};
    max_applied_ = std::max(max_applied_, e.index);
  } else if (rec.term != e.term || rec.data_hash != data_hash || rec.sm_hash != sm.hash) {
    Fail("State Machine Safety",
         fmt::format("node {} applied (index {}, term {}) but another replica applied term {} "
                     "there (or reached a different state)",
                     n.id, e.index, e.term, rec.term));
    return;
  }
  if (e.type == EntryType::kNormal) {
    uint64_t id = GetU64(e.data, 0);
    sm.ids.push_back(id);
    auto [it, inserted] = applied_at_.try_emplace(id, e.index);
    if (!inserted && it->second != e.index) {
      Fail("State Machine Safety",
           fmt::format("proposal {} applied at index {} and at {}", id, it->second, e.index));
      return;
    }
    auto p = proposals_.find(id);
    if (p != proposals_.end() && p->second.proposer == n.id &&
        p->second.incarnation == n.incarnation && p->second.index == e.index &&
        p->second.term == e.term && !p->second.acked) {
      p->second.acked = true;
      ++result_.stats.proposals_acked;
    }
  } else if (e.type == EntryType::kConfChange) {
    StatusOr<ConfChangeEntry> cc = DecodeConfChange(e.data);
    if (!cc.ok()) {
      Fail("State Machine Safety", "undecodable configuration entry applied");
      return;
    }
    sm.conf = cc->configuration;
    if (first) {
      ++result_.stats.conf_changes_applied;
      Trace("configuration {} committed at {}", sm.conf.ToString(), e.index);
      // An operator stops a removed replica some time after its removal committed.
      if (cc->change.type == ConfChangeType::kRemoveNode) {
        auto r = nodes_.find(cc->change.node_id);
        if (r != nodes_.end()) {
          r->second.removed = true;  // ids are never reused
          if (chaos_ && rng_.Chance(0.7)) r->second.decommission_at = now_ + 1 + rng_.Uniform(300);
        }
      }
    }
  }
}

void Simulation::RestoreSnapshot(SimNode& n, const Snapshot& s) {
  n.sm = StateMachine::Decode(*s.data, s.metadata);
  ++result_.stats.snapshots_installed;
  Trace("node {} restores snapshot at {} (term {})", n.id, s.metadata.index, s.metadata.term);
  if (n.sm.applied != s.metadata.index) {
    Fail("State Machine Safety",
         fmt::format("snapshot at {} holds state at {}", s.metadata.index, n.sm.applied));
    return;
  }
  if (applied_.size() <= s.metadata.index || !applied_[s.metadata.index].set ||
      applied_[s.metadata.index].sm_hash != n.sm.hash) {
    Fail("State Machine Safety",
         fmt::format("node {} restored a snapshot at {} whose state no replica applied", n.id,
                     s.metadata.index));
  }
}

void Simulation::MaybeSnapshot(SimNode& n) {
  if (n.sm.applied < n.disk.snapshot.index + n.snapshot_every) return;
  auto data = std::make_shared<const std::string>(n.sm.Encode());
  StatusOr<SnapshotMetadata> meta = n.raft->OnSnapshotCreated(n.sm.applied, data);
  if (!meta.ok()) return;  // e.g. a received snapshot is still being written
  if (!(meta->configuration == n.sm.conf)) {
    Fail("Snapshot",
         fmt::format("node {}: core says configuration at {} is {}, the state "
                     "machine applied {}",
                     n.id, meta->index, meta->configuration.ToString(), n.sm.conf.ToString()));
    return;
  }
  // Written atomically (temp file + rename + fsync in a real runtime), then the log prefix goes.
  Disk& d = n.disk;
  size_t drop = static_cast<size_t>(meta->index - d.snapshot.index);
  d.entries.erase(d.entries.begin(), d.entries.begin() + static_cast<long>(drop));
  d.snapshot = *meta;
  d.snapshot_data = data;
  ++result_.stats.snapshots_created;
}

// ---------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------

SimNode* Simulation::AnyLeader() {
  std::vector<SimNode*> leaders;
  for (auto& [id, n] : nodes_) {
    if (n.up && n.raft->role() == Role::kLeader) leaders.push_back(&n);
  }
  if (leaders.empty()) return nullptr;
  return leaders[rng_.Uniform(leaders.size())];
}

void Simulation::Propose() {
  SimNode* n = AnyLeader();
  if (n == nullptr) return;
  uint64_t id = next_proposal_++;
  std::string data;
  PutU64(&data, id);
  data.append(rng_.Uniform(120), 'p');
  StatusOr<EntryId> r = n->raft->Propose(std::move(data));
  ++result_.stats.proposals;
  if (!r.ok()) {
    Trace("propose {} at node {}: {}", id, n->id, r.status().ToString());
    return;
  }
  proposals_[id] = Proposal{n->id, n->incarnation, r->index, r->term};
  Trace("propose {} at node {} -> ({}, {})", id, n->id, r->index, r->term);
  if (rng_.Chance(isolate_after_propose_p_)) IsolateWithBuddy(n->id);
}

void Simulation::ChangeMembership() {
  SimNode* leader = AnyLeader();
  if (leader == nullptr) return;
  const Configuration& conf = leader->raft->configuration();
  size_t founders = static_cast<size_t>(options_.nodes);
  ConfChange cc;
  switch (rng_.Uniform(4)) {
    case 0:  // add a learner (a fresh replica, or one created earlier that never joined)
    case 1: {
      NodeId id = kNoNode;
      for (auto& [nid, n] : nodes_) {
        if (!n.removed && !n.decommissioned && !conf.Contains(nid) && nid > founders) id = nid;
      }
      if (id == kNoNode) {
        if (next_id_ > founders + kMaxExtraNodes) return;
        id = next_id_;
      }
      cc.type = rng_.Chance(0.8) ? ConfChangeType::kAddLearner : ConfChangeType::kAddVoter;
      cc.node_id = id;
      break;
    }
    case 2: {  // promote a learner
      if (conf.learners.empty()) return;
      cc.type = ConfChangeType::kPromoteLearner;
      cc.node_id = conf.learners[rng_.Uniform(conf.learners.size())];
      break;
    }
    default: {  // remove a member (possibly the leader itself)
      std::vector<NodeId> members = conf.learners;
      if (conf.voters.size() > 3)
        members.insert(members.end(), conf.voters.begin(), conf.voters.end());
      if (members.empty()) return;
      cc.type = ConfChangeType::kRemoveNode;
      cc.node_id = members[rng_.Uniform(members.size())];
      break;
    }
  }
  StatusOr<EntryId> r = leader->raft->ProposeConfChange(cc);
  Trace("node {} proposes conf change type {} node {}: {}", leader->id, static_cast<int>(cc.type),
        cc.node_id, r.ok() ? "ok" : r.status().ToString());
  if (r.ok() && cc.type == ConfChangeType::kRemoveNode) {
    nodes_.at(cc.node_id).removed = true;  // ids are never reused, even if this entry is lost
  }
  if (r.ok() && nodes_.count(cc.node_id) == 0) {
    if (cc.node_id >= next_id_) next_id_ = cc.node_id + 1;
    CreateNode(cc.node_id, false);
  }
}

void Simulation::Transfer() {
  SimNode* leader = AnyLeader();
  if (leader == nullptr) return;
  const auto& voters = leader->raft->configuration().voters;
  if (voters.empty()) return;
  NodeId target = voters[rng_.Uniform(voters.size())];
  Status s = leader->raft->TransferLeadership(target);
  ++result_.stats.transfers;
  Trace("node {} transfers leadership to {}: {}", leader->id, target, s.ToString());
}

void Simulation::Read() {
  std::vector<SimNode*> up;
  for (auto& [id, n] : nodes_) {
    if (n.up) up.push_back(&n);
  }
  if (up.empty()) return;
  SimNode& n = *up[rng_.Uniform(up.size())];
  uint64_t ctx = next_read_++;
  std::string context;
  PutU64(&context, ctx);
  if (n.raft->ReadIndex(context).ok()) {
    reads_[ctx] = PendingRead{n.id, n.incarnation, max_applied_};
  }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

void Simulation::Fail(std::string property, std::string detail) {
  if (!result_.ok) return;
  result_.ok = false;
  result_.property = std::move(property);
  result_.detail = std::move(detail);
  result_.step = now_;
  Trace("VIOLATION of {}: {}", result_.property, result_.detail);
}

void Simulation::CheckEntries(SimNode& n, const Ready& rd) {
  // Log Matching over everything any replica persists: an (index, term) pair always names the
  // same entry, preceded by the same term.
  if (rd.snapshot.has_value()) {
    const SnapshotMetadata& s = rd.snapshot->metadata;
    if (s.index < committed_.size() && committed_[s.index].has_value() &&
        *committed_[s.index] != s.term) {
      Fail("Log Matching", fmt::format("node {} received a snapshot at ({}, {}) but term {} "
                                       "was committed there",
                                       n.id, s.index, s.term, *committed_[s.index]));
      return;
    }
  }
  if (rd.entries.empty()) return;
  std::optional<Term> prev = n.raft->log().TermAt(rd.entries.front().index - 1);
  if (!prev.has_value()) {
    Fail("Ready contract", fmt::format("node {} persists entries from {} without a predecessor",
                                       n.id, rd.entries.front().index));
    return;
  }
  Term prev_term = *prev;
  for (const Entry& e : rd.entries) {
    LogValue v{HashBytes(e.data) ^ static_cast<uint64_t>(e.type), prev_term};
    auto [it, inserted] = log_entries_.try_emplace(LogKey{e.index, e.term}, v);
    if (!inserted && (it->second.data_hash != v.data_hash || it->second.prev_term != prev_term)) {
      Fail("Log Matching",
           fmt::format("node {} holds a different entry at (index {}, term {}) than another "
                       "replica (prev term {} vs {})",
                       n.id, e.index, e.term, prev_term, it->second.prev_term));
      return;
    }
    prev_term = e.term;
  }
}

void Simulation::CheckInvariants() {
  for (auto& [id, n] : nodes_) {
    if (!n.up) continue;
    Raft& r = *n.raft;
    result_.stats.max_term = std::max(result_.stats.max_term, r.term());
    // Election Safety.
    if (r.role() == Role::kLeader) {
      auto [it, inserted] = leaders_.try_emplace(r.term(), id);
      if (!inserted && it->second != id) {
        Fail("Election Safety",
             fmt::format("nodes {} and {} are both leaders of term {}", it->second, id, r.term()));
        return;
      }
    }
    // Record newly committed entries with the term in which they were first seen committed.
    Index commit = r.commit_index();
    const RaftLog& log = r.log();
    for (Index i = n.commit_seen + 1; i <= commit; ++i) {
      if (i < log.snapshot_index()) continue;
      Term t = *log.TermAt(i);
      if (committed_.size() <= i) committed_.resize(i + 1);
      if (!committed_[i].has_value()) {
        committed_[i] = t;
        commit_list_.push_back(CommitRecord{i, t, r.term()});
      } else if (*committed_[i] != t) {
        Fail("State Machine Safety",
             fmt::format("node {} committed (index {}, term {}) but term {} was committed there",
                         id, i, t, *committed_[i]));
        return;
      }
    }
    if (commit > n.commit_seen && r.role() == Role::kLeader && chaos_ &&
        rng_.Chance(isolate_on_commit_p_)) {
      IsolateWithBuddy(id);
    }
    n.commit_seen = std::max(n.commit_seen, commit);
  }
  // Leader Completeness: a leader holds every entry committed in an earlier term.
  for (auto& [id, n] : nodes_) {
    if (!n.up || n.raft->role() != Role::kLeader) continue;
    Raft& r = *n.raft;
    if (n.leader_check_term != r.term()) {
      n.leader_check_term = r.term();
      n.leader_check_pos = 0;
    }
    for (; n.leader_check_pos < commit_list_.size(); ++n.leader_check_pos) {
      const CommitRecord& c = commit_list_[n.leader_check_pos];
      if (r.term() <= c.commit_term || c.index <= r.log().snapshot_index()) continue;
      std::optional<Term> t = r.log().TermAt(c.index);
      if (!t.has_value() || *t != c.term) {
        Fail("Leader Completeness",
             fmt::format("node {}, leader of term {}, lacks (index {}, term {}) committed in "
                         "term {}",
                         id, r.term(), c.index, c.term, c.commit_term));
        return;
      }
    }
  }
}

bool Simulation::Liveness() {
  SimNode* leader = nullptr;
  for (auto& [id, n] : nodes_) {
    if (n.up && n.raft->role() == Role::kLeader &&
        (leader == nullptr || n.raft->term() > leader->raft->term())) {
      leader = &n;
    }
  }
  if (leader == nullptr) return false;
  if (!final_proposal_.has_value() || (now_ % 200 == 0 && !proposals_.count(*final_proposal_))) {
    uint64_t id = next_proposal_++;
    std::string data;
    PutU64(&data, id);
    StatusOr<EntryId> r = leader->raft->Propose(std::move(data));
    ++result_.stats.proposals;
    final_proposal_ = id;
    if (r.ok()) {
      proposals_[id] = Proposal{leader->id, leader->incarnation, r->index, r->term};
      Trace("final proposal {} at node {} -> ({}, {})", id, leader->id, r->index, r->term);
    }
    return false;
  }
  auto fp = proposals_.find(*final_proposal_);
  if (fp == proposals_.end()) return false;
  if (!fp->second.acked) {
    // Lost with a leader change: propose again later.
    if (now_ % 200 == 0) final_proposal_.reset();
    return false;
  }
  // Every member of the leader's configuration must have applied every acknowledged proposal.
  const Configuration& conf = leader->raft->configuration();
  std::vector<NodeId> members = conf.voters;
  members.insert(members.end(), conf.learners.begin(), conf.learners.end());
  for (NodeId m : members) {
    auto it = nodes_.find(m);
    if (it == nodes_.end() || !it->second.up) return false;
    const SimNode& n = it->second;
    if (n.sm.applied < fp->second.index) return false;
  }
  for (NodeId m : members) {
    const SimNode& n = nodes_.at(m);
    std::set<uint64_t> have(n.sm.ids.begin(), n.sm.ids.end());
    for (const auto& [id, p] : proposals_) {
      if (p.acked && have.count(id) == 0) {
        Fail("Liveness", fmt::format("proposal {} was acknowledged at ({}, {}) but member {} "
                                     "never applied it",
                                     id, p.index, p.term, m));
        return false;
      }
    }
  }
  Trace("converged: final proposal applied on members {}", conf.ToString());
  return true;
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace tx::raft::sim
