// The participant agent's engine: one SQLite database made into a 2PC/3PC resource.
//
// This is the module's public header. The Thrift service (participant/service.h) and the
// txpart binary are thin layers over it; other modules (the coordinator's simulation, tools)
// may use it directly. docs/participant.md explains the design: isolation level, locking, the
// durable state machine of a transaction and the bounds.
//
// In short:
//  - Execute runs SQL inside an interactive transaction with read-your-own-writes. Writes are
//    captured as a SQLite changeset and applied to the database only at commit, so nobody
//    reads uncommitted data. Rows (and unique keys) a transaction writes are locked until its
//    outcome; write-write conflicts are first-committer-wins per row.
//  - Prepare validates that the changeset will apply (constraints included), then records it
//    durably (synchronous=FULL) before voting YES. After YES, Commit cannot fail short of
//    losing the disk.
//  - Prepare, Commit, Abort and CommitOnePhase are idempotent: a repeated call answers the
//    recorded outcome.
//  - On Open, prepared transactions come back with their locks and wait for their outcome
//    (participant/resolver.h asks the coordinators).
//  - 3PC (docs/participant.md, "Three-phase commit"): PreCommit makes PRECOMMITTED durable;
//    TerminationState answers (and with join, durably records joining) a termination round,
//    which participant/termination.h runs when no coordinator is reachable.

#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common/check.h"
#include "common/clock.h"
#include "common/status.h"

namespace tx::participant {

// Assigned by the coordinator; always > 0 (see thrift/common.thrift).
using TxId = int64_t;

enum class Protocol : uint8_t { kTwoPhase = 1, kThreePhase = 2 };

struct ParticipantRef {
  std::string name;
  std::string address;  // "host:port"
  friend bool operator==(const ParticipantRef&, const ParticipantRef&) = default;
};

// Recorded durably at prepare.
struct TxnInfo {
  Protocol protocol = Protocol::kTwoPhase;
  std::vector<ParticipantRef> participants;
  friend bool operator==(const TxnInfo&, const TxnInfo&) = default;
};

// A BLOB, kept apart from TEXT (std::string) in Value.
struct Blob {
  std::string bytes;
  friend bool operator==(const Blob&, const Blob&) = default;
};

// One SQLite value: NULL, INTEGER, REAL, TEXT or BLOB.
using Value = std::variant<std::monostate, int64_t, double, std::string, Blob>;

struct Statement {
  std::string sql;
  std::vector<Value> params;                                // ?1, ?2, ...
  std::vector<std::pair<std::string, Value>> named_params;  // ":name" or "name"
};

struct ResultSet {
  std::vector<std::string> columns;
  std::vector<std::vector<Value>> rows;
  int64_t rows_changed = 0;
};

// Why a call failed. Mirrors api::ErrorCode (thrift/common.thrift) one to one.
enum class ErrorCode : uint8_t {
  kInternal = 1,
  kInvalidArgument = 2,
  kInvalidSql = 3,
  kConstraintViolation = 4,
  kNoPrimaryKey = 5,
  kUnknownTransaction = 6,
  kWrongState = 7,
  kConflict = 8,
  kLockTimeout = 9,
  kDeadlock = 10,
  kTooLarge = 11,
  kResourceExhausted = 12,
  kAborted = 13,
  kUnavailable = 14,
  // 15 is NOT_LEADER, a coordinator's answer.
  kTimedOut = 16,
};

std::string_view ErrorCodeName(ErrorCode code);

// The typed failure of a call. transaction_aborted says whether the transaction was aborted
// because of it (true), or only the failed call had no effect (false).
struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  bool transaction_aborted = false;

  std::string ToString() const;
};

struct Unit {};

// A value or an Error. [[nodiscard]]: errors are values and must be looked at.
template <typename T = Unit>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  const T& value() const& {
    TX_CHECK(ok(), "Result::value() on error: {}", std::get<1>(v_).ToString());
    return std::get<0>(v_);
  }
  T& value() & {
    TX_CHECK(ok(), "Result::value() on error: {}", std::get<1>(v_).ToString());
    return std::get<0>(v_);
  }
  const Error& error() const& {
    TX_CHECK(!ok(), "Result::error() on a value");
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

struct Vote {
  enum class Kind : uint8_t { kYes = 1, kNo = 2, kReadOnly = 3 };
  Kind kind = Kind::kNo;
  ErrorCode reason_code = ErrorCode::kInternal;  // with kNo
  std::string reason;                            // with kNo
};

struct OnePhaseOutcome {
  bool committed = false;
  ErrorCode reason_code = ErrorCode::kInternal;  // when !committed
  std::string reason;                            // when !committed
};

// Mirrors api::TxState.
enum class TxnState : uint8_t {
  kUnknown = 0,
  kActive = 1,
  kPrepared = 2,
  kPreCommitted = 3,  // 3PC: told that everyone voted YES; durable
  kCommitted = 4,
  kAborted = 5,
};

std::string_view TxnStateName(TxnState state);

struct TxnStatus {
  TxId txid = 0;
  TxnState state = TxnState::kUnknown;
  std::optional<TxnInfo> info;
  int64_t rows_written = 0;
  int64_t changeset_bytes = 0;
  int64_t locks_held = 0;
  int64_t state_age_ms = 0;  // 0 when unknown
  std::string abort_reason;
  bool in_termination = false;  // 3PC: joined a termination round (durable)
};

// A 3PC transaction's state as PreCommit and TerminationState answer it. state is UNKNOWN also
// for a transaction that finished here read-only (it has no say in a termination round).
struct ThreePhaseState {
  TxnState state = TxnState::kUnknown;
  bool in_termination = false;
};

// Who sends a PreCommit.
enum class PreCommitSource : uint8_t {
  kCoordinator,       // refused (state PREPARED, in_termination) once the transaction joined a
                      // termination round
  kTerminationRound,  // a round's backup that saw a PRECOMMITTED participant: always accepted
};

struct Options {
  std::string name;     // the agent's name, for logs and the Resolve loop
  std::string db_path;  // the SQLite file; created if missing

  // Bounds how long Execute waits for a row lock held by another transaction; past it the
  // waiting transaction is aborted (LOCK_TIMEOUT). Also what breaks deadlocks the wait-for
  // graph does not see.
  int64_t lock_timeout_ms = 5000;
  // An active (unprepared) transaction with no call for this long is aborted unilaterally,
  // which is allowed before the vote and frees its locks.
  int64_t idle_timeout_ms = 60000;

  // Bounds memory: every live transaction holds its changeset and locks in memory.
  size_t max_transactions = 4096;
  // Bounds one transaction's changeset, which each later Execute re-applies (so its cost
  // grows with the size) and which is stored in one prepared row.
  size_t max_changeset_bytes = 4 << 20;
  // Bounds the rows one Execute returns, so one SELECT cannot exhaust memory or exceed the
  // RPC frame limit.
  size_t max_result_bytes = 8 << 20;
  size_t max_statements_per_execute = 1000;
  // Bounds how long one Execute's statements may run (a runaway query would otherwise hold
  // the writer, and with it every prepare and commit, or a reader, forever). Past it the
  // Execute fails with TIMED_OUT and has no effect.
  int64_t statement_timeout_ms = 10000;
  // Bounds per-transaction locks (each costs ~100 bytes; beyond this, split the transaction).
  size_t max_locks_per_transaction = 200000;
  // Finished outcomes remembered in memory, for idempotent answers about transactions that
  // finished without a durable record (aborted before prepare, read-only).
  size_t max_remembered_outcomes = 100000;
  // Durable COMMITTED/ABORTED records kept for idempotent Commit/Abort after a restart. See
  // docs/participant.md for why this bound suffices.
  size_t max_durable_outcomes = 1000000;
  // Connections for read-only Executes and lookups, which run beside the writer.
  size_t reader_connections = 4;
  // Enforce FOREIGN KEY constraints (PRAGMA foreign_keys=ON) on every connection.
  bool foreign_keys = true;
  // SQL run once at Open, outside any transaction (schema set-up; use IF NOT EXISTS).
  std::string init_sql;

  Clock* clock = Clock::Real();
};

struct Stats {
  int64_t active_transactions = 0;
  int64_t prepared_transactions = 0;
  int64_t locks_held = 0;
  int64_t lock_waiters = 0;     // transactions blocked waiting for a lock
  int64_t durable_batches = 0;  // SQLite transactions (fsyncs) of durable jobs
  int64_t durable_ops = 0;      // prepares, commits and aborts made durable
  int64_t queued_jobs = 0;      // waiting for the writer thread
};

// Thread-safe: every method may be called from any number of threads. Calls for the same
// txid are serialized; calls for different txids run concurrently (Execute's SQL and all
// durable writes go through one writer thread, which batches durable writes into shared
// SQLite transactions and fsyncs).
class Participant {
 public:
  // Opens (creating if needed) the database, takes an exclusive lock on it (a second agent on
  // the same file fails with FailedPrecondition), runs options.init_sql, and recovers prepared
  // transactions with their locks.
  static StatusOr<std::unique_ptr<Participant>> Open(const Options& options);

  // Waits for in-flight durable writes; active transactions are dropped (aborted), prepared
  // ones stay durable. No call may be in progress or start during destruction.
  virtual ~Participant() = default;

  // Runs `statements` in order inside transaction `txid`, which begins on its first Execute.
  // All or nothing per call. `info`, if given, replaces the recorded protocol/participants.
  // `sequence`, if given, is the request's position among the transaction's Executes here
  // (0, 1, 2, ...; see ExecuteRequest.sequence in thrift/participant.thrift): an unknown txid
  // with a sequence above 0 is ABORTED (earlier Executes were lost), a sequence already seen
  // is WRONG_STATE without effect (a duplicate), one past the next expected aborts.
  virtual Result<std::vector<ResultSet>> Execute(TxId txid,
                                                 const std::vector<Statement>& statements,
                                                 const TxnInfo* info,
                                                 std::optional<int32_t> sequence) = 0;

  // Votes. YES only after the prepared record is durable.
  virtual Result<Vote> Prepare(TxId txid, const TxnInfo* info) = 0;

  // Commits a prepared transaction. Idempotent. UNKNOWN_TRANSACTION for a txid never
  // prepared here (or whose outcome was forgotten).
  virtual Result<> Commit(TxId txid) = 0;

  // Aborts an active or prepared transaction. Idempotent; an unknown txid is fine.
  virtual Result<> Abort(TxId txid) = 0;

  // Validates and commits in one durable step (single writing participant).
  virtual Result<OnePhaseOutcome> CommitOnePhase(TxId txid) = 0;

  // 3PC phase two: a prepared THREE_PHASE transaction becomes PRECOMMITTED, durably, before
  // this returns. Idempotent. Answers the state afterwards (see PreCommitSource for the refusal;
  // COMMITTED or ABORTED when a termination round already finished it). WRONG_STATE for an
  // active or TWO_PHASE transaction, UNKNOWN_TRANSACTION for one never prepared here.
  virtual Result<ThreePhaseState> PreCommit(TxId txid, PreCommitSource source) = 0;

  // 3PC termination protocol: this participant's state of txid. With `join`: a prepared or
  // pre-committed THREE_PHASE transaction durably records that it joined a round (before this
  // returns); an active one aborts (allowed before the vote); an unknown txid is remembered as
  // aborted (presumed abort), so that a late Execute cannot start it.
  virtual Result<ThreePhaseState> TerminationState(TxId txid, bool join) = 0;

  virtual Result<TxnStatus> GetStatus(TxId txid) = 0;

  // Prepared (and pre-committed) transactions with txid > after, in txid order, at most
  // `limit`; *more is set when further ones exist.
  virtual std::vector<TxnStatus> ListPrepared(TxId after, size_t limit, bool* more) = 0;

  // Prepared (and pre-committed) transactions that have waited at least `min_age` for their
  // outcome (all of them with min_age 0), oldest first. Recovered transactions count as waiting
  // since Open.
  virtual std::vector<TxId> InDoubt(Clock::Duration min_age) = 0;

  virtual Stats GetStats() = 0;

  // OK, or why the agent cannot make anything durable (after an I/O error at commit it stops
  // writing until restarted). For health checks.
  virtual Status Health() = 0;

  const Options& options() const { return options_; }

 protected:
  explicit Participant(Options options) : options_(std::move(options)) {}

 private:
  const Options options_;
};

}  // namespace tx::participant
