// The scenarios txchaos knows, and the seeded fault schedule of a run.
//
// A scenario fixes the cluster's shape, the workload mix and which faults to draw from. A run's
// schedule is a function of (scenario, seed, duration) only: PlanSchedule() draws fault steps
// from the scenario's kinds with a generator seeded by the seed, so `txchaos run --scenario S
// --seed N --duration D` replays the same schedule. Steps name roles ("the leader", "a
// follower", "a participant"), resolved to processes when they run, and their random choices
// (which side of a partition, which link) come from a per-step seed.
//
// The timeline of a run of duration D:
//   [0, warmup)               workload only
//   [warmup, D - cooldown)    the fault window: steps run, each undone after its hold time
//   [D - cooldown, D)         everything healed (restarted, resumed, links whole, failpoints
//                             disarmed); the workload must make progress again
//   then                      workload stops; wait until nothing is in doubt; check
//
// Pure functions and constant data; thread-safe.

#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace tx::chaos {

// One fault step of a schedule. `kind` is "action:variant":
//   kill:leader|follower|participant|any     SIGKILL; restarted after hold_ms
//   pause:leader|follower|participant|any    SIGSTOP; SIGCONT after hold_ms
//   partition:isolate-leader                 every link to and from the leader cut
//   partition:majority                       coordinators split majority/minority, the
//                                            participants and the client spread over both sides
//   partition:one-way                        one direction between two nodes cut (often the
//                                            leader's outgoing or incoming side)
//   partition:participant-cut                a participant cut from every coordinator, both
//                                            ways (clients still reach it)
//   partition:client-cut                     the client cut from the leader
//   flaky:drop|delay|dup|all                 frames dropped / delayed / duplicated on many links
//   down:coordinators                        every coordinator replica SIGKILLed; all restarted
//                                            after hold_ms
// Undone at at_ms + hold_ms (never after the fault window ends).
struct FaultStep {
  int64_t at_ms = 0;
  int64_t hold_ms = 0;
  std::string kind;
  uint64_t seed = 0;  // the step's own choices
};

// A crash point armed on a process at start (TX_FAILPOINTS), firing at a random hit in
// [nth_min, nth_max]; the process is restarted with the next one when it crashes.
struct CrashPoint {
  std::string failpoint;
  bool coordinator = true;  // armed on txcoord (else txpart)
  int nth_min = 1, nth_max = 1;
  std::string action = "crash";  // or e.g. "error(NoSpace)" (then "times" bounds it)
};

struct Scenario {
  std::string name;
  std::string description;
  int replicas = 3;
  int participants = 2;
  int bank_workers = 3;
  int ledger_workers = 3;
  int overload_clients = 0;
  std::vector<std::string> kinds;  // fault kinds to draw steps from (uniformly)
  int64_t hold_ms_min = 500, hold_ms_max = 3000;
  int64_t gap_ms_min = 500, gap_ms_max = 2000;  // between one step's end and the next
  bool overlap = false;                  // steps may overlap (the next starts before the undo)
  std::vector<CrashPoint> crash_points;  // non-empty: the crash-point mechanism instead
  bool bad_input = false;
  bool measure_failover = false;  // check the time from a leader's kill to the next commit
  std::vector<std::string> txcoord_flags, txpart_flags;  // besides txchaos's defaults
};

// Every scenario, in the order `txchaos list` shows them.
const std::vector<Scenario>& AllScenarios();
// nullptr if unknown.
const Scenario* FindScenario(const std::string& name);

struct Timeline {
  int64_t duration_ms = 0;
  int64_t fault_start_ms = 0;  // end of the warm-up
  int64_t fault_end_ms = 0;    // start of the cool-down
};
Timeline MakeTimeline(int64_t duration_ms);

// Every crash point txchaos knows (the crash-points scenario arms them all).
std::vector<CrashPoint> AllCrashPoints();

// The crash points named (by failpoint, e.g. "coordinator.after_decision_logged"), in the
// order given. InvalidArgument naming the unknown one and listing the known ones.
StatusOr<std::vector<CrashPoint>> SelectCrashPoints(const std::vector<std::string>& names);

// The schedule of a run (sorted by at_ms; every step ends by fault_end_ms).
std::vector<FaultStep> PlanSchedule(const Scenario& scenario, uint64_t seed, const Timeline& t);

// The seed of step i of a run (also used by the crash-point and bad-input generators, with
// their own stream numbers, so that they do not disturb the schedule).
uint64_t MixSeed(uint64_t seed, uint64_t stream);

}  // namespace tx::chaos
