// CoordinatorService: served by every txcoord replica; only the leader answers, the others
// throw TxError NOT_LEADER with leader_hint.
//
// For now it holds what participants need (Resolve); the coordinator issue adds the client
// calls (Begin, Commit, ...) and the participant directory here.

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
}

struct ResolveRequest {
  1: common.TxId txid
  2: string participant  // the asking participant's name, for the coordinator's logs
}

struct ResolveResponse {
  1: Decision decision
}

service CoordinatorService {
  // Asked by a participant that holds a prepared transaction and has not heard its outcome
  // (after a restart, or when the outcome is overdue). NOT_LEADER (with leader_hint) from a
  // follower; UNAVAILABLE while no leader is known.
  ResolveResponse Resolve(1: ResolveRequest request) throws (1: common.TxError error)
}
