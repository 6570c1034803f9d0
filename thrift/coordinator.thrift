// CoordinatorService: served by every txcoord replica. Only the leader coordinates: on a
// follower every transaction call (Begin, Commit, Abort, GetOutcome, Resolve,
// RegisterParticipant, ListTransactions, GetTransaction) throws TxError NOT_LEADER with
// leader_hint when the leader is known, UNAVAILABLE when it is not. GetClusterStatus and
// GetDirectory are answered by any replica from its own state.
//
// docs/protocol.md describes the protocol behind these calls: what is written to the Raft log
// and when, what each answer guarantees, and what happens on failover.
//
// Names: the request and response types carry a Transaction/Outcome/... prefix because
// participant.thrift, which shares the tx.api C++ namespace, already defines CommitRequest,
// AbortRequest and friends.

include "common.thrift"

namespace cpp tx.api

// The coordinator's view of a transaction's outcome.
enum Decision {
  COMMITTED = 1,
  ABORTED = 2,
  // No decision yet and the transaction is live on the leader (votes are being collected):
  // ask again later. Never returned for a transaction the leader does not know: for that it
  // logs ABORT first (first decision wins) and answers ABORTED.
  PENDING = 3,
  // GetOutcome only: the Raft log holds no decision for the transaction and no Commit of it is
  // in progress on the leader. This is a fact, not a guess: a transaction with two or more
  // participants has then committed nowhere (2PC commits only after COMMIT is in the log) and
  // will not unless a Commit completes it. A transaction with one participant is committed
  // with CommitOnePhase, which the log does not record: repeat Commit (with the same
  // participant) to learn its outcome from the participant.
  UNDECIDED = 4,
}

struct ResolveRequest {
  1: common.TxId txid
  2: string participant  // the asking participant's name, for the coordinator's logs
}

struct ResolveResponse {
  1: Decision decision
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

struct TransactionOptions {
  // THREE_PHASE: prepare, PRECOMMIT logged and sent, COMMIT once every participant
  // acknowledged it; participants finish on their own when no coordinator is reachable
  // (docs/protocol.md, "Three-phase commit").
  1: common.Protocol protocol = common.Protocol.TWO_PHASE
  // Time from Begin to the decision. Past it an undecided transaction is aborted. 0: the
  // cluster's default (txcoord --txn-timeout-ms). At most the cluster's maximum
  // (--max-txn-timeout-ms); more is INVALID_ARGUMENT.
  2: i32 timeout_ms = 0
}

struct BeginRequest {
  1: TransactionOptions options
  // The directory version the client holds (0: none). The response carries the participant
  // directory only when the cluster's version differs, so Begin stays small.
  2: i64 directory_version = 0
}

struct BeginResponse {
  1: common.TxId txid
  2: i32 timeout_ms  // the timeout in force for this transaction
  3: i64 directory_version
  // Every registered participant, when directory_version differs from the request's.
  4: optional list<common.ParticipantRef> participants
}

struct CommitTransactionRequest {
  1: common.TxId txid
  // Every participant the transaction executed at, by directory name, each once (at most
  // 64). Must be the same list on every retry of Commit (and in Abort) for one txid: the
  // coordinator learns the participants only from it. Empty: a transaction that touched
  // nothing, COMMITTED at once.
  2: list<string> participants
  // Must match Begin's; a leader that did not see the Begin (failover) learns it here.
  3: common.Protocol protocol = common.Protocol.TWO_PHASE
}

struct CommitTransactionResponse {
  1: Decision decision                      // COMMITTED or ABORTED
  2: optional common.ErrorCode reason_code  // with ABORTED: e.g. CONFLICT (a participant voted
                                            // NO for that reason), ABORTED (timeout, Abort)
  3: optional string reason                 // with ABORTED, human-readable; names the participant
}

// Errors of Commit (TxError.code):
//   NOT_LEADER / UNAVAILABLE  the request may or may not have taken effect when the connection
//                             broke or UNAVAILABLE says "outcome unknown": repeat Commit (safe:
//                             it never decides twice) or ask GetOutcome.
//   INVALID_ARGUMENT          txid <= 0 or never issued, unknown or repeated participant name,
//                             protocol mismatch.
//   UNKNOWN_TRANSACTION       the outcome was decided so long ago that it is forgotten.
//   RESOURCE_EXHAUSTED        too many transactions in progress; retry later.
//   TOO_LARGE                 more than 64 participants.

struct AbortTransactionRequest {
  1: common.TxId txid
  2: list<string> participants  // as in Commit
}

struct AbortTransactionResponse {
  // ABORTED; or COMMITTED when the transaction had already committed (the Abort changed
  // nothing).
  1: Decision decision
}

struct GetOutcomeRequest {
  1: common.TxId txid
}

struct GetOutcomeResponse {
  1: Decision decision  // COMMITTED, ABORTED, PENDING or UNDECIDED
  2: optional common.ErrorCode reason_code  // with ABORTED, when recorded
  3: optional string reason
}

// ---------------------------------------------------------------------------------------------
// Participants
// ---------------------------------------------------------------------------------------------

// Participants register name -> address at start-up (and again whenever they like: the last
// registration wins). Names: 1-128 bytes of [A-Za-z0-9_.-]; addresses "host:port". At most
// 1024 participants.
struct RegisterParticipantRequest {
  1: common.ParticipantRef participant
}

struct RegisterParticipantResponse {
  1: i64 directory_version
}

struct GetDirectoryRequest {}

struct GetDirectoryResponse {
  1: i64 directory_version
  2: list<common.ParticipantRef> participants  // in name order
}

// ---------------------------------------------------------------------------------------------
// Operators (txctl)
// ---------------------------------------------------------------------------------------------

struct ReplicaStatus {
  1: i64 id
  2: string address
  3: bool is_learner = false
  4: i64 match_index = 0  // as the leader sees it (0 on followers' answers)
}

struct ClusterStatusRequest {}

struct ClusterStatusResponse {
  1: i64 replica_id             // the replica that answered
  2: string role                // "leader", "follower", "pre-candidate", "candidate"
  3: i64 term
  4: i64 leader_id              // 0 when unknown
  5: string leader_address      // "" when unknown
  6: i64 commit_index
  7: i64 applied_index
  8: list<ReplicaStatus> replicas
  9: i64 directory_version
  10: list<common.ParticipantRef> participants
  11: i64 decided_transactions  // decided and not yet finished (phase two pending)
  12: i64 active_transactions   // leader only: begun or collecting votes, undecided
  13: i64 next_txid             // the first txid not yet reserved
  14: string health             // "OK" or the storage error that stopped the replica
}

// Where a transaction is, from the coordinator's point of view.
enum TransactionPhase {
  BEGUN = 1,            // txid handed out by Begin; no Commit yet (leader memory only)
  COLLECTING_VOTES = 2, // Prepare sent; waiting for votes (leader memory only)
  DECIDING = 3,         // decision proposed to the Raft log, not yet applied
  COMMITTING = 4,       // COMMIT logged; phase two until every YES voter acknowledges
  ABORTING = 5,         // ABORT logged; phase two until every possibly prepared one acknowledges
  ONE_PHASE = 6,        // CommitOnePhase sent to the only participant
  FINISHED = 7,         // phase two done (END logged); only the outcome is remembered
  // 3PC: PRECOMMIT proposed or logged; PreCommit until every YES voter acknowledged, then COMMIT
  // is decided (or, if the participants' termination round aborted, ABORT is adopted).
  PRECOMMITTING = 8,
}

// A participant's vote as the coordinator knows it.
enum ParticipantVote {
  NONE = 0,       // none received (yet): the participant may be prepared
  YES = 1,
  NO = 2,
  READ_ONLY = 3,
}

struct ParticipantProgress {
  1: string name
  2: string address
  3: ParticipantVote vote = ParticipantVote.NONE
  4: bool waiting = false      // the coordinator is waiting for this participant now
  5: bool acknowledged = false // phase two acknowledged
  6: i32 attempts = 0          // calls made in the current phase
  7: optional string last_error
}

struct TransactionView {
  1: common.TxId txid
  2: common.Protocol protocol = common.Protocol.TWO_PHASE
  3: TransactionPhase phase
  4: optional Decision decision
  5: optional common.ErrorCode reason_code
  6: optional string reason
  7: list<ParticipantProgress> participants = []
  // Milliseconds in this leader's memory (since Begin, or since this leader first saw the
  // transaction); for a record taken over from an earlier leader, since this leader started
  // serving.
  8: i64 age_ms = 0
  9: i64 decided_unix_ms = 0  // wall-clock time of the decision (0 if undecided)
  10: i64 decided_index = 0   // Raft index of the decision entry (0 if undecided)
}

struct ListTransactionsRequest {
  1: optional common.TxId after_txid  // page start: only txids greater than this
  2: i32 limit = 1000                 // 1..10,000
  3: bool include_begun = false       // also transactions with no Commit yet (BEGUN)
}

struct ListTransactionsResponse {
  1: list<TransactionView> transactions  // in txid order: undecided ones on the leader and
                                         // decided, unfinished ones from the Raft log
  2: bool more                           // another page follows
}

struct GetTransactionRequest {
  1: common.TxId txid
}

service CoordinatorService {
  // Asked by a participant that holds a prepared transaction and has not heard its outcome
  // (after a restart, or when the outcome is overdue). NOT_LEADER (with leader_hint) from a
  // follower; UNAVAILABLE while no leader is known.
  ResolveResponse Resolve(1: ResolveRequest request) throws (1: common.TxError error)

  // A new transaction id, from a block the leader reserved through the Raft log (no log write
  // per Begin). The client then executes at participants directly (ParticipantService.Execute).
  BeginResponse Begin(1: BeginRequest request) throws (1: common.TxError error)

  // Commits the transaction at every participant or at none. Idempotent: a repeated Commit
  // answers the decision once there is one, joins the Commit in progress, or (after a leader
  // failover) collects the votes again and completes it. Errors: see above.
  CommitTransactionResponse Commit(1: CommitTransactionRequest request)
      throws (1: common.TxError error)

  // Aborts the transaction at every participant. Idempotent.
  AbortTransactionResponse Abort(1: AbortTransactionRequest request)
      throws (1: common.TxError error)

  // The outcome recorded in the Raft log; see Decision. UNKNOWN_TRANSACTION when it was
  // forgotten; INVALID_ARGUMENT for a txid never issued.
  GetOutcomeResponse GetOutcome(1: GetOutcomeRequest request) throws (1: common.TxError error)

  RegisterParticipantResponse RegisterParticipant(1: RegisterParticipantRequest request)
      throws (1: common.TxError error)

  GetDirectoryResponse GetDirectory(1: GetDirectoryRequest request)
      throws (1: common.TxError error)

  ClusterStatusResponse GetClusterStatus(1: ClusterStatusRequest request)
      throws (1: common.TxError error)

  ListTransactionsResponse ListTransactions(1: ListTransactionsRequest request)
      throws (1: common.TxError error)

  // UNKNOWN_TRANSACTION when the coordinator knows nothing about txid.
  TransactionView GetTransaction(1: GetTransactionRequest request)
      throws (1: common.TxError error)
}
