#include "tests/sim/coordinator_sim.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "coordinator/batcher.h"
#include "coordinator/codec.h"
#include "coordinator/driver.h"
#include "coordinator/interfaces.h"
#include "coordinator/replicated_state.h"
#include "participant/termination_rules.h"
#include "raft/core/raft.h"

namespace tx::coordinator::sim {
namespace {

using raft::Entry;
using raft::EntryType;
using raft::HardState;
using raft::Index;
using raft::Message;
using raft::NodeId;
using raft::Ready;
using raft::Role;
using raft::SnapshotMetadata;
using raft::Term;
using Outcome = coordlog::Outcome;

constexpr int kTickMs = 10;
constexpr int kPartBase = 100;    // participant i is endpoint kPartBase + i
constexpr int kClientBase = 200;  // client i is endpoint kClientBase + i
constexpr size_t kMaxReadiesPerStep = 32;

// RPC timeouts (simulated ms). A Commit may wait for votes up to the transaction timeout.
constexpr uint64_t kParticipantCallMs = 300;
constexpr uint64_t kClientCallMs = 300;
constexpr uint64_t kCommitCallMs = 2500;
constexpr uint64_t kProposalTimeoutMs = 3000;
constexpr int64_t kTxnTimeoutMs = 2000;
constexpr uint64_t kResolveAfterMs = 300;
// 3PC: a participant that has not reached any coordinator for this long starts the termination
// protocol (txpart --termination-timeout-ms).
constexpr uint64_t kTerminationTimeoutMs = 400;
constexpr uint64_t kRoundRetryMs = 150;

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x2545f4914f6cdd1dULL + 7) {}
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

// ---------------------------------------------------------------------------------------------
// Participant model (docs/participant.md, section 5)
// ---------------------------------------------------------------------------------------------

enum class PSt { kActive, kPrepared, kPreCommitted, kCommitted, kAborted, kReadOnlyDone };

const char* PStName(PSt s) {
  switch (s) {
    case PSt::kActive:
      return "ACTIVE";
    case PSt::kPrepared:
      return "PREPARED";
    case PSt::kPreCommitted:
      return "PRECOMMITTED";
    case PSt::kCommitted:
      return "COMMITTED";
    case PSt::kAborted:
      return "ABORTED";
    case PSt::kReadOnlyDone:
      return "READ_ONLY";
  }
  return "?";
}

struct PTxn {
  PSt st = PSt::kActive;
  bool wrote = false;
  bool durable = false;  // survives a crash
  uint64_t prepared_at = 0;
  // 3PC, recorded durably at prepare: the protocol and every participant (by index).
  bool three_phase = false;
  std::vector<int> peers;
  bool in_termination = false;  // joined a termination round (durable)
  bool presumed = false;        // aborted only by presumption (never voted): no say in a round
};

bool InDoubt(PSt s) { return s == PSt::kPrepared || s == PSt::kPreCommitted; }

participant::TxnState ToTxnState(PSt s) {
  switch (s) {
    case PSt::kActive:
      return participant::TxnState::kActive;
    case PSt::kPrepared:
      return participant::TxnState::kPrepared;
    case PSt::kPreCommitted:
      return participant::TxnState::kPreCommitted;
    case PSt::kCommitted:
      return participant::TxnState::kCommitted;
    case PSt::kAborted:
      return participant::TxnState::kAborted;
    case PSt::kReadOnlyDone:
      return participant::TxnState::kUnknown;  // finished read-only: no say
  }
  return participant::TxnState::kUnknown;
}

template <typename T>
struct PReply {
  std::optional<api::TxError> error;
  T resp;
};

api::TxError MakeError(api::ErrorCode::type code, std::string message) {
  api::TxError e;
  e.code = code;
  e.message = std::move(message);
  return e;
}

struct Participant {
  int index = 0;
  bool up = true;
  uint64_t incarnation = 1;
  uint64_t restart_at = 0;
  bool registered = false;
  bool registering = false;
  std::map<TxId, PTxn> txns;
  // Resolve loop.
  struct Asking {
    uint64_t next_at = 0;
    bool in_flight = false;
    int attempts = 0;
    // 3PC: since when no coordinator answered (0: one did, or not asked yet).
    uint64_t unreachable_since = 0;
    bool round_in_flight = false;
    uint64_t next_round_at = 0;
    // A peer's round probed this participant: it is the backup if it is the lowest-named in
    // doubt, so it runs rounds too (in memory, like txpart's terminator).
    bool termination_requested = false;
  };
  std::map<TxId, Asking> asking;
  int coordinator_guess = 1;

  std::string address() const { return fmt::format("p{}:7000", index); }
  std::string name() const { return fmt::format("p{}", index); }
};

// ---------------------------------------------------------------------------------------------
// Coordinator replica
// ---------------------------------------------------------------------------------------------

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
  raft::Snapshot snapshot;
  Index index = 0;
  Entry entry;
  HardState hard_state;
};

struct PendingWrite {
  Ready ready;
  std::vector<DiskOp> ops;
  uint64_t done_at = 0;
};

class Simulation;

class SimEntryLog final : public EntryLog {
 public:
  SimEntryLog(Simulation* sim, int replica) : sim_(sim), replica_(replica) {}
  void ProposeEntry(std::string entry, std::function<void(Status, std::string)> done) override;

 private:
  Simulation* const sim_;
  const int replica_;
};

class SimChannel final : public ParticipantChannel {
 public:
  SimChannel(Simulation* sim, int replica) : sim_(sim), replica_(replica) {}
  void Prepare(const std::string& address, api::PrepareRequest request,
               ReplyCallback<api::PrepareResponse> done) override;
  void Commit(const std::string& address, api::CommitRequest request,
              ReplyCallback<api::CommitResponse> done) override;
  void Abort(const std::string& address, api::AbortRequest request,
             ReplyCallback<api::AbortResponse> done) override;
  void CommitOnePhase(const std::string& address, api::CommitOnePhaseRequest request,
                      ReplyCallback<api::CommitOnePhaseResponse> done) override;
  void PreCommit(const std::string& address, api::PreCommitRequest request,
                 ReplyCallback<api::PreCommitResponse> done) override;

 private:
  Simulation* const sim_;
  const int replica_;
};

struct Proposal {
  Term term = 0;
  uint64_t deadline = 0;
  std::function<void(Status, std::string)> done;
};

struct Replica {
  int id = 0;
  bool up = false;
  uint64_t incarnation = 0;
  uint64_t restart_at = 0;
  uint64_t tick_phase = 0;
  raft::Config config;
  std::unique_ptr<raft::Raft> raft;
  Disk disk;
  std::optional<PendingWrite> write;
  std::unique_ptr<ReplicatedState> state;
  Index applied = 0;
  Term applied_term = 0;
  Index snapshot_every = 50;
  std::unique_ptr<SimEntryLog> log;
  std::unique_ptr<CommandBatcher> batcher;
  std::unique_ptr<SimChannel> channel;
  std::unique_ptr<Driver> driver;
  bool serving = false;
  Term served_term = 0;
  std::map<Index, Proposal> proposals;
};

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

enum class CPhase { kIdle, kBegin, kExec, kCommit, kAbort };

struct Client {
  int index = 0;
  CPhase phase = CPhase::kIdle;
  bool waiting = false;  // an RPC is outstanding
  uint64_t next_at = 0;
  int coordinator_guess = 1;
  // The transaction in progress.
  TxId txid = 0;
  std::vector<int> parts;
  std::vector<bool> writes;
  size_t exec_next = 0;
  std::vector<std::string> attempted;  // participant names executed at (or maybe)
  api::Protocol::type protocol = api::Protocol::TWO_PHASE;
  int commit_attempts = 0;
  bool commit_sent = false;
};

struct Told {
  Outcome::type outcome;
  std::vector<int> parts;
  std::set<int> acked_writes;  // participants whose write Execute succeeded
};

// ---------------------------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------------------------

struct Event {
  uint64_t at;
  uint64_t order;
  std::function<void()> fn;
};
struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    return a.at != b.at ? a.at > b.at : a.order > b.order;
  }
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& options) : options_(options), rng_(options.seed) {}

  SimResult Run();

  // Crashes `replica` within a few ms, with the profile's probability: the points the
  // failpoints aim at in the real-process tests (after a Prepare, after a decision).
  void MaybeCrashSoon(int replica, const char* where) {
    if (!chaos_ || !rng_.Chance(crash_point_p_)) return;
    const uint64_t inc = replicas_.at(replica).incarnation;
    Trace("replica {} will crash {}", replica, where);
    At(now_ + rng_.Uniform(4), [this, replica, inc] {
      Replica& r = replicas_.at(replica);
      if (r.up && r.incarnation == inc) CrashReplica(r);
    });
  }

  // --- used by the fakes ---
  void ProposeEntry(int replica, std::string entry, std::function<void(Status, std::string)> done);
  template <typename Resp>
  void CallParticipant(int replica, const std::string& address,
                       std::function<PReply<Resp>(Participant&)> serve, ReplyCallback<Resp> done);
  PReply<api::PrepareResponse> Prepare(Participant& p, const api::PrepareRequest& r);
  // by_termination: sent by a termination round's backup coordinator, not by a coordinator.
  PReply<api::CommitResponse> PCommit(Participant& p, TxId txid, bool by_termination = false);
  PReply<api::AbortResponse> PAbort(Participant& p, TxId txid, bool by_termination = false);
  PReply<api::TerminationStateResponse> PTermState(Participant& p, TxId txid, bool join);
  PReply<api::CommitOnePhaseResponse> PCommitOnePhase(Participant& p, TxId txid);
  PReply<api::PreCommitResponse> PPreCommit(Participant& p, TxId txid, bool from_termination);

 private:
  // --- set-up ---
  void ChooseProfile();
  void StartReplica(Replica& r);
  void CrashReplica(Replica& r);
  void CrashParticipant(Participant& p);

  // --- the network and timers ---
  bool Up(int endpoint) const;
  uint64_t Incarnation(int endpoint) const;
  bool Blocked(int from, int to) const;
  void At(uint64_t at, std::function<void()> fn);
  void Send(int from, int to, std::function<void()> deliver);
  template <typename Resp>
  void Rpc(int from, int to, std::function<void(std::function<void(Resp)>)> serve,
           uint64_t timeout_ms, std::function<void(std::optional<Resp>)> done);

  // --- per step ---
  void Step();
  void InjectFaults();
  void ProcessReplica(Replica& r);
  void HandleReady(Replica& r, Ready rd);
  void CompleteWrite(Replica& r);
  void ApplyEntry(Replica& r, const Entry& e,
                  std::vector<std::pair<std::function<void(Status, std::string)>,
                                        std::pair<Status, std::string>>>* done);
  void MaybeSnapshot(Replica& r);
  void CheckLeadership(Replica& r);
  void ParticipantStep(Participant& p);
  void ClientStep(Client& c);

  // --- participants ---
  PReply<api::ExecuteResponse> Execute(Participant& p, TxId txid, bool write);
  void Register(Participant& p);
  void AskResolve(Participant& p, TxId txid);
  // 3PC termination protocol, with p as the candidate backup coordinator.
  void StartTerminationRound(Participant& p, TxId txid);
  // Records an outcome a participant applied to a prepared transaction; checks it against the
  // other participants' and the log's.
  void RecordParticipantOutcome(const Participant& p, TxId txid, Outcome::type outcome,
                                const char* how);

  // --- clients ---
  void ClientBegin(Client& c);
  void ClientExec(Client& c);
  void ClientCommit(Client& c);
  void ClientAbort(Client& c);
  void ClientGetOutcome(Client& c);
  void ClientTold(Client& c, Outcome::type outcome, const char* how);
  int CoordinatorFromHint(const api::TxError& e, int fallback);

  // --- checks ---
  void Fail(std::string property, std::string detail);
  void CheckDecisionApplied(Replica& r, TxId txid, Outcome::type outcome);
  bool Settled();
  void FinalChecks();
  // The phase without coordinators (SimOptions::coordinators_down_ms).
  void CoordinatorsGone();
  template <typename... Args>
  void Trace(fmt::format_string<Args...> f, Args&&... args) {
    if (options_.trace == nullptr) return;
    fmt::print(options_.trace, "[{:>6}] ", now_);
    fmt::print(options_.trace, f, std::forward<Args>(args)...);
    fmt::print(options_.trace, "\n");
  }

  const SimOptions options_;
  Rng rng_;
  FakeClock clock_;
  uint64_t now_ = 0;
  bool chaos_ = true;
  SimResult result_;

  // Fault profile.
  double drop_p_ = 0, dup_p_ = 0, long_delay_p_ = 0;
  int max_delay_ = 1, max_disk_latency_ = 1;
  double crash_p_ = 0, leader_crash_p_ = 0, partition_p_ = 0, heal_p_ = 0, part_crash_p_ = 0,
         part_isolate_p_ = 0, exec_abort_p_ = 0, prepare_no_p_ = 0, client_abort_p_ = 0,
         get_outcome_p_ = 0, crash_point_p_ = 0, three_phase_p_ = 0;

  std::map<int, Replica> replicas_;
  std::vector<Participant> participants_;
  std::vector<Client> clients_;
  std::priority_queue<Event, std::vector<Event>, EventLater> events_;
  uint64_t order_ = 0;
  std::set<std::pair<int, int>> blocked_;

  // Checker state.
  std::map<TxId, Outcome::type> decisions_;  // first decision applied anywhere
  std::set<TxId> precommits_logged_;         // PRECOMMIT applied anywhere
  // The first outcome any participant applied to a prepared transaction (by a coordinator's
  // message or a termination round): every other participant and the log must agree with it.
  std::map<TxId, Outcome::type> participant_outcomes_;
  std::set<TxId> three_phase_txids_;
  std::map<TxId, Told> told_;
  std::map<Term, int> leaders_;
};

// ---------------------------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------------------------

void SimEntryLog::ProposeEntry(std::string entry, std::function<void(Status, std::string)> done) {
  sim_->ProposeEntry(replica_, std::move(entry), std::move(done));
}

void SimChannel::Prepare(const std::string& address, api::PrepareRequest request,
                         ReplyCallback<api::PrepareResponse> done) {
  Simulation* sim = sim_;
  sim->CallParticipant<api::PrepareResponse>(
      replica_, address, [sim, request](Participant& p) { return sim->Prepare(p, request); },
      std::move(done));
  sim->MaybeCrashSoon(replica_, "after sending a Prepare");
}

void SimChannel::Commit(const std::string& address, api::CommitRequest request,
                        ReplyCallback<api::CommitResponse> done) {
  Simulation* sim = sim_;
  sim->CallParticipant<api::CommitResponse>(
      replica_, address, [sim, request](Participant& p) { return sim->PCommit(p, request.txid); },
      std::move(done));
}

void SimChannel::Abort(const std::string& address, api::AbortRequest request,
                       ReplyCallback<api::AbortResponse> done) {
  Simulation* sim = sim_;
  sim->CallParticipant<api::AbortResponse>(
      replica_, address, [sim, request](Participant& p) { return sim->PAbort(p, request.txid); },
      std::move(done));
}

void SimChannel::CommitOnePhase(const std::string& address, api::CommitOnePhaseRequest request,
                                ReplyCallback<api::CommitOnePhaseResponse> done) {
  Simulation* sim = sim_;
  sim->CallParticipant<api::CommitOnePhaseResponse>(
      replica_, address,
      [sim, request](Participant& p) { return sim->PCommitOnePhase(p, request.txid); },
      std::move(done));
}

void SimChannel::PreCommit(const std::string& address, api::PreCommitRequest request,
                           ReplyCallback<api::PreCommitResponse> done) {
  Simulation* sim = sim_;
  sim->CallParticipant<api::PreCommitResponse>(
      replica_, address,
      [sim, request](Participant& p) { return sim->PPreCommit(p, request.txid, false); },
      std::move(done));
  sim->MaybeCrashSoon(replica_, "after sending a PreCommit");
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

bool Simulation::Up(int ep) const {
  if (ep >= kClientBase) return true;
  if (ep >= kPartBase) return participants_[ep - kPartBase].up;
  return replicas_.at(ep).up;
}

uint64_t Simulation::Incarnation(int ep) const {
  if (ep >= kClientBase) return 1;
  if (ep >= kPartBase) return participants_[ep - kPartBase].incarnation;
  return replicas_.at(ep).incarnation;
}

bool Simulation::Blocked(int from, int to) const { return blocked_.count({from, to}) != 0; }

void Simulation::At(uint64_t at, std::function<void()> fn) {
  events_.push(Event{at, order_++, std::move(fn)});
}

void Simulation::Send(int from, int to, std::function<void()> deliver) {
  ++result_.stats.messages;
  if (chaos_ && (rng_.Chance(drop_p_) || Blocked(from, to))) return;
  uint64_t delay = static_cast<uint64_t>(rng_.Range(1, max_delay_));
  if (chaos_ && rng_.Chance(long_delay_p_)) delay += rng_.Uniform(400);
  auto run = [this, from, to, deliver] {
    if (!Up(to) || (chaos_ && Blocked(from, to))) return;
    deliver();
  };
  At(now_ + delay, run);
  if (chaos_ && rng_.Chance(dup_p_)) {
    At(now_ + delay + static_cast<uint64_t>(rng_.Range(1, max_delay_ * 3)), run);
  }
}

template <typename Resp>
void Simulation::Rpc(int from, int to, std::function<void(std::function<void(Resp)>)> serve,
                     uint64_t timeout_ms, std::function<void(std::optional<Resp>)> done) {
  struct CallState {
    bool completed = false;
    std::function<void(std::optional<Resp>)> done;
  };
  auto state = std::make_shared<CallState>();
  state->done = std::move(done);
  const uint64_t from_inc = Incarnation(from);
  auto complete = [this, state, from, from_inc](std::optional<Resp> r) {
    if (state->completed) return;
    state->completed = true;
    // A reply to a process that crashed since it asked goes nowhere.
    if (!Up(from) || Incarnation(from) != from_inc) return;
    state->done(std::move(r));
  };
  Send(from, to, [this, from, to, serve, complete] {
    const uint64_t to_inc = Incarnation(to);
    serve([this, from, to, to_inc, complete](Resp resp) {
      if (!Up(to) || Incarnation(to) != to_inc) return;  // crashed before answering
      Send(to, from, [complete, resp] { complete(resp); });
    });
  });
  At(now_ + timeout_ms, [complete] { complete(std::nullopt); });
}

template <typename Resp>
void Simulation::CallParticipant(int replica, const std::string& address,
                                 std::function<PReply<Resp>(Participant&)> serve,
                                 ReplyCallback<Resp> done) {
  int index = -1;
  for (const Participant& p : participants_) {
    if (p.address() == address) index = p.index;
  }
  if (index < 0) {
    ParticipantReply<Resp> r;
    r.transport = Status::Unavailable("no such participant " + address);
    done(r);
    return;
  }
  Rpc<PReply<Resp>>(
      replica, kPartBase + index,
      [this, index, serve](std::function<void(PReply<Resp>)> reply) {
        reply(serve(participants_[index]));
      },
      kParticipantCallMs,
      [done](std::optional<PReply<Resp>> r) {
        ParticipantReply<Resp> out;
        if (!r.has_value()) {
          out.transport = Status::TimedOut("no reply");
        } else {
          out.error = r->error;
          out.response = r->resp;
        }
        done(std::move(out));
      });
}

// ---------------------------------------------------------------------------------------------
// Participants
// ---------------------------------------------------------------------------------------------

PReply<api::ExecuteResponse> Simulation::Execute(Participant& p, TxId txid, bool write) {
  PReply<api::ExecuteResponse> out;
  auto it = p.txns.find(txid);
  if (it == p.txns.end()) {
    if (rng_.Chance(exec_abort_p_)) {
      // Lost first-committer-wins (or a lock timeout): aborted here before any vote.
      p.txns[txid].st = PSt::kAborted;
      out.error = MakeError(api::ErrorCode::CONFLICT, "conflict");
      out.error->transaction_aborted = true;
      return out;
    }
    PTxn& t = p.txns[txid];
    t.wrote = write;
    return out;
  }
  PTxn& t = it->second;
  switch (t.st) {
    case PSt::kActive:
      t.wrote = t.wrote || write;
      return out;
    case PSt::kAborted:
      out.error = MakeError(api::ErrorCode::ABORTED, "aborted");
      return out;
    default:
      out.error = MakeError(api::ErrorCode::WRONG_STATE, PStName(t.st));
      return out;
  }
}

PReply<api::PrepareResponse> Simulation::Prepare(Participant& p, const api::PrepareRequest& r) {
  PReply<api::PrepareResponse> out;
  auto it = p.txns.find(r.txid);
  if (it == p.txns.end()) {
    out.resp.vote = api::Vote::NO;  // presumed abort
    out.resp.__set_reason_code(api::ErrorCode::UNKNOWN_TRANSACTION);
    return out;
  }
  PTxn& t = it->second;
  switch (t.st) {
    case PSt::kActive:
      if (!t.wrote) {
        t.st = PSt::kReadOnlyDone;
        out.resp.vote = api::Vote::READ_ONLY;
      } else if (rng_.Chance(prepare_no_p_)) {
        t.st = PSt::kAborted;
        out.resp.vote = api::Vote::NO;
        out.resp.__set_reason_code(api::ErrorCode::CONSTRAINT_VIOLATION);
      } else {
        t.st = PSt::kPrepared;
        t.durable = true;
        t.prepared_at = now_;
        if (r.__isset.info) {
          t.three_phase = r.info.protocol == api::Protocol::THREE_PHASE;
          t.peers.clear();
          for (const api::ParticipantRef& ref : r.info.participants) {
            int index = -1;
            if (std::sscanf(ref.name.c_str(), "p%d", &index) == 1) t.peers.push_back(index);
          }
        }
        if (t.three_phase) three_phase_txids_.insert(r.txid);
        out.resp.vote = api::Vote::YES;
        Trace("{} prepared txid {}{}", p.name(), r.txid, t.three_phase ? " (3PC)" : "");
      }
      return out;
    case PSt::kPrepared:
    case PSt::kPreCommitted:
    case PSt::kCommitted:
      out.resp.vote = api::Vote::YES;
      return out;
    case PSt::kReadOnlyDone:
      out.resp.vote = api::Vote::READ_ONLY;
      return out;
    case PSt::kAborted:
      out.resp.vote = api::Vote::NO;
      out.resp.__set_reason_code(api::ErrorCode::ABORTED);
      return out;
  }
  return out;
}

void Simulation::RecordParticipantOutcome(const Participant& p, TxId txid, Outcome::type outcome,
                                          const char* how) {
  const char* name = outcome == Outcome::COMMITTED ? "COMMIT" : "ABORT";
  auto [it, inserted] = participant_outcomes_.emplace(txid, outcome);
  if (!inserted && it->second != outcome) {
    Fail("Atomicity", fmt::format("{} applies {} to prepared txid {} ({}), another participant "
                                  "applied the opposite",
                                  p.name(), name, txid, how));
    return;
  }
  auto d = decisions_.find(txid);
  if (d != decisions_.end() && d->second != outcome) {
    Fail("Atomicity", fmt::format("{} applies {} to prepared txid {} ({}), the log decided the "
                                  "opposite",
                                  p.name(), name, txid, how));
  }
}

PReply<api::CommitResponse> Simulation::PCommit(Participant& p, TxId txid, bool by_termination) {
  PReply<api::CommitResponse> out;
  auto it = p.txns.find(txid);
  if (it == p.txns.end()) {
    out.error = MakeError(api::ErrorCode::UNKNOWN_TRANSACTION, "unknown");
    return out;
  }
  PTxn& t = it->second;
  switch (t.st) {
    case PSt::kPrepared:
    case PSt::kPreCommitted: {
      if (by_termination && !t.three_phase) {
        Fail("Atomicity",
             fmt::format("a termination round commits 2PC txid {} at {}", txid, p.name()));
        return out;
      }
      auto d = decisions_.find(txid);
      if (!by_termination && (d == decisions_.end() || d->second != Outcome::COMMITTED)) {
        Fail("Atomicity", fmt::format("{} commits prepared txid {} but the log's decision is {}",
                                      p.name(), txid, d == decisions_.end() ? "none" : "ABORT"));
        return out;
      }
      auto told = told_.find(txid);
      if (told != told_.end() && told->second.outcome == Outcome::ABORTED) {
        Fail("Answers",
             fmt::format("{} commits txid {}, whose client was told ABORTED", p.name(), txid));
        return out;
      }
      RecordParticipantOutcome(p, txid, Outcome::COMMITTED,
                               by_termination ? "termination round" : "coordinator");
      t.st = PSt::kCommitted;
      t.durable = true;
      Trace("{} commits txid {}{}", p.name(), txid, by_termination ? " (termination)" : "");
      return out;
    }
    case PSt::kCommitted:
    case PSt::kReadOnlyDone:
      return out;
    case PSt::kActive:
    case PSt::kAborted:
      out.error = MakeError(api::ErrorCode::WRONG_STATE, PStName(t.st));
      return out;
  }
  return out;
}

PReply<api::AbortResponse> Simulation::PAbort(Participant& p, TxId txid, bool by_termination) {
  PReply<api::AbortResponse> out;
  PTxn& t = p.txns[txid];  // an unknown txid is remembered as aborted (in memory)
  switch (t.st) {
    case PSt::kPrepared: {
      if (by_termination && !t.three_phase) {
        Fail("Atomicity",
             fmt::format("a termination round aborts 2PC txid {} at {}", txid, p.name()));
        return out;
      }
      auto d = decisions_.find(txid);
      if (!by_termination && (d == decisions_.end() || d->second != Outcome::ABORTED)) {
        Fail("Atomicity", fmt::format("{} aborts prepared txid {} but the log's decision is {}",
                                      p.name(), txid, d == decisions_.end() ? "none" : "COMMIT"));
        return out;
      }
      RecordParticipantOutcome(p, txid, Outcome::ABORTED,
                               by_termination ? "termination round" : "coordinator");
      t.st = PSt::kAborted;
      t.durable = true;
      Trace("{} aborts prepared txid {}{}", p.name(), txid, by_termination ? " (termination)" : "");
      return out;
    }
    case PSt::kPreCommitted:
      // Nobody may abort a PRECOMMITTED participant: the coordinator only adopts the ABORT of
      // a round that saw none, and such a round saw no PRECOMMITTED one.
      Fail("Atomicity", fmt::format("{}: Abort of PRECOMMITTED txid {} ({})", p.name(), txid,
                                    by_termination ? "termination round" : "coordinator"));
      out.error = MakeError(api::ErrorCode::WRONG_STATE, "precommitted");
      return out;
    case PSt::kActive:
      t.st = PSt::kAborted;
      return out;
    case PSt::kCommitted:
      out.error = MakeError(api::ErrorCode::WRONG_STATE, "committed");
      return out;
    case PSt::kAborted:
    case PSt::kReadOnlyDone:
      return out;
  }
  return out;
}

PReply<api::PreCommitResponse> Simulation::PPreCommit(Participant& p, TxId txid,
                                                      bool from_termination) {
  PReply<api::PreCommitResponse> out;
  auto it = p.txns.find(txid);
  if (it == p.txns.end()) {
    out.error = MakeError(api::ErrorCode::UNKNOWN_TRANSACTION, "unknown");
    return out;
  }
  PTxn& t = it->second;
  out.resp.in_termination = t.in_termination;
  switch (t.st) {
    case PSt::kPrepared:
      if (!t.three_phase) {
        out.error = MakeError(api::ErrorCode::WRONG_STATE, "prepared as TWO_PHASE");
        return out;
      }
      if (t.in_termination && !from_termination) {
        out.resp.state = api::TxState::PREPARED;  // refused: the round decides
        return out;
      }
      if (!from_termination && precommits_logged_.count(txid) == 0) {
        Fail("PreCommit", fmt::format("{} told to pre-commit txid {} before PRECOMMIT was logged",
                                      p.name(), txid));
        return out;
      }
      t.st = PSt::kPreCommitted;
      t.durable = true;
      Trace("{} pre-commits txid {}{}", p.name(), txid, from_termination ? " (termination)" : "");
      out.resp.state = api::TxState::PRECOMMITTED;
      return out;
    case PSt::kPreCommitted:
      out.resp.state = api::TxState::PRECOMMITTED;
      return out;
    case PSt::kCommitted:
      out.resp.state = api::TxState::COMMITTED;
      return out;
    case PSt::kAborted:
      out.resp.state = api::TxState::ABORTED;
      return out;
    case PSt::kActive:
      out.error = MakeError(api::ErrorCode::WRONG_STATE, "not prepared");
      return out;
    case PSt::kReadOnlyDone:
      out.error = MakeError(api::ErrorCode::UNKNOWN_TRANSACTION, "read-only");
      return out;
  }
  return out;
}

PReply<api::TerminationStateResponse> Simulation::PTermState(Participant& p, TxId txid, bool join) {
  PReply<api::TerminationStateResponse> out;
  auto it = p.txns.find(txid);
  if (it == p.txns.end()) {
    if (join) {
      // Presumed abort, in memory (as txpart): it may be a read-only participant that
      // restarted, of a transaction that commits; it has no say now or later.
      PTxn& aborted = p.txns[txid];
      aborted.st = PSt::kAborted;
      aborted.presumed = true;
    }
    out.resp.state = api::TxState::UNKNOWN;
    return out;
  }
  PTxn& t = it->second;
  if (!join && InDoubt(t.st) && t.three_phase) p.asking[txid].termination_requested = true;
  if (join && t.st == PSt::kActive) {
    t.st = PSt::kAborted;  // allowed before the vote; durably, as txpart does
    t.durable = true;
  }
  if (join && InDoubt(t.st) && t.three_phase && !t.in_termination) {
    t.in_termination = true;  // durable with the prepared record
    Trace("{} joins a termination round for txid {} as {}", p.name(), txid, PStName(t.st));
  }
  out.resp.state =
      t.presumed ? api::TxState::UNKNOWN : static_cast<api::TxState::type>(ToTxnState(t.st));
  out.resp.in_termination = t.in_termination;
  return out;
}

PReply<api::CommitOnePhaseResponse> Simulation::PCommitOnePhase(Participant& p, TxId txid) {
  PReply<api::CommitOnePhaseResponse> out;
  auto it = p.txns.find(txid);
  if (it == p.txns.end()) {
    out.resp.outcome = api::Outcome::ABORTED;
    out.resp.__set_reason_code(api::ErrorCode::UNKNOWN_TRANSACTION);
    return out;
  }
  PTxn& t = it->second;
  switch (t.st) {
    case PSt::kActive:
      if (t.wrote && rng_.Chance(prepare_no_p_)) {
        t.st = PSt::kAborted;
        out.resp.outcome = api::Outcome::ABORTED;
        return out;
      }
      if (told_.count(txid) != 0 && told_[txid].outcome == Outcome::ABORTED) {
        Fail("Answers", fmt::format("{} commits txid {} in one phase, whose client was told "
                                    "ABORTED",
                                    p.name(), txid));
      }
      t.st = PSt::kCommitted;
      t.durable = true;
      out.resp.outcome = api::Outcome::COMMITTED;
      Trace("{} commits txid {} in one phase", p.name(), txid);
      return out;
    case PSt::kPrepared:
    case PSt::kPreCommitted:
      Fail("Atomicity",
           fmt::format("{}: CommitOnePhase of txid {}, which a Prepare prepared", p.name(), txid));
      return out;
    case PSt::kCommitted:
    case PSt::kReadOnlyDone:
      out.resp.outcome = api::Outcome::COMMITTED;
      return out;
    case PSt::kAborted:
      out.resp.outcome = api::Outcome::ABORTED;
      return out;
  }
  return out;
}

void Simulation::CrashParticipant(Participant& p) {
  if (!p.up) return;
  for (auto it = p.txns.begin(); it != p.txns.end();) {
    it = it->second.durable ? std::next(it) : p.txns.erase(it);
  }
  p.asking.clear();
  p.up = false;
  p.registering = false;
  ++p.incarnation;
  p.restart_at = now_ + static_cast<uint64_t>(rng_.Range(20, 500));
  ++result_.stats.participant_crashes;
  Trace("{} crashes", p.name());
}

void Simulation::Register(Participant& p) {
  if (p.registering) return;
  p.registering = true;
  const int target = p.coordinator_guess;
  const int index = p.index;
  api::RegisterParticipantRequest req;
  req.participant.name = p.name();
  req.participant.address = p.address();
  Rpc<Reply<api::RegisterParticipantResponse>>(
      kPartBase + index, target,
      [this, target, req](std::function<void(Reply<api::RegisterParticipantResponse>)> reply) {
        Replica& r = replicas_.at(target);
        r.driver->RegisterParticipant(req, reply);
      },
      kClientCallMs,
      [this, index](std::optional<Reply<api::RegisterParticipantResponse>> r) {
        Participant& part = participants_[index];
        part.registering = false;
        if (r.has_value() && r->ok()) {
          part.registered = true;
          return;
        }
        part.coordinator_guess = r.has_value() && r->error.has_value()
                                     ? CoordinatorFromHint(*r->error, part.coordinator_guess)
                                     : 1 + part.coordinator_guess % options_.replicas;
      });
}

void Simulation::AskResolve(Participant& p, TxId txid) {
  Participant::Asking& a = p.asking[txid];
  a.in_flight = true;
  ++a.attempts;
  ++result_.stats.resolves;
  const int target = p.coordinator_guess;
  const int index = p.index;
  api::ResolveRequest req;
  req.txid = txid;
  req.participant = p.name();
  Rpc<Reply<api::ResolveResponse>>(
      kPartBase + index, target,
      [this, target, req](std::function<void(Reply<api::ResolveResponse>)> reply) {
        replicas_.at(target).driver->Resolve(req, reply);
      },
      kClientCallMs,
      [this, index, txid](std::optional<Reply<api::ResolveResponse>> r) {
        Participant& part = participants_[index];
        Participant::Asking& ask = part.asking[txid];
        ask.in_flight = false;
        ask.next_at = now_ + std::min<uint64_t>(500, 20u << std::min(ask.attempts, 5));
        const bool unreachable = !r.has_value() || r->error.has_value();
        if (unreachable) {
          if (ask.unreachable_since == 0) ask.unreachable_since = now_;
        } else {
          ask.unreachable_since = 0;
        }
        if (!r.has_value()) {
          part.coordinator_guess = 1 + part.coordinator_guess % options_.replicas;
          return;
        }
        if (r->error.has_value()) {
          part.coordinator_guess = CoordinatorFromHint(*r->error, part.coordinator_guess);
          return;
        }
        auto it = part.txns.find(txid);
        if (it == part.txns.end() || !InDoubt(it->second.st)) {
          part.asking.erase(txid);
          return;
        }
        if (r->value.decision == api::Decision::COMMITTED) {
          (void)PCommit(part, txid);
          part.asking.erase(txid);
        } else if (r->value.decision == api::Decision::ABORTED) {
          (void)PAbort(part, txid);
          part.asking.erase(txid);
        }
      });
}

void Simulation::StartTerminationRound(Participant& p, TxId txid) {
  // Stage 1: who is reachable (probes without joining). The lowest-named reachable participant
  // is the backup coordinator; the others leave it to that one.
  // Stage 2 (the backup): every participant's state, joining the round; all of them or nothing.
  // Stage 3: Skeen's rule; pre-commit every PREPARED one before any Commit.
  struct Round {
    TxId txid;
    int backup;
    uint64_t backup_inc;
    std::vector<int> peers;
    std::map<int, api::TerminationStateResponse> states;
    int waiting = 0;
    bool failed = false;
  };
  Participant::Asking& ask = p.asking[txid];
  ask.round_in_flight = true;
  ask.next_round_at = now_ + kRoundRetryMs;
  ++result_.stats.termination_rounds;
  auto round = std::make_shared<Round>();
  round->txid = txid;
  round->backup = p.index;
  round->backup_inc = p.incarnation;
  round->peers = p.txns[txid].peers;
  // Ends the round at the backup (so that it may try again later), if it is still the same
  // process.
  auto end_round = [this, round] {
    Participant& b = participants_[round->backup];
    if (!b.up || b.incarnation != round->backup_inc) return;
    auto it = b.asking.find(round->txid);
    if (it != b.asking.end()) it->second.round_in_flight = false;
  };
  // Calls `call` on every peer (on the backup itself directly), then `then` once all answered
  // or timed out.
  using StateCall = std::function<PReply<api::TerminationStateResponse>(Participant&)>;
  auto ask_all = [this, round](StateCall call, std::function<void()> then) {
    round->states.clear();
    round->failed = false;
    round->waiting = static_cast<int>(round->peers.size());
    auto one_done = [round, then] {
      if (--round->waiting == 0) then();
    };
    for (int q : round->peers) {
      if (q == round->backup) {
        PReply<api::TerminationStateResponse> r = call(participants_[q]);
        round->states[q] = r.resp;
        one_done();
        continue;
      }
      Rpc<PReply<api::TerminationStateResponse>>(
          kPartBase + round->backup, kPartBase + q,
          [this, q, call](std::function<void(PReply<api::TerminationStateResponse>)> reply) {
            reply(call(participants_[q]));
          },
          kParticipantCallMs,
          [round, q, one_done](std::optional<PReply<api::TerminationStateResponse>> r) {
            if (r.has_value() && !r->error.has_value()) {
              round->states[q] = r->resp;
            } else {
              round->failed = true;
            }
            one_done();
          });
    }
  };
  auto finish = [this, round, end_round](participant::TerminationDecision d) {
    const bool commit = d == participant::TerminationDecision::kCommit;
    Trace("termination round of txid {} at {} decides {}", round->txid,
          participants_[round->backup].name(), commit ? "COMMIT" : "ABORT");
    for (int q : round->peers) {
      if (round->states[q].state == api::TxState::UNKNOWN) continue;  // no say, nothing to do
      if (q == round->backup) {
        if (commit) {
          (void)PCommit(participants_[q], round->txid, true);
        } else {
          (void)PAbort(participants_[q], round->txid, true);
        }
        continue;
      }
      const TxId round_txid = round->txid;
      Rpc<bool>(
          kPartBase + round->backup, kPartBase + q,
          [this, q, round_txid, commit](std::function<void(bool)> reply) {
            if (commit) {
              reply(!PCommit(participants_[q], round_txid, true).error.has_value());
            } else {
              reply(!PAbort(participants_[q], round_txid, true).error.has_value());
            }
          },
          kParticipantCallMs, [](std::optional<bool>) {});
    }
    end_round();
  };
  auto decide = [this, round, end_round, finish] {
    if (round->failed) {
      Trace("termination round of txid {} at {}: not every participant answered; waiting",
            round->txid, participants_[round->backup].name());
      end_round();
      return;
    }
    std::vector<participant::TxnState> states;
    for (const auto& [q, st] : round->states) {
      states.push_back(static_cast<participant::TxnState>(static_cast<int>(st.state)));
    }
    participant::TerminationDecision d = participant::DecideTermination(states);
    if (d == participant::TerminationDecision::kInconsistent) {
      Fail("Termination",
           fmt::format("round for txid {} collected inconsistent states", round->txid));
      return;
    }
    if (d == participant::TerminationDecision::kAbort) {
      finish(d);
      return;
    }
    // Commit: pre-commit every PREPARED participant first, all of them or no Commit at all.
    std::vector<int> prepared;
    for (const auto& [q, st] : round->states) {
      if (st.state == api::TxState::PREPARED) prepared.push_back(q);
    }
    if (prepared.empty()) {
      finish(d);
      return;
    }
    auto acks = std::make_shared<std::pair<int, bool>>(static_cast<int>(prepared.size()), true);
    auto one = [acks, finish, end_round, d](bool ok) {
      acks->second = acks->second && ok;
      if (--acks->first > 0) return;
      if (acks->second) {
        finish(d);
      } else {
        end_round();
      }
    };
    for (int q : prepared) {
      const TxId round_txid = round->txid;
      if (q == round->backup) {
        PReply<api::PreCommitResponse> r = PPreCommit(participants_[q], round_txid, true);
        one(!r.error.has_value() && r.resp.state == api::TxState::PRECOMMITTED);
        continue;
      }
      Rpc<PReply<api::PreCommitResponse>>(
          kPartBase + round->backup, kPartBase + q,
          [this, q, round_txid](std::function<void(PReply<api::PreCommitResponse>)> reply) {
            reply(PPreCommit(participants_[q], round_txid, true));
          },
          kParticipantCallMs,
          [one](std::optional<PReply<api::PreCommitResponse>> r) {
            one(r.has_value() && !r->error.has_value() &&
                (r->resp.state == api::TxState::PRECOMMITTED ||
                 r->resp.state == api::TxState::COMMITTED));
          });
    }
  };
  const TxId txid_copy = txid;
  ask_all([this, txid_copy](Participant& q) { return PTermState(q, txid_copy, false); },
          [this, round, ask_all, decide, end_round] {
            // The backup: the lowest-named reachable participant still in doubt (the others have
            // nothing to terminate and do not run rounds).
            int lowest = round->backup;
            for (const auto& [q, st] : round->states) {
              if (st.state == api::TxState::PREPARED || st.state == api::TxState::PRECOMMITTED) {
                lowest = std::min(lowest, q);
              }
            }
            if (lowest != round->backup) {
              end_round();  // a lower-named reachable participant runs the round
              return;
            }
            const TxId round_txid = round->txid;
            ask_all([this, round_txid](Participant& q) { return PTermState(q, round_txid, true); },
                    decide);
          });
}

void Simulation::ParticipantStep(Participant& p) {
  if (!p.up) return;
  // Registration and the Resolve loop run side by side (txpart starts both at start-up): a
  // participant that cannot register (no coordinator) still resolves and terminates.
  if (!p.registered) Register(p);
  if (now_ % 20 != static_cast<uint64_t>(p.index)) return;
  std::vector<TxId> terminate;
  for (auto& [txid, t] : p.txns) {
    if (!InDoubt(t.st)) continue;
    // Recovered transactions have prepared_at from before the crash: asked about at once.
    if (now_ < t.prepared_at + kResolveAfterMs) continue;
    Participant::Asking& a = p.asking[txid];
    if (!a.in_flight && now_ >= a.next_at) AskResolve(p, txid);
    if (!t.three_phase || a.round_in_flight || now_ < a.next_round_at) continue;
    const bool cut_off =
        a.unreachable_since != 0 && now_ >= a.unreachable_since + kTerminationTimeoutMs;
    if (t.in_termination || cut_off || a.termination_requested) terminate.push_back(txid);
  }
  for (TxId txid : terminate) {
    if (!p.up) return;
    StartTerminationRound(p, txid);
  }
}

// ---------------------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------------------

void Simulation::StartReplica(Replica& r) {
  raft::InitialState s;
  s.hard_state = r.disk.hard_state;
  s.snapshot = r.disk.snapshot;
  s.snapshot_data = r.disk.snapshot_data;
  s.entries = r.disk.entries;
  StatusOr<std::unique_ptr<raft::Raft>> raft = raft::Raft::Create(r.config, std::move(s));
  if (!raft.ok()) {
    Fail("Recovery", fmt::format("replica {} cannot restart: {}", r.id, raft.status().ToString()));
    return;
  }
  r.raft = std::move(raft).value();
  r.state = std::make_unique<ReplicatedState>();
  r.applied = r.disk.snapshot.index;
  r.applied_term = r.disk.snapshot.term;
  if (r.disk.snapshot.index > 0) {
    Status st = r.state->Restore(r.disk.snapshot.index, *r.disk.snapshot_data);
    if (!st.ok()) {
      Fail("Recovery", fmt::format("replica {} snapshot: {}", r.id, st.ToString()));
      return;
    }
  }
  r.log = std::make_unique<SimEntryLog>(this, r.id);
  BatcherOptions bo;
  bo.max_inflight_entries = static_cast<size_t>(rng_.Range(1, 4));
  bo.max_commands_per_entry = static_cast<size_t>(rng_.Range(1, 64));
  r.batcher = std::make_unique<CommandBatcher>(r.log.get(), bo);
  r.channel = std::make_unique<SimChannel>(this, r.id);
  DriverOptions d;
  d.clock = &clock_;
  d.default_txn_timeout = std::chrono::milliseconds(kTxnTimeoutMs);
  d.max_txn_timeout = std::chrono::milliseconds(10 * kTxnTimeoutMs);
  d.txid_block_size = rng_.Range(4, 64);
  d.retry_initial = std::chrono::milliseconds(10);
  d.retry_max = std::chrono::milliseconds(200);
  d.phase_two_retry_max = std::chrono::milliseconds(300);
  d.abort_notify_attempts = rng_.Range(3, 20);
  d.random_seed = rng_.Next();
  Replica* rp = &r;
  d.leader_hint = [rp]() -> std::optional<std::string> {
    if (rp->raft == nullptr) return std::nullopt;
    NodeId l = rp->raft->leader_hint();
    if (l == raft::kNoNode || static_cast<int>(l) == rp->id) return std::nullopt;
    return fmt::format("c{}:7000", l);
  };
  r.driver = std::make_unique<Driver>(r.state.get(), r.batcher.get(), r.channel.get(), d);
  r.serving = false;
  r.served_term = 0;
  r.up = true;
  ++r.incarnation;
  Trace("replica {} starts (incarnation {}), log [{}, {}], snapshot {}", r.id, r.incarnation,
        r.raft->log().first_index(), r.raft->log().last_index(), r.disk.snapshot.index);
}

void Simulation::CrashReplica(Replica& r) {
  if (!r.up) return;
  if (r.write.has_value()) {
    // A prefix of the unsynced writes survives.
    size_t keep = rng_.Uniform(r.write->ops.size() + 1);
    for (size_t i = 0; i < keep; ++i) {
      const DiskOp& op = r.write->ops[i];
      Disk& d = r.disk;
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
    r.write.reset();
  }
  // Everything in memory goes: driver first (it borrows the rest).
  r.driver.reset();
  r.batcher.reset();
  r.channel.reset();
  r.log.reset();
  r.proposals.clear();
  r.raft.reset();
  r.state.reset();
  r.serving = false;
  r.up = false;
  ++r.incarnation;
  r.restart_at = now_ + static_cast<uint64_t>(rng_.Range(50, 800));
  ++result_.stats.coordinator_crashes;
  Trace("replica {} crashes", r.id);
}

void Simulation::ProposeEntry(int replica, std::string entry,
                              std::function<void(Status, std::string)> done) {
  Replica& r = replicas_.at(replica);
  StatusOr<raft::EntryId> id = r.raft->Propose(std::move(entry));
  if (!id.ok()) {
    done(id.status().code() == Status::Code::kUnavailable ? Status::Unavailable("not the leader")
                                                          : id.status(),
         "");
    return;
  }
  r.proposals[id->index] = Proposal{id->term, now_ + kProposalTimeoutMs, std::move(done)};
}

void Simulation::ProcessReplica(Replica& r) {
  if (r.write.has_value()) {
    std::vector<Message> msgs = r.raft->TakeMessages();
    for (Message& m : msgs) {
      const int to = static_cast<int>(m.to);
      Send(r.id, to, [this, to, m] {
        Replica& t = replicas_.at(to);
        if (t.up) (void)t.raft->Step(m);
      });
    }
    return;
  }
  for (size_t i = 0;
       i < kMaxReadiesPerStep && result_.ok && r.up && !r.write.has_value() && r.raft->HasReady();
       ++i) {
    HandleReady(r, r.raft->GetReady());
  }
}

void Simulation::HandleReady(Replica& r, Ready rd) {
  auto send_all = [&](std::vector<Message>& msgs) {
    for (Message& m : msgs) {
      const int to = static_cast<int>(m.to);
      Send(r.id, to, [this, to, m] {
        Replica& t = replicas_.at(to);
        if (t.up) (void)t.raft->Step(m);
      });
    }
  };
  if (rd.soft_state.has_value() && rd.soft_state->role == Role::kLeader) {
    auto [it, inserted] = leaders_.emplace(r.raft->term(), r.id);
    if (!inserted && it->second != r.id) {
      Fail("Election Safety",
           fmt::format("replicas {} and {} lead term {}", it->second, r.id, r.raft->term()));
      return;
    }
    if (inserted) ++result_.stats.leader_changes;
    Trace("replica {} leads term {}", r.id, r.raft->term());
  }
  send_all(rd.messages);
  std::vector<std::pair<std::function<void(Status, std::string)>, std::pair<Status, std::string>>>
      done;
  if (rd.snapshot.has_value()) {
    Status st = r.state->Restore(rd.snapshot->metadata.index, *rd.snapshot->data);
    if (!st.ok()) {
      Fail("Snapshot", fmt::format("replica {}: {}", r.id, st.ToString()));
      return;
    }
    r.applied = rd.snapshot->metadata.index;
    r.applied_term = rd.snapshot->metadata.term;
    ++result_.stats.snapshots_installed;
    // Proposals the snapshot covers: whether they are in it cannot be told from here.
    for (auto it = r.proposals.begin();
         it != r.proposals.end() && it->first <= rd.snapshot->metadata.index;) {
      done.push_back({std::move(it->second.done), {Status::Internal("covered by a snapshot"), ""}});
      it = r.proposals.erase(it);
    }
  }
  for (const Entry& e : rd.committed_entries) {
    ApplyEntry(r, e, &done);
    if (!result_.ok) return;
  }
  MaybeSnapshot(r);
  if (rd.MustPersist()) {
    PendingWrite w;
    if (rd.snapshot.has_value()) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kSnapshot, *rd.snapshot, 0, {}, {}});
    }
    if (rd.truncate_from != 0) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kTruncate, {}, rd.truncate_from, {}, {}});
    }
    for (const Entry& e : rd.entries) w.ops.push_back(DiskOp{DiskOp::Kind::kAppend, {}, 0, e, {}});
    if (rd.hard_state.has_value()) {
      w.ops.push_back(DiskOp{DiskOp::Kind::kHardState, {}, 0, {}, *rd.hard_state});
    }
    w.done_at = now_ + static_cast<uint64_t>(rng_.Range(0, max_disk_latency_));
    w.ready = std::move(rd);
    r.write = std::move(w);
  } else {
    send_all(rd.messages_after_persist);
    r.raft->Advance(rd);
  }
  // Completions last: they call into the driver, which may propose again.
  const uint64_t inc = r.incarnation;
  for (auto& [fn, args] : done) {
    if (!r.up || r.incarnation != inc) break;
    fn(args.first, args.second);
  }
}

void Simulation::ApplyEntry(Replica& r, const Entry& e,
                            std::vector<std::pair<std::function<void(Status, std::string)>,
                                                  std::pair<Status, std::string>>>* done) {
  if (e.index != r.applied + 1) {
    Fail("Apply order", fmt::format("replica {} applies {} after {}", r.id, e.index, r.applied));
    return;
  }
  r.applied = e.index;
  r.applied_term = e.term;
  std::string result;
  if (e.type == EntryType::kNormal) {
    StatusOr<coordlog::Entry> entry = DecodeEntry(e.data);
    if (!entry.ok()) {
      Fail("Log", fmt::format("replica {} index {}: {}", r.id, e.index, entry.status().ToString()));
      return;
    }
    StatusOr<std::string> applied = r.state->Apply(e.index, e.data);
    if (!applied.ok()) {
      Fail("Apply",
           fmt::format("replica {} index {}: {}", r.id, e.index, applied.status().ToString()));
      return;
    }
    result = *applied;
    StatusOr<coordlog::EntryResult> results = DecodeEntryResult(result);
    for (size_t i = 0; i < entry->commands.size(); ++i) {
      const coordlog::Command& c = entry->commands[i];
      const coordlog::CommandResult& cr = results->results[i];
      if (c.__isset.decide && (cr.code == coordlog::ResultCode::OK ||
                               cr.code == coordlog::ResultCode::ALREADY_DECIDED)) {
        CheckDecisionApplied(r, c.decide.txid, cr.outcome);
        if (r.serving) MaybeCrashSoon(r.id, "after applying a decision");
      }
      if (c.__isset.precommit && cr.code == coordlog::ResultCode::OK) {
        if (precommits_logged_.insert(c.precommit.txid).second) {
          Trace("PRECOMMIT for txid {} (first applied at replica {} index {})", c.precommit.txid,
                r.id, r.applied);
        }
        if (r.serving) MaybeCrashSoon(r.id, "after applying a PRECOMMIT");
      }
    }
  }
  auto it = r.proposals.find(e.index);
  if (it != r.proposals.end()) {
    if (it->second.term == e.term) {
      done->push_back({std::move(it->second.done), {Status::OK(), result}});
    } else {
      done->push_back({std::move(it->second.done), {Status::Aborted("overwritten"), ""}});
    }
    r.proposals.erase(it);
  }
}

void Simulation::CheckDecisionApplied(Replica& r, TxId txid, Outcome::type outcome) {
  auto po = participant_outcomes_.find(txid);
  if (po != participant_outcomes_.end() && po->second != outcome) {
    Fail("Atomicity", fmt::format("replica {} applied {} for txid {}, which participants applied "
                                  "the other way",
                                  r.id, outcome == Outcome::COMMITTED ? "COMMIT" : "ABORT", txid));
    return;
  }
  auto [it, inserted] = decisions_.emplace(txid, outcome);
  if (inserted) {
    ++result_.stats.decisions;
    Trace("decision for txid {}: {} (first applied at replica {} index {})", txid,
          outcome == Outcome::COMMITTED ? "COMMIT" : "ABORT", r.id, r.applied);
  } else if (it->second != outcome) {
    Fail("Decisions", fmt::format("replica {} applied {} for txid {}, another replica {}", r.id,
                                  outcome == Outcome::COMMITTED ? "COMMIT" : "ABORT", txid,
                                  it->second == Outcome::COMMITTED ? "COMMIT" : "ABORT"));
  }
}

void Simulation::MaybeSnapshot(Replica& r) {
  if (r.applied < r.disk.snapshot.index + r.snapshot_every) return;
  auto data = std::make_shared<const std::string>(r.state->Snapshot());
  StatusOr<SnapshotMetadata> meta = r.raft->OnSnapshotCreated(r.applied, data);
  if (!meta.ok()) return;
  Disk& d = r.disk;
  if (meta->index <= d.snapshot.index || meta->index > d.LastIndex()) return;
  size_t drop = static_cast<size_t>(meta->index - d.snapshot.index);
  d.entries.erase(d.entries.begin(), d.entries.begin() + static_cast<long>(drop));
  d.snapshot = *meta;
  d.snapshot_data = data;
}

void Simulation::CompleteWrite(Replica& r) {
  PendingWrite w = std::move(*r.write);
  r.write.reset();
  Disk& d = r.disk;
  for (const DiskOp& op : w.ops) {
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
        if (op.entry.index != d.LastIndex() + 1) {
          Fail("Ready contract",
               fmt::format("replica {} appends {} after {}", r.id, op.entry.index, d.LastIndex()));
          return;
        }
        d.entries.push_back(op.entry);
        break;
      case DiskOp::Kind::kHardState:
        d.hard_state = op.hard_state;
        break;
    }
  }
  for (Message& m : w.ready.messages_after_persist) {
    const int to = static_cast<int>(m.to);
    Send(r.id, to, [this, to, m] {
      Replica& t = replicas_.at(to);
      if (t.up) (void)t.raft->Step(m);
    });
  }
  r.raft->Advance(w.ready);
}

void Simulation::CheckLeadership(Replica& r) {
  // Serve once an entry of this term has been applied: the state then holds everything
  // committed before the term (what txcoord's ReadIndex barrier establishes).
  const bool leading = r.raft->role() == Role::kLeader && r.applied_term == r.raft->term();
  if (leading && (!r.serving || r.served_term != r.raft->term())) {
    if (r.serving) r.driver->StepDown();
    r.serving = true;
    r.served_term = r.raft->term();
    Trace("replica {} serves as coordinator in term {}", r.id, r.served_term);
    r.driver->BecomeLeader(r.served_term);
  } else if (r.serving && (r.raft->role() != Role::kLeader || r.raft->term() != r.served_term)) {
    r.serving = false;
    Trace("replica {} stops serving", r.id);
    r.driver->StepDown();
  }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

int Simulation::CoordinatorFromHint(const api::TxError& e, int fallback) {
  if (e.code == api::ErrorCode::NOT_LEADER && e.__isset.leader_hint) {
    int id = 0;
    if (std::sscanf(e.leader_hint.c_str(), "c%d:", &id) == 1 && id >= 1 &&
        id <= options_.replicas) {
      return id;
    }
  }
  return 1 + fallback % options_.replicas;
}

void Simulation::ClientBegin(Client& c) {
  c.waiting = true;
  const int target = c.coordinator_guess;
  const int index = c.index;
  Rpc<Reply<api::BeginResponse>>(
      kClientBase + index, target,
      [this, target, protocol = c.protocol](std::function<void(Reply<api::BeginResponse>)> reply) {
        api::BeginRequest req;
        req.options.protocol = protocol;
        reply(replicas_.at(target).driver->Begin(req));
      },
      kClientCallMs,
      [this, index](std::optional<Reply<api::BeginResponse>> r) {
        Client& cl = clients_[index];
        cl.waiting = false;
        if (r.has_value() && r->ok()) {
          cl.txid = r->value.txid;
          cl.phase = CPhase::kExec;
          cl.exec_next = 0;
          Trace("client {} begins txid {} at {} participants", index, cl.txid, cl.parts.size());
          return;
        }
        cl.coordinator_guess = r.has_value() && r->error.has_value()
                                   ? CoordinatorFromHint(*r->error, cl.coordinator_guess)
                                   : 1 + cl.coordinator_guess % options_.replicas;
        cl.next_at = now_ + 10;
      });
}

void Simulation::ClientExec(Client& c) {
  if (c.exec_next == c.parts.size()) {
    c.phase = rng_.Chance(client_abort_p_) ? CPhase::kAbort : CPhase::kCommit;
    return;
  }
  c.waiting = true;
  const int p = c.parts[c.exec_next];
  const bool write = c.writes[c.exec_next];
  const TxId txid = c.txid;
  const int index = c.index;
  c.attempted.push_back(participants_[p].name());
  Rpc<PReply<api::ExecuteResponse>>(
      kClientBase + index, kPartBase + p,
      [this, p, txid, write](std::function<void(PReply<api::ExecuteResponse>)> reply) {
        reply(Execute(participants_[p], txid, write));
      },
      kClientCallMs,
      [this, index, p, write](std::optional<PReply<api::ExecuteResponse>> r) {
        Client& cl = clients_[index];
        cl.waiting = false;
        if (!r.has_value() || r->error.has_value()) {
          cl.phase = CPhase::kAbort;
          return;
        }
        if (write) told_[cl.txid].acked_writes.insert(p);
        ++cl.exec_next;
      });
}

void Simulation::ClientTold(Client& c, Outcome::type outcome, const char* how) {
  Told& t = told_[c.txid];
  const bool multi = c.parts.size() >= 2;
  if (outcome == Outcome::COMMITTED) {
    if (multi && !t.acked_writes.empty()) {
      auto d = decisions_.find(c.txid);
      if (d == decisions_.end() || d->second != Outcome::COMMITTED) {
        Fail("Answers", fmt::format("client {} told COMMITTED ({}) for txid {} with no committed "
                                    "COMMIT decision",
                                    c.index, how, c.txid));
        return;
      }
    }
    if (!multi && !t.acked_writes.empty()) {
      const Participant& p = participants_[c.parts[0]];
      auto it = p.txns.find(c.txid);
      if (it == p.txns.end() || it->second.st != PSt::kCommitted) {
        Fail("Answers", fmt::format("client {} told COMMITTED ({}) for one-participant txid {} "
                                    "that {} did not commit",
                                    c.index, how, c.txid, p.name()));
        return;
      }
    }
    ++result_.stats.committed;
    if (multi && !t.acked_writes.empty()) ++result_.stats.multi_participant_commits;
    if (c.protocol == api::Protocol::THREE_PHASE) ++result_.stats.three_phase_commits;
  } else {
    for (const Participant& p : participants_) {
      auto it = p.txns.find(c.txid);
      if (it != p.txns.end() && it->second.st == PSt::kCommitted) {
        Fail("Answers", fmt::format("client {} told ABORTED ({}) for txid {}, committed at {}",
                                    c.index, how, c.txid, p.name()));
        return;
      }
    }
    ++result_.stats.aborted;
  }
  t.outcome = outcome;
  t.parts = c.parts;
  ++result_.stats.transactions;
  Trace("client {} told {} for txid {} ({})", c.index,
        outcome == Outcome::COMMITTED ? "COMMITTED" : "ABORTED", c.txid, how);
  c.phase = CPhase::kIdle;
  c.next_at = now_ + static_cast<uint64_t>(rng_.Range(0, 30));
}

void Simulation::ClientCommit(Client& c) {
  c.waiting = true;
  c.commit_sent = true;
  ++c.commit_attempts;
  const int target = c.coordinator_guess;
  const int index = c.index;
  api::CommitTransactionRequest req;
  req.txid = c.txid;
  req.participants = c.attempted;
  req.protocol = c.protocol;
  Rpc<Reply<api::CommitTransactionResponse>>(
      kClientBase + index, target,
      [this, target, req](std::function<void(Reply<api::CommitTransactionResponse>)> reply) {
        replicas_.at(target).driver->Commit(req, reply);
      },
      kCommitCallMs,
      [this, index](std::optional<Reply<api::CommitTransactionResponse>> r) {
        Client& cl = clients_[index];
        cl.waiting = false;
        if (r.has_value() && r->ok()) {
          ClientTold(
              cl,
              r->value.decision == api::Decision::COMMITTED ? Outcome::COMMITTED : Outcome::ABORTED,
              "Commit");
          return;
        }
        if (r.has_value() && r->error.has_value() &&
            (r->error->code == api::ErrorCode::INVALID_ARGUMENT ||
             r->error->code == api::ErrorCode::UNKNOWN_TRANSACTION)) {
          Fail("Answers", fmt::format("Commit of txid {} refused: {}", cl.txid, r->error->message));
          return;
        }
        // Outcome unknown: ask again (Commit never decides twice), maybe elsewhere.
        cl.coordinator_guess = r.has_value() && r->error.has_value()
                                   ? CoordinatorFromHint(*r->error, cl.coordinator_guess)
                                   : 1 + cl.coordinator_guess % options_.replicas;
        cl.next_at = now_ + 10;
      });
}

void Simulation::ClientGetOutcome(Client& c) {
  c.waiting = true;
  const int target = c.coordinator_guess;
  const int index = c.index;
  api::GetOutcomeRequest req;
  req.txid = c.txid;
  Rpc<Reply<api::GetOutcomeResponse>>(
      kClientBase + index, target,
      [this, target, req](std::function<void(Reply<api::GetOutcomeResponse>)> reply) {
        // UNDECIDED must not hide a decision committed before the question arrived (the
        // barrier makes the answer linearizable); one committed meanwhile may be missed.
        const bool decided_before = decisions_.count(req.txid) != 0;
        replicas_.at(target).driver->GetOutcome(
            req, [this, reply, req, decided_before](Reply<api::GetOutcomeResponse> r) {
              if (r.ok() && r.value.decision == api::Decision::UNDECIDED && decided_before) {
                Fail("Answers", fmt::format("GetOutcome said UNDECIDED for txid {}, decided "
                                            "before it was asked",
                                            req.txid));
              }
              reply(r);
            });
      },
      kClientCallMs,
      [this, index](std::optional<Reply<api::GetOutcomeResponse>> r) {
        Client& cl = clients_[index];
        cl.waiting = false;
        cl.next_at = now_ + 10;
        if (!r.has_value() || r->error.has_value()) {
          cl.coordinator_guess = r.has_value()
                                     ? CoordinatorFromHint(*r->error, cl.coordinator_guess)
                                     : 1 + cl.coordinator_guess % options_.replicas;
          return;
        }
        switch (r->value.decision) {
          case api::Decision::COMMITTED:
            ClientTold(cl, Outcome::COMMITTED, "GetOutcome");
            break;
          case api::Decision::ABORTED:
            ClientTold(cl, Outcome::ABORTED, "GetOutcome");
            break;
          default:
            break;  // PENDING or UNDECIDED: ask again, or repeat Commit
        }
      });
}

void Simulation::ClientAbort(Client& c) {
  c.waiting = true;
  const int target = c.coordinator_guess;
  const int index = c.index;
  api::AbortTransactionRequest req;
  req.txid = c.txid;
  req.participants = c.attempted;
  Rpc<Reply<api::AbortTransactionResponse>>(
      kClientBase + index, target,
      [this, target, req](std::function<void(Reply<api::AbortTransactionResponse>)> reply) {
        replicas_.at(target).driver->Abort(req, reply);
      },
      kClientCallMs,
      [this, index](std::optional<Reply<api::AbortTransactionResponse>> r) {
        Client& cl = clients_[index];
        cl.waiting = false;
        if (r.has_value() && r->ok()) {
          if (r->value.decision == api::Decision::COMMITTED) {
            Fail("Answers", fmt::format("Abort of txid {} answered COMMITTED, but no Commit was "
                                        "ever sent for it",
                                        cl.txid));
            return;
          }
          ClientTold(cl, Outcome::ABORTED, "Abort");
          return;
        }
        cl.coordinator_guess = r.has_value() && r->error.has_value()
                                   ? CoordinatorFromHint(*r->error, cl.coordinator_guess)
                                   : 1 + cl.coordinator_guess % options_.replicas;
        cl.next_at = now_ + 10;
      });
}

void Simulation::ClientStep(Client& c) {
  if (c.waiting || now_ < c.next_at) return;
  bool all_registered = true;
  for (const Participant& p : participants_) all_registered = all_registered && p.registered;
  switch (c.phase) {
    case CPhase::kIdle: {
      if (!chaos_ || !all_registered) return;
      const int n = rng_.Range(1, std::min(3, options_.participants));
      std::vector<int> all;
      for (int i = 0; i < options_.participants; ++i) all.push_back(i);
      c.parts.clear();
      c.writes.clear();
      c.attempted.clear();
      for (int i = 0; i < n; ++i) {
        size_t k = rng_.Uniform(all.size());
        c.parts.push_back(all[k]);
        all.erase(all.begin() + static_cast<long>(k));
        c.writes.push_back(rng_.Chance(0.75));
      }
      c.commit_attempts = 0;
      c.commit_sent = false;
      c.protocol =
          rng_.Chance(three_phase_p_) ? api::Protocol::THREE_PHASE : api::Protocol::TWO_PHASE;
      c.phase = CPhase::kBegin;
      ClientBegin(c);
      return;
    }
    case CPhase::kBegin:
      ClientBegin(c);
      return;
    case CPhase::kExec:
      ClientExec(c);
      return;
    case CPhase::kCommit:
      if (c.commit_attempts >= 2 && rng_.Chance(get_outcome_p_)) {
        ClientGetOutcome(c);
      } else {
        ClientCommit(c);
      }
      return;
    case CPhase::kAbort:
      if (c.commit_sent) {
        c.phase = CPhase::kCommit;  // never abort after asking to commit: ask again instead
        return;
      }
      ClientAbort(c);
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

void Simulation::Fail(std::string property, std::string detail) {
  if (!result_.ok) return;
  result_.ok = false;
  result_.property = std::move(property);
  result_.detail = std::move(detail);
  result_.at_ms = now_;
  Trace("VIOLATION {}: {}", result_.property, result_.detail);
}

void Simulation::ChooseProfile() {
  drop_p_ = rng_.Chance(0.6) ? rng_.Real(0, 0.08) : 0;
  dup_p_ = rng_.Chance(0.4) ? rng_.Real(0, 0.05) : 0;
  long_delay_p_ = rng_.Chance(0.4) ? rng_.Real(0, 0.02) : 0;
  max_delay_ = rng_.Range(1, 8);
  max_disk_latency_ = rng_.Range(1, 6);
  crash_p_ = rng_.Real(0.0002, 0.001);
  leader_crash_p_ = rng_.Real(0.0002, 0.002);
  partition_p_ = rng_.Real(0.0002, 0.002);
  heal_p_ = rng_.Real(0.002, 0.01);
  part_crash_p_ = rng_.Real(0.0001, 0.001);
  part_isolate_p_ = rng_.Real(0.0001, 0.001);
  exec_abort_p_ = rng_.Real(0, 0.05);
  prepare_no_p_ = rng_.Real(0, 0.05);
  client_abort_p_ = rng_.Real(0, 0.1);
  get_outcome_p_ = rng_.Real(0, 0.5);
  crash_point_p_ = rng_.Chance(0.5) ? rng_.Real(0, 0.01) : 0;
  three_phase_p_ = rng_.Real(0.3, 0.7);  // 2PC and 3PC transactions in every run
  Trace(
      "profile: drop={:.3f} dup={:.3f} long={:.3f} delay<={} disk<={} crash={:.4f} "
      "leader_crash={:.4f} partition={:.4f} part_crash={:.4f}",
      drop_p_, dup_p_, long_delay_p_, max_delay_, max_disk_latency_, crash_p_, leader_crash_p_,
      partition_p_, part_crash_p_);
}

void Simulation::InjectFaults() {
  std::vector<int> ids;
  for (auto& [id, r] : replicas_) ids.push_back(id);
  if (rng_.Chance(crash_p_)) CrashReplica(replicas_.at(ids[rng_.Uniform(ids.size())]));
  if (rng_.Chance(leader_crash_p_)) {
    for (auto& [id, r] : replicas_) {
      if (r.up && r.raft->role() == Role::kLeader) {
        CrashReplica(r);
        break;
      }
    }
  }
  if (rng_.Chance(partition_p_)) {
    blocked_.clear();
    switch (rng_.Uniform(6)) {
      case 0: {  // isolate one replica (often the leader) from everyone
        int x = ids[rng_.Uniform(ids.size())];
        for (auto& [id, r] : replicas_) {
          if (r.up && r.raft->role() == Role::kLeader && rng_.Chance(0.6)) x = id;
        }
        for (int y : ids) {
          if (y != x) blocked_.insert({x, y}), blocked_.insert({y, x});
        }
        Trace("partition: replica {} isolated from the other replicas", x);
        break;
      }
      case 1: {  // split the replicas
        std::set<int> a;
        for (int x : ids) {
          if (rng_.Chance(0.5)) a.insert(x);
        }
        for (int x : ids) {
          for (int y : ids) {
            if (a.count(x) != a.count(y)) blocked_.insert({x, y});
          }
        }
        Trace("partition: replicas split, {} on one side", a.size());
        break;
      }
      case 2: {  // the leader loses its clients and participants but keeps its peers
        for (auto& [id, r] : replicas_) {
          if (!r.up || r.raft->role() != Role::kLeader) continue;
          for (int i = 0; i < options_.participants; ++i) {
            blocked_.insert({id, kPartBase + i}), blocked_.insert({kPartBase + i, id});
          }
          Trace("partition: leader {} cut from the participants", id);
        }
        break;
      }
      case 4: {  // every coordinator cut from every participant: 3PC rounds start, and race
                 // the coordinators when the network heals
        for (int id : ids) {
          for (int i = 0; i < options_.participants; ++i) {
            blocked_.insert({id, kPartBase + i}), blocked_.insert({kPartBase + i, id});
          }
        }
        Trace("partition: every coordinator cut from the participants");
        break;
      }
      case 5: {  // one participant cut from the other participants (and a side of coordinators)
        const int x = static_cast<int>(rng_.Uniform(participants_.size()));
        for (int i = 0; i < options_.participants; ++i) {
          if (i != x)
            blocked_.insert({kPartBase + x, kPartBase + i}),
                blocked_.insert({kPartBase + i, kPartBase + x});
        }
        Trace("partition: participant {} cut from the other participants", x);
        break;
      }
      default: {  // one-way links anywhere among replicas
        int links = rng_.Range(1, static_cast<int>(ids.size()));
        for (int i = 0; i < links; ++i) {
          int x = ids[rng_.Uniform(ids.size())], y = ids[rng_.Uniform(ids.size())];
          if (x != y) blocked_.insert({x, y});
        }
        Trace("partition: one-way links cut");
        break;
      }
    }
  }
  if (!blocked_.empty() && rng_.Chance(heal_p_)) {
    blocked_.clear();
    Trace("network healed");
  }
  if (rng_.Chance(part_crash_p_)) {
    CrashParticipant(participants_[rng_.Uniform(participants_.size())]);
  }
  if (rng_.Chance(part_isolate_p_)) {
    const int p = kPartBase + static_cast<int>(rng_.Uniform(participants_.size()));
    for (int id : ids) blocked_.insert({id, p}), blocked_.insert({p, id});
    Trace("partition: participant {} cut from the coordinators", p - kPartBase);
  }
}

void Simulation::Step() {
  ++now_;
  clock_.Advance(std::chrono::milliseconds(1));
  if (chaos_) InjectFaults();
  for (auto& [id, r] : replicas_) {
    if (!r.up && r.restart_at != 0 && now_ >= r.restart_at) {
      r.restart_at = 0;
      StartReplica(r);
    }
  }
  for (Participant& p : participants_) {
    if (!p.up && now_ >= p.restart_at) {
      p.up = true;
      p.registered = false;  // registers again at start-up
      Trace("{} restarts with {} durable transactions", p.name(), p.txns.size());
    }
  }
  for (auto& [id, r] : replicas_) {
    if (r.up && (now_ + r.tick_phase) % kTickMs == 0) r.raft->Tick();
  }
  while (!events_.empty() && events_.top().at <= now_ && result_.ok) {
    Event e = events_.top();
    events_.pop();
    e.fn();
  }
  for (auto& [id, r] : replicas_) {
    if (!result_.ok) return;
    if (!r.up) continue;
    if (r.write.has_value() && r.write->done_at <= now_) CompleteWrite(r);
    ProcessReplica(r);
    if (!r.up || !result_.ok) continue;
    // Proposals that took too long: unknown.
    for (auto it = r.proposals.begin(); it != r.proposals.end();) {
      if (it->second.deadline <= now_) {
        auto fn = std::move(it->second.done);
        it = r.proposals.erase(it);
        fn(Status::TimedOut("proposal deadline"), "");
        if (!r.up) break;
      } else {
        ++it;
      }
    }
    CheckLeadership(r);
    r.driver->Tick();
  }
  for (Participant& p : participants_) ParticipantStep(p);
  for (Client& c : clients_) ClientStep(c);
}

bool Simulation::Settled() {
  for (const Client& c : clients_) {
    if (c.phase != CPhase::kIdle || c.waiting) return false;
  }
  for (const Participant& p : participants_) {
    if (!p.up) return false;
    for (const auto& [txid, t] : p.txns) {
      if (InDoubt(t.st)) return false;
    }
  }
  const Replica* leader = nullptr;
  for (auto& [id, r] : replicas_) {
    if (!r.up) return false;
    if (r.serving) leader = &r;
  }
  if (leader == nullptr) return false;
  bool live_empty = leader->state->Read(
      [](const TxnStateMachine& sm) { return sm.live().empty() && sm.precommitted().empty(); });
  if (!live_empty) return false;
  // Every replica has applied what the leader applied (and nothing is in flight).
  for (auto& [id, r] : replicas_) {
    if (r.applied != leader->applied || r.raft->commit_index() != leader->raft->commit_index()) {
      return false;
    }
  }
  return leader->driver->GetStats().active == 0;
}

void Simulation::CoordinatorsGone() {
  Trace("--- every coordinator replica down; participants up and connected ---");
  for (auto& [id, r] : replicas_) {
    CrashReplica(r);
    r.restart_at = 0;  // stays down
  }
  for (Participant& p : participants_) {
    if (!p.up) p.restart_at = now_;
  }
  // What is in doubt now (participants that are down come back with their durable state).
  std::map<std::pair<int, TxId>, bool> in_doubt;  // -> three_phase
  for (const Participant& p : participants_) {
    for (const auto& [txid, t] : p.txns) {
      if (InDoubt(t.st)) in_doubt[{p.index, txid}] = t.three_phase;
    }
  }
  for (int i = 0; i < options_.coordinators_down_ms && result_.ok; ++i) Step();
  if (!result_.ok) return;
  std::string stuck;
  for (const Participant& p : participants_) {
    for (const auto& [txid, t] : p.txns) {
      if (!InDoubt(t.st)) continue;
      // (A 2PC one may even have been prepared meanwhile, by a Prepare delayed in the network.)
      if (t.three_phase) {
        stuck += fmt::format(" [{} {} txid {}{}]", p.name(), PStName(t.st), txid,
                             t.in_termination ? " in termination" : "");
      }
    }
  }
  if (!stuck.empty()) {
    Fail("Termination",
         "with every coordinator down and every participant up and connected, still in "
         "doubt:" +
             stuck);
    return;
  }
  for (const auto& [key, three_phase] : in_doubt) {
    const PTxn& t = participants_[key.first].txns.at(key.second);
    if (three_phase) {
      ++result_.stats.terminated_without_coordinator;
    } else if (t.st != PSt::kPrepared && decisions_.count(key.second) == 0) {
      // (One the log had decided may finish: its phase-two message was still in the network.)
      Fail("Blocking", fmt::format("p{} finished 2PC txid {} ({}) with no coordinator up",
                                   key.first, key.second, PStName(t.st)));
      return;
    } else if (t.st == PSt::kPrepared) {
      ++result_.stats.blocked_two_phase;
    }
  }
  Trace("without coordinators: {} 3PC in-doubt participants decided, {} 2PC ones still blocked",
        result_.stats.terminated_without_coordinator, result_.stats.blocked_two_phase);
}

void Simulation::FinalChecks() {
  // The replicas' states are identical.
  const Replica& first = replicas_.begin()->second;
  coordlog::Snapshot want =
      first.state->Read([](const TxnStateMachine& sm) { return sm.ToSnapshot(); });
  for (auto& [id, r] : replicas_) {
    coordlog::Snapshot got =
        r.state->Read([](const TxnStateMachine& sm) { return sm.ToSnapshot(); });
    // A replica that restored a snapshot counts applied entries from there on; the content
    // must match.
    got.applied_index = want.applied_index;
    if (!(got == want)) {
      Fail("Replicated state",
           fmt::format("replica {}'s state differs from replica {}'s", id, first.id));
      return;
    }
  }
  // Every answer agrees with the participants, and every transaction is atomic.
  std::map<TxId, std::map<int, PSt>> states;
  for (const Participant& p : participants_) {
    for (const auto& [txid, t] : p.txns) states[txid][p.index] = t.st;
  }
  for (const auto& [txid, told] : told_) {
    if (told.parts.empty()) continue;  // never answered (cannot happen once settled)
    auto& at = states[txid];
    if (told.outcome == Outcome::COMMITTED) {
      for (int p : told.acked_writes) {
        if (at.count(p) == 0 || at[p] != PSt::kCommitted) {
          Fail("Answers", fmt::format("txid {} told COMMITTED; p{} holds {}", txid, p,
                                      at.count(p) ? PStName(at[p]) : "nothing"));
          return;
        }
      }
    } else {
      for (auto [p, st] : at) {
        if (st == PSt::kCommitted) {
          Fail("Answers", fmt::format("txid {} told ABORTED; p{} committed it", txid, p));
          return;
        }
      }
    }
  }
  for (const auto& [txid, at] : states) {
    bool committed = false, aborted_after_prepare = false;
    for (const Participant& p : participants_) {
      auto it = p.txns.find(txid);
      if (it == p.txns.end()) continue;
      committed = committed || it->second.st == PSt::kCommitted;
      aborted_after_prepare =
          aborted_after_prepare || (it->second.st == PSt::kAborted && it->second.durable);
    }
    if (committed && aborted_after_prepare) {
      Fail("Atomicity", fmt::format("txid {} committed at one participant and aborted after "
                                    "prepare at another",
                                    txid));
      return;
    }
  }
}

SimResult Simulation::Run() {
  ChooseProfile();
  for (int id = 1; id <= options_.replicas; ++id) {
    Replica& r = replicas_[id];
    r.id = id;
    r.config.id = static_cast<NodeId>(id);
    for (int v = 1; v <= options_.replicas; ++v) r.config.voters.push_back(static_cast<NodeId>(v));
    r.config.election_timeout_ticks = 10;
    r.config.heartbeat_ticks = rng_.Range(1, 3);
    r.config.random_seed = options_.seed;
    r.config.max_inflight_msgs = static_cast<uint32_t>(rng_.Range(2, 64));
    r.config.max_entries_bytes_per_msg = static_cast<uint64_t>(rng_.Range(500, 64 << 10));
    r.config.snapshot_chunk_bytes = static_cast<uint64_t>(rng_.Range(256, 4096));
    r.tick_phase = rng_.Uniform(kTickMs);
    r.snapshot_every = static_cast<Index>(rng_.Range(10, 200));
  }
  for (auto& [id, r] : replicas_) StartReplica(r);
  for (int i = 0; i < options_.participants; ++i) {
    Participant p;
    p.index = i;
    p.coordinator_guess = 1 + static_cast<int>(rng_.Uniform(options_.replicas));
    participants_.push_back(std::move(p));
  }
  for (int i = 0; i < options_.clients; ++i) {
    Client c;
    c.index = i;
    c.coordinator_guess = 1 + static_cast<int>(rng_.Uniform(options_.replicas));
    clients_.push_back(std::move(c));
  }

  for (int i = 0; i < options_.chaos_ms && result_.ok; ++i) Step();
  if (!result_.ok) return result_;

  chaos_ = false;
  blocked_.clear();
  if (options_.coordinators_down_ms > 0) {
    CoordinatorsGone();
    if (!result_.ok) return result_;
  }
  Trace("--- healing: network repaired, everything restarted, no new transactions ---");
  for (auto& [id, r] : replicas_) {
    if (!r.up) {
      r.restart_at = 0;
      StartReplica(r);
    }
  }
  for (Participant& p : participants_) {
    if (!p.up) p.restart_at = now_;
  }
  for (int i = 0; i < options_.liveness_ms && result_.ok; ++i) {
    Step();
    if (result_.ok && i % 50 == 0 && Settled()) {
      FinalChecks();
      result_.stats.sim_ms = now_;
      return result_;
    }
  }
  if (result_.ok) {
    std::string detail = "did not settle after the faults healed:";
    for (const Client& c : clients_) {
      if (c.phase != CPhase::kIdle) {
        detail += fmt::format(" [client {} phase {} txid {}]", c.index, static_cast<int>(c.phase),
                              c.txid);
      }
    }
    for (const Participant& p : participants_) {
      for (const auto& [txid, t] : p.txns) {
        if (InDoubt(t.st)) {
          detail += fmt::format(" [{} {} {}{}]", p.name(), PStName(t.st), txid,
                                t.in_termination ? " in termination" : "");
        }
      }
    }
    for (auto& [id, r] : replicas_) {
      detail += fmt::format(
          " [replica {} {} term {} commit {} applied {} serving {} live {}]", id,
          r.up ? raft::RoleName(r.raft->role()) : "down", r.up ? r.raft->term() : 0,
          r.up ? r.raft->commit_index() : 0, r.applied, r.serving,
          r.up ? r.state->Read([](const TxnStateMachine& sm) { return sm.live().size(); }) : 0);
    }
    for (auto& [id, r] : replicas_) {
      if (!r.up || !r.serving) continue;
      std::vector<TxId> live = r.state->Read([](const TxnStateMachine& sm) {
        std::vector<TxId> out;
        for (const auto& [txid, rec] : sm.live()) out.push_back(txid);
        return out;
      });
      for (TxId txid : live) {
        api::GetTransactionRequest req;
        req.txid = txid;
        Reply<api::TransactionView> v = r.driver->GetTransaction(req);
        detail += fmt::format(" [live txid {} phase {}:", txid,
                              v.ok() ? static_cast<int>(v.value.phase) : -1);
        for (const api::ParticipantProgress& pp : v.value.participants) {
          detail += fmt::format(" {} vote {} waiting {} acked {} attempts {} '{}'", pp.name,
                                static_cast<int>(pp.vote), pp.waiting, pp.acknowledged, pp.attempts,
                                pp.last_error);
        }
        detail += "]";
      }
    }
    Fail("Liveness", detail);
  }
  result_.stats.sim_ms = now_;
  return result_;
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

}  // namespace tx::coordinator::sim
