// The history of a txchaos run: every client operation with its outcome and every fault injected,
// with times in milliseconds since the run started, as one JSON object per line in
// <run dir>/history.jsonl, written (and flushed) as they happen, so that a run that dies still
// leaves its history. The first line describes the run (scenario, seed, duration, cluster shape,
// the planned fault schedule and the command that replays it).
//
// The operations are also kept in memory for the checkers.
//
// Thread-safe.

#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace tx::chaos {

// What the client learned about a transaction.
enum class OpResult {
  kCommitted,  // Commit answered COMMITTED
  kAborted,    // Commit answered ABORTED
  kAbandoned,  // Commit was never called (an Execute failed, or the workload gave up): the
               // transaction must not be committed anywhere
  kUnknown,    // Commit was called and gave no outcome (an error, a deadline)
  kNoTxn,      // Begin failed: no transaction
};
const char* OpResultName(OpResult r);

struct OpRecord {
  uint64_t id = 0;       // unique in the run
  std::string workload;  // "bank", "ledger", "overload"
  int worker = 0;
  int64_t txid = 0;                    // 0 without a transaction
  std::string protocol;                // "2pc", "3pc"
  std::vector<std::string> written;    // participants it wrote at (or tried to)
  std::vector<std::string> read_only;  // participants it only read at
  std::string key;                     // ledger: the row's unique id
  // bank: the transfer
  std::string from_participant, to_participant;
  int64_t from_account = 0, to_account = 0, amount = 0;
  OpResult result = OpResult::kNoTxn;
  std::string code;    // the client's StatusCode name for errors, or the abort reason code
  std::string detail;  // message
  int64_t start_ms = 0, end_ms = 0;
  bool resolved_later = false;  // the result came from a later Commit() (ResolveUnknown)
};

// JSON string literal (quoted, escaped).
std::string JsonString(const std::string& s);

class History {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  History() : start_(std::chrono::steady_clock::now()) {}
  ~History();

  // Creates (truncates) the file and writes the header line (a JSON object's members, without
  // braces, e.g. "\"scenario\":\"x\",\"seed\":1").
  Status Open(const std::string& path, const std::string& header_members);
  const std::string& path() const { return path_; }

  int64_t NowMs() const;
  int64_t MsAt(SteadyTime t) const;
  SteadyTime start() const { return start_; }

  // Records a finished operation; returns its id (assigned if 0).
  uint64_t AddOp(OpRecord op);
  // A later answer for an operation whose outcome was unknown: updates the record the checkers
  // read and writes a "resolved" event. NotFound for an unknown id.
  Status ResolveOp(uint64_t id, OpResult result, const std::string& detail);
  // Records an event: {"t": now, "type": type, <members>}.
  void AddEvent(const std::string& type, const std::string& members);
  // The same, at a given time.
  void AddEventAt(int64_t t_ms, const std::string& type, const std::string& members);

  std::vector<OpRecord> Ops() const;
  uint64_t event_count(const std::string& type) const;

 private:
  void WriteLine(const std::string& line);  // requires mu_

  const SteadyTime start_;
  mutable std::mutex mu_;
  std::FILE* file_ = nullptr;                     // GUARDED_BY(mu_)
  std::string path_;                              // GUARDED_BY(mu_), constant after Open()
  std::vector<OpRecord> ops_;                     // GUARDED_BY(mu_)
  uint64_t next_op_id_ = 1;                       // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> event_counts_;  // GUARDED_BY(mu_): by type
};

}  // namespace tx::chaos
