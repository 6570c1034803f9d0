// The checked workloads of a txchaos run, through libtxclient (the library applications use):
//
//  bank     transfers between accounts on (usually) different participants: read the source
//           balance, write balance - amount computed in the client, add amount at the target.
//           Never more than the balance read, so a balance below zero or a changed total means
//           a lost update or a broken commit. One transfer in five stays on one participant
//           (one-phase commit); with three or more participants some also read at a third one
//           (a read-only vote).
//  ledger   each transaction inserts one row with a unique id (worker-sequence) and its txid at
//           each participant of a random non-empty subset, so every transaction's visibility
//           is all-or-nothing and checkable per transaction.
//  overload extra clients (each its own Client, as separate applications) running ledger
//           transactions with short deadlines, to push the cluster past what it can serve.
//
// Every operation goes into the History with its outcome. A Commit that gives no outcome
// (kOutcomeUnknown, a deadline) is kept, and after the faults have healed ResolveUnknown() calls
// Commit() again on it (libtxclient resumes it) to learn the outcome.
//
// Protocol per transaction: "2pc", "3pc" or "mixed" (random per transaction). A cluster that
// refuses 3PC (kInvalidArgument at Begin) stops the workload with fatal_error().
//
// Thread-safe: Start/Stop/ResolveUnknown from one controlling thread; stats() from any.

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "tools/txchaos/history.h"
#include "txclient/client.h"

namespace tx::chaos {

struct WorkloadSpec {
  std::vector<std::string> coordinators;  // "host:port" (real addresses)
  std::vector<std::string> participants;  // names in the directory
  int bank_workers = 3;
  int ledger_workers = 3;
  int overload_clients = 0;
  int accounts_per_participant = 20;
  int64_t initial_balance = 1000;
  int64_t max_transfer = 100;
  std::string protocol = "2pc";  // "2pc", "3pc" or "mixed"
  uint64_t seed = 1;
  client::ClientOptions client_options;
  client::ClientOptions overload_options;
  // Unknown outcomes kept for ResolveUnknown(); past it they stay unknown (memory bound).
  size_t max_unresolved = 10'000;
};

// The schema and the initial accounts, for txpart --init-sql (idempotent).
std::string WorkloadInitSql(const WorkloadSpec& spec);

struct WorkloadStats {
  uint64_t committed = 0, aborted = 0, abandoned = 0, unknown = 0, no_txn = 0;
  uint64_t total() const { return committed + aborted + abandoned + unknown + no_txn; }
  int64_t max_op_ms = 0;           // the longest operation
  int64_t max_overload_op_ms = 0;  // the longest overload operation
};

class Workload {
 public:
  Workload(WorkloadSpec spec, History* history);
  ~Workload();  // Stop()
  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  // Validates the spec and starts the workers. InvalidArgument for a bad protocol or no
  // participants.
  Status Start();
  // Asks the workers to stop after their current operation and joins them (an operation ends
  // by its client deadlines); then closes the overload clients (and their connections).
  void Stop();
  // Calls Commit() again on every transaction whose outcome was unknown, until `deadline`.
  // Updates the history (a "resolved" event per transaction). Returns how many stay unknown.
  size_t ResolveUnknown(std::chrono::steady_clock::time_point deadline);

  WorkloadStats stats() const;
  // Set when the workload cannot go on (e.g. the cluster refuses 3PC); the workers have stopped.
  std::string fatal_error() const;

  class Worker;

 private:
  void RunWorker(int index, const std::string& kind, client::Client* c);
  void Record(OpRecord op, client::Transaction* unresolved);
  void SetFatal(const std::string& message);

  const WorkloadSpec spec_;
  History* const history_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<client::Client> client_;                 // shared by the checked workers
  std::vector<std::unique_ptr<client::Client>> overload_;  // one per overload client
  std::vector<std::thread> threads_;

  mutable std::mutex mu_;
  WorkloadStats stats_;  // GUARDED_BY(mu_)
  std::string fatal_;    // GUARDED_BY(mu_)
  struct Unresolved {
    OpRecord op;
    client::Transaction txn;
  };
  std::vector<Unresolved> unresolved_;  // GUARDED_BY(mu_)
};

}  // namespace tx::chaos
