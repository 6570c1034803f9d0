#include "coordinator/batcher.h"

#include <fmt/format.h>

#include <utility>

#include "common/check.h"
#include "coordinator/codec.h"

namespace tx::coordinator {

CommandBatcher::CommandBatcher(EntryLog* log, BatcherOptions options)
    : log_(log), options_(options) {
  TX_CHECK(options_.max_inflight_entries >= 1 && options_.max_commands_per_entry >= 1,
           "bad batcher options: {} in flight, {} per entry", options_.max_inflight_entries,
           options_.max_commands_per_entry);
  if (options_.metrics != nullptr) {
    entries_counter_ = options_.metrics->AddCounter(
        "tx_coordinator_log_entries_total", "Raft entries proposed by the command batcher.");
    commands_counter_ =
        options_.metrics->AddCounter("tx_coordinator_log_commands_total",
                                     "Commands (decisions, ENDs, ...) proposed in those entries.");
  }
}

CommandBatcher::~CommandBatcher() = default;

size_t CommandBatcher::EstimateBytes(const coordlog::Command& c) {
  size_t bytes = 32;  // field headers, txid, enums
  if (c.__isset.register_participant) {
    bytes += c.register_participant.name.size() + c.register_participant.address.size();
  }
  if (c.__isset.decide) {
    bytes += c.decide.reason.size();
    for (const coordlog::Participant& p : c.decide.participants) {
      bytes += 8 + p.name.size() + p.address.size();
    }
  }
  return bytes;
}

void CommandBatcher::Propose(coordlog::Command command, ProposeCallback done) {
  std::vector<Batch> batches;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= options_.max_queued_commands) {
      // Fall through to fail outside the lock.
    } else {
      Pending p;
      p.bytes = EstimateBytes(command);
      p.command = std::move(command);
      p.done = std::move(done);
      queue_.push_back(std::move(p));
      batches = TakeBatchesLocked();
      done = nullptr;
    }
  }
  if (done) {
    done(Status::ResourceExhausted(
        fmt::format("{} commands wait for the log already", options_.max_queued_commands)));
    return;
  }
  Send(std::move(batches));
}

void CommandBatcher::Barrier(std::function<void(Status)> done) {
  std::vector<Batch> batches;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() < options_.max_queued_commands) {
      Pending p;
      p.barrier = true;
      p.barrier_done = std::move(done);
      queue_.push_back(std::move(p));
      batches = TakeBatchesLocked();
      done = nullptr;
    }
  }
  if (done) {
    done(Status::ResourceExhausted("the log's queue is full"));
    return;
  }
  Send(std::move(batches));
}

std::vector<CommandBatcher::Batch> CommandBatcher::TakeBatchesLocked() {
  std::vector<Batch> out;
  while (!queue_.empty() && inflight_ < options_.max_inflight_entries) {
    Batch batch;
    size_t bytes = 0;
    size_t commands = 0;
    while (!queue_.empty()) {
      Pending& next = queue_.front();
      if (!next.barrier && commands > 0 &&
          (commands >= options_.max_commands_per_entry ||
           bytes + next.bytes > options_.max_entry_bytes)) {
        break;
      }
      if (!next.barrier) {
        ++commands;
        bytes += next.bytes;
      }
      batch.push_back(std::move(next));
      queue_.pop_front();
    }
    ++inflight_;
    ++entries_;
    commands_ += commands;
    if (entries_counter_ != nullptr) {
      entries_counter_->Increment();
      commands_counter_->Increment(commands);
    }
    out.push_back(std::move(batch));
  }
  return out;
}

void CommandBatcher::Send(std::vector<Batch> batches) {
  for (Batch& batch : batches) {
    coordlog::Entry entry;
    entry.format_version = kLogFormatVersion;
    for (const Pending& p : batch) {
      if (!p.barrier) entry.commands.push_back(p.command);
    }
    std::string bytes = EncodeEntry(entry);
    auto shared = std::make_shared<Batch>(std::move(batch));
    log_->ProposeEntry(std::move(bytes), [this, shared](Status status, std::string result) {
      OnEntryDone(std::move(*shared), std::move(status), result);
    });
  }
}

void CommandBatcher::OnEntryDone(Batch batch, Status status, const std::string& result) {
  std::vector<Batch> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    TX_CHECK(inflight_ > 0, "entry completed with none in flight");
    --inflight_;
    next = TakeBatchesLocked();
  }
  std::vector<coordlog::CommandResult> results;
  if (status.ok()) {
    StatusOr<coordlog::EntryResult> decoded = DecodeEntryResult(result);
    size_t commands = 0;
    for (const Pending& p : batch) commands += p.barrier ? 0 : 1;
    if (!decoded.ok()) {
      status = Status::Internal("undecodable result of an applied entry: " +
                                decoded.status().ToString());
    } else if (decoded->results.size() != commands) {
      status = Status::Internal(fmt::format("entry of {} commands produced {} results", commands,
                                            decoded->results.size()));
    } else {
      results = std::move(decoded->results);
    }
  }
  size_t i = 0;
  for (Pending& p : batch) {
    if (p.barrier) {
      p.barrier_done(status);
    } else if (status.ok()) {
      p.done(std::move(results[i++]));
    } else {
      p.done(status);
    }
  }
  Send(std::move(next));
}

CommandBatcher::Stats CommandBatcher::GetStats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{entries_, commands_, queue_.size(), inflight_};
}

}  // namespace tx::coordinator
