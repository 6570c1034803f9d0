#include "raft/core/raft.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "common/check.h"

namespace tx::raft {
namespace {

bool IsLeaderTraffic(MessageType type) {
  return type == MessageType::kAppend || type == MessageType::kHeartbeat ||
         type == MessageType::kSnapshot || type == MessageType::kTimeoutNow;
}

bool ValidEntryType(EntryType type) {
  return static_cast<uint8_t>(type) <= static_cast<uint8_t>(EntryType::kConfChange);
}

// Quorum value of a set of per-voter values: the largest v such that a majority has >= v.
template <typename T>
T QuorumValue(std::vector<T>& values, size_t quorum) {
  std::sort(values.begin(), values.end(), std::greater<T>());
  return values[quorum - 1];
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

Status Config::Validate() const {
  if (id == kNoNode) return Status::InvalidArgument("raft config: id must be non-zero");
  if (election_timeout_ticks <= 0 || heartbeat_ticks <= 0) {
    return Status::InvalidArgument("raft config: election and heartbeat ticks must be positive");
  }
  if (heartbeat_ticks >= election_timeout_ticks) {
    return Status::InvalidArgument(
        fmt::format("raft config: heartbeat_ticks {} must be below election_timeout_ticks {}",
                    heartbeat_ticks, election_timeout_ticks));
  }
  if (max_inflight_msgs == 0 || max_inflight_bytes == 0 || max_entries_bytes_per_msg == 0 ||
      snapshot_chunk_bytes == 0 || max_snapshot_bytes == 0 || max_uncommitted_bytes == 0 ||
      max_proposal_bytes == 0 || max_committed_bytes_per_ready == 0 || max_pending_reads == 0) {
    return Status::InvalidArgument("raft config: every limit must be positive");
  }
  Configuration c{voters, learners};
  return c.Normalize().Annotate("raft config");
}

StatusOr<std::unique_ptr<Raft>> Raft::Create(const Config& config, InitialState state) {
  TX_RETURN_IF_ERROR(config.Validate());
  const SnapshotMetadata& snap = state.snapshot;
  if (snap.index == 0 && snap.term != 0) {
    return Status::Corruption(fmt::format("snapshot at index 0 has term {}", snap.term));
  }
  if (snap.index > 0 && state.snapshot_data == nullptr) {
    return Status::Corruption(fmt::format("snapshot at index {} has no data", snap.index));
  }
  Configuration conf;
  Index conf_index = snap.index;
  if (snap.index > 0) {
    conf = snap.configuration;
    TX_RETURN_IF_ERROR(conf.Normalize().Annotate("snapshot configuration"));
  } else {
    conf = Configuration{config.voters, config.learners};
    TX_RETURN_IF_ERROR(conf.Normalize());
  }
  Term prev_term = snap.term;
  for (size_t i = 0; i < state.entries.size(); ++i) {
    const Entry& e = state.entries[i];
    if (e.index != snap.index + 1 + i) {
      return Status::Corruption(fmt::format("recovered entry {} has index {}, expected {}", i,
                                            e.index, snap.index + 1 + i));
    }
    if (e.term < prev_term || !ValidEntryType(e.type)) {
      return Status::Corruption(
          fmt::format("recovered entry {} has term {} after term {} or a bad type", e.index, e.term,
                      prev_term));
    }
    prev_term = e.term;
    if (e.type == EntryType::kConfChange) {
      StatusOr<ConfChangeEntry> cc = DecodeConfChange(e.data);
      if (!cc.ok()) {
        return Status::Corruption(
            fmt::format("recovered entry {}: {}", e.index, cc.status().message()));
      }
      conf = cc->configuration;
      conf_index = e.index;
    }
  }
  Index last = snap.index + state.entries.size();
  HardState& hs = state.hard_state;
  const HardState on_disk = hs;
  if (hs.commit > last) {
    return Status::Corruption(fmt::format(
        "recovered commit index {} is beyond the last recovered entry {}", hs.commit, last));
  }
  // The snapshot is of committed state, whatever the recovered commit index says.
  hs.commit = std::max(hs.commit, snap.index);
  // The hard state is written after the entries; a crash between the two leaves entries of a
  // term newer than the recorded one. Adopting that term is safe: no vote in it was ever
  // announced (votes are sent only once durable), so the vote is simply absent.
  if (prev_term > hs.term) {
    hs.term = prev_term;
    hs.vote = kNoNode;
  }
  return std::unique_ptr<Raft>(
      new Raft(config, std::move(state), on_disk, std::move(conf), conf_index));
}

Raft::Raft(const Config& config, InitialState state, const HardState& on_disk, Configuration conf,
           Index conf_index)
    : config_(config),
      id_(config.id),
      term_(state.hard_state.term),
      vote_(state.hard_state.vote),
      log_(state.snapshot.index, state.snapshot.term, std::move(state.entries),
           state.hard_state.commit),
      conf_(std::move(conf)),
      conf_index_(conf_index),
      snapshot_data_(std::move(state.snapshot_data)) {
  snapshot_conf_ = state.snapshot.index > 0 ? state.snapshot.configuration
                                            : Configuration{config.voters, config.learners};
  (void)snapshot_conf_.Normalize();  // validated in Create
  rng_state_ = config.random_seed ^ (0x9e3779b97f4a7c15ULL * (config.id + 1));
  applied_ = log_.snapshot_index();
  // What Create() adjusted (term raised, commit raised to the snapshot) goes into the first
  // Ready; until then the durable state is what was read from disk.
  handed_hard_state_ = durable_hard_state_ = on_disk;
  BecomeFollower(term_, kNoNode);
  handed_soft_state_ = SoftState{leader_, role_};
}

// ---------------------------------------------------------------------------------------------
// Role transitions
// ---------------------------------------------------------------------------------------------

uint64_t Raft::NextRandom() {
  // splitmix64: tiny, deterministic, good enough to spread election timeouts.
  uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void Raft::ResetRandomizedElectionTimeout() {
  randomized_election_timeout_ =
      config_.election_timeout_ticks +
      static_cast<int>(NextRandom() % static_cast<uint64_t>(config_.election_timeout_ticks));
}

void Raft::Reset(Term term) {
  if (term_ != term) {
    TX_CHECK(term > term_, "node {}: term moving backwards from {} to {}", id_, term_, term);
    term_ = term;
    vote_ = kNoNode;
  }
  leader_ = kNoNode;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortLeaderTransfer();
  votes_.clear();
  progress_.clear();
  pending_reads_.clear();
  reads_awaiting_commit_.clear();
  need_broadcast_ = false;
  uncommitted_bytes_ = 0;
  leader_ticks_ = 0;
}

void Raft::BecomeFollower(Term term, NodeId leader) {
  Reset(term);
  role_ = Role::kFollower;
  leader_ = leader;
}

void Raft::BecomePreCandidate() {
  TX_CHECK(role_ != Role::kLeader, "node {}: leader cannot become pre-candidate", id_);
  // Pre-vote (§9.6) changes neither term nor vote: a node that cannot win does not disrupt.
  role_ = Role::kPreCandidate;
  leader_ = kNoNode;
  votes_.clear();
}

void Raft::BecomeCandidate() {
  TX_CHECK(role_ != Role::kLeader, "node {}: leader cannot become candidate", id_);
  Reset(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void Raft::BecomeLeader() {
  TX_CHECK(role_ == Role::kCandidate, "node {}: becoming leader from {}", id_, RoleName(role_));
  Reset(term_);
  role_ = Role::kLeader;
  leader_ = id_;
  for (const auto* list : {&conf_.voters, &conf_.learners}) {
    for (NodeId peer : *list) {
      if (peer == id_) continue;
      auto [it, inserted] = progress_.try_emplace(
          peer, log_.last_index() + 1, config_.max_inflight_msgs, config_.max_inflight_bytes);
      it->second.is_learner = list == &conf_.learners;
      it->second.last_heard_tick = 0;  // the votes that elected us count as contact
    }
  }
  // §8: a no-op of the new term lets the leader learn what is committed and, once committed,
  // serve reads and accept membership changes.
  AppendLeaderEntry(EntryType::kNoOp, {});
}

void Raft::StartElection(bool pre_vote, bool transfer) {
  if (pre_vote) {
    BecomePreCandidate();
  } else {
    BecomeCandidate();
  }
  Term vote_term = pre_vote ? term_ + 1 : term_;
  int result = Poll(id_, true);
  if (result > 0) {
    if (pre_vote) {
      StartElection(false, transfer);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (NodeId peer : conf_.voters) {
    if (peer == id_) continue;
    Message m;
    m.type = pre_vote ? MessageType::kPreVote : MessageType::kVote;
    m.to = peer;
    m.term = vote_term;
    m.index = log_.last_index();
    m.log_term = log_.last_term();
    m.leader_transfer = transfer;
    Send(std::move(m));
  }
}

int Raft::Poll(NodeId from, bool granted) {
  votes_.try_emplace(from, granted);
  size_t yes = 0;
  size_t no = 0;
  for (NodeId v : conf_.voters) {
    auto it = votes_.find(v);
    if (it == votes_.end()) continue;
    (it->second ? yes : no) += 1;
  }
  if (yes >= Quorum()) return 1;
  if (conf_.voters.size() - no < Quorum()) return -1;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Ticks
// ---------------------------------------------------------------------------------------------

void Raft::Tick() {
  if (role_ == Role::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

void Raft::TickElection() {
  ++election_elapsed_;
  if (IsVoter(id_) && election_elapsed_ >= randomized_election_timeout_) {
    election_elapsed_ = 0;
    StartElection(config_.pre_vote, false);
  }
}

void Raft::TickHeartbeat() {
  ++heartbeat_elapsed_;
  ++leader_ticks_;
  if (config_.check_quorum) {
    // §6.2: a leader that has not heard from a quorum within an election timeout steps down,
    // so clients find the real leader and the followers' lease on votes stays sound.
    const uint64_t timeout = static_cast<uint64_t>(config_.election_timeout_ticks);
    size_t active = IsVoter(id_) ? 1 : 0;
    for (const auto& [peer, pr] : progress_) {
      if (!pr.is_learner && leader_ticks_ - pr.last_heard_tick < timeout) ++active;
    }
    if (active < Quorum()) {
      BecomeFollower(term_, kNoNode);
      return;
    }
  }
  // A transfer that did not complete within an election timeout is abandoned (§3.10).
  if (transferee_ != kNoNode && ++transfer_elapsed_ >= config_.election_timeout_ticks) {
    AbortLeaderTransfer();
  }
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    BroadcastHeartbeat();
  }
}

// ---------------------------------------------------------------------------------------------
// Step
// ---------------------------------------------------------------------------------------------

Status Raft::ValidateMessage(const Message& m) const {
  if (static_cast<uint8_t>(m.type) > kMaxMessageType) {
    return Status::InvalidArgument(
        fmt::format("unknown message type {}", static_cast<int>(m.type)));
  }
  if (m.to != id_) {
    return Status::InvalidArgument(
        fmt::format("message for node {} delivered to node {}", m.to, id_));
  }
  if (m.from == kNoNode || m.from == id_) {
    return Status::InvalidArgument(fmt::format("message from invalid node {}", m.from));
  }
  if (m.term == 0) {
    return Status::InvalidArgument(
        fmt::format("{} from node {} has term 0", MessageTypeName(m.type), m.from));
  }
  if (m.type == MessageType::kAppend) {
    if (m.log_term > m.term) {
      return Status::InvalidArgument(fmt::format(
          "append from {}: prev term {} above message term {}", m.from, m.log_term, m.term));
    }
    Term prev = m.log_term;
    for (size_t k = 0; k < m.entries.size(); ++k) {
      const Entry& e = m.entries[k];
      if (e.index != m.index + 1 + k || e.term < prev || e.term > m.term ||
          !ValidEntryType(e.type)) {
        return Status::InvalidArgument(fmt::format(
            "append from {}: entry {} is (index {}, term {}), not contiguous after ({}, {})",
            m.from, k, e.index, e.term, m.index, prev));
      }
      if (e.type == EntryType::kConfChange) {
        TX_RETURN_IF_ERROR(DecodeConfChange(e.data).status().Annotate(
            fmt::format("append from {}: entry {}", m.from, e.index)));
      }
      prev = e.term;
    }
  }
  if (m.type == MessageType::kSnapshot) {
    const SnapshotMetadata& s = m.snapshot;
    if (s.index == 0 || s.term == 0 || s.term > m.term) {
      return Status::InvalidArgument(fmt::format(
          "snapshot from {}: bad metadata (index {}, term {})", m.from, s.index, s.term));
    }
    Configuration c = s.configuration;
    TX_RETURN_IF_ERROR(c.Normalize().Annotate(fmt::format("snapshot from {}", m.from)));
    if (m.snapshot_offset > config_.max_snapshot_bytes ||
        m.snapshot_data.size() > config_.max_snapshot_bytes - m.snapshot_offset) {
      return Status::InvalidArgument(fmt::format(
          "snapshot from {}: chunk at offset {} of {} bytes exceeds the {} byte limit", m.from,
          m.snapshot_offset, m.snapshot_data.size(), config_.max_snapshot_bytes));
    }
  }
  return Status::OK();
}

Status Raft::Step(Message m) {
  TX_RETURN_IF_ERROR(ValidateMessage(m));

  if (m.term > term_) {
    bool is_vote_request = m.type == MessageType::kVote || m.type == MessageType::kPreVote;
    bool in_lease = role_ == Role::kLeader ||
                    (leader_ != kNoNode && election_elapsed_ < config_.election_timeout_ticks);
    if (is_vote_request && !m.leader_transfer && config_.check_quorum && in_lease) {
      // Leader lease (§4.2.3): we heard from a leader within the minimum election timeout, so a
      // vote request is from a node that cannot reach it; ignoring it keeps a partitioned or
      // removed node from deposing a healthy leader.
      return Status::OK();
    }
    if (m.type == MessageType::kPreVote) {
      // A pre-vote never changes our term.
    } else if (m.type == MessageType::kPreVoteResponse && !m.reject) {
      // Granted pre-votes carry the term we would campaign in; nothing to adopt.
    } else {
      bool from_leader = m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat ||
                         m.type == MessageType::kSnapshot;
      BecomeFollower(m.term, from_leader ? m.from : kNoNode);
    }
  } else if (m.term < term_) {
    if ((config_.check_quorum || config_.pre_vote) &&
        (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat)) {
      // A deposed leader cut off from the cluster would otherwise never learn the new term
      // (with pre-vote and check-quorum nobody else campaigns against it).
      Message resp;
      resp.type = MessageType::kAppendResponse;
      resp.to = m.from;
      Send(std::move(resp));
    } else if (m.type == MessageType::kPreVote) {
      Message resp;
      resp.type = MessageType::kPreVoteResponse;
      resp.to = m.from;
      resp.reject = true;
      Send(std::move(resp));
    }
    return Status::OK();
  }

  if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
    HandleVoteRequest(m);
    return Status::OK();
  }
  if (m.type == MessageType::kSnapshot && role_ != Role::kLeader) {
    if (role_ != Role::kFollower) BecomeFollower(term_, m.from);
    election_elapsed_ = 0;
    NoteLeader(m.from, m.type);
    HandleSnapshotChunk(m);
    return Status::OK();
  }
  switch (role_) {
    case Role::kLeader:
      StepLeader(m);
      break;
    case Role::kPreCandidate:
    case Role::kCandidate:
      StepCandidate(m);
      break;
    case Role::kFollower:
      StepFollower(m);
      break;
  }
  return Status::OK();
}

void Raft::NoteLeader(NodeId from, MessageType type) {
  if (leader_ == kNoNode) {
    leader_ = from;
    return;
  }
  TX_CHECK(leader_ == from,
           "election safety violated: node {} in term {} follows leader {} and got {} from "
           "node {} claiming leadership of the same term",
           id_, term_, leader_, MessageTypeName(type), from);
}

void Raft::HandleVoteRequest(const Message& m) {
  bool pre = m.type == MessageType::kPreVote;
  // §5.2/§5.4.1: one vote per term, only for a log at least as up-to-date as ours. A pre-vote
  // for a later term is granted without voting (§9.6).
  bool can_vote =
      vote_ == m.from || (vote_ == kNoNode && leader_ == kNoNode) || (pre && m.term > term_);
  bool grant = can_vote && log_.IsUpToDate(m.index, m.log_term);
  Message resp;
  resp.type = pre ? MessageType::kPreVoteResponse : MessageType::kVoteResponse;
  resp.to = m.from;
  if (grant) {
    resp.term = m.term;
    if (!pre) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    resp.term = term_;
    resp.reject = true;
  }
  Send(std::move(resp));
}

void Raft::StepLeader(Message& m) {
  if (IsLeaderTraffic(m.type)) {
    TX_CHECK(false,
             "election safety violated: node {} is leader of term {} and got {} from node {} "
             "claiming leadership of the same term",
             id_, term_, MessageTypeName(m.type), m.from);
  }
  if (m.type == MessageType::kReadIndex) {
    HandleReadIndexRequest(m.from, std::move(m.context));
    return;
  }
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;  // not (or no longer) a member
  switch (m.type) {
    case MessageType::kAppendResponse:
      HandleAppendResponse(m, it->second);
      break;
    case MessageType::kHeartbeatResponse:
      HandleHeartbeatResponse(m, it->second);
      break;
    case MessageType::kSnapshotResponse:
      HandleSnapshotResponse(m, it->second);
      break;
    default:
      break;  // stale vote responses and the like
  }
}

void Raft::StepCandidate(Message& m) {
  switch (m.type) {
    case MessageType::kAppend:
      BecomeFollower(term_, m.from);
      HandleAppend(m);
      break;
    case MessageType::kHeartbeat:
      BecomeFollower(term_, m.from);
      HandleHeartbeat(m);
      break;
    case MessageType::kPreVoteResponse:
    case MessageType::kVoteResponse: {
      bool mine = (m.type == MessageType::kPreVoteResponse) == (role_ == Role::kPreCandidate);
      if (!mine) break;
      int result = Poll(m.from, !m.reject);
      if (result > 0) {
        if (role_ == Role::kPreCandidate) {
          StartElection(false, false);
        } else {
          BecomeLeader();
        }
      } else if (result < 0) {
        BecomeFollower(term_, kNoNode);
      }
      break;
    }
    case MessageType::kReadIndex: {
      Message resp;
      resp.type = MessageType::kReadIndexResponse;
      resp.to = m.from;
      resp.reject = true;
      resp.context = std::move(m.context);
      Send(std::move(resp));
      break;
    }
    default:
      break;
  }
}

void Raft::StepFollower(Message& m) {
  switch (m.type) {
    case MessageType::kAppend:
      election_elapsed_ = 0;
      NoteLeader(m.from, m.type);
      HandleAppend(m);
      break;
    case MessageType::kHeartbeat:
      election_elapsed_ = 0;
      NoteLeader(m.from, m.type);
      HandleHeartbeat(m);
      break;
    case MessageType::kTimeoutNow:
      // §3.10: the leader chose us; campaign at once, skipping pre-vote and the lease.
      if (IsVoter(id_)) StartElection(false, true);
      break;
    case MessageType::kReadIndex: {
      Message resp;
      resp.type = MessageType::kReadIndexResponse;
      resp.to = m.from;
      resp.reject = true;
      resp.context = std::move(m.context);
      Send(std::move(resp));
      break;
    }
    case MessageType::kReadIndexResponse:
      if (!m.reject) read_states_.push_back(ReadState{m.index, std::move(m.context)});
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Follower side of replication
// ---------------------------------------------------------------------------------------------

void Raft::HandleAppend(Message& m) {
  Message resp;
  resp.type = MessageType::kAppendResponse;
  resp.to = m.from;
  if (m.index < log_.commit()) {
    // Everything up to our commit index matches the leader's log already, by Leader
    // Completeness; anything else is a broken invariant, not something to overwrite.
    std::optional<Term> prev = log_.TermAt(m.index);
    TX_CHECK(!prev.has_value() || *prev == m.log_term,
             "node {}: leader {} says committed entry {} has term {}, ours has term {}", id_,
             m.from, m.index, m.log_term, prev.value_or(0));
    for (const Entry& e : m.entries) {
      if (e.index > log_.commit()) break;
      std::optional<Term> ours = log_.TermAt(e.index);
      TX_CHECK(!ours.has_value() || *ours == e.term,
               "node {}: entry ({}, term {}) from leader {} conflicts with committed entry "
               "(term {}); commit index {}",
               id_, e.index, e.term, m.from, ours.value_or(0), log_.commit());
    }
    resp.index = log_.commit();
    Send(std::move(resp));
    return;
  }
  if (!log_.MatchTerm(m.index, m.log_term)) {
    // §5.3: reject; suggest where to retry so the leader skips a whole term per round trip.
    auto [hint_index, hint_term] =
        log_.FindConflictByTerm(std::min(m.index, log_.last_index()), m.log_term);
    resp.index = m.index;
    resp.reject = true;
    resp.reject_hint = hint_index;
    resp.log_term = hint_term;
    Send(std::move(resp));
    return;
  }
  Index last_new = m.index + m.entries.size();
  Index conflict = log_.FindConflict(m.entries);
  if (conflict != 0) {
    bool truncates = conflict <= log_.last_index();
    std::vector<Entry> tail(
        std::make_move_iterator(m.entries.begin() + static_cast<long>(conflict - m.index - 1)),
        std::make_move_iterator(m.entries.end()));
    // §5.3: delete the conflicting entry and all that follow it (TX_CHECKs it is uncommitted).
    log_.TruncateAndAppend(std::move(tail));
    if (truncates && conf_index_ >= conflict) RecomputeConfigurationAfterTruncation();
    if (auto latest = LatestConfigIn(conflict, log_.last_index())) {
      ApplyConfiguration(latest->first, latest->second);
    }
  }
  // §5.3: commit = min(leaderCommit, index of last new entry).
  log_.CommitTo(std::min(m.commit, last_new));
  resp.index = last_new;
  Send(std::move(resp));
}

void Raft::HandleHeartbeat(const Message& m) {
  // The leader sends min(commit, our match index), so this never exceeds our log.
  log_.CommitTo(m.commit);
  Message resp;
  resp.type = MessageType::kHeartbeatResponse;
  resp.to = m.from;
  resp.read_seq = m.read_seq;
  Send(std::move(resp));
}

void Raft::HandleSnapshotChunk(Message& m) {
  const SnapshotMetadata& meta = m.snapshot;
  if (meta.index <= log_.commit()) {
    // Stale or already installed: tell the leader how far we are. A partial newer snapshot
    // is kept (a delayed chunk of an old one once wiped it; sim seed 242).
    if (assembly_.has_value() && assembly_->metadata.index <= log_.commit()) assembly_.reset();
    Message resp;
    resp.type = MessageType::kAppendResponse;
    resp.to = m.from;
    resp.index = log_.commit();
    Send(std::move(resp));
    return;
  }
  bool same = assembly_.has_value() && assembly_->from == m.from && assembly_->term == m.term &&
              assembly_->metadata.index == meta.index && assembly_->metadata.term == meta.term;
  auto respond = [&](uint64_t offset, bool reject) {
    Message resp;
    resp.type = MessageType::kSnapshotResponse;
    resp.to = m.from;
    resp.snapshot.index = meta.index;
    resp.snapshot.term = meta.term;
    resp.snapshot_offset = offset;
    resp.reject = reject;
    Send(std::move(resp));
  };
  if (!same) {
    if (m.snapshot_offset != 0) {
      respond(0, true);  // we hold nothing of this snapshot: start over
      return;
    }
    assembly_ = SnapshotAssembly{m.from, m.term, meta, {}};
  }
  SnapshotAssembly& a = *assembly_;
  if (m.snapshot_offset != a.data.size()) {
    // A duplicate or a chunk that overtook a missing one: only contiguous data is kept, and
    // the answer says where we are (the leader retransmits from there).
    respond(a.data.size(), false);
    return;
  }
  a.data.append(m.snapshot_data);
  if (!m.snapshot_done) {
    respond(a.data.size(), false);
    return;
  }
  SnapshotMetadata complete = std::move(a.metadata);
  auto data = std::make_shared<const std::string>(std::move(a.data));
  assembly_.reset();
  Message resp;
  resp.type = MessageType::kAppendResponse;
  resp.to = m.from;
  if (log_.MatchTerm(complete.index, complete.term)) {
    // We already hold the entry the snapshot ends with, hence everything before it (Log
    // Matching): only the commit index moves.
    log_.CommitTo(complete.index);
    resp.index = log_.commit();
  } else {
    log_.RestoreSnapshot(complete.index, complete.term);
    snapshot_conf_ = complete.configuration;
    (void)snapshot_conf_.Normalize();  // validated with the message
    snapshot_data_ = std::move(data);
    ApplyConfiguration(snapshot_conf_, complete.index);
    snapshot_unhanded_ = true;
    snapshot_persisted_ = false;
    ++restore_epoch_;
    applied_ = complete.index;
    resp.index = log_.last_index();
  }
  Send(std::move(resp));
}

// ---------------------------------------------------------------------------------------------
// Leader side of replication
// ---------------------------------------------------------------------------------------------

void Raft::AppendLeaderEntry(EntryType type, std::string data) {
  Entry e;
  e.term = term_;
  e.index = log_.last_index() + 1;
  e.type = type;
  e.data = std::move(data);
  uncommitted_bytes_ += EntryBytes(e);
  log_.Append(std::move(e));
  need_broadcast_ = true;
  // A leader that is the only voter commits as soon as its own write is durable (Advance).
}

bool Raft::SendAppend(NodeId to, bool send_if_empty) {
  Progress& pr = progress_.at(to);
  if (pr.state == Progress::State::kSnapshot || pr.IsPaused()) return false;
  Index prev = pr.next_index - 1;
  std::optional<Term> prev_term = log_.TermAt(prev);
  if (!prev_term.has_value()) {
    // The follower needs entries we compacted: stream the snapshot instead.
    TX_CHECK(snapshot_data_ != nullptr, "node {}: log compacted to {} but no snapshot data", id_,
             log_.snapshot_index());
    pr.BecomeSnapshot(SnapshotMetadata{log_.snapshot_index(), log_.snapshot_term(), snapshot_conf_},
                      snapshot_data_);
    SendSnapshotChunks(to, pr);
    return false;
  }
  Message m;
  m.type = MessageType::kAppend;
  m.to = to;
  m.index = prev;
  m.log_term = *prev_term;
  if (pr.next_index <= log_.last_index()) {
    m.entries = log_.Slice(pr.next_index, log_.last_index() + 1, config_.max_entries_bytes_per_msg);
  }
  if (m.entries.empty() && !send_if_empty) return false;
  uint64_t bytes = 0;
  for (const Entry& e : m.entries) bytes += EntryBytes(e);
  m.commit = log_.commit();
  pr.OnAppendSent(m.entries.empty() ? 0 : m.entries.back().index, bytes);
  Send(std::move(m));
  return true;
}

void Raft::SendAppendsWhileOpen(NodeId to) {
  if (!SendAppend(to, true)) return;
  // Pipelining: keep sending batches while the follower's window has room.
  while (SendAppend(to, false)) {
  }
}

void Raft::BroadcastAppend() {
  for (auto& [peer, pr] : progress_) SendAppendsWhileOpen(peer);
}

void Raft::BroadcastHeartbeat() {
  for (auto& [peer, pr] : progress_) {
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = peer;
    // Never more than the follower is known to hold, so it can always apply it.
    m.commit = std::min(pr.match_index, log_.commit());
    m.read_seq = read_seq_;
    Send(std::move(m));
  }
}

void Raft::SendSnapshotChunks(NodeId to, Progress& pr) {
  const std::string& data = *pr.snapshot_data;
  // The same budget as appends: at least one chunk may always be outstanding; more while the
  // unacknowledged chunks stay within max_inflight_msgs and max_inflight_bytes.
  const uint64_t window_bytes = std::min(config_.max_inflight_bytes,
                                         config_.max_inflight_msgs * config_.snapshot_chunk_bytes);
  while (!pr.snapshot_final_sent &&
         pr.snapshot_sent_offset - pr.snapshot_acked_offset < window_bytes) {
    uint64_t offset = pr.snapshot_sent_offset;
    uint64_t len = std::min<uint64_t>(config_.snapshot_chunk_bytes, data.size() - offset);
    Message m;
    m.type = MessageType::kSnapshot;
    m.to = to;
    m.snapshot = pr.snapshot;
    m.snapshot_offset = offset;
    m.snapshot_data = data.substr(offset, len);
    m.snapshot_done = offset + len == data.size();
    pr.snapshot_sent_offset = offset + len;
    pr.snapshot_final_sent = m.snapshot_done;
    Send(std::move(m));
  }
}

void Raft::SendTimeoutNow(NodeId to) {
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  Send(std::move(m));
}

void Raft::HandleAppendResponse(const Message& m, Progress& pr) {
  pr.last_heard_tick = leader_ticks_;
  if (m.index > log_.last_index()) return;  // claims entries we never had: not from our term
  if (m.reject) {
    Index next_probe = m.reject_hint;
    if (m.log_term > 0) next_probe = log_.FindConflictByTerm(m.reject_hint, m.log_term).first;
    if (pr.MaybeDecrTo(m.index, next_probe)) {
      if (pr.state == Progress::State::kReplicate) pr.BecomeProbe();
      SendAppend(m.from, true);
    }
    return;
  }
  bool updated = pr.MaybeUpdate(m.index);
  // An answer to an empty probe at our match index proves the follower matches too.
  bool probe_confirmed = pr.state == Progress::State::kProbe && pr.match_index == m.index;
  // The follower holds the snapshot being streamed (it may have had it already).
  bool snapshot_done =
      pr.state == Progress::State::kSnapshot && pr.match_index >= pr.snapshot.index;
  if (!updated && !probe_confirmed && !snapshot_done) return;
  switch (pr.state) {
    case Progress::State::kProbe:
      pr.BecomeReplicate();
      break;
    case Progress::State::kSnapshot:
      if (pr.match_index + 1 >= log_.first_index()) {
        pr.BecomeReplicate();
      } else if (snapshot_done) {
        // We compacted past that snapshot meanwhile: probing finds the gap and streams the
        // newer snapshot (sim seed 1 livelocked resending the stale one).
        pr.BecomeProbe();
      }
      break;
    case Progress::State::kReplicate:
      pr.inflights.FreeLE(m.index);
      break;
  }
  NodeId from = m.from;
  if (MaybeCommit()) {
    if (role_ != Role::kLeader) return;  // committed our own removal and stepped down
    BroadcastAppend();
  } else {
    while (SendAppend(from, false)) {
    }
  }
  const Progress& after = progress_.at(from);
  if (from == transferee_ && after.match_index == log_.last_index()) SendTimeoutNow(from);
}

void Raft::HandleHeartbeatResponse(const Message& m, Progress& pr) {
  pr.last_heard_tick = leader_ticks_;
  pr.probe_sent = false;
  if (pr.state == Progress::State::kReplicate && pr.inflights.Full()) {
    pr.inflights.FreeFirstOne();  // a lost append must not stall the window for ever
  }
  if (pr.state == Progress::State::kSnapshot) {
    if (!pr.snapshot_acked_since_heartbeat) {
      // No progress for a heartbeat interval: chunks (or the final answer) were lost, or the
      // follower lost data. Resume from what it last reported holding, which may be below
      // what it acknowledged earlier.
      uint64_t resume = std::min(pr.snapshot_acked_offset, pr.snapshot_reported_offset);
      pr.snapshot_acked_offset = resume;
      pr.snapshot_sent_offset = resume;
      pr.snapshot_final_sent = false;
    }
    pr.snapshot_acked_since_heartbeat = false;
    SendSnapshotChunks(m.from, pr);
  } else if (pr.match_index < log_.last_index()) {
    SendAppendsWhileOpen(m.from);
  }
  if (m.read_seq > pr.read_seq_acked) {
    pr.read_seq_acked = m.read_seq;
    ReleaseConfirmedReads();
  }
}

void Raft::HandleSnapshotResponse(const Message& m, Progress& pr) {
  pr.last_heard_tick = leader_ticks_;
  if (pr.state != Progress::State::kSnapshot || m.snapshot.index != pr.snapshot.index ||
      m.snapshot.term != pr.snapshot.term) {
    return;
  }
  // Retransmission must not amplify: with reordering and duplication every chunk can draw an
  // answer, so only progress, one fast retransmit per window and a follower that lost its
  // partial snapshot move the send offset back (sim seeds 34 and 3199 grew the traffic
  // without bound when every gap answer rewound the window).
  uint64_t offset = std::min<uint64_t>(m.snapshot_offset, pr.snapshot_data->size());
  pr.snapshot_reported_offset = m.reject ? 0 : offset;
  if (m.reject) {
    // The follower holds nothing of this snapshot (it restarted): start over, once.
    if (pr.snapshot_acked_offset == 0 && pr.snapshot_recover_offset > 0) return;
    pr.snapshot_recover_offset = std::max<uint64_t>(pr.snapshot_sent_offset, 1);
    pr.snapshot_acked_offset = 0;
    pr.snapshot_sent_offset = 0;
    pr.snapshot_final_sent = false;
    pr.snapshot_acked_since_heartbeat = true;
  } else if (offset > pr.snapshot_acked_offset) {
    pr.snapshot_acked_offset = offset;
    pr.snapshot_sent_offset = std::max(pr.snapshot_sent_offset, offset);
    pr.snapshot_acked_since_heartbeat = true;
  } else if (offset == pr.snapshot_acked_offset &&
             pr.snapshot_sent_offset > pr.snapshot_acked_offset &&
             pr.snapshot_acked_offset >= pr.snapshot_recover_offset) {
    // A duplicate acknowledgement: the chunk at `offset` was lost or overtaken. Resend from
    // there, and not again until everything sent so far is acknowledged.
    pr.snapshot_recover_offset = pr.snapshot_sent_offset;
    pr.snapshot_sent_offset = offset;
    pr.snapshot_final_sent = false;
  } else {
    return;  // stale
  }
  SendSnapshotChunks(m.from, pr);
}

bool Raft::MaybeCommit() {
  if (conf_.voters.empty()) return false;
  std::vector<Index> matches;
  matches.reserve(conf_.voters.size());
  for (NodeId v : conf_.voters) {
    if (v == id_) {
      // The leader counts itself only for what its own disk acknowledged (§10.2.1).
      matches.push_back(snapshot_persisted_ ? log_.stable_index() : 0);
    } else {
      auto it = progress_.find(v);
      matches.push_back(it == progress_.end() ? 0 : it->second.match_index);
    }
  }
  Index candidate = QuorumValue(matches, Quorum());
  if (candidate <= log_.commit()) return false;
  // §5.4.2 / Figure 8: only an entry of the current term is committed by counting replicas.
  if (log_.TermAt(candidate) != term_) return false;
  Index old = log_.commit();
  log_.CommitTo(candidate);
  OnCommitAdvanced(old);
  return true;
}

void Raft::OnCommitAdvanced(Index old_commit) {
  for (Index i = std::max(old_commit + 1, log_.first_index()); i <= log_.commit(); ++i) {
    const Entry& e = log_.At(i);
    if (e.term == term_) uncommitted_bytes_ -= std::min(uncommitted_bytes_, EntryBytes(e));
  }
  if (!reads_awaiting_commit_.empty() && CommittedInCurrentTerm()) {
    std::deque<PendingRead> reads = std::move(reads_awaiting_commit_);
    reads_awaiting_commit_.clear();
    ++read_seq_;
    for (PendingRead& r : reads) {
      r.seq = read_seq_;
      r.index = log_.commit();
      pending_reads_.push_back(std::move(r));
    }
    BroadcastHeartbeat();
    ReleaseConfirmedReads();
  }
  if (!IsVoter(id_) && conf_index_ <= log_.commit()) {
    // §4.2.2: a leader removed from the configuration steps down once the change commits.
    // Tell the followers the new commit index, and hand over to the most up-to-date voter.
    BroadcastAppend();
    NodeId best = kNoNode;
    for (const auto& [peer, pr] : progress_) {
      if (!pr.is_learner && pr.match_index == log_.last_index()) best = peer;
    }
    if (best != kNoNode) SendTimeoutNow(best);
    BecomeFollower(term_, kNoNode);
  }
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

Status Raft::ReadIndex(std::string context) {
  if (role_ == Role::kLeader) {
    if (pending_reads_.size() + reads_awaiting_commit_.size() >= config_.max_pending_reads) {
      return Status::ResourceExhausted(
          fmt::format("{} ReadIndex requests pending", config_.max_pending_reads));
    }
    HandleReadIndexRequest(id_, std::move(context));
    return Status::OK();
  }
  if (leader_ == kNoNode) return Status::Unavailable("no leader known");
  Message m;
  m.type = MessageType::kReadIndex;
  m.to = leader_;
  m.context = std::move(context);
  Send(std::move(m));
  return Status::OK();
}

void Raft::HandleReadIndexRequest(NodeId from, std::string context) {
  if (pending_reads_.size() + reads_awaiting_commit_.size() >= config_.max_pending_reads) {
    Message resp;
    resp.type = MessageType::kReadIndexResponse;
    resp.to = from;
    resp.reject = true;
    resp.context = std::move(context);
    Send(std::move(resp));
    return;
  }
  PendingRead r;
  r.context = std::move(context);
  r.from = from;
  if (!CommittedInCurrentTerm()) {
    // §6.4: until its no-op commits, the leader does not know the latest commit index.
    reads_awaiting_commit_.push_back(std::move(r));
    return;
  }
  r.seq = ++read_seq_;
  r.index = log_.commit();
  pending_reads_.push_back(std::move(r));
  BroadcastHeartbeat();
  ReleaseConfirmedReads();
}

void Raft::ReleaseConfirmedReads() {
  if (pending_reads_.empty() || conf_.voters.empty()) return;
  std::vector<uint64_t> acked;
  acked.reserve(conf_.voters.size());
  for (NodeId v : conf_.voters) {
    if (v == id_) {
      acked.push_back(std::numeric_limits<uint64_t>::max());
    } else {
      auto it = progress_.find(v);
      acked.push_back(it == progress_.end() ? 0 : it->second.read_seq_acked);
    }
  }
  // A quorum acknowledged a heartbeat sent after these requests arrived: we were still the
  // leader then, so their read indices are at least every commit any client saw.
  uint64_t confirmed = QuorumValue(acked, Quorum());
  while (!pending_reads_.empty() && pending_reads_.front().seq <= confirmed) {
    PendingRead r = std::move(pending_reads_.front());
    pending_reads_.pop_front();
    ReleaseRead(std::move(r));
  }
}

void Raft::ReleaseRead(PendingRead read) {
  if (read.from == id_) {
    read_states_.push_back(ReadState{read.index, std::move(read.context)});
    return;
  }
  Message m;
  m.type = MessageType::kReadIndexResponse;
  m.to = read.from;
  m.index = read.index;
  m.context = std::move(read.context);
  Send(std::move(m));
}

// ---------------------------------------------------------------------------------------------
// Proposals, membership, transfer, snapshots
// ---------------------------------------------------------------------------------------------

StatusOr<EntryId> Raft::Propose(std::string data) {
  if (role_ != Role::kLeader) {
    return Status::Unavailable(
        fmt::format("node {} is not the leader (leader hint: {})", id_, leader_));
  }
  if (transferee_ != kNoNode) {
    return Status::Unavailable(
        fmt::format("leadership transfer to node {} in progress", transferee_));
  }
  if (data.size() > config_.max_proposal_bytes) {
    return Status::InvalidArgument(fmt::format("proposal of {} bytes exceeds the {} byte limit",
                                               data.size(), config_.max_proposal_bytes));
  }
  uint64_t bytes = data.size() + kEntryOverheadBytes;
  if (uncommitted_bytes_ > 0 && uncommitted_bytes_ + bytes > config_.max_uncommitted_bytes) {
    return Status::ResourceExhausted(fmt::format("{} bytes of proposals are uncommitted (limit {})",
                                                 uncommitted_bytes_,
                                                 config_.max_uncommitted_bytes));
  }
  AppendLeaderEntry(EntryType::kNormal, std::move(data));
  return EntryId{log_.last_index(), term_};
}

StatusOr<EntryId> Raft::ProposeConfChange(const ConfChange& change) {
  if (role_ != Role::kLeader) {
    return Status::Unavailable(
        fmt::format("node {} is not the leader (leader hint: {})", id_, leader_));
  }
  if (transferee_ != kNoNode) {
    return Status::Unavailable(
        fmt::format("leadership transfer to node {} in progress", transferee_));
  }
  if (!CommittedInCurrentTerm()) {
    return Status::FailedPrecondition(
        fmt::format("leader has not yet committed an entry of its term {}; retry shortly", term_));
  }
  if (conf_index_ > log_.commit()) {
    return Status::FailedPrecondition(
        fmt::format("configuration change at index {} is not yet committed (commit {})",
                    conf_index_, log_.commit()));
  }
  NodeId node = change.node_id;
  if (node == kNoNode) return Status::InvalidArgument("configuration change for node 0");
  Configuration next = conf_;
  auto erase = [](std::vector<NodeId>& v, NodeId id) {
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
  };
  switch (change.type) {
    case ConfChangeType::kAddVoter:
      if (conf_.Contains(node)) {
        return Status::InvalidArgument(
            fmt::format("node {} is already a member ({}); use PromoteLearner for learners", node,
                        conf_.ToString()));
      }
      next.voters.push_back(node);
      break;
    case ConfChangeType::kAddLearner:
      if (conf_.Contains(node)) {
        return Status::InvalidArgument(fmt::format("node {} is already a member", node));
      }
      next.learners.push_back(node);
      break;
    case ConfChangeType::kPromoteLearner: {
      if (!conf_.IsLearner(node)) {
        return Status::InvalidArgument(fmt::format("node {} is not a learner", node));
      }
      const Progress& pr = progress_.at(node);
      if (pr.match_index < log_.commit()) {
        return Status::FailedPrecondition(
            fmt::format("learner {} has caught up to {} only, behind the commit index {}", node,
                        pr.match_index, log_.commit()));
      }
      erase(next.learners, node);
      next.voters.push_back(node);
      break;
    }
    case ConfChangeType::kRemoveNode:
      if (!conf_.Contains(node)) {
        return Status::InvalidArgument(fmt::format("node {} is not a member", node));
      }
      if (conf_.IsVoter(node) && conf_.voters.size() == 1) {
        return Status::InvalidArgument(fmt::format("cannot remove the last voter {}", node));
      }
      erase(next.voters, node);
      erase(next.learners, node);
      break;
    default:
      return Status::InvalidArgument("unknown configuration change type");
  }
  TX_RETURN_IF_ERROR(next.Normalize());
  AppendLeaderEntry(EntryType::kConfChange, EncodeConfChange(ConfChangeEntry{change, next}));
  // §4.1: a server uses the latest configuration in its log, committed or not.
  ApplyConfiguration(next, log_.last_index());
  return EntryId{log_.last_index(), term_};
}

void Raft::ApplyConfiguration(const Configuration& conf, Index index) {
  conf_ = conf;
  conf_index_ = index;
  if (role_ != Role::kLeader) return;
  for (const auto* list : {&conf_.voters, &conf_.learners}) {
    for (NodeId peer : *list) {
      if (peer == id_) continue;
      auto [it, inserted] = progress_.try_emplace(
          peer, log_.last_index() + 1, config_.max_inflight_msgs, config_.max_inflight_bytes);
      it->second.is_learner = list == &conf_.learners;
      if (inserted) it->second.last_heard_tick = leader_ticks_;  // a grace period to connect
    }
  }
  for (auto it = progress_.begin(); it != progress_.end();) {
    it = conf_.Contains(it->first) ? std::next(it) : progress_.erase(it);
  }
  if (transferee_ != kNoNode && !IsVoter(transferee_)) AbortLeaderTransfer();
  need_broadcast_ = true;
  // A smaller quorum may already hold a larger commit index or confirm pending reads.
  if (MaybeCommit() && role_ != Role::kLeader) return;
  ReleaseConfirmedReads();
}

std::optional<std::pair<Configuration, Index>> Raft::LatestConfigIn(Index lo, Index hi) const {
  lo = std::max(lo, log_.first_index());
  for (Index i = hi; i >= lo && i > 0; --i) {
    const Entry& e = log_.At(i);
    if (e.type != EntryType::kConfChange) continue;
    StatusOr<ConfChangeEntry> cc = DecodeConfChange(e.data);
    TX_CHECK(cc.ok(), "node {}: undecodable configuration entry {} in the log: {}", id_, i,
             cc.status().ToString());
    return std::make_pair(std::move(cc->configuration), i);
  }
  return std::nullopt;
}

void Raft::RecomputeConfigurationAfterTruncation() {
  if (auto latest = LatestConfigIn(log_.first_index(), log_.last_index())) {
    ApplyConfiguration(latest->first, latest->second);
  } else {
    ApplyConfiguration(snapshot_conf_, log_.snapshot_index());
  }
}

Configuration Raft::ConfigurationAt(Index index) const {
  if (auto latest = LatestConfigIn(log_.first_index(), index)) return latest->first;
  return snapshot_conf_;
}

Status Raft::TransferLeadership(NodeId target) {
  if (role_ != Role::kLeader) {
    return Status::Unavailable(
        fmt::format("node {} is not the leader (leader hint: {})", id_, leader_));
  }
  if (target == id_) return Status::OK();
  if (!IsVoter(target)) {
    return Status::InvalidArgument(fmt::format("transfer target {} is not a voter", target));
  }
  if (transferee_ == target) return Status::OK();
  transferee_ = target;
  transfer_elapsed_ = 0;
  if (progress_.at(target).match_index == log_.last_index()) {
    SendTimeoutNow(target);
  } else {
    SendAppendsWhileOpen(target);
  }
  return Status::OK();
}

Status Raft::Campaign() {
  if (role_ == Role::kLeader) return Status::FailedPrecondition("already the leader");
  if (!IsVoter(id_)) {
    return Status::FailedPrecondition(fmt::format("node {} is not a voter", id_));
  }
  election_elapsed_ = 0;
  StartElection(config_.pre_vote, false);
  return Status::OK();
}

StatusOr<SnapshotMetadata> Raft::OnSnapshotCreated(Index index,
                                                   std::shared_ptr<const std::string> data) {
  if (data == nullptr) return Status::InvalidArgument("snapshot without data");
  if (index <= log_.snapshot_index() || index > applied_) {
    return Status::OutOfRange(fmt::format(
        "snapshot at {} must be above the current snapshot {} and at most the applied index {}",
        index, log_.snapshot_index(), applied_));
  }
  if (!snapshot_persisted_) {
    return Status::FailedPrecondition("a received snapshot is still being persisted");
  }
  Configuration conf = ConfigurationAt(index);
  log_.CompactTo(index);
  snapshot_conf_ = conf;
  snapshot_data_ = std::move(data);
  return SnapshotMetadata{log_.snapshot_index(), log_.snapshot_term(), std::move(conf)};
}

// ---------------------------------------------------------------------------------------------
// Ready
// ---------------------------------------------------------------------------------------------

void Raft::Send(Message m) {
  m.from = id_;
  if (m.term == 0) m.term = term_;
  // Leader traffic may go out before the batch is durable, but only once the leader's own term
  // and vote are (otherwise a crash could make it campaign in the same term again).
  bool immediate = role_ == Role::kLeader && IsLeaderTraffic(m.type) &&
                   durable_hard_state_.term == term_ && durable_hard_state_.vote == vote_;
  (immediate ? msgs_ : msgs_after_persist_).push_back(std::move(m));
}

bool Raft::HasReady() const {
  if (outstanding_.has_value()) return false;
  if (need_broadcast_ && role_ == Role::kLeader) return true;
  if (!(SoftState{leader_, role_} == handed_soft_state_)) return true;
  if (!(HardState{term_, vote_, log_.commit()} == handed_hard_state_)) return true;
  if (snapshot_unhanded_ || log_.HasUnhanded()) return true;
  if (!msgs_.empty() || !msgs_after_persist_.empty() || !read_states_.empty()) return true;
  return snapshot_persisted_ && applied_ < std::min(log_.commit(), log_.stable_index());
}

void Raft::HandOutCommitted(uint64_t max_bytes, bool at_least_one, std::vector<Entry>* out) {
  if (!snapshot_persisted_) return;
  const Index hi = std::min(log_.commit(), log_.stable_index());
  uint64_t bytes = 0;
  while (applied_ < hi) {
    const Entry& e = log_.At(applied_ + 1);
    bytes += EntryBytes(e);
    if (bytes > max_bytes && !(at_least_one && out->empty())) break;
    out->push_back(e);
    ++applied_;
  }
}

std::vector<Entry> Raft::TakeCommittedEntries(uint64_t max_bytes) {
  std::vector<Entry> entries;
  HandOutCommitted(max_bytes, /*at_least_one=*/false, &entries);
  return entries;
}

std::vector<Message> Raft::TakeMessages() {
  if (need_broadcast_ && role_ == Role::kLeader) BroadcastAppend();
  need_broadcast_ = false;
  return std::move(msgs_);
}

Ready Raft::GetReady() {
  TX_CHECK(!outstanding_.has_value(), "node {}: GetReady with Ready {} not yet advanced", id_,
           outstanding_->seq);
  if (need_broadcast_ && role_ == Role::kLeader) BroadcastAppend();
  need_broadcast_ = false;

  Ready rd;
  rd.seq = next_ready_seq_++;
  SoftState ss{leader_, role_};
  if (!(ss == handed_soft_state_)) {
    rd.soft_state = ss;
    handed_soft_state_ = ss;
  }
  if (snapshot_unhanded_) {
    rd.snapshot =
        Snapshot{SnapshotMetadata{log_.snapshot_index(), log_.snapshot_term(), snapshot_conf_},
                 snapshot_data_};
    snapshot_unhanded_ = false;
  }
  rd.entries = log_.TakeUnhanded(&rd.truncate_from);
  if (rd.snapshot.has_value()) rd.truncate_from = 0;  // the snapshot replaces the whole log
  HardState hs{term_, vote_, log_.commit()};
  if (!(hs == handed_hard_state_)) {
    TX_CHECK(hs.term >= handed_hard_state_.term && hs.commit >= handed_hard_state_.commit,
             "node {}: hard state moving backwards: term {} -> {}, commit {} -> {}", id_,
             handed_hard_state_.term, hs.term, handed_hard_state_.commit, hs.commit);
    rd.hard_state = hs;
    handed_hard_state_ = hs;
  }
  rd.messages = std::move(msgs_);
  rd.messages_after_persist = std::move(msgs_after_persist_);
  msgs_.clear();
  msgs_after_persist_.clear();
  HandOutCommitted(config_.max_committed_bytes_per_ready, /*at_least_one=*/true,
                   &rd.committed_entries);
  rd.read_states = std::move(read_states_);
  read_states_.clear();

  InflightReady o;
  o.seq = rd.seq;
  o.hard_state = rd.hard_state;
  if (rd.snapshot.has_value()) {
    o.snapshot = EntryId{rd.snapshot->metadata.index, rd.snapshot->metadata.term};
  }
  if (!rd.entries.empty()) o.last_entry = EntryId{rd.entries.back().index, rd.entries.back().term};
  o.restore_epoch = restore_epoch_;
  outstanding_ = o;
  return rd;
}

void Raft::Advance(const Ready& ready) {
  TX_CHECK(outstanding_.has_value() && outstanding_->seq == ready.seq,
           "node {}: Advance of Ready {} but the outstanding one is {}", id_, ready.seq,
           outstanding_.has_value() ? outstanding_->seq : 0);
  InflightReady o = *outstanding_;
  outstanding_.reset();
  if (o.hard_state.has_value()) durable_hard_state_ = *o.hard_state;
  // A restore since this batch was built makes its log writes moot: the restored snapshot
  // (in a later batch) replaces them.
  if (o.restore_epoch != restore_epoch_) return;
  if (o.snapshot.has_value()) snapshot_persisted_ = true;
  if (o.last_entry.has_value()) log_.StableTo(o.last_entry->index, o.last_entry->term);
  if (role_ == Role::kLeader && MaybeCommit() && role_ == Role::kLeader) need_broadcast_ = true;
}

RaftStatus Raft::GetStatus() const {
  RaftStatus s;
  s.id = id_;
  s.role = role_;
  s.leader = leader_;
  s.hard_state = HardState{term_, vote_, log_.commit()};
  s.first_index = log_.first_index();
  s.last_index = log_.last_index();
  s.stable_index = log_.stable_index();
  s.applied_index = applied_;
  s.snapshot_index = log_.snapshot_index();
  s.configuration = conf_;
  s.progress = progress_;
  return s;
}

}  // namespace tx::raft
