#include "coordinator/driver.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <unordered_set>
#include <utility>

#include "common/check.h"
#include "common/failpoint.h"
#include "common/net.h"

namespace tx::coordinator {
namespace {

using Outcome = coordlog::Outcome;
using LogVote = coordlog::Vote;
using Origin = coordlog::Origin;
using ResultCode = coordlog::ResultCode;
using ErrorCode = api::ErrorCode;
using TimePoint = Clock::TimePoint;

constexpr TimePoint kNever = TimePoint::max();

// Bounds one ListTransactions page (a view is a few hundred bytes).
constexpr int32_t kMaxListPage = 10'000;

// Callers waiting for one transaction's outcome (a client that repeats Commit after its own
// call timed out adds one each time; the server thread of the abandoned call is still waiting).
constexpr size_t kMaxWaitersPerTxn = 64;

api::TxError MakeError(ErrorCode::type code, std::string message) {
  api::TxError e;
  e.code = code;
  e.message = std::move(message);
  return e;
}

template <typename T>
Reply<T> ErrorReply(ErrorCode::type code, std::string message) {
  Reply<T> r;
  r.error = MakeError(code, std::move(message));
  return r;
}

template <typename T>
Reply<T> ErrorReply(api::TxError error) {
  Reply<T> r;
  r.error = std::move(error);
  return r;
}

template <typename T>
Reply<T> ValueReply(T value) {
  Reply<T> r;
  r.value = std::move(value);
  return r;
}

api::Decision::type ToDecision(Outcome::type o) {
  return o == Outcome::COMMITTED ? api::Decision::COMMITTED : api::Decision::ABORTED;
}

const char* OutcomeName(Outcome::type o) { return o == Outcome::COMMITTED ? "COMMIT" : "ABORT"; }

// SplitMix64: the back-off jitter, seeded so that a simulation replays.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// Participant errors after which the same call may succeed.
bool IsRetryable(ErrorCode::type code) {
  return code == ErrorCode::UNAVAILABLE || code == ErrorCode::RESOURCE_EXHAUSTED ||
         code == ErrorCode::INTERNAL || code == ErrorCode::NOT_LEADER;
}

std::string DescribeError(const api::TxError& e) {
  return fmt::format("{} ({})", e.message, static_cast<int>(e.code));
}

// The integer in a Thrift enum field, read without loading it as the enum type: a peer may send
// any i32, and loading one outside the enum's range is undefined behaviour.
template <typename Enum>
int32_t RawEnum(const Enum& e) {
  static_assert(sizeof(Enum) == sizeof(int32_t), "Thrift enums are 32-bit");
  int32_t v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

bool IsKnownProtocol(const api::Protocol::type& p) {
  const int32_t v = RawEnum(p);
  return v == api::Protocol::TWO_PHASE || v == api::Protocol::THREE_PHASE;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Transactions in memory
// ---------------------------------------------------------------------------------------------

enum class Phase : uint8_t {
  kCollecting,   // Prepare sent to every participant; votes coming in
  kOnePhase,     // CommitOnePhase at the only participant (Abort once `fencing`)
  kSingleAbort,  // Abort of an undecided one-participant transaction
  kDeciding,     // Decide proposed, waiting for it to be applied
  kPhaseTwo,     // outcome logged: Commit/Abort until every target acknowledged
  kEnding,       // End proposed
  // 3PC, between the votes and the decision:
  kPreCommitLogging,  // PreCommit proposed, waiting for it to be applied
  kPreCommitting,     // PRECOMMIT logged: PreCommit until every YES voter acknowledged
};

struct Part {
  std::string name;
  std::string address;
  LogVote::type vote = LogVote::NONE;
  bool failed = false;        // Prepare answered an error that counts as a refusal
  bool in_flight = false;     // a call to it is outstanding
  bool target = false;        // phase two must reach it
  bool done = false;          // phase two acknowledged (or given up, for an abort)
  bool precommitted = false;  // 3PC: acknowledged PreCommit (PRECOMMITTED or COMMITTED)
  int attempts = 0;           // calls in the current phase
  TimePoint next_attempt{};
  std::string last_error;
  std::string no_reason;
  ErrorCode::type no_code = ErrorCode::INTERNAL;
};

struct Txn {
  TxId txid = 0;
  Phase phase = Phase::kCollecting;
  api::Protocol::type protocol = api::Protocol::TWO_PHASE;
  TimePoint first_seen{};
  TimePoint deadline{};
  TimePoint votes_done{};
  TimePoint decided_at{};
  std::vector<Part> parts;
  std::vector<Done<api::CommitTransactionResponse>> commit_waiters;
  std::vector<Done<api::AbortTransactionResponse>> abort_waiters;
  bool abort_requested = false;
  bool fencing = false;
  bool taken_over = false;  // phase two inherited from the state at BecomeLeader

  // The decision: proposed (kDeciding) and then as applied.
  Outcome::type outcome = Outcome::ABORTED;
  bool decided = false;
  Origin::type origin = Origin::CLIENT_COMMIT;
  ErrorCode::type reason_code = static_cast<ErrorCode::type>(0);
  std::string reason;
  bool proposal_in_flight = false;
  int proposal_attempts = 0;
  TimePoint propose_retry_at{};
  bool record_live = false;  // a live record in the state: END must follow phase two
  uint64_t decided_index = 0;
  int64_t decided_unix_ms = 0;

  uint64_t gen = 0;          // bumped on every phase change; stale callbacks are dropped
  TimePoint timer = kNever;  // scheduled wake-up, also a key of timers_
};

struct Begun {
  TimePoint begun_at;
  TimePoint deadline;
  api::Protocol::type protocol = api::Protocol::TWO_PHASE;
};

using Actions = std::vector<std::function<void()>>;

class Driver::Impl {
 public:
  Impl(ReplicatedState* state, CommandLog* log, ParticipantChannel* channel, DriverOptions options);

  void BecomeLeader(uint64_t term);
  void StepDown();
  bool serving() const {
    std::lock_guard<std::mutex> lock(mu_);
    return serving_;
  }

  Reply<api::BeginResponse> Begin(const api::BeginRequest& request);
  void Commit(const api::CommitTransactionRequest& request,
              Done<api::CommitTransactionResponse> done);
  void Abort(const api::AbortTransactionRequest& request, Done<api::AbortTransactionResponse> done);
  void GetOutcome(const api::GetOutcomeRequest& request, Done<api::GetOutcomeResponse> done);
  void Resolve(const api::ResolveRequest& request, Done<api::ResolveResponse> done);
  void RegisterParticipant(const api::RegisterParticipantRequest& request,
                           Done<api::RegisterParticipantResponse> done);
  Reply<api::ListTransactionsResponse> ListTransactions(
      const api::ListTransactionsRequest& request);
  Reply<api::TransactionView> GetTransaction(const api::GetTransactionRequest& request);
  void Tick();
  Stats GetStats() const;

 private:
  // Everything below with mu_ held unless it says otherwise. Side effects (calls to
  // participants, proposals, callbacks) are appended to `a` and run after mu_ is released.

  api::TxError NotServingError() const;  // without mu_: asks the runtime for the leader
  static void Run(Actions& a) {
    for (auto& f : a) f();
    a.clear();
  }

  // Validates a participant list against the directory; fills parts (vote NONE).
  std::optional<api::TxError> ResolveParticipants(const std::vector<std::string>& names,
                                                  std::vector<Part>* parts) const;
  Txn* NewTxn(TxId txid, Phase phase, std::vector<Part> parts, TimePoint deadline);
  Txn* Find(TxId txid, uint64_t epoch, uint64_t gen);
  void Remove(Txn& t);
  void Service(Txn& t, Actions& a);
  void Schedule(Txn& t);
  void NextPhase(Txn& t, Phase phase);
  // NextPhase into a phase that begins with a proposal to the log (a decision, a pre-commit, an
  // end record): its proposal retries start afresh too.
  void NextLoggingPhase(Txn& t, Phase phase);
  TimePoint Backoff(int attempts, std::chrono::milliseconds max);

  // Collecting votes.
  void SendPrepare(Txn& t, size_t i, Actions& a);
  void OnPrepareReply(TxId txid, uint64_t epoch, uint64_t gen, size_t i,
                      ParticipantReply<api::PrepareResponse> reply);
  void ServiceCollecting(Txn& t, Actions& a);

  // One participant.
  void SendOnePhase(Txn& t, Actions& a);
  void OnOnePhaseReply(TxId txid, uint64_t epoch, uint64_t gen,
                       ParticipantReply<api::CommitOnePhaseResponse> reply);
  void OnSingleAbortReply(TxId txid, uint64_t epoch, uint64_t gen,
                          ParticipantReply<api::AbortResponse> reply);

  // Deciding.
  void StartDecision(Txn& t, Outcome::type outcome, Origin::type origin,
                     ErrorCode::type reason_code, std::string reason, Actions& a);
  void ProposeDecision(Txn& t, Actions& a);
  void OnDecisionResult(TxId txid, uint64_t epoch, uint64_t gen,
                        StatusOr<coordlog::CommandResult> result);
  void OnDecided(Txn& t, Outcome::type outcome, Actions& a);
  // Answers every waiter with `outcome` and forgets the transaction (no log record).
  void FinishUnlogged(Txn& t, Outcome::type outcome, ErrorCode::type reason_code,
                      std::string reason, const char* path, Actions& a);
  void AnswerWaiters(Txn& t, Outcome::type outcome, Actions& a);
  void CountOutcome(Outcome::type outcome, const char* path);

  // 3PC: PRECOMMIT logged, then PreCommit at every YES voter, then COMMIT.
  void StartPreCommit(Txn& t, Actions& a);
  void ProposePreCommit(Txn& t, Actions& a);
  void OnPreCommitResult(TxId txid, uint64_t epoch, uint64_t gen,
                         StatusOr<coordlog::CommandResult> result);
  // Continues from a PRECOMMIT record in the state (logged by this or an earlier leader).
  void EnterPreCommitting(Txn& t, const PreCommitRecord& rec, Actions& a);
  void ServicePreCommitting(Txn& t, Actions& a);
  void SendPreCommit(Txn& t, size_t i, Actions& a);
  void OnPreCommitReply(TxId txid, uint64_t epoch, uint64_t gen, size_t i,
                        ParticipantReply<api::PreCommitResponse> reply);

  // Phase two and END.
  void SendPhaseTwo(Txn& t, size_t i, Actions& a);
  void OnPhaseTwoReply(TxId txid, uint64_t epoch, uint64_t gen, size_t i, Status transport,
                       std::optional<api::TxError> error);
  void ServicePhaseTwo(Txn& t, Actions& a);
  void ProposeEnd(Txn& t, Actions& a);
  void OnEndResult(TxId txid, uint64_t epoch, uint64_t gen,
                   StatusOr<coordlog::CommandResult> result);

  // Proposing a transaction's log entries (DECIDE, PRECOMMIT, END), one in flight at a time:
  // marks t's proposal in flight and queues the proposal; its fate goes to `on_result` (on
  // the log's callback thread), which finds the transaction again by (txid, epoch, gen), so a
  // step-down or a newer generation in between leaves it alone.
  using ProposalResultHandler = void (Impl::*)(TxId txid, uint64_t epoch, uint64_t gen,
                                               StatusOr<coordlog::CommandResult> result);
  void ProposeForTxn(Txn& t, coordlog::Command c, ProposalResultHandler on_result, Actions& a);
  // The common start of a proposal result handler: under mu_, finds the transaction that made
  // the proposal; if it is still that one (same epoch and generation) and in `phase`, marks its
  // proposal settled and calls handle(t, actions); then runs the actions, unlocked.
  template <typename Handle>
  void WithProposer(TxId txid, uint64_t epoch, uint64_t gen, Phase phase, Handle handle) {
    Actions a;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Txn* t = Find(txid, epoch, gen);
      if (t == nullptr || t->phase != phase) return;
      t->proposal_in_flight = false;
      handle(*t, a);
    }
    Run(a);
  }
  // A proposal answered FORGOTTEN: the log no longer knows the txid's outcome. Its waiters
  // learn UNKNOWN_TRANSACTION and the transaction is dropped.
  void AnswerForgotten(Txn& t, Actions& a);
  // The participants as a DECIDE or PRECOMMIT entry records them: address, vote, whom to tell.
  static std::vector<coordlog::Participant> LoggedParticipants(const Txn& t);
  int64_t UnixMillisNow() const;

  // Starts phase two for every live record in the state that no transaction in memory drives;
  // returns how many. At BecomeLeader these are the previous leaders' records; later, decisions
  // this replica proposed in an earlier term that were committed in the current one (a
  // proposal queued when leadership changed enters the log in the new term, after the state
  // was scanned).
  size_t AdoptOrphans(Actions& a);

  // Txid blocks.
  std::optional<TxId> TakeTxid();
  int64_t TxidsLeft() const;
  void ReserveIfNeeded(Actions& a);

  api::TransactionView ViewOf(const Txn& t, TimePoint now) const;
  static api::TransactionView ViewOfRecord(const TxnRecord& rec);
  static api::TransactionView ViewOfPreCommit(const PreCommitRecord& rec);

  ReplicatedState* const state_;
  CommandLog* const log_;
  ParticipantChannel* const channel_;
  const DriverOptions opt_;
  Clock* const clock_;

  std::unique_ptr<MetricsRegistry> own_metrics_;
  CounterFamily* outcomes_family_;
  Histogram* prepare_seconds_;
  Histogram* decision_seconds_;
  Histogram* phase_two_seconds_;
  Histogram* commit_seconds_;
  Counter* anomalies_counter_;
  Gauge* active_gauge_;

  mutable std::mutex mu_;
  bool serving_ = false;                                  // GUARDED_BY(mu_)
  uint64_t epoch_ = 0;                                    // GUARDED_BY(mu_)
  uint64_t term_ = 0;                                     // GUARDED_BY(mu_)
  TimePoint serving_since_{};                             // GUARDED_BY(mu_)
  TimePoint next_orphan_scan_{};                          // GUARDED_BY(mu_)
  std::deque<std::pair<TxId, TxId>> blocks_;              // GUARDED_BY(mu_): [next, end)
  bool reserving_ = false;                                // GUARDED_BY(mu_)
  std::unordered_map<TxId, Begun> begun_;                 // GUARDED_BY(mu_)
  std::set<std::pair<TimePoint, TxId>> begun_deadlines_;  // GUARDED_BY(mu_)
  std::unordered_set<TxId> expired_;                      // GUARDED_BY(mu_)
  std::deque<TxId> expired_order_;                        // GUARDED_BY(mu_)
  std::map<TxId, std::unique_ptr<Txn>> active_;           // GUARDED_BY(mu_)
  std::set<std::pair<TimePoint, TxId>> timers_;           // GUARDED_BY(mu_)
  Rng rng_;                                               // GUARDED_BY(mu_)
  Stats stats_;                                           // GUARDED_BY(mu_)
};

Driver::Impl::Impl(ReplicatedState* state, CommandLog* log, ParticipantChannel* channel,
                   DriverOptions options)
    : state_(state),
      log_(log),
      channel_(channel),
      opt_(std::move(options)),
      clock_(opt_.clock),
      rng_(opt_.random_seed) {
  MetricsRegistry* m = opt_.metrics;
  if (m == nullptr) {
    own_metrics_ = std::make_unique<MetricsRegistry>();
    m = own_metrics_.get();
  }
  outcomes_family_ = m->AddCounterFamily(
      "tx_coordinator_transactions_total",
      "Transactions answered by the leader, by outcome and by commit path.", {"outcome", "path"});
  auto* phases = m->AddHistogramFamily(
      "tx_coordinator_phase_seconds",
      "Time spent per commit phase on the leader: prepare (Commit received to the last vote), "
      "decision (to the decision applied), phase_two (to the last acknowledgement).",
      {"phase"}, kLatencyBucketsSeconds);
  prepare_seconds_ = phases->WithLabels({"prepare"});
  decision_seconds_ = phases->WithLabels({"decision"});
  phase_two_seconds_ = phases->WithLabels({"phase_two"});
  commit_seconds_ = m->AddHistogram("tx_coordinator_commit_seconds",
                                    "Commit received to the client's answer, on the leader.",
                                    kLatencyBucketsSeconds);
  anomalies_counter_ = m->AddCounter(
      "tx_coordinator_anomalies_total",
      "Participants that answered phase two against the logged outcome (never expected).");
  active_gauge_ = m->AddGauge("tx_coordinator_active_transactions",
                              "Transactions past Begin in the leader's memory.");
}

api::TxError Driver::Impl::NotServingError() const {
  std::optional<std::string> hint = opt_.leader_hint ? opt_.leader_hint() : std::nullopt;
  if (hint.has_value() && !hint->empty()) {
    api::TxError e = MakeError(ErrorCode::NOT_LEADER, "not the leader");
    e.__set_leader_hint(*hint);
    return e;
  }
  return MakeError(ErrorCode::UNAVAILABLE, "no leader is serving here yet; retry");
}

TimePoint Driver::Impl::Backoff(int attempts, std::chrono::milliseconds max) {
  int64_t d = opt_.retry_initial.count();
  for (int i = 1; i < attempts && d < max.count(); ++i) d *= 2;
  d = std::min<int64_t>(d, max.count());
  d = std::max<int64_t>(d, 1);
  // Uniform in [d/2, d]: spreads the retries of many transactions to one participant.
  int64_t jittered = d / 2 + static_cast<int64_t>(rng_.Next() % static_cast<uint64_t>(d / 2 + 1));
  return clock_->Now() + std::chrono::milliseconds(jittered);
}

// ---------------------------------------------------------------------------------------------
// Leadership
// ---------------------------------------------------------------------------------------------

void Driver::Impl::BecomeLeader(uint64_t term) {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (serving_ && term_ == term) return;
    serving_ = true;
    ++epoch_;
    term_ = term;
    serving_since_ = clock_->Now();
    TX_CHECK(active_.empty() && begun_.empty() && timers_.empty(),
             "BecomeLeader with {} transactions still in memory", active_.size());
    // Take over phase two of every decided, unfinished transaction.
    size_t adopted = AdoptOrphans(a);
    next_orphan_scan_ = serving_since_ + opt_.orphan_scan_interval;
    spdlog::info(
        "coordinator serving as leader in term {}; re-driving phase two of {} decided "
        "transactions",
        term, adopted);
    ReserveIfNeeded(a);
  }
  Run(a);
}

void Driver::Impl::StepDown() {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!serving_) return;
    serving_ = false;
    ++epoch_;
    const api::TxError lost =
        MakeError(ErrorCode::UNAVAILABLE,
                  "this replica stopped leading before the outcome was known; repeat Commit or ask "
                  "GetOutcome at the new leader");
    for (auto& [txid, t] : active_) {
      for (auto& w : t->commit_waiters) {
        a.push_back(
            [w = std::move(w), lost] { w(ErrorReply<api::CommitTransactionResponse>(lost)); });
      }
      for (auto& w : t->abort_waiters) {
        a.push_back(
            [w = std::move(w), lost] { w(ErrorReply<api::AbortTransactionResponse>(lost)); });
      }
    }
    spdlog::info("coordinator stops leading; dropping {} transactions in memory", active_.size());
    active_.clear();
    timers_.clear();
    begun_.clear();
    begun_deadlines_.clear();
    expired_.clear();
    expired_order_.clear();
    blocks_.clear();
    reserving_ = false;
    active_gauge_->Set(0);
  }
  Run(a);
}

size_t Driver::Impl::AdoptOrphans(Actions& a) {
  std::vector<TxnRecord> records;
  std::vector<PreCommitRecord> precommits;
  state_->Read([&](const TxnStateMachine& sm) {
    for (const auto& [txid, rec] : sm.live()) {
      if (active_.count(txid) == 0) records.push_back(rec);
    }
    for (const auto& [txid, rec] : sm.precommitted()) {
      if (active_.count(txid) == 0) precommits.push_back(rec);
    }
  });
  for (const PreCommitRecord& rec : precommits) {
    // 3PC re-driven from PRECOMMIT: PreCommit again everywhere (participants answer the same, or
    // what their termination round reached), then COMMIT or the adopted ABORT.
    Txn* t = NewTxn(rec.precommit.txid, Phase::kPreCommitting, {}, kNever);
    t->protocol = api::Protocol::THREE_PHASE;
    t->taken_over = true;
    ++stats_.phase_two_redriven;
    EnterPreCommitting(*t, rec, a);
  }
  const TimePoint now = clock_->Now();
  for (TxnRecord& rec : records) {
    std::vector<Part> parts;
    for (const coordlog::Participant& p : rec.decision.participants) {
      Part part;
      part.name = p.name;
      part.address = p.address;
      part.vote = p.vote;
      part.target = p.notify;
      parts.push_back(std::move(part));
    }
    Txn* t = NewTxn(rec.decision.txid, Phase::kPhaseTwo, std::move(parts), kNever);
    t->decided = true;
    t->outcome = rec.decision.outcome;
    t->origin = rec.decision.origin;
    t->reason_code = static_cast<ErrorCode::type>(rec.decision.reason_code);
    t->reason = rec.decision.reason;
    t->record_live = true;
    t->taken_over = true;
    t->decided_index = rec.decided_index;
    t->decided_unix_ms = rec.decision.decided_unix_ms;
    t->decided_at = now;
    ++stats_.phase_two_redriven;
    Service(*t, a);
  }
  return records.size() + precommits.size();
}

// ---------------------------------------------------------------------------------------------
// Txids
// ---------------------------------------------------------------------------------------------

int64_t Driver::Impl::TxidsLeft() const {
  int64_t n = 0;
  for (const auto& [next, end] : blocks_) n += end - next;
  return n;
}

std::optional<TxId> Driver::Impl::TakeTxid() {
  while (!blocks_.empty() && blocks_.front().first >= blocks_.front().second) blocks_.pop_front();
  if (blocks_.empty()) return std::nullopt;
  return blocks_.front().first++;
}

void Driver::Impl::ReserveIfNeeded(Actions& a) {
  if (!serving_ || reserving_ || TxidsLeft() >= opt_.txid_block_size / 2) return;
  reserving_ = true;
  coordlog::Command c;
  coordlog::ReserveTxIds r;
  r.count = opt_.txid_block_size;
  c.__set_reserve_txids(r);
  const uint64_t epoch = epoch_;
  a.push_back([this, c = std::move(c), epoch]() mutable {
    log_->Propose(std::move(c), [this, epoch](StatusOr<coordlog::CommandResult> result) {
      std::lock_guard<std::mutex> lock(mu_);
      if (epoch != epoch_) return;
      reserving_ = false;  // Tick retries if this failed
      if (!result.ok()) {
        spdlog::warn("txid reservation failed: {}", result.status().ToString());
        return;
      }
      if (result->code != ResultCode::OK || !result->__isset.first_txid) {
        spdlog::error("txid reservation refused: {}", result->message);
        return;
      }
      blocks_.emplace_back(result->first_txid, result->first_txid + result->txid_count);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Client calls
// ---------------------------------------------------------------------------------------------

Reply<api::BeginResponse> Driver::Impl::Begin(const api::BeginRequest& request) {
  Actions a;
  Reply<api::BeginResponse> out;
  bool not_serving = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!serving_) {
      not_serving = true;
    } else if (!IsKnownProtocol(request.options.protocol)) {
      out.error = MakeError(ErrorCode::INVALID_ARGUMENT,
                            fmt::format("unknown protocol {}", RawEnum(request.options.protocol)));
    } else if (request.options.timeout_ms < 0 ||
               request.options.timeout_ms > opt_.max_txn_timeout.count()) {
      out.error = MakeError(ErrorCode::INVALID_ARGUMENT,
                            fmt::format("timeout_ms {} outside 0..{}", request.options.timeout_ms,
                                        opt_.max_txn_timeout.count()));
    } else if (begun_.size() >= opt_.max_begun_transactions) {
      out.error =
          MakeError(ErrorCode::RESOURCE_EXHAUSTED,
                    fmt::format("{} transactions are begun and not committed", begun_.size()));
    } else if (std::optional<TxId> txid = TakeTxid(); !txid.has_value()) {
      out.error = MakeError(ErrorCode::UNAVAILABLE, "reserving transaction ids; retry");
    } else {
      const TimePoint now = clock_->Now();
      const std::chrono::milliseconds timeout =
          request.options.timeout_ms > 0 ? std::chrono::milliseconds(request.options.timeout_ms)
                                         : opt_.default_txn_timeout;
      Begun b{now, now + timeout, request.options.protocol};
      begun_.emplace(*txid, b);
      begun_deadlines_.emplace(b.deadline, *txid);
      out.value.txid = *txid;
      out.value.timeout_ms = static_cast<int32_t>(timeout.count());
      state_->Read([&](const TxnStateMachine& sm) {
        out.value.directory_version = sm.directory_version();
        if (sm.directory_version() != request.directory_version) {
          std::vector<api::ParticipantRef> refs;
          for (const auto& [name, address] : sm.directory()) {
            api::ParticipantRef r;
            r.name = name;
            r.address = address;
            refs.push_back(std::move(r));
          }
          out.value.__set_participants(std::move(refs));
        }
      });
    }
    ReserveIfNeeded(a);
  }
  Run(a);
  if (not_serving) out.error = NotServingError();
  return out;
}

std::optional<api::TxError> Driver::Impl::ResolveParticipants(const std::vector<std::string>& names,
                                                              std::vector<Part>* parts) const {
  if (names.size() > opt_.max_participants_per_transaction) {
    return MakeError(ErrorCode::TOO_LARGE, fmt::format("{} participants (at most {})", names.size(),
                                                       opt_.max_participants_per_transaction));
  }
  std::set<std::string> seen;
  for (const std::string& n : names) {
    if (!seen.insert(n).second) {
      return MakeError(ErrorCode::INVALID_ARGUMENT, fmt::format("participant '{}' named twice", n));
    }
  }
  return state_->Read([&](const TxnStateMachine& sm) -> std::optional<api::TxError> {
    for (const std::string& n : names) {
      std::optional<std::string> address = sm.AddressOf(n);
      if (!address.has_value()) {
        return MakeError(ErrorCode::INVALID_ARGUMENT,
                         fmt::format("participant '{}' is not registered", n.substr(0, 128)));
      }
      Part p;
      p.name = n;
      p.address = *address;
      parts->push_back(std::move(p));
    }
    return std::nullopt;
  });
}

Txn* Driver::Impl::NewTxn(TxId txid, Phase phase, std::vector<Part> parts, TimePoint deadline) {
  auto t = std::make_unique<Txn>();
  t->txid = txid;
  t->phase = phase;
  t->parts = std::move(parts);
  t->first_seen = clock_->Now();
  t->deadline = deadline;
  Txn* raw = t.get();
  active_[txid] = std::move(t);
  active_gauge_->Set(static_cast<double>(active_.size()));
  return raw;
}

Txn* Driver::Impl::Find(TxId txid, uint64_t epoch, uint64_t gen) {
  if (epoch != epoch_ || !serving_) return nullptr;
  auto it = active_.find(txid);
  if (it == active_.end() || it->second->gen != gen) return nullptr;
  return it->second.get();
}

void Driver::Impl::Remove(Txn& t) {
  if (t.timer != kNever) timers_.erase({t.timer, t.txid});
  active_.erase(t.txid);  // destroys t
  active_gauge_->Set(static_cast<double>(active_.size()));
}

void Driver::Impl::NextPhase(Txn& t, Phase phase) {
  t.phase = phase;
  ++t.gen;
  for (Part& p : t.parts) {
    p.in_flight = false;
    p.attempts = 0;
    p.next_attempt = TimePoint{};
  }
}

void Driver::Impl::NextLoggingPhase(Txn& t, Phase phase) {
  NextPhase(t, phase);
  t.proposal_attempts = 0;
  t.propose_retry_at = TimePoint{};
}

void Driver::Impl::Commit(const api::CommitTransactionRequest& request,
                          Done<api::CommitTransactionResponse> done) {
  using Resp = api::CommitTransactionResponse;
  Actions a;
  bool not_serving = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto answer = [&](Reply<Resp> r) { a.push_back([done, r = std::move(r)] { done(r); }); };
    auto decided = [&](Outcome::type o, ErrorCode::type code, std::string reason) {
      Resp resp;
      resp.decision = ToDecision(o);
      if (o == Outcome::ABORTED && code != 0) resp.__set_reason_code(code);
      if (o == Outcome::ABORTED && !reason.empty()) resp.__set_reason(std::move(reason));
      answer(ValueReply(std::move(resp)));
    };
    if (!serving_) {
      not_serving = true;
    } else if (request.txid <= 0) {
      answer(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT, "txid must be > 0"));
    } else if (!IsKnownProtocol(request.protocol)) {
      answer(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                              fmt::format("unknown protocol {}", RawEnum(request.protocol))));
    } else {
      if (active_.count(request.txid) == 0 && state_->Read([&](const TxnStateMachine& sm) {
            return sm.Lookup(request.txid).knowledge == TxnKnowledge::kPreCommitted;
          })) {
        // Pre-committed by an earlier leader and not picked up yet: drive it now, and wait.
        AdoptOrphans(a);
      }
      std::vector<Part> parts;
      std::optional<api::TxError> bad = ResolveParticipants(request.participants, &parts);
      TxnLookup look;
      std::string record_reason;
      ErrorCode::type record_code = static_cast<ErrorCode::type>(0);
      state_->Read([&](const TxnStateMachine& sm) {
        look = sm.Lookup(request.txid);
        if (look.record != nullptr) {
          record_reason = look.record->decision.reason;
          record_code = static_cast<ErrorCode::type>(look.record->decision.reason_code);
        }
      });
      auto it = active_.find(request.txid);
      if (look.outcome.has_value()) {
        decided(*look.outcome, record_code, record_reason);
      } else if (look.knowledge == TxnKnowledge::kNeverIssued) {
        answer(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                                fmt::format("txid {} was never issued", request.txid)));
      } else if (look.knowledge == TxnKnowledge::kForgotten) {
        answer(ErrorReply<Resp>(
            ErrorCode::UNKNOWN_TRANSACTION,
            fmt::format("the outcome of txid {} is no longer remembered", request.txid)));
      } else if (bad.has_value()) {
        answer(ErrorReply<Resp>(*bad));
      } else if (it != active_.end()) {
        // A repeated Commit (or one racing an Abort): wait for the same outcome.
        Txn& t = *it->second;
        if (t.decided && (t.phase == Phase::kPhaseTwo || t.phase == Phase::kEnding)) {
          decided(t.outcome, t.reason_code, t.reason);
        } else if (t.commit_waiters.size() + t.abort_waiters.size() >= kMaxWaitersPerTxn) {
          answer(ErrorReply<Resp>(ErrorCode::UNAVAILABLE,
                                  "the outcome is not known yet; too many callers wait for it"));
        } else {
          t.commit_waiters.push_back(std::move(done));
        }
      } else if (expired_.count(request.txid) != 0) {
        decided(Outcome::ABORTED, ErrorCode::ABORTED, "the transaction timed out before Commit");
      } else if (active_.size() >= opt_.max_active_transactions) {
        answer(ErrorReply<Resp>(
            ErrorCode::RESOURCE_EXHAUSTED,
            fmt::format("{} transactions are in progress; retry later", active_.size())));
      } else {
        const TimePoint now = clock_->Now();
        TimePoint deadline = now + opt_.default_txn_timeout;
        if (auto b = begun_.find(request.txid); b != begun_.end()) {
          deadline = b->second.deadline;
          begun_deadlines_.erase({b->second.deadline, request.txid});
          begun_.erase(b);
        }
        if (parts.empty()) {
          CountOutcome(Outcome::COMMITTED, "empty");
          decided(Outcome::COMMITTED, ErrorCode::INTERNAL, "");
        } else if (now >= deadline) {
          CountOutcome(Outcome::ABORTED, "timeout");
          decided(Outcome::ABORTED, ErrorCode::ABORTED, "the transaction timed out before Commit");
        } else {
          const Phase phase = parts.size() == 1 ? Phase::kOnePhase : Phase::kCollecting;
          Txn* t = NewTxn(request.txid, phase, std::move(parts), deadline);
          t->protocol = request.protocol;
          t->commit_waiters.push_back(std::move(done));
          Service(*t, a);
        }
      }
    }
  }
  Run(a);
  if (not_serving) done(ErrorReply<Resp>(NotServingError()));
}

void Driver::Impl::Abort(const api::AbortTransactionRequest& request,
                         Done<api::AbortTransactionResponse> done) {
  using Resp = api::AbortTransactionResponse;
  Actions a;
  bool not_serving = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto answer = [&](Reply<Resp> r) { a.push_back([done, r = std::move(r)] { done(r); }); };
    auto decided = [&](Outcome::type o) {
      Resp resp;
      resp.decision = ToDecision(o);
      answer(ValueReply(std::move(resp)));
    };
    if (!serving_) {
      not_serving = true;
    } else if (request.txid <= 0) {
      answer(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT, "txid must be > 0"));
    } else {
      std::vector<Part> parts;
      std::optional<api::TxError> bad = ResolveParticipants(request.participants, &parts);
      TxnLookup look = state_->Read([&](const TxnStateMachine& sm) {
        TxnLookup l = sm.Lookup(request.txid);
        l.record = nullptr;  // not used past the lock
        l.precommit = nullptr;
        return l;
      });
      if (look.knowledge == TxnKnowledge::kPreCommitted && active_.count(request.txid) == 0) {
        // 3PC past PRECOMMIT cannot be aborted by the client: drive it and answer its outcome.
        AdoptOrphans(a);
      }
      auto it = active_.find(request.txid);
      if (look.outcome.has_value()) {
        decided(*look.outcome);
      } else if (look.knowledge == TxnKnowledge::kNeverIssued) {
        answer(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                                fmt::format("txid {} was never issued", request.txid)));
      } else if (look.knowledge == TxnKnowledge::kForgotten) {
        answer(ErrorReply<Resp>(
            ErrorCode::UNKNOWN_TRANSACTION,
            fmt::format("the outcome of txid {} is no longer remembered", request.txid)));
      } else if (bad.has_value()) {
        answer(ErrorReply<Resp>(*bad));
      } else {
        if (auto b = begun_.find(request.txid); b != begun_.end()) {
          begun_deadlines_.erase({b->second.deadline, request.txid});
          begun_.erase(b);
        }
        if (it != active_.end()) {
          Txn& t = *it->second;
          if (t.decided && (t.phase == Phase::kPhaseTwo || t.phase == Phase::kEnding)) {
            decided(t.outcome);
          } else {
            if (t.phase == Phase::kCollecting) t.abort_requested = true;
            if (t.commit_waiters.size() + t.abort_waiters.size() >= kMaxWaitersPerTxn) {
              answer(ErrorReply<Resp>(ErrorCode::UNAVAILABLE,
                                      "the outcome is not known yet; too many callers wait"));
            } else {
              t.abort_waiters.push_back(std::move(done));
            }
            Service(t, a);
          }
        } else if (parts.empty()) {
          decided(Outcome::ABORTED);
        } else if (active_.size() >= opt_.max_active_transactions) {
          answer(ErrorReply<Resp>(ErrorCode::RESOURCE_EXHAUSTED,
                                  "too many transactions in progress; retry later"));
        } else if (parts.size() == 1) {
          Txn* t = NewTxn(request.txid, Phase::kSingleAbort, std::move(parts), kNever);
          t->abort_waiters.push_back(std::move(done));
          Service(*t, a);
        } else {
          // Participants may have been prepared by an earlier leader: the ABORT must be in the
          // log before any of them is told (a Commit repeated here must not decide otherwise).
          Txn* t = NewTxn(request.txid, Phase::kCollecting, std::move(parts), kNever);
          t->abort_waiters.push_back(std::move(done));
          StartDecision(*t, Outcome::ABORTED, Origin::CLIENT_ABORT, ErrorCode::ABORTED,
                        "aborted by the client", a);
        }
      }
    }
  }
  Run(a);
  if (not_serving) done(ErrorReply<Resp>(NotServingError()));
}

void Driver::Impl::GetOutcome(const api::GetOutcomeRequest& request,
                              Done<api::GetOutcomeResponse> done) {
  using Resp = api::GetOutcomeResponse;
  // The answer from the state and this leader's memory; nullopt when nothing is known here.
  auto known = [this](TxId txid) -> std::optional<Reply<Resp>> {
    Resp resp;
    TxnLookup look;
    std::string reason;
    int32_t code = 0;
    state_->Read([&](const TxnStateMachine& sm) {
      look = sm.Lookup(txid);
      if (look.record != nullptr) {
        reason = look.record->decision.reason;
        code = look.record->decision.reason_code;
      }
    });
    if (look.outcome.has_value()) {
      resp.decision = ToDecision(*look.outcome);
      if (*look.outcome == Outcome::ABORTED && code != 0) {
        resp.__set_reason_code(static_cast<ErrorCode::type>(code));
      }
      if (*look.outcome == Outcome::ABORTED && !reason.empty()) resp.__set_reason(reason);
      return ValueReply(std::move(resp));
    }
    if (look.knowledge == TxnKnowledge::kNeverIssued) {
      return ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                              fmt::format("txid {} was never issued", txid));
    }
    if (look.knowledge == TxnKnowledge::kForgotten) {
      return ErrorReply<Resp>(ErrorCode::UNKNOWN_TRANSACTION,
                              fmt::format("the outcome of txid {} is no longer remembered", txid));
    }
    if (active_.count(txid) != 0 || look.knowledge == TxnKnowledge::kPreCommitted) {
      resp.decision = api::Decision::PENDING;
      return ValueReply(std::move(resp));
    }
    return std::nullopt;
  };
  Actions a;
  bool not_serving = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!serving_) {
      not_serving = true;
    } else if (request.txid <= 0) {
      a.push_back(
          [done] { done(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT, "txid must be > 0")); });
    } else if (std::optional<Reply<Resp>> r = known(request.txid); r.has_value()) {
      a.push_back([done, r = std::move(*r)] { done(r); });
    } else {
      // UNDECIDED only after a barrier: a replica that lost leadership without noticing must
      // not claim that nothing was decided.
      const uint64_t epoch = epoch_;
      const TxId txid = request.txid;
      a.push_back([this, done, epoch, txid, known] {
        log_->Barrier([this, done, epoch, txid, known](Status s) {
          Reply<Resp> reply;
          {
            std::lock_guard<std::mutex> relock(mu_);
            if (!s.ok() || epoch != epoch_) {
              reply = ErrorReply<Resp>(ErrorCode::UNAVAILABLE,
                                       "could not confirm leadership: " + s.ToString());
            } else if (std::optional<Reply<Resp>> k = known(txid); k.has_value()) {
              reply = std::move(*k);
            } else {
              reply.value.decision = api::Decision::UNDECIDED;
            }
          }
          done(std::move(reply));
        });
      });
    }
  }
  Run(a);
  if (not_serving) done(ErrorReply<Resp>(NotServingError()));
}

void Driver::Impl::Resolve(const api::ResolveRequest& request, Done<api::ResolveResponse> done) {
  using Resp = api::ResolveResponse;
  Actions a;
  bool not_serving = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto decided = [&](Outcome::type o) {
      Resp resp;
      resp.decision = ToDecision(o);
      a.push_back([done, resp] { done(ValueReply(resp)); });
    };
    ++stats_.resolves;
    TxnLookup look;
    if (serving_ && request.txid > 0) {
      look = state_->Read([&](const TxnStateMachine& sm) {
        TxnLookup l = sm.Lookup(request.txid);
        l.record = nullptr;
        l.precommit = nullptr;
        return l;
      });
    }
    if (!serving_) {
      not_serving = true;
    } else if (request.txid <= 0 || look.knowledge == TxnKnowledge::kNeverIssued) {
      a.push_back([done, txid = request.txid] {
        done(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                              fmt::format("txid {} was never issued", txid)));
      });
    } else if (look.outcome.has_value()) {
      decided(*look.outcome);
    } else if (look.knowledge == TxnKnowledge::kForgotten) {
      // A forgotten transaction finished: every participant that voted YES acknowledged its
      // outcome, so one that is prepared now was prepared afterwards (a stale Prepare of an
      // attempt that did not decide): abort is the only possible outcome for it.
      decided(Outcome::ABORTED);
    } else if (auto it = active_.find(request.txid);
               (it != active_.end() && !it->second->decided) ||
               look.knowledge == TxnKnowledge::kPreCommitted) {
      // Being decided here, or 3PC past PRECOMMIT (which only COMMIT, or the participants' own
      // termination outcome, may follow): the answer comes with phase two.
      Resp resp;
      resp.decision = api::Decision::PENDING;
      a.push_back([done, resp] { done(ValueReply(resp)); });
    } else {
      if (auto b = begun_.find(request.txid); b != begun_.end()) {
        begun_deadlines_.erase({b->second.deadline, request.txid});
        begun_.erase(b);
      }
      spdlog::info(
          "Resolve of txid {} from '{}': no decision and not being decided here; "
          "proposing ABORT",
          request.txid, request.participant.substr(0, 128));
      coordlog::Decide d;
      d.txid = request.txid;
      d.outcome = Outcome::ABORTED;
      d.origin = Origin::RESOLVE;
      d.reason_code = ErrorCode::ABORTED;
      d.reason = "presumed abort: a participant asked and no one was deciding";
      d.decided_unix_ms = UnixMillisNow();
      coordlog::Command c;
      c.__set_decide(std::move(d));
      ++stats_.decisions_proposed;
      a.push_back([this, done, c = std::move(c)]() mutable {
        log_->Propose(std::move(c), [this, done](StatusOr<coordlog::CommandResult> r) {
          if (!r.ok()) {
            done(ErrorReply<Resp>(
                r.status().code() == Status::Code::kUnavailable
                    ? NotServingError()
                    : MakeError(ErrorCode::UNAVAILABLE,
                                "the ABORT may not have been logged: " + r.status().ToString())));
            return;
          }
          Resp resp;
          if ((r->code == ResultCode::OK || r->code == ResultCode::ALREADY_DECIDED) &&
              r->__isset.outcome) {
            resp.decision = ToDecision(r->outcome);
          } else if (r->code == ResultCode::FORGOTTEN) {
            resp.decision = api::Decision::ABORTED;  // see kForgotten above
          } else if (r->code == ResultCode::PRECOMMITTED) {
            resp.decision = api::Decision::PENDING;  // a 3PC PRECOMMIT was logged first
          } else {
            done(ErrorReply<Resp>(ErrorCode::INTERNAL, "ABORT refused: " + r->message));
            return;
          }
          done(ValueReply(resp));
        });
      });
    }
  }
  Run(a);
  if (not_serving) done(ErrorReply<Resp>(NotServingError()));
}

void Driver::Impl::RegisterParticipant(const api::RegisterParticipantRequest& request,
                                       Done<api::RegisterParticipantResponse> done) {
  using Resp = api::RegisterParticipantResponse;
  if (!serving()) {
    done(ErrorReply<Resp>(NotServingError()));
    return;
  }
  const api::ParticipantRef& p = request.participant;
  StateMachineLimits limits = state_->Read([](const TxnStateMachine& sm) { return sm.limits(); });
  if (!IsValidParticipantName(p.name, limits.max_name_bytes)) {
    done(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                          "participant names are 1..128 bytes of [A-Za-z0-9_.-]"));
    return;
  }
  StatusOr<HostPort> hp = p.address.size() <= limits.max_address_bytes
                              ? ParseHostPort(p.address)
                              : StatusOr<HostPort>(Status::InvalidArgument("address too long"));
  if (!hp.ok() || hp->port == 0) {
    done(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                          fmt::format("bad participant address '{}'", p.address.substr(0, 256))));
    return;
  }
  coordlog::Command c;
  coordlog::RegisterParticipant r;
  r.name = p.name;
  r.address = p.address;
  c.__set_register_participant(std::move(r));
  log_->Propose(std::move(c), [this, done](StatusOr<coordlog::CommandResult> result) {
    if (!result.ok()) {
      done(ErrorReply<Resp>(result.status().code() == Status::Code::kUnavailable
                                ? NotServingError()
                                : MakeError(ErrorCode::UNAVAILABLE, result.status().ToString())));
      return;
    }
    if (result->code == ResultCode::RESOURCE_EXHAUSTED) {
      done(ErrorReply<Resp>(ErrorCode::RESOURCE_EXHAUSTED, result->message));
      return;
    }
    if (result->code != ResultCode::OK) {
      done(ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT, result->message));
      return;
    }
    Resp resp;
    resp.directory_version = result->directory_version;
    done(ValueReply(resp));
  });
}

// ---------------------------------------------------------------------------------------------
// The per-transaction state machine
// ---------------------------------------------------------------------------------------------

void Driver::Impl::Schedule(Txn& t) {
  TimePoint at = kNever;
  auto consider = [&at](TimePoint tp) { at = std::min(at, tp); };
  switch (t.phase) {
    case Phase::kCollecting:
      if (!t.decided) consider(t.deadline);
      for (const Part& p : t.parts) {
        if (p.vote == LogVote::NONE && !p.failed && !p.in_flight) consider(p.next_attempt);
      }
      break;
    case Phase::kOnePhase:
      if (!t.fencing) consider(t.deadline);
      [[fallthrough]];
    case Phase::kSingleAbort:
      if (!t.parts[0].in_flight) consider(t.parts[0].next_attempt);
      break;
    case Phase::kDeciding:
    case Phase::kEnding:
    case Phase::kPreCommitLogging:
      if (!t.proposal_in_flight) consider(t.propose_retry_at);
      break;
    case Phase::kPhaseTwo:
      for (const Part& p : t.parts) {
        if (p.target && !p.done && !p.in_flight) consider(p.next_attempt);
      }
      break;
    case Phase::kPreCommitting:
      for (const Part& p : t.parts) {
        if (p.target && !p.precommitted && !p.in_flight) consider(p.next_attempt);
      }
      break;
  }
  if (at == t.timer) return;
  if (t.timer != kNever) timers_.erase({t.timer, t.txid});
  t.timer = at;
  if (at != kNever) timers_.emplace(at, t.txid);
}

void Driver::Impl::Service(Txn& t, Actions& a) {
  const TimePoint now = clock_->Now();
  const TxId txid = t.txid;
  switch (t.phase) {
    case Phase::kCollecting:
      ServiceCollecting(t, a);
      break;
    case Phase::kOnePhase:
      if (!t.fencing && now >= t.deadline) {
        // CommitOnePhase may have been applied; Abort either prevents it for good or reports
        // (WRONG_STATE) that it was.
        t.fencing = true;
        spdlog::info("txid {}: one-phase commit at '{}' unanswered by the deadline; aborting", txid,
                     t.parts[0].name);
      }
      if (!t.parts[0].in_flight && now >= t.parts[0].next_attempt) SendOnePhase(t, a);
      break;
    case Phase::kSingleAbort:
      if (!t.parts[0].in_flight && now >= t.parts[0].next_attempt) SendOnePhase(t, a);
      break;
    case Phase::kDeciding:
      if (!t.proposal_in_flight && now >= t.propose_retry_at) ProposeDecision(t, a);
      break;
    case Phase::kPhaseTwo:
      ServicePhaseTwo(t, a);
      break;
    case Phase::kEnding:
      if (!t.proposal_in_flight && now >= t.propose_retry_at) ProposeEnd(t, a);
      break;
    case Phase::kPreCommitLogging:
      if (!t.proposal_in_flight && now >= t.propose_retry_at) ProposePreCommit(t, a);
      break;
    case Phase::kPreCommitting:
      ServicePreCommitting(t, a);
      break;
  }
  // The transaction may be gone (finished) by now.
  auto it = active_.find(txid);
  if (it != active_.end() && it->second.get() == &t) Schedule(t);
}

void Driver::Impl::ServiceCollecting(Txn& t, Actions& a) {
  const TimePoint now = clock_->Now();
  if (t.abort_requested) {
    StartDecision(t, Outcome::ABORTED, Origin::CLIENT_ABORT, ErrorCode::ABORTED,
                  "aborted by the client", a);
    return;
  }
  bool all_voted = true;
  bool all_read_only = true;
  for (const Part& p : t.parts) {
    if (p.vote == LogVote::NO || p.failed) {
      StartDecision(t, Outcome::ABORTED, Origin::CLIENT_COMMIT, p.no_code,
                    fmt::format("participant '{}' refused: {}", p.name, p.no_reason), a);
      return;
    }
    if (p.vote == LogVote::NONE) all_voted = false;
    if (p.vote != LogVote::READ_ONLY) all_read_only = false;
  }
  if (all_voted) {
    prepare_seconds_->ObserveDuration(now - t.first_seen);
    t.votes_done = now;
    if (all_read_only) {
      FinishUnlogged(t, Outcome::COMMITTED, ErrorCode::INTERNAL, "", "read_only", a);
      return;
    }
    if (t.protocol == api::Protocol::THREE_PHASE) {
      StartPreCommit(t, a);
      return;
    }
    StartDecision(t, Outcome::COMMITTED, Origin::CLIENT_COMMIT, static_cast<ErrorCode::type>(0), "",
                  a);
    return;
  }
  if (now >= t.deadline) {
    StartDecision(t, Outcome::ABORTED, Origin::TIMEOUT, ErrorCode::ABORTED,
                  "the votes were not all in before the transaction's timeout", a);
    return;
  }
  for (size_t i = 0; i < t.parts.size(); ++i) {
    const Part& p = t.parts[i];
    if (p.vote == LogVote::NONE && !p.in_flight && now >= p.next_attempt) SendPrepare(t, i, a);
  }
}

void Driver::Impl::SendPrepare(Txn& t, size_t i, Actions& a) {
  Part& p = t.parts[i];
  p.in_flight = true;
  ++p.attempts;
  api::PrepareRequest req;
  req.txid = t.txid;
  api::TransactionInfo info;
  info.protocol = t.protocol;
  for (const Part& q : t.parts) {
    api::ParticipantRef r;
    r.name = q.name;
    r.address = q.address;
    info.participants.push_back(std::move(r));
  }
  req.__set_info(std::move(info));
  const TxId txid = t.txid;
  const uint64_t epoch = epoch_;
  const uint64_t gen = t.gen;
  a.push_back([this, address = p.address, req = std::move(req), txid, epoch, gen, i]() mutable {
    TX_FAILPOINT("coordinator.before_prepare_sent");
    channel_->Prepare(address, std::move(req),
                      [this, txid, epoch, gen, i](ParticipantReply<api::PrepareResponse> r) {
                        OnPrepareReply(txid, epoch, gen, i, std::move(r));
                      });
    TX_FAILPOINT("coordinator.after_prepare_sent");
  });
}

void Driver::Impl::OnPrepareReply(TxId txid, uint64_t epoch, uint64_t gen, size_t i,
                                  ParticipantReply<api::PrepareResponse> reply) {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Txn* t = Find(txid, epoch, gen);
    if (t == nullptr || t->phase != Phase::kCollecting) return;
    Part& p = t->parts[i];
    p.in_flight = false;
    if (!reply.transport.ok()) {
      p.last_error = reply.transport.ToString();
      p.next_attempt = Backoff(p.attempts, opt_.retry_max);
    } else if (reply.error.has_value()) {
      p.last_error = DescribeError(*reply.error);
      if (IsRetryable(reply.error->code)) {
        p.next_attempt = Backoff(p.attempts, opt_.retry_max);
      } else {
        // The call had no effect there (an error is never a vote): count it as a refusal.
        p.failed = true;
        p.no_code = reply.error->code;
        p.no_reason = reply.error->message;
      }
    } else {
      switch (reply.response.vote) {
        case api::Vote::YES:
          p.vote = LogVote::YES;
          break;
        case api::Vote::READ_ONLY:
          p.vote = LogVote::READ_ONLY;
          break;
        case api::Vote::NO:
          p.vote = LogVote::NO;
          p.no_code =
              reply.response.__isset.reason_code ? reply.response.reason_code : ErrorCode::ABORTED;
          p.no_reason = reply.response.__isset.reason ? reply.response.reason : "voted NO";
          break;
        default:
          p.failed = true;
          p.no_code = ErrorCode::INTERNAL;
          p.no_reason = fmt::format("unknown vote {}", static_cast<int>(reply.response.vote));
          break;
      }
    }
    Service(*t, a);
  }
  Run(a);
}

void Driver::Impl::SendOnePhase(Txn& t, Actions& a) {
  Part& p = t.parts[0];
  p.in_flight = true;
  ++p.attempts;
  const TxId txid = t.txid;
  const uint64_t epoch = epoch_;
  const uint64_t gen = t.gen;
  if (t.phase == Phase::kOnePhase && !t.fencing) {
    api::CommitOnePhaseRequest req;
    req.txid = txid;
    a.push_back([this, address = p.address, req, txid, epoch, gen] {
      channel_->CommitOnePhase(
          address, req, [this, txid, epoch, gen](ParticipantReply<api::CommitOnePhaseResponse> r) {
            OnOnePhaseReply(txid, epoch, gen, std::move(r));
          });
    });
  } else {
    api::AbortRequest req;
    req.txid = txid;
    a.push_back([this, address = p.address, req, txid, epoch, gen] {
      channel_->Abort(address, req,
                      [this, txid, epoch, gen](ParticipantReply<api::AbortResponse> r) {
                        OnSingleAbortReply(txid, epoch, gen, std::move(r));
                      });
    });
  }
}

void Driver::Impl::OnOnePhaseReply(TxId txid, uint64_t epoch, uint64_t gen,
                                   ParticipantReply<api::CommitOnePhaseResponse> reply) {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Txn* t = Find(txid, epoch, gen);
    if (t == nullptr || t->phase != Phase::kOnePhase) return;
    Part& p = t->parts[0];
    p.in_flight = false;
    if (reply.answered()) {
      if (reply.response.outcome == api::Outcome::COMMITTED) {
        FinishUnlogged(*t, Outcome::COMMITTED, ErrorCode::INTERNAL, "", "one_phase", a);
      } else {
        ErrorCode::type code =
            reply.response.__isset.reason_code ? reply.response.reason_code : ErrorCode::ABORTED;
        std::string reason = reply.response.__isset.reason ? reply.response.reason : "";
        FinishUnlogged(*t, Outcome::ABORTED, code,
                       fmt::format("participant '{}' did not commit: {}", p.name, reason),
                       "one_phase", a);
      }
    } else {
      p.last_error =
          reply.error.has_value() ? DescribeError(*reply.error) : reply.transport.ToString();
      p.next_attempt = Backoff(p.attempts, opt_.retry_max);
      Service(*t, a);
    }
  }
  Run(a);
}

void Driver::Impl::OnSingleAbortReply(TxId txid, uint64_t epoch, uint64_t gen,
                                      ParticipantReply<api::AbortResponse> reply) {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Txn* t = Find(txid, epoch, gen);
    if (t == nullptr || (t->phase != Phase::kOnePhase && t->phase != Phase::kSingleAbort)) {
      return;
    }
    Part& p = t->parts[0];
    p.in_flight = false;
    const char* path = t->phase == Phase::kOnePhase ? "one_phase" : "abort";
    if (reply.answered()) {
      FinishUnlogged(*t, Outcome::ABORTED, ErrorCode::ABORTED,
                     t->phase == Phase::kOnePhase ? "the transaction timed out" : "aborted", path,
                     a);
    } else if (reply.error.has_value() && reply.error->code == ErrorCode::WRONG_STATE) {
      // Abort of a committed transaction: the one-phase commit happened.
      FinishUnlogged(*t, Outcome::COMMITTED, ErrorCode::INTERNAL, "", path, a);
    } else {
      p.last_error =
          reply.error.has_value() ? DescribeError(*reply.error) : reply.transport.ToString();
      p.next_attempt = Backoff(p.attempts, opt_.retry_max);
      Service(*t, a);
    }
  }
  Run(a);
}

void Driver::Impl::StartDecision(Txn& t, Outcome::type outcome, Origin::type origin,
                                 ErrorCode::type reason_code, std::string reason, Actions& a) {
  t.outcome = outcome;
  t.origin = origin;
  t.reason_code = reason_code;
  t.reason = std::move(reason);
  if (t.reason.size() > 1000) t.reason.resize(1000);
  bool anyone_to_notify = false;
  for (Part& p : t.parts) {
    p.target = outcome == Outcome::COMMITTED
                   ? p.vote == LogVote::YES
                   : (p.vote == LogVote::YES || (p.vote == LogVote::NONE && !p.failed));
    anyone_to_notify |= p.target;
  }
  if (!anyone_to_notify) {
    // Nobody can be prepared (every participant answered NO or READ_ONLY): nothing to log.
    FinishUnlogged(t, outcome, t.reason_code, t.reason, "two_phase", a);
    return;
  }
  NextLoggingPhase(t, Phase::kDeciding);
  ProposeDecision(t, a);
}

void Driver::Impl::ProposeDecision(Txn& t, Actions& a) {
  coordlog::Decide d;
  d.txid = t.txid;
  d.outcome = t.outcome;
  d.protocol = t.protocol;
  d.participants = LoggedParticipants(t);
  d.reason_code = static_cast<int32_t>(t.reason_code);
  d.reason = t.reason;
  d.origin = t.origin;
  d.decided_unix_ms = UnixMillisNow();
  coordlog::Command c;
  c.__set_decide(std::move(d));
  ++stats_.decisions_proposed;
  ProposeForTxn(t, std::move(c), &Impl::OnDecisionResult, a);
}

void Driver::Impl::ProposeForTxn(Txn& t, coordlog::Command c, ProposalResultHandler on_result,
                                 Actions& a) {
  t.proposal_in_flight = true;
  ++t.proposal_attempts;
  const TxId txid = t.txid;
  const uint64_t epoch = epoch_;
  const uint64_t gen = t.gen;
  a.push_back([this, c = std::move(c), on_result, txid, epoch, gen]() mutable {
    log_->Propose(std::move(c),
                  [this, on_result, txid, epoch, gen](StatusOr<coordlog::CommandResult> r) {
                    (this->*on_result)(txid, epoch, gen, std::move(r));
                  });
  });
}

std::vector<coordlog::Participant> Driver::Impl::LoggedParticipants(const Txn& t) {
  std::vector<coordlog::Participant> out;
  out.reserve(t.parts.size());
  for (const Part& p : t.parts) {
    coordlog::Participant lp;
    lp.name = p.name;
    lp.address = p.address;
    lp.vote = p.vote;
    lp.notify = p.target;
    out.push_back(std::move(lp));
  }
  return out;
}

int64_t Driver::Impl::UnixMillisNow() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             clock_->SystemNow().time_since_epoch())
      .count();
}

void Driver::Impl::OnDecisionResult(TxId txid, uint64_t epoch, uint64_t gen,
                                    StatusOr<coordlog::CommandResult> result) {
  WithProposer(txid, epoch, gen, Phase::kDeciding, [&](Txn& txn, Actions& a) {
    Txn* t = &txn;
    if (!result.ok()) {
      // Maybe applied, maybe not: the state knows.
      std::optional<Outcome::type> o =
          state_->Read([txid](const TxnStateMachine& sm) { return sm.Lookup(txid).outcome; });
      if (o.has_value()) {
        OnDecided(*t, *o, a);
      } else {
        spdlog::warn("txid {}: proposing {} failed ({}); retrying", txid, OutcomeName(t->outcome),
                     result.status().ToString());
        t->propose_retry_at = Backoff(t->proposal_attempts, opt_.retry_max);
        Service(*t, a);
      }
    } else {
      switch (result->code) {
        case ResultCode::OK:
        case ResultCode::ALREADY_DECIDED:
          TX_CHECK(result->__isset.outcome, "decision result without an outcome for txid {}", txid);
          if (result->code == ResultCode::ALREADY_DECIDED && result->outcome != t->outcome) {
            spdlog::info("txid {}: proposed {} but {} was logged first", txid,
                         OutcomeName(t->outcome), OutcomeName(result->outcome));
          }
          OnDecided(*t, result->outcome, a);
          break;
        case ResultCode::FORGOTTEN:
          AnswerForgotten(*t, a);
          break;
        case ResultCode::RESOURCE_EXHAUSTED:
          // A COMMIT refused for lack of room; an ABORT always fits.
          StartDecision(*t, Outcome::ABORTED, t->origin, ErrorCode::RESOURCE_EXHAUSTED,
                        "too many transactions in phase two: " + result->message, a);
          break;
        case ResultCode::PRECOMMITTED: {
          // An ABORT lost to a PRECOMMIT logged first (by an earlier leader, for a Commit of
          // the same txid): the transaction goes on from there.
          std::optional<PreCommitRecord> rec =
              state_->Read([txid](const TxnStateMachine& sm) -> std::optional<PreCommitRecord> {
                TxnLookup l = sm.Lookup(txid);
                if (l.precommit == nullptr) return std::nullopt;
                return *l.precommit;
              });
          if (rec.has_value()) {
            spdlog::info("txid {}: ABORT refused, a PRECOMMIT was logged first; driving 3PC", txid);
            EnterPreCommitting(*t, *rec, a);
          } else if (std::optional<Outcome::type> o = state_->Read(
                         [txid](const TxnStateMachine& sm) { return sm.Lookup(txid).outcome; });
                     o.has_value()) {
            OnDecided(*t, *o, a);  // decided since the refusal was applied
          } else {
            t->propose_retry_at = Backoff(t->proposal_attempts, opt_.retry_max);
            Service(*t, a);
          }
          break;
        }
        default:
          TX_CHECK(false, "the state machine refused decision {} for txid {}: {}",
                   OutcomeName(t->outcome), txid, result->message);
      }
    }
  });
}

void Driver::Impl::AnswerForgotten(Txn& t, Actions& a) {
  api::TxError e = MakeError(ErrorCode::UNKNOWN_TRANSACTION,
                             "the outcome of this transaction is no longer remembered");
  for (auto& w : t.commit_waiters) {
    a.push_back([w = std::move(w), e] { w(ErrorReply<api::CommitTransactionResponse>(e)); });
  }
  for (auto& w : t.abort_waiters) {
    a.push_back([w = std::move(w), e] { w(ErrorReply<api::AbortTransactionResponse>(e)); });
  }
  Remove(t);
}

void Driver::Impl::OnDecided(Txn& t, Outcome::type outcome, Actions& a) {
  const TimePoint now = clock_->Now();
  const bool proposed_outcome = t.outcome == outcome;
  t.outcome = outcome;
  t.decided = true;
  t.decided_at = now;
  decision_seconds_->ObserveDuration(now -
                                     (t.votes_done == TimePoint{} ? t.first_seen : t.votes_done));
  // Phase two follows the logged record when there is one; our own possibly prepared
  // participants are told too (e.g. when an ABORT without participants won).
  std::optional<TxnRecord> rec = state_->Read([&](const TxnStateMachine& sm) {
    TxnLookup l = sm.Lookup(t.txid);
    return l.record != nullptr ? std::optional<TxnRecord>(*l.record) : std::nullopt;
  });
  t.record_live = rec.has_value();
  if (rec.has_value()) {
    t.decided_index = rec->decided_index;
    t.decided_unix_ms = rec->decision.decided_unix_ms;
    if (!proposed_outcome || rec->decision.origin != t.origin) {
      t.reason_code = static_cast<ErrorCode::type>(rec->decision.reason_code);
      t.reason = rec->decision.reason;
      t.origin = rec->decision.origin;
    }
    for (const coordlog::Participant& lp : rec->decision.participants) {
      auto it = std::find_if(t.parts.begin(), t.parts.end(),
                             [&](const Part& p) { return p.name == lp.name; });
      if (it == t.parts.end()) {
        Part p;
        p.name = lp.name;
        p.address = lp.address;
        p.vote = lp.vote;
        t.parts.push_back(std::move(p));
        it = t.parts.end() - 1;
      }
      it->target = it->target || lp.notify;
    }
  } else if (!proposed_outcome) {
    t.reason_code = ErrorCode::ABORTED;
    t.reason = "another decision was logged first";
  }
  if (outcome == Outcome::COMMITTED) {
    for (Part& p : t.parts) p.target = p.target && p.vote == LogVote::YES;
  }
  // Failpoints run with the other side effects, outside the lock: a crash here leaves the
  // decision logged and the client unanswered.
  a.push_back([] { TX_FAILPOINT("coordinator.after_decision_logged"); });
  AnswerWaiters(t, outcome, a);
  CountOutcome(outcome, "two_phase");
  NextPhase(t, Phase::kPhaseTwo);
  a.push_back([] { TX_FAILPOINT("coordinator.before_phase_two"); });
  ServicePhaseTwo(t, a);
}

// ---------------------------------------------------------------------------------------------
// 3PC: PRECOMMIT
// ---------------------------------------------------------------------------------------------

void Driver::Impl::StartPreCommit(Txn& t, Actions& a) {
  for (Part& p : t.parts) {
    p.target = p.vote == LogVote::YES;
    p.precommitted = false;
  }
  NextLoggingPhase(t, Phase::kPreCommitLogging);
  ProposePreCommit(t, a);
}

void Driver::Impl::ProposePreCommit(Txn& t, Actions& a) {
  coordlog::PreCommit pc;
  pc.txid = t.txid;
  pc.participants = LoggedParticipants(t);
  pc.logged_unix_ms = UnixMillisNow();
  coordlog::Command c;
  c.__set_precommit(std::move(pc));
  ++stats_.precommits_proposed;
  ProposeForTxn(t, std::move(c), &Impl::OnPreCommitResult, a);
}

void Driver::Impl::OnPreCommitResult(TxId txid, uint64_t epoch, uint64_t gen,
                                     StatusOr<coordlog::CommandResult> result) {
  WithProposer(txid, epoch, gen, Phase::kPreCommitLogging, [&](Txn& txn, Actions& a) {
    Txn* t = &txn;
    // What the state holds decides, whatever the proposal's own fate.
    TxnLookup look;
    std::optional<PreCommitRecord> rec;
    state_->Read([&](const TxnStateMachine& sm) {
      look = sm.Lookup(txid);
      if (look.precommit != nullptr) rec = *look.precommit;
      look.record = nullptr;
      look.precommit = nullptr;
    });
    if (rec.has_value()) {
      EnterPreCommitting(*t, *rec, a);
    } else if (look.outcome.has_value()) {
      // Decided first (e.g. a timeout's ABORT by an earlier leader): phase two of that.
      OnDecided(*t, *look.outcome, a);
    } else if (result.ok() && result->code == ResultCode::RESOURCE_EXHAUSTED) {
      // Not pre-committed, so ABORT is still allowed (and always fits).
      StartDecision(*t, Outcome::ABORTED, Origin::CLIENT_COMMIT, ErrorCode::RESOURCE_EXHAUSTED,
                    "too many transactions in phase two: " + result->message, a);
    } else if (result.ok() && result->code == ResultCode::FORGOTTEN) {
      AnswerForgotten(*t, a);
    } else {
      TX_CHECK(!result.ok() || result->code != ResultCode::INVALID,
               "the state machine refused PRECOMMIT for txid {}: {}", txid, result->message);
      spdlog::warn("txid {}: proposing PRECOMMIT failed ({}); retrying", txid,
                   result.ok() ? result->message : result.status().ToString());
      t->propose_retry_at = Backoff(t->proposal_attempts, opt_.retry_max);
      Service(*t, a);
    }
  });
}

void Driver::Impl::EnterPreCommitting(Txn& t, const PreCommitRecord& rec, Actions& a) {
  // The record's participants are the ones that count (a leader that took over knows no others).
  for (const coordlog::Participant& lp : rec.precommit.participants) {
    auto it = std::find_if(t.parts.begin(), t.parts.end(),
                           [&](const Part& p) { return p.name == lp.name; });
    if (it == t.parts.end()) {
      Part p;
      p.name = lp.name;
      p.address = lp.address;
      t.parts.push_back(std::move(p));
      it = t.parts.end() - 1;
    }
    it->vote = lp.vote;
    it->target = lp.notify;
  }
  for (Part& p : t.parts) p.precommitted = false;
  t.protocol = api::Protocol::THREE_PHASE;
  t.origin = Origin::CLIENT_COMMIT;
  t.outcome = Outcome::COMMITTED;
  NextPhase(t, Phase::kPreCommitting);
  // Crash tests stop here: PRECOMMIT is in the log, no PreCommit has been sent.
  a.push_back([] { TX_FAILPOINT("coordinator.after_precommit_logged"); });
  ServicePreCommitting(t, a);
}

void Driver::Impl::ServicePreCommitting(Txn& t, Actions& a) {
  const TimePoint now = clock_->Now();
  bool all_acked = true;
  for (size_t i = 0; i < t.parts.size(); ++i) {
    Part& p = t.parts[i];
    if (!p.target || p.precommitted) continue;
    all_acked = false;
    if (!p.in_flight && now >= p.next_attempt) SendPreCommit(t, i, a);
  }
  if (!all_acked) return;
  // Every participant that can commit is PRECOMMITTED (durably): any termination round now
  // commits, so COMMIT may be decided. Crash tests stop here: PRECOMMIT logged and acknowledged
  // everywhere, no COMMIT in the log.
  a.push_back([] { TX_FAILPOINT("coordinator.after_precommit_acknowledged"); });
  StartDecision(t, Outcome::COMMITTED, Origin::CLIENT_COMMIT, static_cast<ErrorCode::type>(0), "",
                a);
}

void Driver::Impl::SendPreCommit(Txn& t, size_t i, Actions& a) {
  Part& p = t.parts[i];
  p.in_flight = true;
  ++p.attempts;
  api::PreCommitRequest req;
  req.txid = t.txid;
  const TxId txid = t.txid;
  const uint64_t epoch = epoch_;
  const uint64_t gen = t.gen;
  a.push_back([this, address = p.address, req, txid, epoch, gen, i] {
    channel_->PreCommit(address, req,
                        [this, txid, epoch, gen, i](ParticipantReply<api::PreCommitResponse> r) {
                          OnPreCommitReply(txid, epoch, gen, i, std::move(r));
                        });
  });
}

void Driver::Impl::OnPreCommitReply(TxId txid, uint64_t epoch, uint64_t gen, size_t i,
                                    ParticipantReply<api::PreCommitResponse> reply) {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Txn* t = Find(txid, epoch, gen);
    if (t == nullptr || t->phase != Phase::kPreCommitting) return;
    Part& p = t->parts[i];
    p.in_flight = false;
    bool restarted = false;
    if (!reply.answered()) {
      p.last_error =
          reply.error.has_value() ? DescribeError(*reply.error) : reply.transport.ToString();
      if (reply.error.has_value() && !IsRetryable(reply.error->code)) {
        // Not prepared here, or prepared as 2PC: never expected after a YES vote for 3PC.
        ++stats_.anomalies;
        anomalies_counter_->Increment();
        spdlog::error("txid {}: participant '{}' answered PreCommit with {}", txid, p.name,
                      p.last_error);
      }
      p.next_attempt = Backoff(p.attempts, opt_.phase_two_retry_max);
    } else {
      const int32_t state = RawEnum(reply.response.state);
      if (state == api::TxState::PRECOMMITTED || state == api::TxState::COMMITTED) {
        p.precommitted = true;
      } else if (state == api::TxState::ABORTED) {
        // The participants' termination round aborted it, which it does only when none of them
        // was PRECOMMITTED: adopt that outcome (the only ABORT allowed after PRECOMMIT).
        spdlog::info("txid {}: '{}' reports that its termination round aborted; adopting ABORT",
                     txid, p.name);
        ++stats_.terminations_adopted;
        StartDecision(*t, Outcome::ABORTED, Origin::TERMINATION, ErrorCode::ABORTED,
                      fmt::format("the participants' termination protocol aborted it (reported "
                                  "by '{}')",
                                  p.name),
                      a);
        restarted = true;  // t may be gone (finished unlogged)
      } else {
        // PREPARED in a termination round (which decides; ask again), or something unexpected.
        p.last_error = fmt::format("state {}{}", state,
                                   reply.response.in_termination ? " in a termination round" : "");
        p.next_attempt = Backoff(p.attempts, opt_.phase_two_retry_max);
      }
    }
    if (!restarted) Service(*t, a);
  }
  Run(a);
}

void Driver::Impl::AnswerWaiters(Txn& t, Outcome::type outcome, Actions& a) {
  api::CommitTransactionResponse cr;
  cr.decision = ToDecision(outcome);
  if (outcome == Outcome::ABORTED) {
    if (t.reason_code != 0) cr.__set_reason_code(t.reason_code);
    if (!t.reason.empty()) cr.__set_reason(t.reason);
  }
  if (!t.commit_waiters.empty()) {
    commit_seconds_->ObserveDuration(clock_->Now() - t.first_seen);
  }
  for (auto& w : t.commit_waiters) {
    a.push_back([w = std::move(w), cr] { w(ValueReply(cr)); });
  }
  t.commit_waiters.clear();
  api::AbortTransactionResponse ar;
  ar.decision = ToDecision(outcome);
  for (auto& w : t.abort_waiters) {
    a.push_back([w = std::move(w), ar] { w(ValueReply(ar)); });
  }
  t.abort_waiters.clear();
}

void Driver::Impl::CountOutcome(Outcome::type outcome, const char* path) {
  outcomes_family_->WithLabels({outcome == Outcome::COMMITTED ? "committed" : "aborted", path})
      ->Increment();
  if (outcome == Outcome::COMMITTED) {
    ++stats_.committed;
  } else {
    ++stats_.aborted;
  }
  if (std::string_view(path) == "read_only") ++stats_.read_only;
  if (std::string_view(path) == "one_phase") ++stats_.one_phase;
}

void Driver::Impl::FinishUnlogged(Txn& t, Outcome::type outcome, ErrorCode::type reason_code,
                                  std::string reason, const char* path, Actions& a) {
  t.reason_code = reason_code;
  t.reason = std::move(reason);
  AnswerWaiters(t, outcome, a);
  CountOutcome(outcome, path);
  Remove(t);
}

void Driver::Impl::ServicePhaseTwo(Txn& t, Actions& a) {
  const TimePoint now = clock_->Now();
  bool all_done = true;
  for (size_t i = 0; i < t.parts.size(); ++i) {
    Part& p = t.parts[i];
    if (!p.target || p.done) continue;
    if (t.outcome == Outcome::ABORTED && !p.in_flight && p.attempts >= opt_.abort_notify_attempts) {
      // Presumed abort: when it comes back it asks, and ABORT is the answer with or without
      // the record.
      spdlog::warn("txid {}: giving up telling '{}' about the ABORT after {} attempts ({})", t.txid,
                   p.name, p.attempts, p.last_error);
      p.done = true;
      continue;
    }
    all_done = false;
    if (!p.in_flight && now >= p.next_attempt) SendPhaseTwo(t, i, a);
  }
  if (!all_done) return;
  phase_two_seconds_->ObserveDuration(now - t.decided_at);
  if (!t.record_live) {
    Remove(t);
    return;
  }
  NextLoggingPhase(t, Phase::kEnding);
  ProposeEnd(t, a);
}

void Driver::Impl::SendPhaseTwo(Txn& t, size_t i, Actions& a) {
  Part& p = t.parts[i];
  p.in_flight = true;
  ++p.attempts;
  const TxId txid = t.txid;
  const uint64_t epoch = epoch_;
  const uint64_t gen = t.gen;
  if (t.outcome == Outcome::COMMITTED) {
    api::CommitRequest req;
    req.txid = txid;
    a.push_back([this, address = p.address, req, txid, epoch, gen, i] {
      channel_->Commit(address, req,
                       [this, txid, epoch, gen, i](ParticipantReply<api::CommitResponse> r) {
                         OnPhaseTwoReply(txid, epoch, gen, i, r.transport, r.error);
                       });
    });
  } else {
    api::AbortRequest req;
    req.txid = txid;
    a.push_back([this, address = p.address, req, txid, epoch, gen, i] {
      channel_->Abort(address, req,
                      [this, txid, epoch, gen, i](ParticipantReply<api::AbortResponse> r) {
                        OnPhaseTwoReply(txid, epoch, gen, i, r.transport, r.error);
                      });
    });
  }
}

void Driver::Impl::OnPhaseTwoReply(TxId txid, uint64_t epoch, uint64_t gen, size_t i,
                                   Status transport, std::optional<api::TxError> error) {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Txn* t = Find(txid, epoch, gen);
    if (t == nullptr || t->phase != Phase::kPhaseTwo) return;
    Part& p = t->parts[i];
    p.in_flight = false;
    if (transport.ok() && !error.has_value()) {
      p.done = true;
    } else if (transport.ok() && !IsRetryable(error->code)) {
      // UNKNOWN_TRANSACTION on Commit: the participant forgot a commit it acknowledged before,
      // or never prepared. WRONG_STATE: it holds the opposite outcome. Neither should happen;
      // retrying cannot change it.
      ++stats_.anomalies;
      anomalies_counter_->Increment();
      spdlog::error("txid {}: participant '{}' answered {} with {}", txid, p.name,
                    t->outcome == Outcome::COMMITTED ? "Commit" : "Abort", DescribeError(*error));
      p.last_error = DescribeError(*error);
      p.done = true;
    } else {
      p.last_error = error.has_value() ? DescribeError(*error) : transport.ToString();
      p.next_attempt = Backoff(p.attempts, opt_.phase_two_retry_max);
    }
    Service(*t, a);
  }
  Run(a);
}

void Driver::Impl::ProposeEnd(Txn& t, Actions& a) {
  coordlog::End e;
  e.txid = t.txid;
  coordlog::Command c;
  c.__set_end_transaction(e);
  ++stats_.ends_proposed;
  ProposeForTxn(t, std::move(c), &Impl::OnEndResult, a);
}

void Driver::Impl::OnEndResult(TxId txid, uint64_t epoch, uint64_t gen,
                               StatusOr<coordlog::CommandResult> result) {
  WithProposer(txid, epoch, gen, Phase::kEnding, [&](Txn& t, Actions& a) {
    bool still_live = state_->Read(
        [txid](const TxnStateMachine& sm) { return sm.Lookup(txid).record != nullptr; });
    if (result.ok() || !still_live) {
      Remove(t);
    } else {
      t.propose_retry_at = Backoff(t.proposal_attempts, opt_.retry_max);
      Service(t, a);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------------

void Driver::Impl::Tick() {
  Actions a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!serving_) return;
    const TimePoint now = clock_->Now();
    std::vector<TxId> due;
    while (!timers_.empty() && timers_.begin()->first <= now) {
      due.push_back(timers_.begin()->second);
      timers_.erase(timers_.begin());
    }
    for (TxId txid : due) {
      auto it = active_.find(txid);
      if (it == active_.end()) continue;
      it->second->timer = kNever;
      Service(*it->second, a);
    }
    while (!begun_deadlines_.empty() && begun_deadlines_.begin()->first <= now) {
      TxId txid = begun_deadlines_.begin()->second;
      begun_deadlines_.erase(begun_deadlines_.begin());
      begun_.erase(txid);
      expired_.insert(txid);
      expired_order_.push_back(txid);
      while (expired_order_.size() > opt_.max_expired_remembered) {
        expired_.erase(expired_order_.front());
        expired_order_.pop_front();
      }
    }
    if (now >= next_orphan_scan_) {
      next_orphan_scan_ = now + opt_.orphan_scan_interval;
      size_t adopted = AdoptOrphans(a);
      if (adopted > 0) {
        spdlog::info("adopted phase two of {} transactions decided by an earlier term's proposals",
                     adopted);
      }
    }
    ReserveIfNeeded(a);
  }
  Run(a);
}

// ---------------------------------------------------------------------------------------------
// Operators
// ---------------------------------------------------------------------------------------------

api::TransactionView Driver::Impl::ViewOfRecord(const TxnRecord& rec) {
  api::TransactionView v;
  v.txid = rec.decision.txid;
  v.protocol = rec.decision.protocol;
  v.phase = rec.decision.outcome == Outcome::COMMITTED ? api::TransactionPhase::COMMITTING
                                                       : api::TransactionPhase::ABORTING;
  v.__set_decision(ToDecision(rec.decision.outcome));
  if (rec.decision.reason_code != 0) {
    v.__set_reason_code(static_cast<ErrorCode::type>(rec.decision.reason_code));
  }
  if (!rec.decision.reason.empty()) v.__set_reason(rec.decision.reason);
  for (const coordlog::Participant& p : rec.decision.participants) {
    api::ParticipantProgress pp;
    pp.name = p.name;
    pp.address = p.address;
    pp.vote = static_cast<api::ParticipantVote::type>(p.vote);
    pp.waiting = p.notify;
    v.participants.push_back(std::move(pp));
  }
  v.decided_unix_ms = rec.decision.decided_unix_ms;
  v.decided_index = static_cast<int64_t>(rec.decided_index);
  return v;
}

api::TransactionView Driver::Impl::ViewOfPreCommit(const PreCommitRecord& rec) {
  api::TransactionView v;
  v.txid = rec.precommit.txid;
  v.protocol = api::Protocol::THREE_PHASE;
  v.phase = api::TransactionPhase::PRECOMMITTING;
  for (const coordlog::Participant& p : rec.precommit.participants) {
    api::ParticipantProgress pp;
    pp.name = p.name;
    pp.address = p.address;
    pp.vote = static_cast<api::ParticipantVote::type>(p.vote);
    pp.waiting = p.notify;
    v.participants.push_back(std::move(pp));
  }
  return v;
}

api::TransactionView Driver::Impl::ViewOf(const Txn& t, TimePoint now) const {
  api::TransactionView v;
  v.txid = t.txid;
  v.protocol = t.protocol;
  switch (t.phase) {
    case Phase::kCollecting:
      v.phase = api::TransactionPhase::COLLECTING_VOTES;
      break;
    case Phase::kOnePhase:
    case Phase::kSingleAbort:
      v.phase = api::TransactionPhase::ONE_PHASE;
      break;
    case Phase::kDeciding:
      v.phase = api::TransactionPhase::DECIDING;
      break;
    case Phase::kPhaseTwo:
    case Phase::kEnding:
      v.phase = t.outcome == Outcome::COMMITTED ? api::TransactionPhase::COMMITTING
                                                : api::TransactionPhase::ABORTING;
      break;
    case Phase::kPreCommitLogging:
    case Phase::kPreCommitting:
      v.phase = api::TransactionPhase::PRECOMMITTING;
      break;
  }
  if (t.decided) v.__set_decision(ToDecision(t.outcome));
  if ((t.decided || t.phase == Phase::kDeciding) && t.outcome == Outcome::ABORTED) {
    if (t.reason_code != 0) v.__set_reason_code(t.reason_code);
    if (!t.reason.empty()) v.__set_reason(t.reason);
  }
  for (const Part& p : t.parts) {
    api::ParticipantProgress pp;
    pp.name = p.name;
    pp.address = p.address;
    pp.vote = static_cast<api::ParticipantVote::type>(p.vote);
    const bool phase_two = t.phase == Phase::kPhaseTwo || t.phase == Phase::kEnding;
    const bool precommitting = t.phase == Phase::kPreCommitting;
    pp.waiting = p.in_flight || (phase_two       ? p.target && !p.done
                                 : precommitting ? p.target && !p.precommitted
                                                 : t.phase == Phase::kCollecting &&
                                                       p.vote == LogVote::NONE && !p.failed);
    pp.acknowledged = (phase_two && p.target && p.done) || (precommitting && p.precommitted);
    pp.attempts = p.attempts;
    if (!p.last_error.empty()) pp.__set_last_error(p.last_error);
    v.participants.push_back(std::move(pp));
  }
  v.age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - t.first_seen).count();
  v.decided_unix_ms = t.decided_unix_ms;
  v.decided_index = static_cast<int64_t>(t.decided_index);
  return v;
}

Reply<api::ListTransactionsResponse> Driver::Impl::ListTransactions(
    const api::ListTransactionsRequest& request) {
  using Resp = api::ListTransactionsResponse;
  if (request.limit < 1 || request.limit > kMaxListPage) {
    return ErrorReply<Resp>(ErrorCode::INVALID_ARGUMENT,
                            fmt::format("limit must be 1..{}", kMaxListPage));
  }
  const TxId after = request.__isset.after_txid ? request.after_txid : 0;
  const size_t limit = static_cast<size_t>(request.limit);
  std::map<TxId, api::TransactionView> views;
  bool more = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!serving_) {
      // Fall through to the error below, outside the lock.
    } else {
      const TimePoint now = clock_->Now();
      auto add = [&](TxId txid, auto make) {
        if (txid <= after) return;
        if (views.size() == limit) {
          if (txid >= views.rbegin()->first) {
            more = true;
            return;
          }
          views.erase(std::prev(views.end()));
          more = true;
        }
        views.emplace(txid, make());
      };
      for (auto it = active_.upper_bound(after); it != active_.end(); ++it) {
        add(it->first, [&] { return ViewOf(*it->second, now); });
      }
      state_->Read([&](const TxnStateMachine& sm) {
        for (auto it = sm.live().upper_bound(after); it != sm.live().end(); ++it) {
          if (active_.count(it->first) == 0)
            add(it->first, [&] { return ViewOfRecord(it->second); });
        }
        for (auto it = sm.precommitted().upper_bound(after); it != sm.precommitted().end(); ++it) {
          if (active_.count(it->first) == 0) {
            add(it->first, [&] { return ViewOfPreCommit(it->second); });
          }
        }
      });
      if (request.include_begun) {
        for (const auto& [txid, b] : begun_) {
          add(txid, [&, txid = txid, b = b] {
            api::TransactionView v;
            v.txid = txid;
            v.protocol = b.protocol;
            v.phase = api::TransactionPhase::BEGUN;
            v.age_ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(now - b.begun_at).count();
            return v;
          });
        }
      }
      Resp resp;
      for (auto& [txid, v] : views) resp.transactions.push_back(std::move(v));
      resp.more = more;
      return ValueReply(std::move(resp));
    }
  }
  return ErrorReply<Resp>(NotServingError());
}

Reply<api::TransactionView> Driver::Impl::GetTransaction(
    const api::GetTransactionRequest& request) {
  using Resp = api::TransactionView;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (serving_) {
      const TimePoint now = clock_->Now();
      if (auto it = active_.find(request.txid); it != active_.end()) {
        return ValueReply(ViewOf(*it->second, now));
      }
      if (auto it = begun_.find(request.txid); it != begun_.end()) {
        Resp v;
        v.txid = request.txid;
        v.protocol = it->second.protocol;
        v.phase = api::TransactionPhase::BEGUN;
        v.age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.begun_at)
                       .count();
        return ValueReply(std::move(v));
      }
      std::optional<Resp> v = state_->Read([&](const TxnStateMachine& sm) -> std::optional<Resp> {
        TxnLookup l = sm.Lookup(request.txid);
        if (l.record != nullptr) return ViewOfRecord(*l.record);
        if (l.precommit != nullptr) return ViewOfPreCommit(*l.precommit);
        if (l.knowledge == TxnKnowledge::kFinished) {
          Resp f;
          f.txid = request.txid;
          f.phase = api::TransactionPhase::FINISHED;
          f.__set_decision(ToDecision(*l.outcome));
          return f;
        }
        return std::nullopt;
      });
      if (v.has_value()) return ValueReply(std::move(*v));
      return ErrorReply<Resp>(
          ErrorCode::UNKNOWN_TRANSACTION,
          fmt::format("txid {} is neither in progress nor remembered here", request.txid));
    }
  }
  return ErrorReply<Resp>(NotServingError());
}

Driver::Stats Driver::Impl::GetStats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.active = active_.size();
  s.begun = begun_.size();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

Driver::Driver(ReplicatedState* state, CommandLog* log, ParticipantChannel* channel,
               DriverOptions options)
    : impl_(std::make_unique<Impl>(state, log, channel, std::move(options))) {}
Driver::~Driver() = default;

void Driver::BecomeLeader(uint64_t term) { impl_->BecomeLeader(term); }
void Driver::StepDown() { impl_->StepDown(); }
bool Driver::serving() const { return impl_->serving(); }
Reply<api::BeginResponse> Driver::Begin(const api::BeginRequest& request) {
  return impl_->Begin(request);
}
void Driver::Commit(const api::CommitTransactionRequest& request,
                    Done<api::CommitTransactionResponse> done) {
  impl_->Commit(request, std::move(done));
}
void Driver::Abort(const api::AbortTransactionRequest& request,
                   Done<api::AbortTransactionResponse> done) {
  impl_->Abort(request, std::move(done));
}
void Driver::GetOutcome(const api::GetOutcomeRequest& request, Done<api::GetOutcomeResponse> done) {
  impl_->GetOutcome(request, std::move(done));
}
void Driver::Resolve(const api::ResolveRequest& request, Done<api::ResolveResponse> done) {
  impl_->Resolve(request, std::move(done));
}
void Driver::RegisterParticipant(const api::RegisterParticipantRequest& request,
                                 Done<api::RegisterParticipantResponse> done) {
  impl_->RegisterParticipant(request, std::move(done));
}
Reply<api::ListTransactionsResponse> Driver::ListTransactions(
    const api::ListTransactionsRequest& request) {
  return impl_->ListTransactions(request);
}
Reply<api::TransactionView> Driver::GetTransaction(const api::GetTransactionRequest& request) {
  return impl_->GetTransaction(request);
}
void Driver::Tick() { impl_->Tick(); }
Driver::Stats Driver::GetStats() const { return impl_->GetStats(); }

}  // namespace tx::coordinator
