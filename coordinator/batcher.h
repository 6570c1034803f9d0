// tx::coordinator::CommandBatcher: packs commands proposed by many transactions into shared Raft
// entries (group commit for the coordinator's log).
//
// At most max_inflight_entries entries are being replicated at a time. A command proposed while
// a slot is free goes out at once, in an entry of its own (no added latency for a lone client);
// commands proposed while every slot is busy queue up and leave together, in as few entries as
// the size bounds allow, when a slot frees. Under load, entries therefore grow with the
// replication round trip, and the log's fsyncs and messages are shared by every transaction
// that decided during one round.
//
// Order: commands from one thread usually enter the log in the order proposed, but entries
// taken by different threads may be handed to the log in either order. Nothing relies on it:
// every answer is read from the applied state (first decision wins).
//
// Bounds: max_queued_commands commands wait at most (past it Propose fails at once with
// ResourceExhausted: the log cannot keep up and the caller should shed load); an entry holds at
// most max_commands_per_entry commands and about max_entry_bytes.
//
// Thread-safe. Callbacks run without the batcher's lock held, on the EntryLog's thread (or the
// caller's, for immediate failures).

#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "coordinator/interfaces.h"

namespace tx::coordinator {

struct BatcherOptions {
  // Entries in flight. More than one lets a new batch start replicating while the previous one
  // is still being fsynced by followers; RaftNode persists several entries with one fsync.
  size_t max_inflight_entries = 4;
  size_t max_commands_per_entry = 4096;
  // Estimated encoded size per entry: half of RaftNode's default max_proposal_bytes (8 MiB).
  size_t max_entry_bytes = 4 << 20;
  // Bounds memory when the log stalls (each queued command holds its callback).
  size_t max_queued_commands = 200'000;
  // tx_coordinator_log_entries_total / tx_coordinator_log_commands_total; nullptr: none.
  MetricsRegistry* metrics = nullptr;
};

class CommandBatcher final : public CommandLog {
 public:
  // `log` must outlive the batcher.
  CommandBatcher(EntryLog* log, BatcherOptions options);
  ~CommandBatcher() override;

  void Propose(coordlog::Command command, ProposeCallback done) override;
  void Barrier(std::function<void(Status)> done) override;

  struct Stats {
    uint64_t entries = 0;   // entries proposed
    uint64_t commands = 0;  // commands proposed in them
    size_t queued = 0;      // waiting now
    size_t inflight = 0;    // entries in flight now
  };
  Stats GetStats() const;

  // Rough encoded size of a command, for the entry size bound.
  static size_t EstimateBytes(const coordlog::Command& command);

 private:
  struct Pending {
    bool barrier = false;
    coordlog::Command command;
    size_t bytes = 0;
    ProposeCallback done;                      // commands
    std::function<void(Status)> barrier_done;  // barriers
  };
  using Batch = std::vector<Pending>;

  // Takes the next batches to send while slots are free. Called with mu_ held.
  std::vector<Batch> TakeBatchesLocked();
  void Send(std::vector<Batch> batches);
  void OnEntryDone(Batch batch, Status status, const std::string& result);

  EntryLog* const log_;
  const BatcherOptions options_;
  Counter* entries_counter_ = nullptr;   // constant after construction
  Counter* commands_counter_ = nullptr;  // constant after construction

  mutable std::mutex mu_;
  std::deque<Pending> queue_;  // GUARDED_BY(mu_)
  size_t inflight_ = 0;        // GUARDED_BY(mu_)
  uint64_t entries_ = 0;       // GUARDED_BY(mu_)
  uint64_t commands_ = 0;      // GUARDED_BY(mu_)
};

}  // namespace tx::coordinator
