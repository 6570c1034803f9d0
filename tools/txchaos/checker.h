// The checkers of a txchaos run. They read the participants' SQLite files directly (not through
// txpart), after the run, and compare them with what the clients were told (the history).
//
// Workload tables (tools/txchaos/workload.h creates them through --init-sql):
//   accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)      the bank
//   ledger(id TEXT PRIMARY KEY, txid INTEGER NOT NULL, ...)         one row per ledger
//                                                                   transaction per participant
// Participant tables (docs/participant.md, section 7): _txpart_outcomes (txid -> 1 committed,
// 2 aborted) and _txpart_prepared.
//
// Pure functions over the data read; thread-compatible.

#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/txchaos/history.h"

namespace tx::chaos {

struct CheckResult {
  std::string name;  // "bank.total", "ledger.atomic", ...
  bool ok = true;
  std::string detail;  // what held (figures) or what broke (the first few violations)
};

// What one participant's database holds.
struct ParticipantData {
  std::string name;
  std::map<int64_t, int64_t> balances;        // account id -> balance
  std::map<std::string, int64_t> ledger;      // ledger row id -> txid written in it
  std::map<int64_t, int> outcomes;            // txid -> 1 committed, 2 aborted
  std::vector<int64_t> prepared;              // txids still prepared
  std::vector<int64_t> precommitted;          // 3PC: those of `prepared` that are PRECOMMITTED
  std::vector<int64_t> prepared_three_phase;  // those of `prepared` that run 3PC
};

// Opens `db_path` read-only and reads the tables above. IOError/Corruption naming the file.
StatusOr<ParticipantData> ReadParticipant(const std::string& name, const std::string& db_path);

struct BankSpec {
  int accounts_per_participant = 0;
  int64_t initial_balance = 0;
  bool forbid_negative = true;  // the workload never transfers more than it read
};

// The total over every participant is what was there at the start; no balance is negative.
std::vector<CheckResult> CheckBank(const std::vector<ParticipantData>& data, const BankSpec& spec);

// For every ledger operation (ops with a key): committed -> its row is at every participant it
// wrote at; aborted, abandoned or no transaction -> at none; unknown -> at all or none. The row
// names the operation's txid; no row is found where the operation did not write, and no row
// exists that no operation wrote.
std::vector<CheckResult> CheckLedger(const std::vector<ParticipantData>& data,
                                     const std::vector<OpRecord>& ops);

// No txid is committed at one participant and aborted at another; every transaction a client
// was told COMMITTED is recorded committed at every participant it wrote at; none a client was
// told ABORTED (or never asked to commit) is recorded committed anywhere.
std::vector<CheckResult> CheckOutcomes(const std::vector<ParticipantData>& data,
                                       const std::vector<OpRecord>& ops);

// No participant holds a prepared transaction.
CheckResult CheckNothingPrepared(const std::vector<ParticipantData>& data);

// Three-phase commit's promise (docs/protocol.md, termination): when every coordinator is gone
// and every participant is up, the participants finish each 3PC transaction in doubt among
// themselves, without waiting for a coordinator to come back: one that some participant holds
// PRECOMMITTED commits; one that nobody pre-committed aborts (nobody can have committed it).
// One sample per outage: the participants' files read just after every replica was killed, and
// again just before the first was started again.
struct CoordinatorOutage {
  int64_t down_ms = 0;     // since the run's start
  int64_t restart_ms = 0;  // when the files were read the second time
  std::vector<ParticipantData> at_down, before_restart;
};
// Every 3PC txid prepared somewhere at `at_down` is, at `before_restart`, prepared nowhere and
// has one outcome at every participant that held it prepared at `at_down`: committed if it
// was PRECOMMITTED anywhere.
CheckResult CheckThreePhaseFinishWithoutCoordinators(const std::vector<CoordinatorOutage>& outages);

// One process's resources at one moment of a run (txchaos samples every second).
struct ResourceSample {
  int64_t t_ms = 0;         // since the run's start
  uint64_t rss_bytes = 0;   // 0 while the process is down
  uint64_t disk_bytes = 0;  // what the check watches: a replica's data directory (Raft WAL and
                            // snapshots), a participant's SQLite -wal file
};

// Growth between the middle and the end of a long run, per process: the highest sample in
// [late_from_ms, end) against the highest in [early_from_ms, early_to_ms). A leak or a log that
// is never compacted keeps growing with the transactions run; a working process levels off
// after warm-up. Allowed: 1.5 times the early peak plus slack_rss_bytes (memory) or
// slack_disk_bytes (disk), so that caches filling and a snapshot taken late do not count.
// A process with no sample in either window is skipped.
struct GrowthBounds {
  int64_t early_from_ms = 0, early_to_ms = 0, late_from_ms = 0;
  uint64_t slack_rss_bytes = 32 << 20;
  uint64_t slack_disk_bytes = 32 << 20;
};
CheckResult CheckNoGrowth(const std::map<std::string, std::vector<ResourceSample>>& by_node,
                          const GrowthBounds& bounds);

}  // namespace tx::chaos
