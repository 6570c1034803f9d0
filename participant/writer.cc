#include "participant/writer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>

#include "common/completion.h"
#include "common/failpoint.h"
#include "participant/changeset.h"
#include "participant/lock_keys.h"
#include "participant/record_codec.h"
#include "participant/sql_runner.h"

namespace tx::participant {
namespace {

// Bounds the queue. Each submitter blocks until its job is done, so the queue never holds more
// jobs than there are threads calling in (the RPC server bounds those); this only catches a
// runaway caller.
constexpr size_t kMaxQueuedJobs = 8192;

// Pruning the outcome table costs a DELETE; doing it once per this many outcomes keeps the
// cost negligible and the table within max_durable_outcomes + this.
constexpr int64_t kPruneEveryOutcomes = 1024;

// The layout version of the agent's tables, kept in _txpart_meta. Bump on any change, and
// teach Setup() to upgrade or refuse.
constexpr int kSchemaVersion = 1;

int64_t UnixMillis(Clock* clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             clock->SystemNow().time_since_epoch())
      .count();
}

Error Unavailable(const Status& s) { return Error{ErrorCode::kUnavailable, s.ToString()}; }

// Bounds the rows one capture remembers as touched by UPDATE; each becomes a lock, so this
// matches the default per-transaction lock bound.
constexpr size_t kMaxTouchedRows = 200000;

// Rows of rowid tables that user statements updated (sqlite3_update_hook), changed or not.
struct TouchedRows {
  std::set<std::pair<std::string, int64_t>> rows;
  bool overflow = false;
};

void OnRowUpdated(void* arg, int op, const char* db, const char* table, sqlite3_int64 rowid) {
  if (op != SQLITE_UPDATE || db == nullptr || std::strcmp(db, "main") != 0) return;
  auto* touched = static_cast<TouchedRows*>(arg);
  if (touched->rows.size() >= kMaxTouchedRows) {
    touched->overflow = true;
    return;
  }
  touched->rows.emplace(table, rowid);
}

}  // namespace

struct Writer::Job {
  enum class Kind {
    kCapture,
    kPrepare,
    kCommit,
    kOnePhase,
    kAbortPrepared,
    kSetState,
    kRecordAborted
  };
  explicit Job(Kind k) : kind(k) {}

  const Kind kind;
  TxId txid = 0;
  // Inputs, owned by the submitter, which waits until the job is done.
  const std::string* changeset = nullptr;
  const std::vector<Statement>* statements = nullptr;
  const TxnInfo* info = nullptr;
  const std::vector<LockRequest>* locks = nullptr;
  int stored_state = 0;  // kSetState

  // Outputs.
  std::optional<Error> error;
  CaptureOutput capture;
  PrepareResult prepare;
  OnePhaseOutcome one_phase;

  // The submitter waits on its own stack and returns (destroying the job) as soon as it sees
  // it done: Completion makes that safe (its Finish notifies under its mutex; finding 3).
  void Finish() { done.Finish(); }
  void Wait() { done.Wait(); }

  Completion done;
};

StatusOr<std::unique_ptr<Writer>> Writer::Start(std::unique_ptr<Connection> conn, Limits limits,
                                                LockManager* locks, CommitVersions* versions,
                                                Clock* clock, MetricsRegistry* metrics) {
  std::unique_ptr<Writer> w(new Writer(std::move(conn), limits, locks, versions, clock, metrics));
  TX_RETURN_IF_ERROR(w->Setup());
  w->thread_ = std::thread([p = w.get()] { p->Loop(); });
  return w;
}

Writer::Writer(std::unique_ptr<Connection> conn, Limits limits, LockManager* locks,
               CommitVersions* versions, Clock* clock, MetricsRegistry* metrics)
    : conn_(std::move(conn)), limits_(limits), locks_(locks), versions_(versions), clock_(clock) {
  batches_metric_ = metrics->AddCounter("tx_participant_durable_batches_total",
                                        "SQLite transactions (one fsync each) of durable jobs.");
  batch_size_metric_ = metrics->AddHistogram("tx_participant_durable_batch_jobs",
                                             "Durable jobs (prepare, commit, abort) per batch.",
                                             ExponentialBuckets(1, 2, 10));
  batch_seconds_metric_ = metrics->AddHistogram(
      "tx_participant_durable_batch_seconds",
      "Time to run and commit one batch of durable jobs, fsync included.", kLatencyBucketsSeconds);
  captures_metric_ = metrics->AddCounter("tx_participant_captures_total",
                                         "Executes run on the writer (changeset captures).");
}

Writer::~Writer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

Status Writer::Setup() {
  sqlite3* db = conn_->db();
  TX_RETURN_IF_ERROR(
      Exec(db, fmt::format("CREATE TABLE IF NOT EXISTS {}(key TEXT PRIMARY KEY, value ANY) STRICT;"
                           "CREATE TABLE IF NOT EXISTS {}("
                           "  txid INTEGER PRIMARY KEY,"
                           "  state INTEGER NOT NULL,"
                           "  protocol INTEGER NOT NULL,"
                           "  info BLOB NOT NULL,"
                           "  changeset BLOB NOT NULL,"
                           "  locks BLOB NOT NULL,"
                           "  prepared_unix_ms INTEGER NOT NULL) STRICT;"
                           "CREATE TABLE IF NOT EXISTS {}("
                           "  seq INTEGER PRIMARY KEY,"
                           "  txid INTEGER NOT NULL UNIQUE,"
                           "  outcome INTEGER NOT NULL,"
                           "  finished_unix_ms INTEGER NOT NULL) STRICT;",
                           kMetaTable, kPreparedTable, kOutcomesTable)));
  TX_ASSIGN_OR_RETURN(StmtHandle get,
                      PrepareStmt(db, fmt::format("SELECT value FROM {} WHERE key = "
                                                  "'schema_version'",
                                                  kMetaTable)));
  int rc = sqlite3_step(get.get());
  if (rc == SQLITE_ROW) {
    int64_t version = sqlite3_column_int64(get.get(), 0);
    if (version != kSchemaVersion) {
      return Status::FailedPrecondition(
          fmt::format("the agent's tables have layout version {}, this txpart understands {}",
                      version, kSchemaVersion));
    }
  } else if (rc == SQLITE_DONE) {
    TX_RETURN_IF_ERROR(Exec(db, fmt::format("INSERT INTO {}(key, value) VALUES "
                                            "('schema_version', {})",
                                            kMetaTable, kSchemaVersion)));
  } else {
    return SqliteStatus(rc, db, "read schema_version");
  }
  return Status::OK();
}

StatusOr<std::vector<PreparedRecord>> Writer::LoadPrepared() {
  sqlite3* db = conn_->db();
  TX_ASSIGN_OR_RETURN(
      StmtHandle stmt,
      PrepareStmt(db, fmt::format("SELECT txid, state, protocol, info, changeset, locks, "
                                  "prepared_unix_ms FROM {} ORDER BY txid",
                                  kPreparedTable)));
  std::vector<PreparedRecord> out;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    PreparedRecord r;
    r.txid = sqlite3_column_int64(stmt.get(), 0);
    int state = sqlite3_column_int(stmt.get(), 1);
    auto blob = [&](int col) {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt.get(), col));
      return std::string(p != nullptr ? p : "",
                         static_cast<size_t>(sqlite3_column_bytes(stmt.get(), col)));
    };
    auto corrupt = [&](const std::string& what) {
      return Status::Corruption(
          fmt::format("prepared transaction {} in {}: {}", r.txid, kPreparedTable, what));
    };
    if (r.txid <= 0) return corrupt("txid is not positive");
    const int base = state & kStoredStateMask;
    if ((base != kStoredPrepared && base != kStoredPreCommitted) ||
        (state & ~(kStoredStateMask | kStoredInTermination)) != 0) {
      return corrupt(fmt::format("unknown state {}", state));
    }
    r.precommitted = base == kStoredPreCommitted;
    r.in_termination = (state & kStoredInTermination) != 0;
    StatusOr<TxnInfo> info = DecodeTxnInfo(blob(3));
    if (!info.ok()) return corrupt(info.status().message());
    if (static_cast<int>(info->protocol) != sqlite3_column_int(stmt.get(), 2)) {
      return corrupt("protocol column and info disagree");
    }
    r.info = *std::move(info);
    r.changeset = blob(4);
    if (r.changeset.empty() || CountChanges(r.changeset) == 0) {
      return corrupt("empty or unreadable changeset");
    }
    StatusOr<std::vector<LockRequest>> locks = DecodeLocks(blob(5));
    if (!locks.ok()) return corrupt(locks.status().message());
    r.locks = *std::move(locks);
    r.prepared_unix_ms = sqlite3_column_int64(stmt.get(), 6);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return SqliteStatus(rc, db, "read prepared transactions");
  return out;
}

Status Writer::Submit(Job* job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failed_.empty()) return Status::Unavailable(failed_);
    if (stop_) return Status::Unavailable("the participant is shutting down");
    if (queue_.size() >= kMaxQueuedJobs) {
      return Status::ResourceExhausted("too many requests queued for the writer");
    }
    queue_.push_back(job);
  }
  cv_.notify_one();
  job->Wait();
  return Status::OK();
}

void Writer::Loop() {
  while (true) {
    std::vector<Job*> jobs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      jobs.swap(queue_);
    }
    std::vector<Job*> durable;
    for (Job* job : jobs) {
      if (job->kind == Job::Kind::kCapture) {
        RunCapture(job);
        job->Finish();
      } else {
        durable.push_back(job);
      }
    }
    if (!durable.empty()) RunBatch(durable);
  }
}

// ---- captures

Result<CaptureOutput> Writer::Capture(const std::string& base,
                                      const std::vector<Statement>& stmts) {
  Job job(Job::Kind::kCapture);
  job.changeset = &base;
  job.statements = &stmts;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return std::move(job.capture);
}

void Writer::RunCapture(Job* job) {
  captures_metric_->Increment();
  sqlite3* db = conn_->db();
  Status begun = Exec(db, "BEGIN IMMEDIATE");
  if (!begun.ok()) {
    job->error = Unavailable(begun);
    return;
  }
  // Everything below ends in ROLLBACK: a capture never changes the database. (An interrupted
  // write statement may have rolled the transaction back already.)
  auto rollback = [&] {
    if (sqlite3_get_autocommit(db) != 0) return;
    Status rolled_back = Exec(db, "ROLLBACK");
    TX_CHECK(rolled_back.ok(), "ROLLBACK of a capture failed: {}", rolled_back.ToString());
  };
  auto fail = [&](Error e) {
    rollback();
    job->error = std::move(e);
  };
  const std::string& base = *job->changeset;
  if (!base.empty()) {
    Result<> applied = ApplyChangeset(conn_.get(), base, /*allow_deferred_fk=*/true);
    if (!applied.ok()) {
      return fail(Error{ErrorCode::kConflict,
                        fmt::format("this transaction's earlier writes no longer apply: {}",
                                    applied.error().message),
                        true});
    }
  }
  sqlite3_session* raw = nullptr;
  int rc = sqlite3session_create(db, "main", &raw);
  std::unique_ptr<sqlite3_session, void (*)(sqlite3_session*)> session(raw, sqlite3session_delete);
  if (rc != SQLITE_OK) return fail(Unavailable(SqliteStatus(rc, db, "create session")));
  rc = sqlite3session_attach(session.get(), nullptr);  // every table, attached on first write
  if (rc != SQLITE_OK) return fail(Unavailable(SqliteStatus(rc, db, "attach session")));

  size_t budget = limits_.max_result_bytes;
  CaptureOutput out;
  out.results.reserve(job->statements->size());
  // The session records what changed; the update hook, every row an UPDATE wrote, including
  // those it left as they were (which the changeset omits).
  TouchedRows touched;
  sqlite3_update_hook(db, OnRowUpdated, &touched);
  auto deadline = std::make_unique<StatementDeadline>(conn_.get(), limits_.statement_timeout_ms);
  for (size_t i = 0; i < job->statements->size(); ++i) {
    Result<ResultSet> rs = RunStatement(conn_.get(), (*job->statements)[i], &budget);
    if (!rs.ok()) {
      deadline.reset();
      sqlite3_update_hook(db, nullptr, nullptr);
      Error e = rs.error();
      if (job->statements->size() > 1) e.message = fmt::format("statement {}: {}", i, e.message);
      session.reset();
      return fail(std::move(e));
    }
    out.results.push_back(std::move(rs.value()));
  }
  deadline.reset();
  sqlite3_update_hook(db, nullptr, nullptr);
  if (touched.overflow) {
    session.reset();
    return fail(Error{ErrorCode::kTooLarge,
                      fmt::format("the statements update more than {} rows; split the "
                                  "transaction",
                                  kMaxTouchedRows)});
  }

  int n = 0;
  void* p = nullptr;
  rc = sqlite3session_changeset(session.get(), &n, &p);
  if (rc != SQLITE_OK) {
    session.reset();
    return fail(Unavailable(SqliteStatus(rc, db, "take changeset")));
  }
  std::string delta(static_cast<const char*>(p), static_cast<size_t>(n));
  sqlite3_free(p);
  session.reset();

  Result<std::vector<LockRequest>> locks = DeriveLocks(conn_.get(), delta);
  if (!locks.ok()) return fail(locks.error());
  Result<std::vector<LockRequest>> touched_locks = RowLocksByRowid(
      conn_.get(),
      std::vector<std::pair<std::string, int64_t>>(touched.rows.begin(), touched.rows.end()));
  if (!touched_locks.ok()) return fail(touched_locks.error());
  for (LockRequest& l : touched_locks.value()) {
    // Rows the changeset holds are locked already; add only the unchanged ones.
    auto pos =
        std::lower_bound(locks.value().begin(), locks.value().end(), l,
                         [](const LockRequest& a, const LockRequest& b) { return a.key < b.key; });
    if (pos == locks.value().end() || pos->key != l.key) {
      locks.value().insert(pos, std::move(l));
    } else {
      pos->mode = LockMode::kExclusive;  // a parent we also wrote
    }
  }
  StatusOr<std::string> combined = CombineChangesets(base, delta);
  if (!combined.ok()) return fail(Error{ErrorCode::kInternal, combined.status().ToString()});
  if (combined->size() > limits_.max_changeset_bytes) {
    return fail(Error{ErrorCode::kTooLarge,
                      fmt::format("the transaction's changes would take {} bytes, more than the "
                                  "limit of {}; split it into smaller transactions",
                                  combined->size(), limits_.max_changeset_bytes)});
  }
  rollback();
  out.changeset = *std::move(combined);
  out.locks = std::move(locks.value());
  job->capture = std::move(out);
}

// ---- durable jobs

Result<Writer::PrepareResult> Writer::Prepare(TxId txid, const TxnInfo& info,
                                              const std::string& changeset) {
  Job job(Job::Kind::kPrepare);
  job.txid = txid;
  job.info = &info;
  job.changeset = &changeset;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return std::move(job.prepare);
}

Result<> Writer::Commit(TxId txid, const std::string& changeset,
                        const std::vector<LockRequest>& locks) {
  Job job(Job::Kind::kCommit);
  job.txid = txid;
  job.changeset = &changeset;
  job.locks = &locks;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return Unit{};
}

Result<OnePhaseOutcome> Writer::CommitOnePhase(TxId txid, const std::string& changeset,
                                               const std::vector<LockRequest>& locks) {
  Job job(Job::Kind::kOnePhase);
  job.txid = txid;
  job.changeset = &changeset;
  job.locks = &locks;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return job.one_phase;
}

Result<> Writer::AbortPrepared(TxId txid) {
  Job job(Job::Kind::kAbortPrepared);
  job.txid = txid;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return Unit{};
}

Result<> Writer::SetPreparedState(TxId txid, int stored_state) {
  Job job(Job::Kind::kSetState);
  job.txid = txid;
  job.stored_state = stored_state;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return Unit{};
}

Result<> Writer::RecordAborted(TxId txid) {
  Job job(Job::Kind::kRecordAborted);
  job.txid = txid;
  Status s = Submit(&job);
  if (!s.ok()) return Unavailable(s);
  if (job.error) return *job.error;
  return Unit{};
}

Status Writer::RunDurableJob(Job* job, int64_t now_ms, std::vector<Job*>* committed) {
  sqlite3* db = conn_->db();
  auto record_outcome = [&](int outcome) -> Status {
    TX_ASSIGN_OR_RETURN(
        sqlite3_stmt * ins,
        conn_->PrepareInternal(fmt::format(
            "INSERT INTO {}(txid, outcome, finished_unix_ms) VALUES (?, ?, ?)", kOutcomesTable)));
    sqlite3_bind_int64(ins, 1, job->txid);
    sqlite3_bind_int(ins, 2, outcome);
    sqlite3_bind_int64(ins, 3, now_ms);
    ++outcomes_since_prune_;
    return StepDone(db, ins, "record outcome");
  };
  auto delete_prepared = [&]() -> Status {
    TX_ASSIGN_OR_RETURN(sqlite3_stmt * del, conn_->PrepareInternal(fmt::format(
                                                "DELETE FROM {} WHERE txid = ?", kPreparedTable)));
    sqlite3_bind_int64(del, 1, job->txid);
    TX_RETURN_IF_ERROR(StepDone(db, del, "delete prepared record"));
    TX_CHECK(sqlite3_changes(db) == 1, "transaction {} had no prepared record to delete",
             job->txid);
    return Status::OK();
  };

  switch (job->kind) {
    case Job::Kind::kPrepare: {
      TX_RETURN_IF_ERROR(Exec(db, "SAVEPOINT validate"));
      Result<> applied = ApplyChangeset(conn_.get(), *job->changeset);
      std::vector<LockRequest> missing;
      if (applied.ok()) {
        Result<std::vector<LockRequest>> needed = DeriveLocks(conn_.get(), *job->changeset);
        if (!needed.ok()) {
          applied = needed.error();
        } else {
          for (LockRequest& l : needed.value()) {
            if (!locks_->Holds(job->txid, l.key, l.mode)) missing.push_back(std::move(l));
          }
        }
      }
      TX_RETURN_IF_ERROR(Exec(db, "ROLLBACK TO validate; RELEASE validate"));
      if (!applied.ok() && applied.error().code == ErrorCode::kUnavailable) {
        // The disk, not the changes: no vote; the transaction stays active.
        return Status::Unavailable(applied.error().message);
      }
      if (!applied.ok()) {
        job->prepare.vote = Vote{Vote::Kind::kNo, applied.error().code, applied.error().message};
        return Status::OK();
      }
      if (!missing.empty()) {
        job->prepare.missing_locks = std::move(missing);
        return Status::OK();
      }
      std::vector<LockRequest> held = locks_->HeldLocks(job->txid);
      TX_ASSIGN_OR_RETURN(
          sqlite3_stmt * ins,
          conn_->PrepareInternal(fmt::format(
              "INSERT INTO {}(txid, state, protocol, info, changeset, locks, prepared_unix_ms) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)",
              kPreparedTable)));
      std::string info = EncodeTxnInfo(*job->info);
      std::string locks = EncodeLocks(held);
      sqlite3_bind_int64(ins, 1, job->txid);
      sqlite3_bind_int(ins, 2, kStoredPrepared);
      sqlite3_bind_int(ins, 3, static_cast<int>(job->info->protocol));
      sqlite3_bind_blob64(ins, 4, info.data(), info.size(), SQLITE_TRANSIENT);
      sqlite3_bind_blob64(ins, 5, job->changeset->data(), job->changeset->size(), SQLITE_TRANSIENT);
      sqlite3_bind_blob64(ins, 6, locks.data(), locks.size(), SQLITE_TRANSIENT);
      sqlite3_bind_int64(ins, 7, now_ms);
      TX_RETURN_IF_ERROR(StepDone(db, ins, "insert prepared record"));
      job->prepare.vote = Vote{Vote::Kind::kYes, ErrorCode::kInternal, ""};
      return Status::OK();
    }
    case Job::Kind::kCommit: {
      Result<> applied = ApplyChangeset(conn_.get(), *job->changeset);
      if (!applied.ok() && applied.error().code == ErrorCode::kUnavailable) {
        return Status::Unavailable(applied.error().message);
      }
      // The YES vote promised this. Its locks kept every row, unique key and parent it
      // depends on unchanged since validation, so a failure here is a bug (or someone wrote
      // the database behind the agent's back): stop rather than break atomicity.
      TX_CHECK(applied.ok(), "commit of prepared transaction {} failed to apply: {}", job->txid,
               applied.error().ToString());
      TX_RETURN_IF_ERROR(delete_prepared());
      TX_RETURN_IF_ERROR(record_outcome(kStoredCommitted));
      committed->push_back(job);
      return Status::OK();
    }
    case Job::Kind::kOnePhase: {
      TX_RETURN_IF_ERROR(Exec(db, "SAVEPOINT one_phase"));
      Result<> applied = ApplyChangeset(conn_.get(), *job->changeset);
      if (!applied.ok()) {
        TX_RETURN_IF_ERROR(Exec(db, "ROLLBACK TO one_phase; RELEASE one_phase"));
        if (applied.error().code == ErrorCode::kUnavailable) {
          return Status::Unavailable(applied.error().message);
        }
        job->one_phase = OnePhaseOutcome{false, applied.error().code, applied.error().message};
        return Status::OK();
      }
      TX_RETURN_IF_ERROR(Exec(db, "RELEASE one_phase"));
      TX_RETURN_IF_ERROR(record_outcome(kStoredCommitted));
      job->one_phase = OnePhaseOutcome{true, ErrorCode::kInternal, ""};
      committed->push_back(job);
      return Status::OK();
    }
    case Job::Kind::kAbortPrepared:
      TX_RETURN_IF_ERROR(delete_prepared());
      return record_outcome(kStoredAborted);
    case Job::Kind::kRecordAborted: {
      TX_ASSIGN_OR_RETURN(sqlite3_stmt * ins, conn_->PrepareInternal(fmt::format(
                                                  "INSERT OR IGNORE INTO {}(txid, outcome, "
                                                  "finished_unix_ms) VALUES (?, ?, ?)",
                                                  kOutcomesTable)));
      sqlite3_bind_int64(ins, 1, job->txid);
      sqlite3_bind_int(ins, 2, kStoredAborted);
      sqlite3_bind_int64(ins, 3, now_ms);
      ++outcomes_since_prune_;
      return StepDone(db, ins, "record presumed abort");
    }
    case Job::Kind::kSetState: {
      const int base = job->stored_state & kStoredStateMask;
      TX_CHECK(base == kStoredPrepared || base == kStoredPreCommitted,
               "writing prepared state {} for transaction {}", job->stored_state, job->txid);
      TX_ASSIGN_OR_RETURN(sqlite3_stmt * upd,
                          conn_->PrepareInternal(fmt::format(
                              "UPDATE {} SET state = ? WHERE txid = ?", kPreparedTable)));
      sqlite3_bind_int(upd, 1, job->stored_state);
      sqlite3_bind_int64(upd, 2, job->txid);
      TX_RETURN_IF_ERROR(StepDone(db, upd, "update prepared state"));
      TX_CHECK(sqlite3_changes(db) == 1, "transaction {} had no prepared record to update",
               job->txid);
      return Status::OK();
    }
    case Job::Kind::kCapture:
      break;
  }
  TX_CHECK(false, "capture job in a durable batch");
}

Status Writer::PruneOutcomes() {
  outcomes_since_prune_ = 0;
  TX_ASSIGN_OR_RETURN(
      sqlite3_stmt * del,
      conn_->PrepareInternal(fmt::format(
          "DELETE FROM {0} WHERE seq <= (SELECT MAX(seq) FROM {0}) - ?", kOutcomesTable)));
  sqlite3_bind_int64(del, 1, static_cast<int64_t>(limits_.max_durable_outcomes));
  return StepDone(conn_->db(), del, "prune outcomes");
}

void Writer::RunBatch(const std::vector<Job*>& jobs) {
  const auto started = std::chrono::steady_clock::now();
  sqlite3* db = conn_->db();
  const int64_t now_ms = UnixMillis(clock_);
  std::vector<Job*> committed;
  bool any_yes = false;

  Status s = Exec(db, "BEGIN IMMEDIATE");
  for (size_t i = 0; s.ok() && i < jobs.size(); ++i) {
    s = RunDurableJob(jobs[i], now_ms, &committed);
    if (s.ok() && jobs[i]->kind == Job::Kind::kPrepare &&
        jobs[i]->prepare.vote.kind == Vote::Kind::kYes && jobs[i]->prepare.missing_locks.empty()) {
      any_yes = true;
    }
  }
  if (s.ok() && outcomes_since_prune_ >= kPruneEveryOutcomes) s = PruneOutcomes();
  if (s.ok()) {
    // Tests inject a failing COMMIT here (disk full, I/O error) without a faulty disk.
    s = TX_FAILPOINT_STATUS("participant.batch_commit");
    if (s.ok()) s = Exec(db, "COMMIT");
    if (!s.ok() && (s.IsIOError() || s.code() == Status::Code::kCorruption)) {
      // After a failed fsync the page cache may hold data the disk does not: stop writing.
      std::lock_guard<std::mutex> lock(mu_);
      failed_ = fmt::format("storage failed, restart the agent: {}", s.ToString());
      spdlog::critical("{}", failed_);
    }
  }
  if (!s.ok()) {
    if (sqlite3_get_autocommit(db) == 0) (void)Exec(db, "ROLLBACK");  // best effort
    spdlog::error("durable batch of {} jobs failed: {}", jobs.size(), s.ToString());
    for (Job* job : jobs) {
      job->error = Error{ErrorCode::kUnavailable, s.ToString()};
      job->Finish();
    }
    return;
  }

  // Durable. Publish the commits (first-committer-wins) before anyone can see their locks go:
  // the submitters release locks only after Finish().
  if (!committed.empty()) {
    uint64_t seq = visible_seq_.load(std::memory_order_relaxed) + 1;
    for (Job* job : committed) versions_->Publish(*job->locks, seq);
    visible_seq_.store(seq, std::memory_order_release);
  }
  batches_.fetch_add(1, std::memory_order_relaxed);
  durable_jobs_.fetch_add(static_cast<int64_t>(jobs.size()), std::memory_order_relaxed);
  batches_metric_->Increment();
  batch_size_metric_->Observe(static_cast<double>(jobs.size()));
  batch_seconds_metric_->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());

  // Crash tests stop here: the prepared records are durable, no vote has been sent.
  if (any_yes) TX_FAILPOINT("participant.after_prepare_durable");
  for (Job* job : jobs) job->Finish();
}

}  // namespace tx::participant
