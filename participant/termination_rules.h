// Skeen's decision rule of the 3PC termination protocol, as one pure function, shared by txpart
// (participant/termination.h) and the coordinator's deterministic simulation.
//
// The backup coordinator of a termination round calls it only with the durable state of EVERY
// participant of the transaction in hand, each collected with join = true (so none of them can
// move on its own afterwards: docs/protocol.md, "Termination protocol"). With any participant
// missing it does not decide: the round waits, blocking like 2PC.
//
//   any COMMITTED                    -> commit
//   any ABORTED                      -> abort
//   any PRECOMMITTED (none aborted)  -> pre-commit every PREPARED one, then commit
//   otherwise (only PREPARED, ACTIVE, UNKNOWN) -> abort
//
// UNKNOWN (never prepared here, read-only, or finished and forgotten) and ACTIVE (not yet
// prepared) have no say: such a participant did not vote YES, or finished long ago. COMMITTED
// next to ABORTED, or PRECOMMITTED next to ABORTED, cannot happen while the protocol's
// invariants hold (docs/protocol.md proves it); the function answers kInconsistent and the
// round decides nothing rather than pick a side.

#pragma once

#include <vector>

#include "participant/participant.h"

namespace tx::participant {

enum class TerminationDecision : uint8_t {
  kCommit,        // pre-commit the PREPARED ones first, then commit everywhere
  kAbort,         // abort everywhere
  kInconsistent,  // states that the invariants rule out: decide nothing, report it
};

inline TerminationDecision DecideTermination(const std::vector<TxnState>& states) {
  bool committed = false, aborted = false, precommitted = false;
  for (TxnState s : states) {
    committed = committed || s == TxnState::kCommitted;
    aborted = aborted || s == TxnState::kAborted;
    precommitted = precommitted || s == TxnState::kPreCommitted;
  }
  if (aborted && (committed || precommitted)) return TerminationDecision::kInconsistent;
  if (committed || precommitted) return TerminationDecision::kCommit;
  return TerminationDecision::kAbort;
}

}  // namespace tx::participant
