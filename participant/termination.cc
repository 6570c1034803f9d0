#include "participant/termination.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

#include "ParticipantService.h"
#include "participant/termination_rules.h"

namespace tx::participant {
namespace {

// The wire state as the engine's enum, read through its integer (a peer may send any i32).
TxnState FromWire(const api::TxState::type& s) {
  int32_t v;
  static_assert(sizeof(v) == sizeof(s), "Thrift enums are 32-bit");
  std::memcpy(&v, &s, sizeof v);
  switch (v) {
    case api::TxState::ACTIVE:
      return TxnState::kActive;
    case api::TxState::PREPARED:
      return TxnState::kPrepared;
    case api::TxState::PRECOMMITTED:
      return TxnState::kPreCommitted;
    case api::TxState::COMMITTED:
      return TxnState::kCommitted;
    case api::TxState::ABORTED:
      return TxnState::kAborted;
    default:
      return TxnState::kUnknown;
  }
}

bool InDoubt(TxnState s) { return s == TxnState::kPrepared || s == TxnState::kPreCommitted; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// ThriftPeerChannel
// ---------------------------------------------------------------------------------------------

ThriftPeerChannel::ThriftPeerChannel(std::string self_name, rpc::RpcClientOptions options)
    : self_name_(std::move(self_name)), options_(options) {}

ThriftPeerChannel::~ThriftPeerChannel() = default;

StatusOr<ThriftPeerChannel::Pool*> ThriftPeerChannel::PoolFor(const std::string& address) {
  auto it = pools_.find(address);
  if (it != pools_.end()) return it->second.get();
  TX_ASSIGN_OR_RETURN(HostPort endpoint, ParseHostPort(address));
  if (pools_.size() >= kMaxPools) pools_.erase(pools_.begin());  // rebuilt on demand
  it = pools_.emplace(address, std::make_unique<Pool>(endpoint, options_)).first;
  return it->second.get();
}

Status ThriftPeerChannel::Call(const std::string& address,
                               const std::function<void(api::ParticipantServiceClient&)>& call) {
  TX_ASSIGN_OR_RETURN(Pool * pool, PoolFor(address));
  std::optional<api::TxError> error;
  Status s = pool->Call([&](api::ParticipantServiceClient& c) {
    try {
      call(c);
    } catch (const api::TxError& e) {
      error = e;
    }
  });
  if (!s.ok()) return s;
  if (error.has_value()) {
    return Status::Unavailable(fmt::format("{} answered: {}", address, error->message));
  }
  return Status::OK();
}

StatusOr<ThreePhaseState> ThriftPeerChannel::TerminationState(const std::string& address, TxId txid,
                                                              bool join) {
  api::TerminationStateRequest req;
  req.txid = txid;
  req.join = join;
  req.asker = self_name_;
  api::TerminationStateResponse resp;
  TX_RETURN_IF_ERROR(
      Call(address, [&](api::ParticipantServiceClient& c) { c.TerminationState(resp, req); }));
  return ThreePhaseState{FromWire(resp.state), resp.in_termination};
}

StatusOr<ThreePhaseState> ThriftPeerChannel::PreCommit(const std::string& address, TxId txid) {
  api::PreCommitRequest req;
  req.txid = txid;
  req.from_termination = true;
  api::PreCommitResponse resp;
  TX_RETURN_IF_ERROR(
      Call(address, [&](api::ParticipantServiceClient& c) { c.PreCommit(resp, req); }));
  return ThreePhaseState{FromWire(resp.state), resp.in_termination};
}

Status ThriftPeerChannel::Commit(const std::string& address, TxId txid) {
  api::CommitRequest req;
  req.txid = txid;
  api::CommitResponse resp;
  return Call(address, [&](api::ParticipantServiceClient& c) { c.Commit(resp, req); });
}

Status ThriftPeerChannel::Abort(const std::string& address, TxId txid) {
  api::AbortRequest req;
  req.txid = txid;
  api::AbortResponse resp;
  return Call(address, [&](api::ParticipantServiceClient& c) { c.Abort(resp, req); });
}

// ---------------------------------------------------------------------------------------------
// Terminator
// ---------------------------------------------------------------------------------------------

Terminator::Terminator(Participant* participant, std::string self_name, OutcomeSource* coordinators,
                       PeerChannel* peers, TerminatorOptions options, Clock* clock)
    : participant_(participant),
      self_name_(std::move(self_name)),
      coordinators_(coordinators),
      peers_(peers),
      options_(options),
      clock_(clock),
      waiter_(clock) {}

Terminator::~Terminator() { Stop(); }

void Terminator::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Terminator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  waiter_.Notify();
  if (thread_.joinable()) thread_.join();
}

void Terminator::NoteProbe(TxId txid) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Bounded like the in-doubt set it refers to: a probe about a txid not in doubt here is
    // dropped at the next pass.
    constexpr size_t kMaxProbed = 65536;
    if (probed_.size() >= kMaxProbed) return;
    probed_.insert(txid);
  }
  waiter_.Notify();
}

Terminator::Stats Terminator::GetStats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Terminator::Loop() {
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    (void)RunOnce();
    waiter_.WaitUntil(clock_->Now() + options_.poll_interval);
  }
}

bool Terminator::Apply(TxId txid, bool commit) {
  Result<> r = commit ? participant_->Commit(txid) : participant_->Abort(txid);
  if (!r.ok()) {
    spdlog::warn("transaction {}: applying {} failed: {}", txid, commit ? "COMMIT" : "ABORT",
                 r.error().ToString());
    return false;
  }
  return true;
}

int Terminator::RunOnce() {
  const Clock::TimePoint now = clock_->Now();
  std::vector<TxId> in_doubt = participant_->InDoubt(options_.probe_after);
  std::set<TxId> probed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    probed.swap(probed_);
  }
  // Probed ones are looked at at once, whatever their age.
  for (TxId txid : probed) {
    if (std::find(in_doubt.begin(), in_doubt.end(), txid) == in_doubt.end()) {
      in_doubt.push_back(txid);
    }
  }
  int finished = 0;
  std::set<TxId> seen;
  for (TxId txid : in_doubt) {
    Result<TxnStatus> status = participant_->GetStatus(txid);
    if (!status.ok() || !InDoubt(status.value().state) || !status.value().info.has_value() ||
        status.value().info->protocol != Protocol::kThreePhase) {
      continue;
    }
    seen.insert(txid);
    Tracked t;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Tracked& tr = tracked_[txid];
      if (probed.count(txid) != 0) tr.probed = true;
      t = tr;
    }
    if (now < t.next_attempt) continue;
    bool run_round = status.value().in_termination || t.probed;
    if (!run_round) {
      // Ask the coordinators first: while one answers, it decides.
      StatusOr<OutcomeSource::Decision> d = coordinators_->Resolve(txid);
      if (d.ok() && *d != OutcomeSource::Decision::kPending) {
        if (Apply(txid, *d == OutcomeSource::Decision::kCommitted)) ++finished;
        continue;
      }
      if (d.ok()) {
        t.unreachable_since = Clock::TimePoint{};
      } else if (t.unreachable_since == Clock::TimePoint{}) {
        t.unreachable_since = now;
      }
      run_round = t.unreachable_since != Clock::TimePoint{} &&
                  now - t.unreachable_since >= options_.termination_timeout;
      if (run_round) {
        spdlog::warn(
            "transaction {}: no coordinator reachable for {} ms; starting the termination "
            "protocol",
            txid,
            std::chrono::duration_cast<std::chrono::milliseconds>(now - t.unreachable_since)
                .count());
      }
    }
    if (run_round) {
      RoundResult r = RunRound(txid);
      if (r == RoundResult::kCommitted || r == RoundResult::kAborted) ++finished;
    }
    t.next_attempt = clock_->Now() + options_.retry_interval;
    std::lock_guard<std::mutex> lock(mu_);
    tracked_[txid].unreachable_since = t.unreachable_since;
    tracked_[txid].next_attempt = t.next_attempt;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = tracked_.begin(); it != tracked_.end();) {
    it = seen.count(it->first) != 0 ? std::next(it) : tracked_.erase(it);
  }
  return finished;
}

Terminator::RoundResult Terminator::RunRound(TxId txid) {
  Result<TxnStatus> status = participant_->GetStatus(txid);
  if (!status.ok() || !InDoubt(status.value().state) || !status.value().info.has_value() ||
      status.value().info->protocol != Protocol::kThreePhase) {
    return RoundResult::kNotInDoubt;
  }
  const std::vector<ParticipantRef> peers = status.value().info->participants;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.rounds;
  }
  auto count = [this](uint64_t Stats::*field) {
    std::lock_guard<std::mutex> lock(mu_);
    ++(stats_.*field);
  };
  // Asks one participant (this one directly).
  auto state_of = [&](const ParticipantRef& p, bool join) -> StatusOr<ThreePhaseState> {
    if (p.name == self_name_) {
      Result<ThreePhaseState> r = participant_->TerminationState(txid, join);
      if (!r.ok()) return Status::Unavailable(r.error().ToString());
      return r.value();
    }
    return peers_->TerminationState(p.address, txid, join);
  };

  // 1-2. Election: the lowest-named reachable participant still in doubt is the backup.
  for (const ParticipantRef& p : peers) {
    if (p.name >= self_name_) continue;
    StatusOr<ThreePhaseState> s = state_of(p, /*join=*/false);
    if (s.ok() && InDoubt(s->state)) {
      count(&Stats::deferred);
      return RoundResult::kDeferred;
    }
  }
  // 3. Every participant's state, each joining the round.
  std::vector<TxnState> states;
  std::vector<std::pair<const ParticipantRef*, TxnState>> collected;
  for (const ParticipantRef& p : peers) {
    StatusOr<ThreePhaseState> s = state_of(p, /*join=*/true);
    if (!s.ok()) {
      spdlog::info("transaction {}: termination round blocked, '{}' does not answer: {}", txid,
                   p.name, s.status().ToString());
      count(&Stats::blocked);
      return RoundResult::kBlocked;
    }
    states.push_back(s->state);
    collected.emplace_back(&p, s->state);
  }
  // 4. Skeen's rule.
  const TerminationDecision d = DecideTermination(states);
  if (d == TerminationDecision::kInconsistent) {
    std::string list;
    for (const auto& [p, st] : collected) {
      list += fmt::format(" {}={}", p->name, TxnStateName(st));
    }
    spdlog::error("transaction {}: termination round found states that cannot happen:{}", txid,
                  list);
    return RoundResult::kInconsistent;
  }
  const bool commit = d == TerminationDecision::kCommit;
  if (commit) {
    for (const auto& [p, st] : collected) {
      if (st != TxnState::kPrepared) continue;
      StatusOr<ThreePhaseState> s = [&]() -> StatusOr<ThreePhaseState> {
        if (p->name == self_name_) {
          Result<ThreePhaseState> r =
              participant_->PreCommit(txid, PreCommitSource::kTerminationRound);
          if (!r.ok()) return Status::Unavailable(r.error().ToString());
          return r.value();
        }
        return peers_->PreCommit(p->address, txid);
      }();
      if (!s.ok() || (s->state != TxnState::kPreCommitted && s->state != TxnState::kCommitted)) {
        // Not every participant PRECOMMITTED yet: no Commit anywhere. A later round sees the
        // PRECOMMITTED ones and decides the same.
        count(&Stats::blocked);
        return RoundResult::kBlocked;
      }
    }
  }
  spdlog::info("transaction {}: termination round decides {}", txid, commit ? "COMMIT" : "ABORT");
  count(commit ? &Stats::committed : &Stats::aborted);
  for (const auto& [p, st] : collected) {
    if (st == TxnState::kUnknown) continue;  // no say, nothing to apply
    if (p->name == self_name_) {
      (void)Apply(txid, commit);
      continue;
    }
    Status s = commit ? peers_->Commit(p->address, txid) : peers_->Abort(p->address, txid);
    if (!s.ok()) {
      // It finishes through its own round, which now sees this outcome somewhere.
      spdlog::info("transaction {}: telling '{}' failed: {}", txid, p->name, s.ToString());
    }
  }
  return commit ? RoundResult::kCommitted : RoundResult::kAborted;
}

}  // namespace tx::participant
