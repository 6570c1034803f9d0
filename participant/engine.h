// The implementation of Participant (participant.h). Internal to the module.

#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/file_system.h"
#include "common/metrics.h"
#include "participant/commit_versions.h"
#include "participant/connection.h"
#include "participant/lock_manager.h"
#include "participant/participant.h"
#include "participant/schema.h"
#include "participant/writer.h"

namespace tx::participant {

// Thread-safe (see Participant).
//
// Lock order: Txn::mu, then txns_mu_, then the LockManager's and the reader pool's mutexes.
// Never wait for a Txn::mu while holding txns_mu_.
class ParticipantImpl final : public Participant {
 public:
  static StatusOr<std::unique_ptr<Participant>> Open(const Options& options);
  ~ParticipantImpl() override;

  Result<std::vector<ResultSet>> Execute(TxId txid, const std::vector<Statement>& statements,
                                         const TxnInfo* info,
                                         std::optional<int32_t> sequence) override;
  Result<Vote> Prepare(TxId txid, const TxnInfo* info) override;
  Result<> Commit(TxId txid) override;
  Result<> Abort(TxId txid) override;
  Result<OnePhaseOutcome> CommitOnePhase(TxId txid) override;
  Result<ThreePhaseState> PreCommit(TxId txid, PreCommitSource source) override;
  Result<ThreePhaseState> TerminationState(TxId txid, bool join) override;
  Result<TxnStatus> GetStatus(TxId txid) override;
  std::vector<TxnStatus> ListPrepared(TxId after, size_t limit, bool* more) override;
  std::vector<TxId> InDoubt(Clock::Duration min_age) override;
  Stats GetStats() override;
  Status Health() override { return writer_->Health(); }

 private:
  struct Txn;
  // A finished transaction as remembered (in memory, or read back from _txpart_outcomes).
  struct Finished {
    TxnState state = TxnState::kAborted;  // kCommitted or kAborted
    bool read_only = false;
    // Aborted only by presumption (an Abort or a termination round's question about a txid
    // never seen here): no vote was ever given, so in a termination round it has no say.
    bool presumed = false;
    ErrorCode code = ErrorCode::kAborted;
    std::string reason;
  };
  enum class LockResult { kHeld, kWaited };

  explicit ParticipantImpl(const Options& options);
  Status Init();

  std::shared_ptr<Txn> FindTxn(TxId txid);
  // Memory first, then the durable outcome table.
  std::optional<Finished> FindFinished(TxId txid);
  StatusOr<std::optional<Finished>> LookupDurable(TxId txid);

  Result<std::vector<ResultSet>> ExecuteLocked(Txn& txn, const std::vector<Statement>& stmts);
  // Runs read-only statements on a reader; nullopt if some statement writes.
  std::optional<Result<std::vector<ResultSet>>> TryReadOnly(const std::vector<Statement>& stmts);
  // Takes `locks` for txn; returns kWaited if it had to wait for one (its captured data may
  // be stale), or the error that aborts the transaction.
  Result<LockResult> AcquireLocks(Txn& txn, const std::vector<LockRequest>& locks,
                                  Clock::TimePoint deadline);
  // Ends the transaction: releases its locks and remembers the outcome. Requires txn.mu.
  void FinishLocked(Txn& txn, Finished finished);
  // Aborts and returns the error to report. Requires txn.mu.
  Error AbortLocked(Txn& txn, ErrorCode code, std::string reason);
  // Adds to the bounded in-memory record of finished transactions.
  void Remember(TxId txid, Finished finished);
  Error FinishedError(TxId txid, const Finished& f);
  // The 3PC state of a transaction that is not live: from its remembered outcome.
  ThreePhaseState FinishedThreePhaseState(TxId txid);
  // The stored state of a prepared transaction (writer.h: kStoredPrepared ...).
  static int StoredState(bool precommitted, bool in_termination);
  TxnStatus StatusOf(Txn& txn);
  void Touch(Txn& txn);

  void MaintenanceLoop();
  void AbortIdle();

  // A reader connection, returned to the pool on destruction.
  class ReaderLease;
  ReaderLease LeaseReader();

  Clock* const clock_;

  // Constant after Init.
  std::unique_ptr<FileLock> file_lock_;
  SchemaCache schema_;
  LockManager locks_;
  CommitVersions versions_;
  std::unique_ptr<Writer> writer_;

  // Metrics (constant after construction).
  CounterFamily* votes_;
  CounterFamily* outcomes_;
  CounterFamily* aborts_;
  Counter* lock_waits_;
  Gauge* active_gauge_;
  Gauge* prepared_gauge_;

  std::mutex txns_mu_;
  std::unordered_map<TxId, std::shared_ptr<Txn>> txns_;  // GUARDED_BY(txns_mu_): live ones
  std::unordered_map<TxId, Finished> finished_;          // GUARDED_BY(txns_mu_)
  std::deque<TxId> finished_order_;                      // GUARDED_BY(txns_mu_): oldest first

  std::mutex readers_mu_;
  std::condition_variable readers_cv_;
  std::vector<std::unique_ptr<Connection>> readers_;  // GUARDED_BY(readers_mu_): free ones

  Waiter maintenance_waiter_;
  std::atomic<bool> stopping_{false};
  std::thread maintenance_;
};

}  // namespace tx::participant
