// ParticipantService: served by txpart, one per SQLite database. Called by the coordinator
// (Prepare, Commit, Abort, CommitOnePhase), by clients through the coordinator's routing
// (Execute), and by operators (Status, ListPrepared). docs/participant.md describes the
// semantics: isolation level, locking, the durable state machine.
//
// Every call is idempotent where a retry can happen after a lost reply: Prepare, Commit, Abort
// and CommitOnePhase answer the recorded outcome when repeated. Execute is not idempotent (a
// retried Execute runs its statements again inside the transaction).

include "common.thrift"

namespace cpp tx.api

struct ExecuteRequest {
  1: common.TxId txid
  // Run in order, inside the transaction, with read-your-own-writes. All or nothing: if one
  // fails, none of this request's changes are kept (earlier requests' changes are).
  2: list<common.Statement> statements
  // The protocol and participant list, once known. The last one given (here or at Prepare)
  // is the one recorded at prepare.
  3: optional common.TransactionInfo info
  // The position of this request among the transaction's Executes at this participant: the
  // client numbers every request it sends for the transaction there 0, 1, 2, ... It makes
  // Executes exactly-once and stops a transaction from committing only part of its work:
  // - a participant that does not know the txid refuses any number but 0 and aborts the
  //   transaction (it lost the earlier Executes, e.g. in a restart);
  // - a number already taken is a duplicated request: WRONG_STATE, no effect;
  // - a number past the next expected one aborts the transaction (a request went missing).
  // Every request that reaches the transaction takes its number, whatever its outcome; one
  // refused before that (a malformed request: INVALID_ARGUMENT) may not, so the transaction
  // then aborts at its next Execute, which is safe. When absent, the request is taken as the
  // next one without a check (for callers that predate the field).
  4: optional i32 sequence
}

struct ExecuteResponse {
  1: list<common.ResultSet> results  // one per statement
}

// Vote of Prepare.
enum Vote {
  YES = 1,        // prepared durably; Commit will succeed
  NO = 2,         // aborted here; see reason
  READ_ONLY = 3,  // wrote nothing; finished here, needs no Commit or Abort
}

struct PrepareRequest {
  1: common.TxId txid
  // Recorded durably with the prepared transaction. Required for THREE_PHASE (the
  // termination protocol needs the peers); for TWO_PHASE it may be omitted if Execute gave it.
  2: optional common.TransactionInfo info
}

struct PrepareResponse {
  1: Vote vote
  2: optional common.ErrorCode reason_code  // with NO
  3: optional string reason                 // with NO, human-readable
}

struct CommitRequest {
  1: common.TxId txid
}
struct CommitResponse {}

struct AbortRequest {
  1: common.TxId txid
}
struct AbortResponse {}

// The outcome of a transaction at this participant.
enum Outcome {
  COMMITTED = 1,
  ABORTED = 2,
}

struct CommitOnePhaseRequest {
  1: common.TxId txid
}
struct CommitOnePhaseResponse {
  1: Outcome outcome
  2: optional common.ErrorCode reason_code  // with ABORTED
  3: optional string reason                 // with ABORTED
}

struct PreCommitRequest {
  1: common.TxId txid
  // True when a termination round's backup coordinator sends it (the round saw a
  // PRECOMMITTED participant, so it commits): accepted even after this participant joined.
  2: bool from_termination = false
}

struct TerminationStateRequest {
  1: common.TxId txid
  2: bool join = false
  3: string asker = ""  // the asking participant's name, for logs
}

// Where a transaction is in its life at this participant. Stable numbers.
enum TxState {
  UNKNOWN = 0,       // never seen, or finished and forgotten (the outcome store is bounded)
  ACTIVE = 1,        // executing; not yet prepared; may be aborted unilaterally
  PREPARED = 2,      // voted YES; durable; rows locked until the outcome arrives
  PRECOMMITTED = 3,  // 3PC only: every participant voted YES and this one is told so; durable
  COMMITTED = 4,
  ABORTED = 5,
}

struct PreCommitResponse {
  1: TxState state
  2: bool in_termination = false  // this participant has joined a termination round
}

struct TerminationStateResponse {
  // UNKNOWN also for a transaction that finished here read-only: it has no say.
  1: TxState state
  2: bool in_termination = false
}

struct StatusRequest {
  1: common.TxId txid
}

struct TransactionStatus {
  1: common.TxId txid
  2: TxState state
  3: optional common.TransactionInfo info  // recorded protocol and participants, if known
  4: i64 rows_written = 0                  // rows in the transaction's changeset
  5: i64 changeset_bytes = 0
  6: i64 locks_held = 0
  // Milliseconds since the transaction reached its current state (since the first Execute for
  // ACTIVE, since the vote for PREPARED). 0 when unknown (e.g. for an outcome read back from
  // storage).
  7: i64 state_age_ms = 0
  8: optional string abort_reason  // for ABORTED, when known
  9: bool in_termination = false   // 3PC: joined a termination round (durable)
}

struct ListPreparedRequest {
  1: optional common.TxId after_txid  // page start: only txids greater than this
  2: i32 limit = 1000                 // at most 10,000
}

struct ListPreparedResponse {
  1: list<TransactionStatus> transactions  // in txid order
  2: bool more                             // true if another page follows
}

struct GetInfoRequest {}
struct GetInfoResponse {
  1: string name           // --name of this agent
  2: string database       // path of its SQLite file
  3: i64 active_transactions
  4: i64 prepared_transactions
}

service ParticipantService {
  ExecuteResponse Execute(1: ExecuteRequest request) throws (1: common.TxError error)

  // Votes. With YES the prepared state is durable before the reply leaves. Repeating Prepare
  // answers the same vote; an unknown txid gets NO (presumed abort).
  PrepareResponse Prepare(1: PrepareRequest request) throws (1: common.TxError error)

  // Applies a prepared transaction. Repeating it succeeds. An unknown txid is an error
  // (UNKNOWN_TRANSACTION): under presumed abort only a prepared transaction may be committed,
  // so the coordinator must not have decided COMMIT without this participant's YES.
  CommitResponse Commit(1: CommitRequest request) throws (1: common.TxError error)

  // Aborts an active or prepared transaction. Repeating it succeeds, and so does aborting an
  // unknown txid (presumed abort). Aborting a committed transaction is WRONG_STATE.
  AbortResponse Abort(1: AbortRequest request) throws (1: common.TxError error)

  // Prepare and commit in one step, for a transaction with this participant as its only
  // writer. Answers the outcome; repeating it answers the same outcome while remembered.
  CommitOnePhaseResponse CommitOnePhase(1: CommitOnePhaseRequest request)
      throws (1: common.TxError error)

  // 3PC phase two (docs/protocol.md, "Three-phase commit"). Makes PRECOMMITTED durable before
  // answering. Repeating it answers the same. The answer is the participant's state:
  //   PRECOMMITTED            acknowledged
  //   COMMITTED               acknowledged (a termination round already committed it)
  //   ABORTED                 a termination round aborted it: the coordinator adopts ABORT
  //   PREPARED, in_termination  refused: this participant reported PREPARED to a termination
  //                           round, which may abort; ask again later (the round decides)
  // Errors: WRONG_STATE for a transaction not prepared, or one prepared as TWO_PHASE;
  // UNKNOWN_TRANSACTION for a txid never prepared here (or whose outcome was forgotten).
  PreCommitResponse PreCommit(1: PreCommitRequest request) throws (1: common.TxError error)

  // The termination protocol, between participants of one THREE_PHASE transaction, when no
  // coordinator replica can be reached. Answers this participant's state. With join = true the
  // caller is the round's backup coordinator: a prepared participant durably records that it
  // joined a round (and from then on refuses the coordinator's PreCommit, see above); an
  // active one (not yet prepared) aborts, which it may do before voting; an unknown txid is
  // remembered as aborted. With join = false it only answers (election probes).
  TerminationStateResponse TerminationState(1: TerminationStateRequest request)
      throws (1: common.TxError error)

  // Operators: the state of one transaction (UNKNOWN is an answer, not an error).
  TransactionStatus Status(1: StatusRequest request) throws (1: common.TxError error)

  // Operators: prepared (in-doubt) transactions, paged in txid order.
  ListPreparedResponse ListPrepared(1: ListPreparedRequest request)
      throws (1: common.TxError error)

  // Health check and identity.
  GetInfoResponse GetInfo(1: GetInfoRequest request) throws (1: common.TxError error)
}
