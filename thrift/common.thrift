// Types shared by every service: values, statements, results, transaction identity and the one
// error type that every call may throw.
//
// Evolution rules (all of our IDL follows them): a field id is never reused or renumbered; new
// fields are optional or have a default that means "the old behaviour"; an enum value is never
// renumbered, and a reader that meets an enum value it does not know treats it as an error
// (ErrorCode: as INTERNAL), never as a crash.

namespace cpp tx.api

// A transaction id, assigned by the coordinator (the Raft leader) and unique for the lifetime
// of a cluster. Always > 0; 0 and negative values are invalid on every call.
//
// 64 bits, not 128: ids have one issuer, so uniqueness needs coordination through the Raft
// log, not randomness. The intended scheme is that the leader reserves blocks of ids through
// the log (e.g. a block of 2^20 at a time) and hands them out from memory; a new leader starts
// after the highest block ever reserved, so an id is never issued twice even across failovers,
// and ids grow roughly with time (useful to operators). 2^63 ids last 290,000 years at 10^6
// transactions per second. A 64-bit id is one Thrift i64, one SQLite INTEGER PRIMARY KEY (the
// rowid: the cheapest key SQLite has) and one machine word to hash and compare.
typedef i64 TxId

// Commit protocol of one transaction, chosen when it begins and recorded by every participant
// at prepare.
enum Protocol {
  TWO_PHASE = 1,
  THREE_PHASE = 2,
}

// SQL NULL. A struct so that Value stays a union with one field per SQLite storage class.
struct Null {}

// One SQLite value. Exactly one field is set; a Value with none or several set is rejected
// with INVALID_ARGUMENT.
union Value {
  1: Null null_value
  2: i64 integer
  3: double real
  4: string text    // UTF-8
  5: binary blob
}

// One SQL statement with its parameters. Use either positional parameters (?, ?NNN) or named
// ones (:name, @name, $name), not both. Every parameter the statement declares must be given
// exactly once; an unknown name is an error. Named keys are written with or without their
// prefix character (":id" and "id" both bind :id).
struct Statement {
  1: string sql                          // exactly one statement; trailing text is an error
  2: list<Value> params = []             // ?1, ?2, ... in order
  3: map<string, Value> named_params = {}
}

struct Row {
  1: list<Value> values  // one per column, in ResultSet.columns order
}

// The outcome of one statement. A statement that returns no rows (UPDATE, INSERT without
// RETURNING) has no columns and no rows; rows_changed counts the rows it inserted, updated or
// deleted (sqlite3_changes), excluding changes made by triggers and foreign-key actions.
struct ResultSet {
  1: list<string> columns = []
  2: list<Row> rows = []
  3: i64 rows_changed = 0
}

// A participant as named in the coordinator's directory, with the address it serves on.
// Participants record the whole list at prepare so that 3PC's termination protocol can reach
// its peers when no coordinator is reachable.
struct ParticipantRef {
  1: string name
  2: string address  // "host:port"
}

// What a participant must make durable at prepare besides the changes: the protocol and every
// participant of the transaction (this one included).
struct TransactionInfo {
  1: Protocol protocol = Protocol.TWO_PHASE
  2: list<ParticipantRef> participants = []
}

// Why a call failed. Stable numbers: they cross process boundaries and appear in logs.
enum ErrorCode {
  INTERNAL = 1,              // a bug or an unexpected failure of a dependency
  INVALID_ARGUMENT = 2,      // malformed request: bad txid, bad Value, bad parameters
  INVALID_SQL = 3,           // the SQL does not compile, or is not allowed (DDL, PRAGMA, ...)
  CONSTRAINT_VIOLATION = 4,  // UNIQUE, NOT NULL, CHECK or FOREIGN KEY failed
  NO_PRIMARY_KEY = 5,        // a write to a table without a PRIMARY KEY (invisible to changesets)
  UNKNOWN_TRANSACTION = 6,   // the txid was never seen here, or its outcome was forgotten
  WRONG_STATE = 7,           // the call does not fit the transaction's state (e.g. after outcome)
  CONFLICT = 8,              // first-committer-wins: another transaction wrote the same row
  LOCK_TIMEOUT = 9,          // waited longer than the lock timeout for another transaction
  DEADLOCK = 10,             // this transaction was chosen as a deadlock victim
  TOO_LARGE = 11,            // a request, result or transaction exceeds a size bound
  RESOURCE_EXHAUSTED = 12,   // too many transactions, locks or queued requests; retry later
  ABORTED = 13,              // the transaction was already aborted (e.g. idle timeout)
  UNAVAILABLE = 14,          // cannot serve now (shutting down, storage error); retry may help
  NOT_LEADER = 15,           // a coordinator replica that is not the leader (see leader_hint)
  TIMED_OUT = 16,            // a statement ran past its time limit; the call had no effect
}

// The one exception type of every call.
exception TxError {
  1: ErrorCode code
  2: string message
  // True when the participant aborted the transaction because of this error (it released the
  // transaction's locks and will answer NO to Prepare); false when only the failed call had no
  // effect and the transaction can continue.
  3: bool transaction_aborted = false
  // With NOT_LEADER: the leader's "host:port" if this replica knows it.
  4: optional string leader_hint
}
