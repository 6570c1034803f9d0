// Deterministic simulation of a Raft cluster built from the real core (raft/core).
//
// One seed drives everything: the cluster's configuration (pre-vote, check-quorum, flow-control
// and snapshot limits), the simulated network (delay, drop, duplication, reordering, two-way and
// one-way partitions), the simulated disks (write latency; a crash keeps only a prefix of the
// writes not yet acknowledged), crashes and restarts from the persisted state, membership
// changes (add learner, promote, add voter, remove, including the leader), leadership
// transfers, ReadIndex requests, and state-machine snapshots with log compaction.
//
// After every step the checker verifies
//   Election Safety        at most one leader per term;
//   Log Matching           an (index, term) pair names one entry with one predecessor, across
//                          every entry any replica persisted;
//   Leader Completeness    a leader of term T holds every entry committed in a term before T;
//   State Machine Safety   no two replicas apply different entries (or reach different states)
//                          at one index, and no entry is applied twice;
// plus: ReadIndex answers are linearizable (never below what was applied anywhere when the read
// was issued), and the core's Ready stream respects its contract. When the fault phase ends the
// network is healed and every replica restarted; then a new proposal must commit, and every
// proposal acknowledged to its proposer must be applied on every live member (liveness).
//
// Single-threaded; the same options always produce the same run.

#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tx::raft::sim {

struct SimOptions {
  uint64_t seed = 1;
  int nodes = 3;  // founding voters: 3 or 5
  // Simulated time units with faults (a replica ticks every 10 units).
  int chaos_steps = 3000;
  // Deadline for the healed cluster to commit a new proposal and converge.
  int liveness_steps = 8000;
  std::FILE* trace = nullptr;  // when set, a line per event
};

struct SimStats {
  uint64_t steps = 0;
  uint64_t messages_delivered = 0;
  uint64_t messages_dropped = 0;
  uint64_t proposals = 0;
  uint64_t proposals_acked = 0;
  uint64_t max_term = 0;
  uint64_t crashes = 0;
  uint64_t snapshots_installed = 0;
  uint64_t snapshots_created = 0;
  uint64_t conf_changes_applied = 0;
  uint64_t reads_served = 0;
  uint64_t transfers = 0;
};

struct SimResult {
  bool ok = true;
  std::string property;  // the violated property, e.g. "Election Safety"
  std::string detail;
  uint64_t step = 0;  // when the violation was found
  SimStats stats;
};

SimResult RunSimulation(const SimOptions& options);

}  // namespace tx::raft::sim
