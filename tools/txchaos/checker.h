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
  std::map<int64_t, int64_t> balances;    // account id -> balance
  std::map<std::string, int64_t> ledger;  // ledger row id -> txid written in it
  std::map<int64_t, int> outcomes;        // txid -> 1 committed, 2 aborted
  std::vector<int64_t> prepared;          // txids still prepared
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

}  // namespace tx::chaos
