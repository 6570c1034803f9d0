// The writer: one thread that owns the database's write connection and does everything that
// needs SQLite's write lock.
//
// SQLite allows one writer at a time, and its busy handler sleeps rather than queues, so the
// agent funnels every write through this thread instead of letting connections contend:
//  - captures: run a transaction's statements (after re-applying its changeset) inside an
//    SQLite transaction that is rolled back, and return the results, the new cumulative
//    changeset and the locks it needs;
//  - durable jobs (prepare, commit, one-phase commit, abort of a prepared transaction):
//    executed in batches, every job of a batch in ONE SQLite transaction, so a whole batch
//    costs one fsync (group commit). Each job's result is handed back only after the COMMIT
//    that made it durable has returned, so a YES vote never precedes its prepared record.
//
// Each loop iteration takes everything queued, runs the captures, then the durable jobs as one
// batch. While a batch fsyncs, new jobs queue up and form the next batch, so batches grow with
// load and the fsync rate stays bounded.
//
// Thread-safe: any thread may submit; each call blocks until its job is done.

#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/metrics.h"
#include "participant/commit_versions.h"
#include "participant/connection.h"
#include "participant/lock_manager.h"
#include "participant/participant.h"

namespace tx::participant {

// The agent's own tables. docs/participant.md documents them.
inline constexpr std::string_view kPreparedTable = "_txpart_prepared";
inline constexpr std::string_view kOutcomesTable = "_txpart_outcomes";
inline constexpr std::string_view kMetaTable = "_txpart_meta";

// Outcome codes stored in _txpart_outcomes.outcome.
inline constexpr int kStoredCommitted = 1;
inline constexpr int kStoredAborted = 2;
// _txpart_prepared.state: PREPARED or PRECOMMITTED (3PC), plus kStoredInTermination once the
// transaction joined a termination round (3PC). An agent that predates 3PC knows only 1 and
// refuses the others as damage, rather than misread them.
inline constexpr int kStoredPrepared = 1;
inline constexpr int kStoredPreCommitted = 2;
inline constexpr int kStoredInTermination = 0x10;
inline constexpr int kStoredStateMask = 0x0f;

struct CaptureOutput {
  std::vector<ResultSet> results;
  std::string changeset;           // cumulative: the base plus this capture's changes
  std::vector<LockRequest> locks;  // what this capture's changes need
};

// A prepared transaction as stored.
struct PreparedRecord {
  TxId txid = 0;
  TxnInfo info;
  std::string changeset;
  std::vector<LockRequest> locks;
  int64_t prepared_unix_ms = 0;
  bool precommitted = false;    // 3PC: PRECOMMITTED
  bool in_termination = false;  // 3PC: joined a termination round
};

class Writer {
 public:
  struct Limits {
    size_t max_result_bytes = 8 << 20;
    size_t max_changeset_bytes = 4 << 20;
    size_t max_durable_outcomes = 1000000;
    int64_t statement_timeout_ms = 10000;
  };

  // Creates the agent's tables if missing and checks their format version. `versions` gets
  // the row keys of every commit (first-committer-wins); `locks` is asked whether a preparing
  // transaction holds its locks. Both must outlive the writer.
  static StatusOr<std::unique_ptr<Writer>> Start(std::unique_ptr<Connection> conn, Limits limits,
                                                 LockManager* locks, CommitVersions* versions,
                                                 Clock* clock, MetricsRegistry* metrics);
  // Runs what is queued, then stops the thread.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Every prepared record, in txid order. Call before any job is submitted (recovery).
  StatusOr<std::vector<PreparedRecord>> LoadPrepared();

  // See the class comment. `base` is the transaction's changeset so far. Errors of the
  // statements come back as they are; a base that no longer applies is kConflict with
  // transaction_aborted set.
  Result<CaptureOutput> Capture(const std::string& base, const std::vector<Statement>& stmts);

  struct PrepareResult {
    Vote vote;
    // Locks the final changeset needs that the transaction does not hold (for instance the
    // parent row of a deferred foreign key that only exists by now). When not empty, nothing
    // was written and `vote` is meaningless: take them and call again.
    std::vector<LockRequest> missing_locks;
  };
  // Validates the changeset against the database (constraints, conflicts) and checks that
  // the transaction holds every lock the changeset needs (DeriveLocks). If so, stores the
  // prepared record (with every lock the transaction holds) durably and answers YES; if it
  // does not apply, NO with the reason.
  Result<PrepareResult> Prepare(TxId txid, const TxnInfo& info, const std::string& changeset);

  // Applies a prepared transaction's changeset, deletes its prepared record and records
  // COMMITTED, durably. `locks` (the transaction's) are published to the CommitVersions.
  // A changeset that fails to apply after YES is a broken promise: the process stops.
  Result<> Commit(TxId txid, const std::string& changeset, const std::vector<LockRequest>& locks);

  // Validates and applies an unprepared transaction's changeset and records COMMITTED, or
  // answers not committed (with the reason) and changes nothing.
  Result<OnePhaseOutcome> CommitOnePhase(TxId txid, const std::string& changeset,
                                         const std::vector<LockRequest>& locks);

  // Deletes a prepared record and records ABORTED, durably.
  Result<> AbortPrepared(TxId txid);

  // 3PC: rewrites a prepared record's state (kStoredPrepared or kStoredPreCommitted, with or
  // without kStoredInTermination), durably. The record must exist (a missing one is a bug).
  Result<> SetPreparedState(TxId txid, int stored_state);

  // 3PC: records ABORTED for a transaction that has no prepared record (active until a
  // termination round aborted it), durably, unless an outcome is recorded already. The round
  // relies on it never preparing later, even after a restart.
  Result<> RecordAborted(TxId txid);

  // Highest commit sequence number whose data is visible to new SQLite transactions. A
  // transaction reads it before its first statement (see CommitVersions).
  uint64_t visible_seq() const { return visible_seq_.load(std::memory_order_acquire); }

  // OK, or Unavailable with the reason the writer stopped writing.
  Status Health() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_.empty() ? Status::OK() : Status::Unavailable(failed_);
  }

  size_t queued() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }
  int64_t batches() const { return batches_.load(std::memory_order_relaxed); }
  int64_t durable_jobs() const { return durable_jobs_.load(std::memory_order_relaxed); }

 private:
  struct Job;
  Writer(std::unique_ptr<Connection> conn, Limits limits, LockManager* locks,
         CommitVersions* versions, Clock* clock, MetricsRegistry* metrics);
  Status Setup();
  Status Submit(Job* job);
  void Loop();
  void RunCapture(Job* job);
  void RunBatch(const std::vector<Job*>& jobs);
  Status RunDurableJob(Job* job, int64_t now_ms, std::vector<Job*>* committed);
  Status PruneOutcomes();

  // Constant after construction.
  const std::unique_ptr<Connection> conn_;  // used only by the writer thread (after Start)
  const Limits limits_;
  LockManager* const locks_;
  CommitVersions* const versions_;
  Clock* const clock_;
  Counter* batches_metric_;
  Histogram* batch_size_metric_;
  Histogram* batch_seconds_metric_;
  Counter* captures_metric_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Job*> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;        // GUARDED_BY(mu_)
  // Set when a COMMIT failed with an I/O error: SQLite's view of the file may no longer match
  // the disk, so no further writes are attempted; restarting the agent recovers.
  std::string failed_;  // GUARDED_BY(mu_)

  std::atomic<uint64_t> visible_seq_{0};
  std::atomic<int64_t> batches_{0};
  std::atomic<int64_t> durable_jobs_{0};
  int64_t outcomes_since_prune_ = 0;  // writer thread only

  std::thread thread_;
};

}  // namespace tx::participant
