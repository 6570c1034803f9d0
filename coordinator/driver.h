// tx::coordinator::Driver: the two-phase commit logic of the leader.
//
// The driver runs transactions to their outcome on the replica that leads the Raft group. It
// owns no sockets, threads or clocks: it reads the replicated state (ReplicatedState), proposes
// commands through a CommandLog, calls participants through a ParticipantChannel and takes time
// from a Clock, all handed in, so the deterministic simulation drives the same code as txcoord.
// docs/protocol.md is the full description; in short:
//
//   Begin         a txid from a block reserved through the log; no log write.
//   Commit        no participant: COMMITTED. One participant: CommitOnePhase, no log write
//                 (the participant's answer is the outcome). Otherwise Prepare at every
//                 participant in parallel; all READ_ONLY: COMMITTED, no log write; any NO, a
//                 timeout or an Abort: ABORT; else COMMIT. A decision that may concern a
//                 prepared participant is proposed to the log, and the client's answer is the
//                 outcome the applied state holds (the first decision for the txid). Phase two
//                 (Commit/Abort) then runs with back-off until every participant to notify
//                 acknowledged, and END lets the record go.
//   Resolve       the logged outcome; PENDING while this leader is deciding; otherwise ABORT is
//                 proposed (presumed abort, first decision wins) and the applied outcome is the
//                 answer.
//   GetOutcome    the logged outcome, PENDING, or UNDECIDED after a barrier proves that no
//                 decision was logged.
//   Leadership    BecomeLeader() re-drives phase two of every decided, unfinished transaction in
//                 the state; a Commit repeated after a failover collects the votes again.
//   3PC           (protocol THREE_PHASE) after all YES votes: PRECOMMIT is logged, PreCommit
//                 is sent to every YES voter until each acknowledged (durably PRECOMMITTED),
//                 and only then COMMIT is decided. Past PRECOMMIT the transaction is never
//                 aborted by the coordinator: Resolve and GetOutcome answer PENDING, a client's
//                 Abort waits for the outcome, and a new leader re-drives PreCommit from the
//                 record. The one exception: a participant answers that its termination round
//                 (run while no coordinator was reachable) aborted, and ABORT is adopted with
//                 origin TERMINATION (docs/protocol.md proves this never contradicts a COMMIT).
//
// Thread-safety: every method may be called from any thread. Callbacks (the `done` arguments)
// run without the driver's lock held, on the calling thread or on a thread of the channel or the
// log; they may call the driver again.
//
// Errors are answers: every client-facing call completes with either a response or an
// api::TxError (NOT_LEADER with a hint on a replica that is not serving, UNAVAILABLE when the
// outcome is unknown, INVALID_ARGUMENT, ...). Nothing here throws.

#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "CoordinatorService.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "coordinator/interfaces.h"
#include "coordinator/replicated_state.h"

namespace tx::coordinator {

// A response or the error to throw.
template <typename T>
struct Reply {
  std::optional<api::TxError> error;
  T value;
  bool ok() const { return !error.has_value(); }
};

template <typename T>
using Done = std::function<void(Reply<T>)>;

struct DriverOptions {
  std::chrono::milliseconds default_txn_timeout{30'000};
  std::chrono::milliseconds max_txn_timeout{600'000};
  // Txids handed out per log write. A new leader starts after the highest reserved block, so a
  // failover skips at most one block's unused ids.
  int64_t txid_block_size = int64_t{1} << 20;
  // Transactions in this leader's memory past Begin (collecting votes, deciding, in phase two):
  // past it Commit answers RESOURCE_EXHAUSTED. Each holds its participants and callbacks.
  size_t max_active_transactions = 100'000;
  // Begun transactions waiting for Commit (each ~100 bytes); past it Begin answers
  // RESOURCE_EXHAUSTED. Abandoned ones leave at their timeout.
  size_t max_begun_transactions = 1'000'000;
  // Timed-out begun txids remembered so that a late Commit is answered ABORTED.
  size_t max_expired_remembered = 100'000;
  // Back-off between calls to one participant: initial * 2^n, jittered, capped.
  std::chrono::milliseconds retry_initial{10};
  std::chrono::milliseconds retry_max{1000};
  std::chrono::milliseconds phase_two_retry_max{5000};
  // Phase two of an ABORT gives up on a participant after this many calls: presumed abort
  // answers its Resolve correctly without the record.
  int abort_notify_attempts = 30;
  size_t max_participants_per_transaction = 64;
  // How often the leader looks for decided records that no transaction in its memory drives
  // (decisions proposed in an earlier term that committed in this one). A scan reads the live
  // records under the state's lock.
  std::chrono::milliseconds orphan_scan_interval{1000};
  uint64_t random_seed = 1;  // jitter of the back-off
  Clock* clock = Clock::Real();
  MetricsRegistry* metrics = nullptr;  // nullptr: a private registry
  // The leader's "host:port" for NOT_LEADER answers, when known.
  std::function<std::optional<std::string>()> leader_hint;
};

class Driver {
 public:
  // Borrows everything; all must outlive the driver.
  Driver(ReplicatedState* state, CommandLog* log, ParticipantChannel* channel,
         DriverOptions options);
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // The runtime calls BecomeLeader once this replica leads and its state holds every entry
  // committed before its term (its first entry of the term has been applied), and StepDown when
  // it stops leading. Between StepDown and BecomeLeader every call answers NOT_LEADER; a
  // StepDown fails the calls in progress with UNAVAILABLE (outcome unknown: retry at the new
  // leader) and forgets everything in memory.
  void BecomeLeader(uint64_t term);
  void StepDown();
  bool serving() const;

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

  // Retries, deadlines and txid reservations whose time has come. txcoord calls it every few
  // milliseconds; tests call it after moving their clock.
  void Tick();

  struct Stats {
    uint64_t committed = 0;  // Commit answered COMMITTED (any path)
    uint64_t aborted = 0;    // Commit answered ABORTED
    uint64_t read_only = 0;  // of committed: every participant READ_ONLY, nothing logged
    uint64_t one_phase = 0;  // of committed/aborted: CommitOnePhase
    uint64_t decisions_proposed = 0;
    uint64_t ends_proposed = 0;
    uint64_t resolves = 0;
    uint64_t phase_two_redriven = 0;    // records taken over by BecomeLeader
    uint64_t anomalies = 0;             // a participant contradicted a logged outcome
    uint64_t precommits_proposed = 0;   // 3PC PRECOMMIT proposals
    uint64_t terminations_adopted = 0;  // 3PC ABORTs adopted from a termination round
    size_t active = 0;                  // in memory now (past Begin)
    size_t begun = 0;                   // begun, no Commit yet
  };
  Stats GetStats() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tx::coordinator
