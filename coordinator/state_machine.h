// tx::coordinator::TxnStateMachine: the coordinator's replicated state, changed only by
// applying Raft log entries (thrift/coordinator_log.thrift).
//
// It holds
//   * the decided, unfinished transactions ("live" records): txid -> the first Decide for it,
//     kept until END (phase two acknowledged everywhere);
//   * the pre-committed, undecided 3PC transactions: txid -> its PreCommit, kept until a
//     Decide for it is applied;
//   * the outcomes of recently finished transactions, bounded (the oldest are forgotten, and
//     the largest forgotten txid is remembered as a watermark);
//   * the participant directory (name -> "host:port") and its version;
//   * the txid reservation counter (the first txid no block has covered yet).
// Transactions that are begun or collecting votes are not here: they live in the leader's
// memory (coordinator/driver.h) until they are decided, so an ordinary transaction costs one
// decision and one END in the log, batched with others.
//
// Rules (docs/protocol.md explains why each is safe):
//   * The outcome of a transaction is the first Decide for its txid in the log. A later Decide
//     changes nothing and its result reports the outcome in force (ALREADY_DECIDED), so a
//     proposer always learns the outcome from the applied state, never from what it proposed.
//   * A Decide for a txid at or below the forgotten watermark and not remembered is refused
//     (FORGOTTEN): that transaction may have finished with either outcome.
//   * A Decide with nobody to notify (no participant may be prepared) finishes at once.
//   * A COMMIT is refused (RESOURCE_EXHAUSTED) when max_live_transactions records are live; an
//     ABORT never is: it finishes at once instead (presumed abort lets phase two of an abort
//     be best effort).
//   * END of a txid that has no live record is a no-op (UNKNOWN_TRANSACTION).
//   * 3PC: a PreCommit of an undecided txid records it as pre-committed (again: OK, no change);
//     of a decided one changes nothing (ALREADY_DECIDED). A Decide ABORT of a pre-committed
//     txid is refused (PRECOMMITTED) unless its origin is TERMINATION; a Decide COMMIT of a
//     THREE_PHASE txid that is not pre-committed is refused (INVALID): 3PC commits only after
//     PRECOMMIT. A PreCommit counts against max_live_transactions like a live record.
//   * Invalid commands (txid never issued, bad names, over a bound) change nothing (INVALID).
//
// Pure and deterministic: no I/O, clock or randomness; replicas that apply the same entries
// reach the same state, and Snapshot()/Restore() carry all of it. Limits must be the same on
// every replica (they are compile-time defaults in txcoord).
//
// Thread-compatible: callers serialize access (coordinator/replicated_state.h adds a mutex).

#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "coordinator_log_types.h"

namespace tx::coordinator {

using TxId = int64_t;

// Txids stay below this so that arithmetic on them never overflows (and they fit the same
// 2^62 bound as Raft indices on the wire).
inline constexpr TxId kMaxTxId = TxId{1} << 62;

struct StateMachineLimits {
  // Each live record holds its decision with the participant list (a few hundred bytes).
  size_t max_live_transactions = 200'000;
  // Finished outcomes answer late GetOutcome/Commit retries; ~40 bytes each in memory and
  // ~10 in a snapshot. At 2,000 transactions/s, 250,000 cover two minutes.
  size_t max_remembered_outcomes = 250'000;
  size_t max_directory_entries = 1024;
  size_t max_participants_per_transaction = 64;
  int64_t max_txid_block = int64_t{1} << 24;
  size_t max_name_bytes = 128;
  size_t max_address_bytes = 256;
  size_t max_reason_bytes = 1024;
};

struct TxnRecord {
  coordlog::Decide decision;
  uint64_t decided_index = 0;  // Raft index of the entry holding the decision
};

// A 3PC transaction pre-committed and not yet decided.
struct PreCommitRecord {
  coordlog::PreCommit precommit;
  uint64_t logged_index = 0;  // Raft index of the entry holding the PreCommit
};

// What the state knows about one txid.
enum class TxnKnowledge : uint8_t {
  kLive,          // decided, phase two not finished; record available
  kFinished,      // decided and ended; outcome remembered
  kForgotten,     // at or below the watermark and not remembered: may have finished either way
  kNeverIssued,   // txid <= 0 or not yet covered by any reserved block
  kUndecided,     // issued, and no decision in the log
  kPreCommitted,  // 3PC: PRECOMMIT logged, no decision yet; precommit available
};

struct TxnLookup {
  TxnKnowledge knowledge = TxnKnowledge::kUndecided;
  std::optional<coordlog::Outcome::type> outcome;  // kLive and kFinished
  const TxnRecord* record = nullptr;               // kLive; valid until the next Apply/Restore
  const PreCommitRecord* precommit = nullptr;      // kPreCommitted; valid as `record`
};

class TxnStateMachine {
 public:
  explicit TxnStateMachine(const StateMachineLimits& limits = {});

  // Applies the entry at Raft index `index` (above applied_index(); indices may skip). Returns
  // one result per command. FailedPrecondition (state unchanged) if index does not move
  // forward: a replica that applies out of order is broken.
  StatusOr<coordlog::EntryResult> Apply(uint64_t index, const coordlog::Entry& entry);

  TxnLookup Lookup(TxId txid) const;

  const std::map<TxId, TxnRecord>& live() const { return live_; }
  const std::map<TxId, PreCommitRecord>& precommitted() const { return precommitted_; }
  // name -> address, in name order.
  const std::map<std::string, std::string>& directory() const { return directory_; }
  std::optional<std::string> AddressOf(const std::string& name) const;
  int64_t directory_version() const { return directory_version_; }
  TxId next_txid() const { return next_txid_; }
  uint64_t applied_index() const { return applied_index_; }
  size_t finished_count() const { return finished_.size(); }
  TxId forgotten_watermark() const { return forgotten_watermark_; }
  const StateMachineLimits& limits() const { return limits_; }

  coordlog::Snapshot ToSnapshot() const;
  // Replaces the whole state. Corruption (state unchanged) when the snapshot breaks an
  // invariant: unsorted or duplicate txids, a record of a txid never issued, bounds exceeded.
  Status Restore(const coordlog::Snapshot& snapshot);

 private:
  coordlog::CommandResult ApplyRegister(const coordlog::RegisterParticipant& c);
  coordlog::CommandResult ApplyReserve(const coordlog::ReserveTxIds& c);
  coordlog::CommandResult ApplyDecide(uint64_t index, const coordlog::Decide& c);
  coordlog::CommandResult ApplyEnd(const coordlog::End& c);
  coordlog::CommandResult ApplyPreCommit(uint64_t index, const coordlog::PreCommit& c);
  // Checks a participant list of a Decide or PreCommit; an error result when it is bad.
  // ALREADY_DECIDED with the outcome when txid has a decision (live or finished), FORGOTTEN at
  // or below the watermark; nullopt when nothing was decided for it. The first decision wins,
  // so a DECIDE or PRECOMMIT for a decided txid answers this.
  std::optional<coordlog::CommandResult> PriorDecision(TxId txid) const;
  std::optional<coordlog::CommandResult> CheckParticipants(
      const std::vector<coordlog::Participant>& participants) const;
  // Remembers txid's outcome among the finished ones, forgetting the oldest past the bound.
  void Finish(TxId txid, coordlog::Outcome::type outcome);

  StateMachineLimits limits_;  // constant after construction

  uint64_t applied_index_ = 0;
  TxId next_txid_ = 1;
  std::map<std::string, std::string> directory_;
  int64_t directory_version_ = 0;
  std::map<TxId, TxnRecord> live_;
  std::map<TxId, PreCommitRecord> precommitted_;
  std::unordered_map<TxId, coordlog::Outcome::type> finished_;
  std::deque<TxId> finished_order_;  // oldest first; the keys of finished_
  TxId forgotten_watermark_ = 0;
};

// A participant name is 1..max_name_bytes of [A-Za-z0-9_.-].
bool IsValidParticipantName(const std::string& name, size_t max_bytes);

}  // namespace tx::coordinator
