// The coordinator's replicated state: what txcoord writes into the Raft log (Entry) and into
// Raft snapshots (Snapshot). This is an on-disk format: every replica must read every entry
// ever written, so the evolution rules of common.thrift apply with extra force, and
// format_version says which rules a reader must know. coordinator/state_machine.h applies
// entries; docs/protocol.md explains each command.
//
// Versioning: format_version is 1 (kLogFormatVersion in coordinator/state_machine.h). A reader
// refuses (with a Corruption error, which stops the replica rather than let it diverge) an
// Entry or Snapshot whose format_version is above the highest it knows, or a Command with no
// field set (a command type added by a newer version). New optional fields
// with defaults that keep the old meaning do not need a new version.

include "common.thrift"

namespace cpp tx.coordlog

enum Outcome {
  COMMITTED = 1,
  ABORTED = 2,
}

enum Vote {
  NONE = 0,       // no vote received: the participant may be prepared
  YES = 1,
  NO = 2,
  READ_ONLY = 3,
}

// Why a decision was proposed (for operators; it does not change how it is applied).
enum Origin {
  CLIENT_COMMIT = 1,  // the votes of a client's Commit
  CLIENT_ABORT = 2,   // a client's Abort
  RESOLVE = 3,        // a participant asked about a transaction no one was deciding
  TIMEOUT = 4,        // the transaction's timeout passed before the votes were in
  // 3PC: the participants' termination protocol reached this outcome while no coordinator was
  // reachable; the coordinator adopts it (the only ABORT allowed after PRECOMMIT).
  TERMINATION = 5,
}

struct Participant {
  1: string name
  2: string address
  3: Vote vote = Vote.NONE
  // Phase two must reach it (it voted YES, or may be prepared); END only after it acknowledged.
  4: bool notify = false
}

// Adds or replaces one entry of the participant directory.
struct RegisterParticipant {
  1: string name
  2: string address
}

// Reserves the block of txids [first, first + count) for the proposer; blocks never overlap.
struct ReserveTxIds {
  1: i64 count
}

// The decision for one transaction. The first Decide for a txid is the outcome; a later one
// changes nothing (first decision wins).
struct Decide {
  1: common.TxId txid
  2: Outcome outcome
  3: common.Protocol protocol = common.Protocol.TWO_PHASE
  4: list<Participant> participants = []
  5: i32 reason_code = 0  // a common.ErrorCode with ABORTED; 0 when none
  6: string reason = ""
  7: Origin origin = Origin.CLIENT_COMMIT
  8: i64 decided_unix_ms = 0  // the proposer's wall clock, for display only
}

// 3PC: every participant voted YES (or READ_ONLY) and the coordinator is about to tell them to
// pre-commit. Logged before any PreCommit is sent. From then on the transaction is
// "pre-committed" in the state: a Decide COMMIT completes it as usual, and a Decide ABORT is
// accepted only with origin TERMINATION (the participants' termination round aborted, which it
// does only when none of them was PRECOMMITTED); any other ABORT is refused (PRECOMMITTED).
// A PreCommit for a decided txid changes nothing (ALREADY_DECIDED). docs/protocol.md proves
// why this keeps the coordinator and a termination round from deciding differently.
struct PreCommit {
  1: common.TxId txid
  2: list<Participant> participants = []  // with their votes; notify = must acknowledge
  3: i64 logged_unix_ms = 0               // the proposer's wall clock, for display only
}

// Phase two is complete: every participant to notify acknowledged. The record goes; only the
// outcome is remembered (for a bounded number of transactions).
struct End {
  1: common.TxId txid
}

// Exactly one field set.
union Command {
  1: RegisterParticipant register_participant
  2: ReserveTxIds reserve_txids
  3: Decide decide
  4: End end_transaction
  5: PreCommit precommit
}

// One Raft entry: commands from any number of transactions, applied in order. Batching many
// decisions into one entry is how the coordinator keeps up with load.
struct Entry {
  1: i32 format_version = 1
  2: list<Command> commands
}

enum ResultCode {
  OK = 0,
  ALREADY_DECIDED = 1,      // Decide: an earlier decision stands; `outcome` holds it
  FORGOTTEN = 2,            // Decide: the txid is at or below the forgotten watermark
  UNKNOWN_TRANSACTION = 3,  // End: no such live record
  RESOURCE_EXHAUSTED = 4,   // a bound was reached; nothing changed
  INVALID = 5,              // malformed command (bad name, txid never issued, ...); nothing changed
  // Decide ABORT of a pre-committed 3PC transaction without origin TERMINATION: refused, the
  // transaction must commit unless its participants' termination round aborted it.
  PRECOMMITTED = 6,
}

// What applying one command did, in command order. Given to the proposer only (never stored).
struct CommandResult {
  1: ResultCode code
  2: optional Outcome outcome   // Decide, PreCommit: the outcome in force after the command
  3: optional i64 first_txid    // ReserveTxIds
  4: optional i64 txid_count    // ReserveTxIds
  5: optional string message    // with an error
  6: optional i64 directory_version  // RegisterParticipant
}

struct EntryResult {
  1: list<CommandResult> results
}

// ---------------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------------

struct TransactionRecord {
  1: Decide decision
  2: i64 decided_index  // Raft index of the entry holding it
}

struct TransactionPreCommit {
  1: PreCommit precommit
  2: i64 logged_index  // Raft index of the entry holding it
}

struct FinishedOutcome {
  1: common.TxId txid
  2: Outcome outcome
}

struct Snapshot {
  1: i32 format_version = 1
  2: i64 applied_index
  3: i64 next_txid                             // first txid not yet reserved
  4: i64 directory_version
  5: list<RegisterParticipant> directory       // in name order
  6: list<TransactionRecord> live              // decided, not ended; in txid order
  7: list<FinishedOutcome> finished            // ended, oldest first (the eviction order)
  8: i64 forgotten_watermark                   // the largest txid whose outcome was forgotten
  // 3PC transactions pre-committed and not yet decided; in txid order. Absent in snapshots
  // written before 3PC (none then).
  9: list<TransactionPreCommit> precommitted = []
}
