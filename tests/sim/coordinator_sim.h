// Deterministic simulation of the coordinator: txcoord replicas (the real Raft core, the real
// replicated state machine, batcher and 2PC driver), participant agents (a model of txpart's
// durable state machine, docs/participant.md section 5, with its Resolve loop) and clients, all
// exchanging messages over a simulated network, under crashes, restarts and partitions.
//
// One seed drives everything: the fault profile, message delays, drops and duplicates, crashes
// (leaders are targeted), partitions between replicas and between any endpoints, participant
// restarts, the clients' transactions (1..3 participants, each written or only read), client
// aborts and GetOutcome questions.
//
// Checked as the run goes:
//   Atomicity            a participant commits a prepared transaction only when the log's first
//                        decision for it is COMMIT, and aborts a prepared one only when it is
//                        ABORT; no transaction is committed at one participant where it wrote
//                        and aborted (or lost) at another.
//   Decisions            every replica applies the same first decision for a txid.
//   Answers              a client told COMMITTED for a transaction with two or more participants,
//                        one of which wrote, holds a committed COMMIT decision at that moment; a
//                        one-participant COMMITTED means that participant committed; ABORTED
//                        means no participant ever commits it; GetOutcome never contradicts.
//   Termination          (3PC) no participant pre-commits before PRECOMMIT is logged or aborts
//                        once PRECOMMITTED; a round's outcome agrees with the log and with
//                        every participant (checked as Atomicity, by what participants apply).
// Then every coordinator replica goes down with the participants up and connected (a phase of
// coordinators_down_ms): every 3PC transaction in doubt reaches its outcome through the
// termination protocol, every 2PC one in doubt stays prepared (blocked).
// And once the fault phase ends (network healed, everything restarted, clients finish what they
// started and begin nothing new):
//   Liveness             every client has a definitive answer, no participant holds a prepared
//                        transaction, the leader has no decided, unfinished transaction, and
//                        the replicas' states are identical.
//
// Single-threaded; the same options always produce the same run.

#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tx::coordinator::sim {

struct SimOptions {
  uint64_t seed = 1;
  int replicas = 3;      // 3 or 5
  int participants = 3;  // 2..4
  int clients = 4;
  // Simulated milliseconds with faults, then at most this long for everything to settle.
  int chaos_ms = 6000;
  int liveness_ms = 30000;
  // Between the faults and the liveness phase: every coordinator replica down for this long,
  // participants up and connected. Every 3PC transaction must reach its outcome without them
  // (the termination protocol); every 2PC one in doubt must stay blocked. 0: skip the phase.
  int coordinators_down_ms = 4000;
  std::FILE* trace = nullptr;  // when set, a line per event
};

struct SimStats {
  uint64_t transactions = 0;  // answered to clients
  uint64_t committed = 0;
  uint64_t aborted = 0;
  uint64_t multi_participant_commits = 0;
  uint64_t coordinator_crashes = 0;
  uint64_t participant_crashes = 0;
  uint64_t leader_changes = 0;
  uint64_t decisions = 0;  // first decisions applied
  uint64_t snapshots_installed = 0;
  uint64_t messages = 0;
  uint64_t resolves = 0;
  uint64_t three_phase_commits = 0;             // 3PC transactions told COMMITTED
  uint64_t termination_rounds = 0;              // rounds started (probes included)
  uint64_t terminated_without_coordinator = 0;  // 3PC in doubt when coordinators went, decided
  uint64_t blocked_two_phase = 0;  // 2PC in doubt when coordinators went, still blocked
  uint64_t sim_ms = 0;
};

struct SimResult {
  bool ok = true;
  std::string property;
  std::string detail;
  uint64_t at_ms = 0;
  SimStats stats;
};

SimResult RunSimulation(const SimOptions& options);

}  // namespace tx::coordinator::sim
