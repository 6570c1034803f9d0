#include "participant/engine.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "participant/changeset.h"
#include "participant/lock_keys.h"
#include "participant/sql_runner.h"

namespace tx::participant {
namespace {

// Bounds the retries of one Execute or Prepare: each retry follows a lock wait or a
// first-committer-wins restart, so this many in a row means heavy contention; giving up
// (CONFLICT) lets the client retry the transaction instead of spinning here.
constexpr int kMaxAttempts = 32;

// How often the maintenance thread looks for idle transactions, at most.
constexpr auto kMaxMaintenancePeriod = std::chrono::seconds(1);

int64_t Millis(Clock::Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal:
      return "INTERNAL";
    case ErrorCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case ErrorCode::kInvalidSql:
      return "INVALID_SQL";
    case ErrorCode::kConstraintViolation:
      return "CONSTRAINT_VIOLATION";
    case ErrorCode::kNoPrimaryKey:
      return "NO_PRIMARY_KEY";
    case ErrorCode::kUnknownTransaction:
      return "UNKNOWN_TRANSACTION";
    case ErrorCode::kWrongState:
      return "WRONG_STATE";
    case ErrorCode::kConflict:
      return "CONFLICT";
    case ErrorCode::kLockTimeout:
      return "LOCK_TIMEOUT";
    case ErrorCode::kDeadlock:
      return "DEADLOCK";
    case ErrorCode::kTooLarge:
      return "TOO_LARGE";
    case ErrorCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case ErrorCode::kAborted:
      return "ABORTED";
    case ErrorCode::kUnavailable:
      return "UNAVAILABLE";
    case ErrorCode::kTimedOut:
      return "TIMED_OUT";
  }
  return "UNKNOWN_ERROR_CODE";
}

std::string Error::ToString() const {
  return fmt::format("{}: {}{}", ErrorCodeName(code), message,
                     transaction_aborted ? " (transaction aborted)" : "");
}

std::string_view TxnStateName(TxnState state) {
  switch (state) {
    case TxnState::kUnknown:
      return "UNKNOWN";
    case TxnState::kActive:
      return "ACTIVE";
    case TxnState::kPrepared:
      return "PREPARED";
    case TxnState::kPreCommitted:
      return "PRECOMMITTED";
    case TxnState::kCommitted:
      return "COMMITTED";
    case TxnState::kAborted:
      return "ABORTED";
  }
  return "UNKNOWN";
}

StatusOr<std::unique_ptr<Participant>> Participant::Open(const Options& options) {
  return ParticipantImpl::Open(options);
}

// ---- transactions

struct ParticipantImpl::Txn {
  Txn(TxId t, Clock::TimePoint now)
      : id(t),
        state_since_ns(now.time_since_epoch().count()),
        last_activity_ns(now.time_since_epoch().count()) {}

  const TxId id;
  // Serializes calls on this transaction. Held across a lock wait; Abort interrupts that wait
  // through LockManager::Cancel before taking it.
  std::mutex mu;

  // Written under mu; atomics so that Status, ListPrepared and the maintenance thread can
  // read them without waiting for a call in progress.
  std::atomic<TxnState> state{TxnState::kActive};
  std::atomic<int64_t> state_since_ns;
  std::atomic<int64_t> last_activity_ns;
  std::atomic<int64_t> rows{0};
  std::atomic<int64_t> changeset_bytes{0};
  // The commit sequence visible when the transaction began (first-committer-wins). Set at
  // creation, under txns_mu_, so that the maintenance thread's pruning watermark never passes
  // a transaction it has not seen.
  std::atomic<uint64_t> start_seq{0};
  std::atomic<bool> abort_requested{false};
  // 3PC: joined a termination round (durable in the prepared record's state). Written under mu.
  std::atomic<bool> in_termination{false};

  // GUARDED_BY(mu)
  std::string changeset;
  bool returned_results = false;  // a successful Execute has shown the client data
  int32_t executes_seen = 0;      // Executes taken, for ExecuteRequest.sequence

  std::mutex info_mu;           // info is read by Status without mu
  std::optional<TxnInfo> info;  // GUARDED_BY(info_mu)
};

class ParticipantImpl::ReaderLease {
 public:
  ReaderLease(ParticipantImpl* owner, std::unique_ptr<Connection> conn)
      : owner_(owner), conn_(std::move(conn)) {}
  ReaderLease(ReaderLease&&) = default;
  ~ReaderLease() {
    if (conn_ == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(owner_->readers_mu_);
      owner_->readers_.push_back(std::move(conn_));
    }
    owner_->readers_cv_.notify_one();
  }
  Connection* operator->() const { return conn_.get(); }
  Connection* get() const { return conn_.get(); }

 private:
  ParticipantImpl* owner_;
  std::unique_ptr<Connection> conn_;
};

ParticipantImpl::ReaderLease ParticipantImpl::LeaseReader() {
  std::unique_lock<std::mutex> lock(readers_mu_);
  readers_cv_.wait(lock, [this] { return !readers_.empty(); });
  std::unique_ptr<Connection> conn = std::move(readers_.back());
  readers_.pop_back();
  return ReaderLease(this, std::move(conn));
}

// ---- open and close

ParticipantImpl::ParticipantImpl(const Options& options)
    : Participant(options),
      clock_(options.clock),
      locks_(options.clock, LockManager::Limits{options.max_locks_per_transaction,
                                                LockManager::Limits{}.max_total_locks}),
      maintenance_waiter_(options.clock) {
  MetricsRegistry* m = MetricsRegistry::Default();
  votes_ = m->AddCounterFamily("tx_participant_votes_total", "Prepare votes by kind.", {"vote"});
  outcomes_ = m->AddCounterFamily("tx_participant_outcomes_total",
                                  "Transactions finished, by outcome.", {"outcome"});
  aborts_ = m->AddCounterFamily("tx_participant_aborts_total",
                                "Transactions aborted here, by reason.", {"reason"});
  lock_waits_ = m->AddCounter("tx_participant_lock_waits_total",
                              "Lock requests that had to wait for another transaction.");
  active_gauge_ = m->AddGauge("tx_participant_active_transactions",
                              "Transactions executing (not yet prepared).");
  prepared_gauge_ = m->AddGauge("tx_participant_prepared_transactions",
                                "Prepared transactions waiting for their outcome.");
}

StatusOr<std::unique_ptr<Participant>> ParticipantImpl::Open(const Options& options) {
  if (options.db_path.empty()) return Status::InvalidArgument("no database path given");
  if (options.clock == nullptr) return Status::InvalidArgument("no clock given");
  if (options.reader_connections == 0) {
    return Status::InvalidArgument("reader_connections must be at least 1");
  }
  InstallSqliteLogger();
  std::unique_ptr<ParticipantImpl> p(new ParticipantImpl(options));
  TX_RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<Participant>(std::move(p));
}

Status ParticipantImpl::Init() {
  const Options& o = options();
  // One agent per database: a second one would break every guarantee (its locks and
  // prepared transactions are invisible to us).
  StatusOr<std::unique_ptr<FileLock>> lock = FileSystem::Default()->LockFile(o.db_path + ".lock");
  if (!lock.ok()) {
    return Status::FailedPrecondition(fmt::format("database {} is in use by another agent: {}",
                                                  o.db_path, lock.status().message()));
  }
  file_lock_ = std::move(lock).value();

  TX_ASSIGN_OR_RETURN(std::unique_ptr<Connection> writer_conn,
                      Connection::Open(o.db_path, o.foreign_keys, &schema_));
  if (!o.init_sql.empty()) {
    Status s = Exec(writer_conn->db(), o.init_sql);
    if (!s.ok()) return s.Annotate("init SQL");
  }
  Writer::Limits limits{o.max_result_bytes, o.max_changeset_bytes, o.max_durable_outcomes,
                        o.statement_timeout_ms};
  TX_ASSIGN_OR_RETURN(writer_, Writer::Start(std::move(writer_conn), limits, &locks_, &versions_,
                                             clock_, MetricsRegistry::Default()));
  for (size_t i = 0; i < o.reader_connections; ++i) {
    TX_ASSIGN_OR_RETURN(std::unique_ptr<Connection> reader,
                        Connection::Open(o.db_path, o.foreign_keys, &schema_));
    readers_.push_back(std::move(reader));
  }

  // Recovery: every prepared transaction comes back, holding its locks.
  TX_ASSIGN_OR_RETURN(std::vector<PreparedRecord> prepared, writer_->LoadPrepared());
  const Clock::TimePoint now = clock_->Now();
  for (PreparedRecord& r : prepared) {
    auto txn = std::make_shared<Txn>(r.txid, now);
    for (const LockRequest& l : r.locks) {
      TxId blocker = 0;
      StatusOr<bool> got = locks_.TryAcquire(r.txid, l.key, l.mode, &blocker);
      if (!got.ok() || !*got) {
        return Status::Corruption(fmt::format(
            "prepared transactions {} and {} both hold {}: the prepared records are damaged",
            r.txid, blocker, DescribeLockKey(l.key)));
      }
    }
    txn->state.store(r.precommitted ? TxnState::kPreCommitted : TxnState::kPrepared);
    txn->in_termination.store(r.in_termination);
    txn->rows.store(CountChanges(r.changeset));
    txn->changeset_bytes.store(static_cast<int64_t>(r.changeset.size()));
    txn->changeset = std::move(r.changeset);
    txn->returned_results = true;
    txn->info = std::move(r.info);
    txns_.emplace(r.txid, std::move(txn));
  }
  if (!prepared.empty()) {
    spdlog::info(
        "recovered {} prepared transactions (oldest txid {}); their rows stay locked "
        "until their outcome is known",
        prepared.size(), prepared.front().txid);
  }
  prepared_gauge_->Set(static_cast<double>(prepared.size()));
  maintenance_ = std::thread([this] { MaintenanceLoop(); });
  return Status::OK();
}

ParticipantImpl::~ParticipantImpl() {
  stopping_.store(true);
  maintenance_waiter_.Notify();
  if (maintenance_.joinable()) maintenance_.join();
  writer_.reset();  // runs what is queued
  std::lock_guard<std::mutex> lock(txns_mu_);
  for (auto& [txid, txn] : txns_) locks_.ReleaseAll(txid);
  txns_.clear();
}

// ---- lookups

std::shared_ptr<ParticipantImpl::Txn> ParticipantImpl::FindTxn(TxId txid) {
  std::lock_guard<std::mutex> lock(txns_mu_);
  auto it = txns_.find(txid);
  return it == txns_.end() ? nullptr : it->second;
}

StatusOr<std::optional<ParticipantImpl::Finished>> ParticipantImpl::LookupDurable(TxId txid) {
  ReaderLease reader = LeaseReader();
  TX_ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                      reader->PrepareInternal(
                          fmt::format("SELECT outcome FROM {} WHERE txid = ?", kOutcomesTable)));
  sqlite3_bind_int64(stmt, 1, txid);
  int rc = sqlite3_step(stmt);
  std::optional<Finished> out;
  if (rc == SQLITE_ROW) {
    Finished f;
    int outcome = sqlite3_column_int(stmt, 0);
    TX_CHECK(outcome == kStoredCommitted || outcome == kStoredAborted,
             "stored outcome {} of transaction {} is neither committed nor aborted", outcome, txid);
    f.state = outcome == kStoredCommitted ? TxnState::kCommitted : TxnState::kAborted;
    f.reason = outcome == kStoredAborted ? "aborted after prepare" : "";
    out = f;
  }
  sqlite3_reset(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return SqliteStatus(rc, reader->db(), "look up outcome");
  }
  return out;
}

std::optional<ParticipantImpl::Finished> ParticipantImpl::FindFinished(TxId txid) {
  {
    std::lock_guard<std::mutex> lock(txns_mu_);
    auto it = finished_.find(txid);
    if (it != finished_.end()) return it->second;
  }
  StatusOr<std::optional<Finished>> durable = LookupDurable(txid);
  if (!durable.ok()) {
    spdlog::warn("looking up the outcome of {} failed: {}", txid, durable.status().ToString());
    return std::nullopt;
  }
  return *durable;
}

Error ParticipantImpl::FinishedError(TxId txid, const Finished& f) {
  if (f.state == TxnState::kCommitted) {
    return Error{ErrorCode::kWrongState, fmt::format("transaction {} has committed", txid)};
  }
  return Error{ErrorCode::kAborted, fmt::format("transaction {} was aborted: {}", txid, f.reason),
               true};
}

void ParticipantImpl::Touch(Txn& txn) {
  txn.last_activity_ns.store(clock_->Now().time_since_epoch().count(), std::memory_order_relaxed);
}

void ParticipantImpl::FinishLocked(Txn& txn, Finished finished) {
  TxnState before = txn.state.load();
  TX_CHECK(before == TxnState::kActive || before == TxnState::kPrepared ||
               (before == TxnState::kPreCommitted && finished.state == TxnState::kCommitted),
           "finishing transaction {} in state {}", txn.id, TxnStateName(before));
  TX_CHECK(finished.state == TxnState::kCommitted || finished.state == TxnState::kAborted,
           "finishing transaction {} into state {}", txn.id, TxnStateName(finished.state));
  txn.state.store(finished.state);
  txn.state_since_ns.store(clock_->Now().time_since_epoch().count());
  locks_.ReleaseAll(txn.id);
  outcomes_->WithLabels({finished.state == TxnState::kCommitted ? "committed" : "aborted"})
      ->Increment();
  if (finished.state == TxnState::kAborted) {
    aborts_->WithLabels({std::string(ErrorCodeName(finished.code))})->Increment();
  }
  {
    std::lock_guard<std::mutex> lock(txns_mu_);
    txns_.erase(txn.id);
  }
  Remember(txn.id, std::move(finished));
}

void ParticipantImpl::Remember(TxId txid, Finished finished) {
  std::lock_guard<std::mutex> lock(txns_mu_);
  auto [it, inserted] = finished_.insert_or_assign(txid, std::move(finished));
  if (inserted) finished_order_.push_back(txid);
  while (finished_order_.size() > options().max_remembered_outcomes) {
    finished_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

Error ParticipantImpl::AbortLocked(Txn& txn, ErrorCode code, std::string reason) {
  Finished f;
  f.state = TxnState::kAborted;
  f.code = code;
  f.reason = reason;
  FinishLocked(txn, std::move(f));
  return Error{code, std::move(reason), true};
}

// ---- Execute

Result<std::vector<ResultSet>> ParticipantImpl::Execute(TxId txid,
                                                        const std::vector<Statement>& statements,
                                                        const TxnInfo* info,
                                                        std::optional<int32_t> sequence) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  if (sequence && *sequence < 0) {
    return Error{ErrorCode::kInvalidArgument,
                 fmt::format("Execute sequence must be >= 0, got {}", *sequence)};
  }
  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    if (std::optional<Finished> f = FindFinished(txid)) return FinishedError(txid, *f);
    if (sequence && *sequence > 0) {
      // The client ran Executes here that this agent has no trace of: it restarted since (an
      // active transaction lives in memory only). Committing the later Executes alone would
      // commit part of the transaction, so it ends here; a later Prepare votes NO.
      std::string reason = fmt::format(
          "transaction {} is unknown here but this is its Execute #{}: the earlier ones were "
          "lost (the participant most likely restarted)",
          txid, *sequence);
      Finished f;
      f.state = TxnState::kAborted;
      f.code = ErrorCode::kAborted;
      f.reason = reason;
      Remember(txid, std::move(f));
      return Error{ErrorCode::kAborted, std::move(reason), true};
    }
    std::lock_guard<std::mutex> lock(txns_mu_);
    auto it = txns_.find(txid);
    if (it != txns_.end()) {
      txn = it->second;
    } else {
      if (txns_.size() >= options().max_transactions) {
        return Error{ErrorCode::kResourceExhausted,
                     fmt::format("{} transactions are live, the most this agent allows; retry "
                                 "later",
                                 txns_.size())};
      }
      txn = std::make_shared<Txn>(txid, clock_->Now());
      // Read before the first statement runs, so every commit at or below it is visible.
      txn->start_seq.store(writer_->visible_seq());
      txns_.emplace(txid, txn);
    }
  }

  std::lock_guard<std::mutex> lock(txn->mu);
  switch (txn->state.load()) {
    case TxnState::kActive:
      break;
    case TxnState::kPrepared:
    case TxnState::kPreCommitted:
      return Error{ErrorCode::kWrongState,
                   fmt::format("transaction {} is prepared; it takes no more statements", txid)};
    default: {
      std::optional<Finished> f = FindFinished(txid);
      return FinishedError(txid, f.value_or(Finished{}));
    }
  }
  if (txn->abort_requested.load()) {
    return AbortLocked(*txn, ErrorCode::kAborted, "aborted by request");
  }
  if (sequence) {
    if (*sequence < txn->executes_seen) {
      return Error{ErrorCode::kWrongState,
                   fmt::format("Execute #{} of transaction {} already ran here: a duplicated "
                               "request, ignored",
                               *sequence, txid)};
    }
    if (*sequence > txn->executes_seen) {
      return AbortLocked(
          *txn, ErrorCode::kAborted,
          fmt::format("Execute #{} arrived but #{} never did", *sequence, txn->executes_seen));
    }
  }
  // Counted before validation: a request refused below still takes its number (the client
  // counts every request that got an answer that did not abort the transaction).
  ++txn->executes_seen;
  if (statements.empty()) return Error{ErrorCode::kInvalidArgument, "no statements"};
  if (statements.size() > options().max_statements_per_execute) {
    return Error{ErrorCode::kTooLarge,
                 fmt::format("{} statements in one Execute; at most {}", statements.size(),
                             options().max_statements_per_execute)};
  }
  Touch(*txn);
  if (info != nullptr) {
    std::lock_guard<std::mutex> info_lock(txn->info_mu);
    txn->info = *info;
  }
  Result<std::vector<ResultSet>> r = ExecuteLocked(*txn, statements);
  Touch(*txn);
  return r;
}

std::optional<Result<std::vector<ResultSet>>> ParticipantImpl::TryReadOnly(
    const std::vector<Statement>& stmts) {
  ReaderLease reader = LeaseReader();
  Result<bool> readonly = AllReadOnly(reader.get(), stmts);
  if (!readonly.ok()) return Result<std::vector<ResultSet>>(readonly.error());
  if (!readonly.value()) return std::nullopt;
  // One read transaction: the statements see one snapshot.
  StatementDeadline deadline(reader.get(), options().statement_timeout_ms);
  Status begun = Exec(reader->db(), "BEGIN");
  if (!begun.ok())
    return Result<std::vector<ResultSet>>(Error{ErrorCode::kUnavailable, begun.ToString()});
  size_t budget = options().max_result_bytes;
  std::vector<ResultSet> results;
  for (size_t i = 0; i < stmts.size(); ++i) {
    Result<ResultSet> rs = RunStatement(reader.get(), stmts[i], &budget);
    if (!rs.ok()) {
      (void)Exec(reader->db(), "ROLLBACK");  // a read transaction: nothing to lose
      Error e = rs.error();
      if (stmts.size() > 1) e.message = fmt::format("statement {}: {}", i, e.message);
      return Result<std::vector<ResultSet>>(std::move(e));
    }
    results.push_back(std::move(rs.value()));
  }
  (void)Exec(reader->db(), "ROLLBACK");  // it only read
  return Result<std::vector<ResultSet>>(std::move(results));
}

Result<ParticipantImpl::LockResult> ParticipantImpl::AcquireLocks(
    Txn& txn, const std::vector<LockRequest>& locks, Clock::TimePoint deadline) {
  for (const LockRequest& l : locks) {
    TxId blocker = 0;
    StatusOr<bool> got = locks_.TryAcquire(txn.id, l.key, l.mode, &blocker);
    if (!got.ok()) {
      if (got.status().code() == Status::Code::kCancelled) {
        return AbortLocked(txn, ErrorCode::kAborted, "aborted by request");
      }
      return AbortLocked(txn, ErrorCode::kTooLarge, got.status().message());
    }
    if (*got) continue;
    lock_waits_->Increment();
    const Clock::TimePoint wait_start = clock_->Now();
    Status s = locks_.Acquire(txn.id, l.key, l.mode, deadline);
    if (s.ok()) return LockResult::kWaited;
    switch (s.code()) {
      case Status::Code::kTimedOut:
        return AbortLocked(
            txn, ErrorCode::kLockTimeout,
            fmt::format("waited {} ms for {} held by transaction {} (lock timeout {} ms)",
                        Millis(clock_->Now() - wait_start), DescribeLockKey(l.key), blocker,
                        options().lock_timeout_ms));
      case Status::Code::kAborted:
        return AbortLocked(txn, ErrorCode::kDeadlock,
                           fmt::format("deadlock waiting for {} held by transaction {}",
                                       DescribeLockKey(l.key), blocker));
      case Status::Code::kCancelled:
        return AbortLocked(txn, ErrorCode::kAborted, "aborted by request");
      default:
        return AbortLocked(txn, ErrorCode::kTooLarge, s.message());
    }
  }
  return LockResult::kHeld;
}

Result<std::vector<ResultSet>> ParticipantImpl::ExecuteLocked(Txn& txn,
                                                              const std::vector<Statement>& stmts) {
  const Clock::TimePoint deadline =
      clock_->Now() + std::chrono::milliseconds(options().lock_timeout_ms);
  for (int attempt = 0;; ++attempt) {
    if (txn.changeset.empty()) {
      // Nothing of ours to see: a read-only request runs beside the writer.
      if (auto r = TryReadOnly(stmts)) {
        if (r->ok()) txn.returned_results = true;
        return *std::move(r);
      }
    }
    Result<CaptureOutput> cap = writer_->Capture(txn.changeset, stmts);
    if (!cap.ok()) {
      if (cap.error().transaction_aborted) {
        return AbortLocked(txn, cap.error().code, cap.error().message);
      }
      return cap.error();
    }
    Result<LockResult> locked = AcquireLocks(txn, cap.value().locks, deadline);
    if (!locked.ok()) return locked.error();
    if (locked.value() == LockResult::kWaited) {
      // Another transaction held a row we touch; now that we hold it, run again on what it
      // left behind.
      if (attempt + 1 >= kMaxAttempts) {
        return AbortLocked(txn, ErrorCode::kConflict,
                           fmt::format("gave up after {} attempts under contention", attempt + 1));
      }
      continue;
    }
    if (std::optional<std::string> row = versions_.FindNewer(cap.value().locks, txn.start_seq)) {
      if (!txn.returned_results && attempt + 1 < kMaxAttempts) {
        // The client has seen nothing of this transaction yet: begin it again, later.
        txn.start_seq.store(writer_->visible_seq());
        continue;
      }
      return AbortLocked(txn, ErrorCode::kConflict,
                         fmt::format("{} was changed by a transaction that committed after this "
                                     "one began (first committer wins)",
                                     DescribeLockKey(*row)));
    }
    txn.changeset = std::move(cap.value().changeset);
    txn.rows.store(CountChanges(txn.changeset));
    txn.changeset_bytes.store(static_cast<int64_t>(txn.changeset.size()));
    txn.returned_results = true;
    return std::move(cap.value().results);
  }
}

// ---- Prepare, Commit, Abort

Result<Vote> ParticipantImpl::Prepare(TxId txid, const TxnInfo* info) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  auto vote_no = [&](ErrorCode code, std::string reason) {
    votes_->WithLabels({"no"})->Increment();
    return Vote{Vote::Kind::kNo, code, std::move(reason)};
  };
  auto answer_finished = [&](const Finished& f) -> Vote {
    if (f.state == TxnState::kCommitted) {
      return Vote{f.read_only ? Vote::Kind::kReadOnly : Vote::Kind::kYes, ErrorCode::kInternal, ""};
    }
    return vote_no(f.code, fmt::format("transaction {} was aborted: {}", txid, f.reason));
  };

  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    if (std::optional<Finished> f = FindFinished(txid)) return answer_finished(*f);
    return vote_no(ErrorCode::kUnknownTransaction,
                   fmt::format("unknown transaction {}: it never executed here, or it was "
                               "aborted and forgotten",
                               txid));
  }
  std::lock_guard<std::mutex> lock(txn->mu);
  switch (txn->state.load()) {
    case TxnState::kPrepared:
    case TxnState::kPreCommitted:
      return Vote{Vote::Kind::kYes, ErrorCode::kInternal, ""};
    case TxnState::kActive:
      break;
    default:
      return answer_finished(FindFinished(txid).value_or(Finished{}));
  }
  if (txn->abort_requested.load()) {
    Error e = AbortLocked(*txn, ErrorCode::kAborted, "aborted by request");
    return vote_no(e.code, e.message);
  }
  TxnInfo effective;
  {
    std::lock_guard<std::mutex> info_lock(txn->info_mu);
    if (info != nullptr) txn->info = *info;
    effective = txn->info.value_or(TxnInfo{});
  }
  if (effective.protocol == Protocol::kThreePhase && effective.participants.empty()) {
    return Error{ErrorCode::kInvalidArgument,
                 "a THREE_PHASE transaction must name its participants at prepare"};
  }
  Touch(*txn);
  if (txn->changeset.empty()) {
    Finished f;
    f.state = TxnState::kCommitted;
    f.read_only = true;
    FinishLocked(*txn, std::move(f));
    votes_->WithLabels({"read_only"})->Increment();
    return Vote{Vote::Kind::kReadOnly, ErrorCode::kInternal, ""};
  }

  const Clock::TimePoint deadline =
      clock_->Now() + std::chrono::milliseconds(options().lock_timeout_ms);
  for (int attempt = 0;; ++attempt) {
    Result<Writer::PrepareResult> r = writer_->Prepare(txid, effective, txn->changeset);
    if (!r.ok()) return r.error();  // storage trouble: still active, the caller may retry
    const std::vector<LockRequest>& missing = r.value().missing_locks;
    if (missing.empty()) {
      const Vote& vote = r.value().vote;
      if (vote.kind == Vote::Kind::kYes) {
        txn->state.store(TxnState::kPrepared);
        txn->state_since_ns.store(clock_->Now().time_since_epoch().count());
        votes_->WithLabels({"yes"})->Increment();
        return vote;
      }
      Error e = AbortLocked(*txn, vote.reason_code, vote.reason);
      return vote_no(e.code, e.message);
    }
    if (attempt + 1 >= kMaxAttempts) {
      Error e = AbortLocked(*txn, ErrorCode::kConflict,
                            fmt::format("gave up after {} attempts to lock what the changes "
                                        "depend on",
                                        attempt + 1));
      return vote_no(e.code, e.message);
    }
    Result<LockResult> locked = AcquireLocks(*txn, missing, deadline);
    if (!locked.ok()) return vote_no(locked.error().code, locked.error().message);
    if (std::optional<std::string> row = versions_.FindNewer(missing, txn->start_seq)) {
      Error e = AbortLocked(*txn, ErrorCode::kConflict,
                            fmt::format("{} was changed by a transaction that committed after "
                                        "this one began (first committer wins)",
                                        DescribeLockKey(*row)));
      return vote_no(e.code, e.message);
    }
  }
}

Result<> ParticipantImpl::Commit(TxId txid) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  auto answer_finished = [&](const Finished& f) -> Result<> {
    if (f.state == TxnState::kCommitted) return Unit{};
    return Error{ErrorCode::kWrongState,
                 fmt::format("transaction {} was aborted ({}); it cannot commit", txid, f.reason)};
  };
  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    if (std::optional<Finished> f = FindFinished(txid)) return answer_finished(*f);
    return Error{ErrorCode::kUnknownTransaction,
                 fmt::format("unknown transaction {}: it was never prepared here (or its outcome "
                             "was forgotten); under presumed abort it cannot commit",
                             txid)};
  }
  std::lock_guard<std::mutex> lock(txn->mu);
  switch (txn->state.load()) {
    case TxnState::kPrepared:
    case TxnState::kPreCommitted:
      break;
    case TxnState::kActive:
      return Error{
          ErrorCode::kWrongState,
          fmt::format("transaction {} is not prepared; Commit needs a YES vote first", txid)};
    default:
      return answer_finished(FindFinished(txid).value_or(Finished{}));
  }
  std::vector<LockRequest> held = locks_.HeldLocks(txid);
  Result<> r = writer_->Commit(txid, txn->changeset, held);
  if (!r.ok()) return r.error();  // still prepared; the coordinator retries
  Finished f;
  f.state = TxnState::kCommitted;
  FinishLocked(*txn, std::move(f));
  return Unit{};
}

Result<> ParticipantImpl::Abort(TxId txid) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    std::optional<Finished> f = FindFinished(txid);
    if (f.has_value() && f->state == TxnState::kCommitted && !f->read_only) {
      return Error{ErrorCode::kWrongState,
                   fmt::format("transaction {} has committed; it cannot abort", txid)};
    }
    if (!f.has_value()) {
      // Unknown: presumed abort. Remember it, so that a late Execute (overtaken by this
      // Abort) is refused instead of beginning an orphan that would hold locks until its
      // idle timeout.
      Finished aborted;
      aborted.reason = "aborted before it began here";
      aborted.presumed = true;
      Remember(txid, std::move(aborted));
    }
    return Unit{};  // aborted, read-only, or unknown: presumed abort
  }
  // Interrupt a lock wait of an Execute in progress, which holds txn->mu.
  txn->abort_requested.store(true);
  locks_.Cancel(txid);
  std::lock_guard<std::mutex> lock(txn->mu);
  switch (txn->state.load()) {
    case TxnState::kActive: {
      (void)AbortLocked(*txn, ErrorCode::kAborted, "aborted by request");
      return Unit{};
    }
    case TxnState::kPrepared: {
      Result<> r = writer_->AbortPrepared(txid);
      if (!r.ok()) return r.error();  // still prepared; the coordinator retries
      (void)AbortLocked(*txn, ErrorCode::kAborted, "aborted by the coordinator after prepare");
      return Unit{};
    }
    case TxnState::kPreCommitted:
      // Every participant voted YES and a coordinator logged PRECOMMIT: no one may abort it
      // (a termination round aborts only when nobody is PRECOMMITTED).
      txn->abort_requested.store(false);
      return Error{ErrorCode::kWrongState,
                   fmt::format("transaction {} is PRECOMMITTED; it cannot abort", txid)};
    case TxnState::kCommitted: {
      std::optional<Finished> f = FindFinished(txid);
      if (f.has_value() && f->read_only) return Unit{};
      return Error{ErrorCode::kWrongState,
                   fmt::format("transaction {} has committed; it cannot abort", txid)};
    }
    default:
      return Unit{};
  }
}

Result<OnePhaseOutcome> ParticipantImpl::CommitOnePhase(TxId txid) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  auto answer_finished = [&](const Finished& f) {
    if (f.state == TxnState::kCommitted) return OnePhaseOutcome{true, ErrorCode::kInternal, ""};
    return OnePhaseOutcome{false, f.code,
                           fmt::format("transaction {} was aborted: {}", txid, f.reason)};
  };
  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    if (std::optional<Finished> f = FindFinished(txid)) return answer_finished(*f);
    return OnePhaseOutcome{false, ErrorCode::kUnknownTransaction,
                           fmt::format("unknown transaction {}: it never executed here, or it "
                                       "was aborted and forgotten",
                                       txid)};
  }
  std::lock_guard<std::mutex> lock(txn->mu);
  switch (txn->state.load()) {
    case TxnState::kActive:
      break;
    case TxnState::kPrepared: {
      std::vector<LockRequest> held = locks_.HeldLocks(txid);
      Result<> r = writer_->Commit(txid, txn->changeset, held);
      if (!r.ok()) return r.error();
      Finished f;
      f.state = TxnState::kCommitted;
      FinishLocked(*txn, std::move(f));
      return OnePhaseOutcome{true, ErrorCode::kInternal, ""};
    }
    case TxnState::kPreCommitted:
      return Error{ErrorCode::kWrongState,
                   fmt::format("transaction {} is PRECOMMITTED (3PC); CommitOnePhase does not "
                               "apply",
                               txid)};
    default:
      return answer_finished(FindFinished(txid).value_or(Finished{}));
  }
  if (txn->abort_requested.load()) {
    Error e = AbortLocked(*txn, ErrorCode::kAborted, "aborted by request");
    return OnePhaseOutcome{false, e.code, e.message};
  }
  Finished f;
  f.state = TxnState::kCommitted;
  if (txn->changeset.empty()) {
    f.read_only = true;
    FinishLocked(*txn, std::move(f));
    return OnePhaseOutcome{true, ErrorCode::kInternal, ""};
  }
  std::vector<LockRequest> held = locks_.HeldLocks(txid);
  Result<OnePhaseOutcome> r = writer_->CommitOnePhase(txid, txn->changeset, held);
  if (!r.ok()) return r.error();  // still active; retrying is safe
  if (r.value().committed) {
    FinishLocked(*txn, std::move(f));
  } else {
    (void)AbortLocked(*txn, r.value().reason_code, r.value().reason);
  }
  return r;
}

// ---- 3PC: PreCommit and the termination protocol

int ParticipantImpl::StoredState(bool precommitted, bool in_termination) {
  return (precommitted ? kStoredPreCommitted : kStoredPrepared) |
         (in_termination ? kStoredInTermination : 0);
}

ThreePhaseState ParticipantImpl::FinishedThreePhaseState(TxId txid) {
  ThreePhaseState out;
  std::optional<Finished> f = FindFinished(txid);
  // A read-only participant finished without a vote that counts: it has no say (UNKNOWN).
  if (f.has_value() && !f->read_only && !f->presumed) out.state = f->state;
  return out;
}

Result<ThreePhaseState> ParticipantImpl::PreCommit(TxId txid, PreCommitSource source) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    ThreePhaseState s = FinishedThreePhaseState(txid);
    if (s.state == TxnState::kUnknown) {
      return Error{ErrorCode::kUnknownTransaction,
                   fmt::format("PreCommit of transaction {}, which was never prepared here (or "
                               "whose outcome was forgotten)",
                               txid)};
    }
    return s;  // COMMITTED or ABORTED (by a termination round, or the coordinator)
  }
  std::lock_guard<std::mutex> lock(txn->mu);
  ThreePhaseState out;
  out.in_termination = txn->in_termination.load();
  switch (txn->state.load()) {
    case TxnState::kPreCommitted:
      out.state = TxnState::kPreCommitted;
      return out;
    case TxnState::kPrepared:
      break;
    case TxnState::kActive:
      return Error{ErrorCode::kWrongState,
                   fmt::format("PreCommit of transaction {}, which is not prepared", txid)};
    default:
      return FinishedThreePhaseState(txid);
  }
  {
    std::lock_guard<std::mutex> info_lock(txn->info_mu);
    if (!txn->info.has_value() || txn->info->protocol != Protocol::kThreePhase) {
      return Error{
          ErrorCode::kWrongState,
          fmt::format("PreCommit of transaction {}, which was prepared as TWO_PHASE", txid)};
    }
  }
  if (out.in_termination && source == PreCommitSource::kCoordinator) {
    // This participant told a termination round that it is only PREPARED; that round may
    // abort, so only the round may move it now.
    out.state = TxnState::kPrepared;
    return out;
  }
  Result<> r = writer_->SetPreparedState(txid, StoredState(true, out.in_termination));
  if (!r.ok()) return r.error();  // still prepared; the sender retries
  txn->state.store(TxnState::kPreCommitted);
  txn->state_since_ns.store(clock_->Now().time_since_epoch().count());
  votes_->WithLabels({"precommitted"})->Increment();
  out.state = TxnState::kPreCommitted;
  return out;
}

Result<ThreePhaseState> ParticipantImpl::TerminationState(TxId txid, bool join) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  std::shared_ptr<Txn> txn = FindTxn(txid);
  if (txn == nullptr) {
    ThreePhaseState s = FinishedThreePhaseState(txid);
    if (join && !FindFinished(txid).has_value()) {
      // Unknown here: presumed abort, remembered (in memory) so that a late Execute cannot
      // begin it. Not durably: "unknown" is also what a read-only participant that restarted,
      // or one that forgot an old outcome, knows, and the transaction may have committed
      // elsewhere; it has no say (UNKNOWN) in this round or later ones.
      Result<> r = Abort(txid);
      if (!r.ok()) return r.error();
    }
    return s;
  }
  if (join && txn->state.load() == TxnState::kActive) {
    // Not yet prepared: it may still abort unilaterally, and must, durably, so that the state
    // the round collects cannot change behind it (a late Prepare now votes NO, even after a
    // restart).
    Result<> r = Abort(txid);
    if (!r.ok()) return r.error();
    r = writer_->RecordAborted(txid);
    if (!r.ok()) return r.error();
    return FinishedThreePhaseState(txid);
  }
  std::lock_guard<std::mutex> lock(txn->mu);
  ThreePhaseState out;
  const TxnState st = txn->state.load();
  if (st != TxnState::kPrepared && st != TxnState::kPreCommitted) {
    return st == TxnState::kActive ? ThreePhaseState{TxnState::kActive, false}
                                   : FinishedThreePhaseState(txid);
  }
  out.state = st;
  bool three_phase;
  {
    std::lock_guard<std::mutex> info_lock(txn->info_mu);
    three_phase = txn->info.has_value() && txn->info->protocol == Protocol::kThreePhase;
  }
  if (join && three_phase && !txn->in_termination.load()) {
    // Durable before the answer: a restart must not forget that this participant is bound to
    // the round (it would accept a coordinator's PreCommit the round does not know about).
    Result<> r = writer_->SetPreparedState(txid, StoredState(st == TxnState::kPreCommitted, true));
    if (!r.ok()) return r.error();
    txn->in_termination.store(true);
    spdlog::info("transaction {}: joined a termination round as {}", txid, TxnStateName(st));
  }
  out.in_termination = txn->in_termination.load();
  return out;
}

// ---- status

TxnStatus ParticipantImpl::StatusOf(Txn& txn) {
  TxnStatus s;
  s.txid = txn.id;
  s.state = txn.state.load();
  s.rows_written = txn.rows.load();
  s.changeset_bytes = txn.changeset_bytes.load();
  s.locks_held = static_cast<int64_t>(locks_.HeldCount(txn.id));
  s.state_age_ms =
      Millis(clock_->Now() - Clock::TimePoint(Clock::Duration(txn.state_since_ns.load())));
  s.in_termination = txn.in_termination.load();
  std::lock_guard<std::mutex> lock(txn.info_mu);
  s.info = txn.info;
  return s;
}

Result<TxnStatus> ParticipantImpl::GetStatus(TxId txid) {
  if (txid <= 0) {
    return Error{ErrorCode::kInvalidArgument, fmt::format("txid must be positive, got {}", txid)};
  }
  if (std::shared_ptr<Txn> txn = FindTxn(txid)) return StatusOf(*txn);
  TxnStatus s;
  s.txid = txid;
  if (std::optional<Finished> f = FindFinished(txid)) {
    s.state = f->state;
    if (f->state == TxnState::kAborted) s.abort_reason = f->reason;
  }
  return s;
}

std::vector<TxnStatus> ParticipantImpl::ListPrepared(TxId after, size_t limit, bool* more) {
  std::vector<std::shared_ptr<Txn>> prepared;
  {
    std::lock_guard<std::mutex> lock(txns_mu_);
    for (const auto& [txid, txn] : txns_) {
      const TxnState st = txn->state.load();
      if (txid > after && (st == TxnState::kPrepared || st == TxnState::kPreCommitted)) {
        prepared.push_back(txn);
      }
    }
  }
  std::sort(prepared.begin(), prepared.end(),
            [](const auto& a, const auto& b) { return a->id < b->id; });
  *more = prepared.size() > limit;
  if (prepared.size() > limit) prepared.resize(limit);
  std::vector<TxnStatus> out;
  out.reserve(prepared.size());
  for (const auto& txn : prepared) out.push_back(StatusOf(*txn));
  return out;
}

std::vector<TxId> ParticipantImpl::InDoubt(Clock::Duration min_age) {
  const int64_t now_ns = clock_->Now().time_since_epoch().count();
  std::vector<std::pair<int64_t, TxId>> found;
  {
    std::lock_guard<std::mutex> lock(txns_mu_);
    for (const auto& [txid, txn] : txns_) {
      const TxnState st = txn->state.load();
      if (st != TxnState::kPrepared && st != TxnState::kPreCommitted) continue;
      int64_t since = txn->state_since_ns.load();
      if (now_ns - since >= min_age.count()) found.emplace_back(since, txid);
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<TxId> out;
  out.reserve(found.size());
  for (const auto& [since, txid] : found) out.push_back(txid);
  return out;
}

Stats ParticipantImpl::GetStats() {
  Stats s;
  {
    std::lock_guard<std::mutex> lock(txns_mu_);
    for (const auto& [txid, txn] : txns_) {
      const TxnState st = txn->state.load();
      if (st == TxnState::kPrepared || st == TxnState::kPreCommitted) {
        ++s.prepared_transactions;
      } else {
        ++s.active_transactions;
      }
    }
  }
  s.locks_held = static_cast<int64_t>(locks_.TotalLocks());
  s.lock_waiters = static_cast<int64_t>(locks_.WaitingCount());
  s.queued_jobs = static_cast<int64_t>(writer_->queued());
  s.durable_batches = writer_->batches();
  s.durable_ops = writer_->durable_jobs();
  return s;
}

// ---- maintenance: idle aborts and first-committer-wins pruning

void ParticipantImpl::MaintenanceLoop() {
  const auto period = std::min<Clock::Duration>(
      kMaxMaintenancePeriod,
      std::chrono::milliseconds(std::max<int64_t>(1, options().idle_timeout_ms / 4)));
  while (!stopping_.load()) {
    maintenance_waiter_.WaitUntil(clock_->Now() + period);
    if (stopping_.load()) return;
    AbortIdle();
    Stats s = GetStats();
    active_gauge_->Set(static_cast<double>(s.active_transactions));
    prepared_gauge_->Set(static_cast<double>(s.prepared_transactions));
  }
}

void ParticipantImpl::AbortIdle() {
  const Clock::TimePoint now = clock_->Now();
  const int64_t idle_ns =
      std::chrono::nanoseconds(std::chrono::milliseconds(options().idle_timeout_ms)).count();
  // Read before the snapshot of live transactions: one created after the snapshot starts at
  // a visible_seq no lower than this, so it needs nothing that is pruned below it.
  uint64_t watermark = writer_->visible_seq();
  std::vector<std::shared_ptr<Txn>> live;
  {
    std::lock_guard<std::mutex> lock(txns_mu_);
    live.reserve(txns_.size());
    for (const auto& [txid, txn] : txns_) live.push_back(txn);
  }
  for (const auto& txn : live) {
    if (txn->state.load() != TxnState::kActive) continue;
    const int64_t idle = now.time_since_epoch().count() - txn->last_activity_ns.load();
    if (idle >= idle_ns) {
      // A call in progress holds mu: that transaction is not idle.
      std::unique_lock<std::mutex> lock(txn->mu, std::try_to_lock);
      if (lock.owns_lock() && txn->state.load() == TxnState::kActive) {
        spdlog::info("aborting transaction {}: idle for {} ms", txn->id, idle / 1000000);
        (void)AbortLocked(*txn, ErrorCode::kAborted,
                          fmt::format("idle for more than {} ms: aborted unilaterally (allowed "
                                      "before the vote)",
                                      options().idle_timeout_ms));
        continue;
      }
    }
    watermark = std::min(watermark, txn->start_seq.load());
  }
  versions_.Prune(watermark);
}

}  // namespace tx::participant
