// One txchaos run: launch a cluster behind the fault-injecting proxy, run the checked workload
// through libtxclient, inject the scenario's faults on its seeded schedule, heal, wait until
// nothing is in doubt, stop the processes, and check (see the check list in RunReport).
//
// Files in the run directory: history.jsonl (history.h), summary.json, and per process
// <node>.log (stderr), <node>.out (stdout), its data. Kept when a check fails (or with keep).
//
// Not thread-safe: one run at a time per process (the client's dial-rewrite table is
// process-wide).

#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tools/txchaos/checker.h"

namespace tx::chaos {

struct RunOptions {
  std::string scenario;
  uint64_t seed = 1;
  int64_t duration_ms = 60'000;
  std::string bin_dir;           // txcoord and txpart
  std::string work_dir;          // parent of the run directory; default $TMPDIR or /tmp
  bool keep = false;             // keep the run directory even when every check held
  std::string protocol = "2pc";  // 2pc, 3pc, mixed
  int replicas = 0;              // 0: the scenario's
  int participants = 0;          // 0: the scenario's
  // Crash points to arm, by failpoint name (scenario.h, AllCrashPoints). Empty: the scenario's
  // own. Otherwise they replace the crash-points scenario's set, and are added to any other
  // scenario's faults.
  std::vector<std::string> crash_points;
  std::string log_level = "warn";
  bool verbose = false;  // progress lines on stderr

  // Bounds the checks enforce.
  int64_t max_failover_ms = 15'000;  // leader killed -> first commit through a new leader
  uint64_t max_rss_mb = 512;         // any process, at any sample
  uint64_t max_coordinator_disk_mb = 512;
  uint64_t max_sqlite_wal_mb = 128;
  int64_t resolve_timeout_ms = 60'000;   // after the workload: nothing in doubt by then
  int64_t liveness_timeout_ms = 30'000;  // after healing: a commit by then
};

struct RunReport {
  bool ok = false;
  std::string scenario;
  uint64_t seed = 0;
  int64_t duration_ms = 0;
  std::string run_dir;
  std::string history_path;
  std::string replay_command;
  std::vector<CheckResult> checks;
  // Figures.
  uint64_t transactions = 0, committed = 0, aborted = 0, abandoned = 0, unknown = 0, no_txn = 0;
  uint64_t resolved_later = 0;  // unknown at first, learned by calling Commit() again
  uint64_t faults = 0;  // schedule steps run + crash-point crashes + frames dropped/duplicated
                        // + bad inputs sent
  std::vector<int64_t> failover_ms;
  // Highest sample over the run, by role (memory; a replica's data directory; a participant's
  // SQLite -wal).
  uint64_t peak_coordinator_rss_bytes = 0, peak_participant_rss_bytes = 0;
  uint64_t peak_coordinator_disk_bytes = 0, peak_sqlite_wal_bytes = 0;
  // fault -> protocol phase -> faults that struck with a transaction in that phase (see
  // faults.h); crash points count under "crash-point" by failpoint name.
  std::map<std::string, std::map<std::string, uint64_t>> coverage;
  int64_t wall_ms = 0;
  std::string Summary() const;  // several lines, for humans
};

// Runs one scenario. Errors of the harness itself (binaries missing, cannot bind a port) are
// reported as a failed "harness" check, with the run directory kept.
RunReport RunScenario(const RunOptions& options);

}  // namespace tx::chaos
