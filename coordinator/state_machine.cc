#include "coordinator/state_machine.h"

#include <fmt/format.h>

#include <set>
#include <utility>

#include "common/net.h"

namespace tx::coordinator {
namespace {

using coordlog::CommandResult;
using coordlog::ResultCode;

CommandResult Result(ResultCode::type code, std::string message = {}) {
  CommandResult r;
  r.code = code;
  if (!message.empty()) r.__set_message(std::move(message));
  return r;
}

CommandResult OutcomeResult(ResultCode::type code, coordlog::Outcome::type outcome) {
  CommandResult r;
  r.code = code;
  r.__set_outcome(outcome);
  return r;
}

bool IsValidOutcome(coordlog::Outcome::type o) {
  return o == coordlog::Outcome::COMMITTED || o == coordlog::Outcome::ABORTED;
}

bool HasNotify(const coordlog::Decide& d) {
  for (const coordlog::Participant& p : d.participants) {
    if (p.notify) return true;
  }
  return false;
}

}  // namespace

bool IsValidParticipantName(const std::string& name, size_t max_bytes) {
  if (name.empty() || name.size() > max_bytes) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

TxnStateMachine::TxnStateMachine(const StateMachineLimits& limits) : limits_(limits) {}

StatusOr<coordlog::EntryResult> TxnStateMachine::Apply(uint64_t index,
                                                       const coordlog::Entry& entry) {
  if (index <= applied_index_) {
    return Status::FailedPrecondition(
        fmt::format("apply of index {} after index {}", index, applied_index_));
  }
  coordlog::EntryResult out;
  out.results.reserve(entry.commands.size());
  for (const coordlog::Command& c : entry.commands) {
    if (c.__isset.register_participant) {
      out.results.push_back(ApplyRegister(c.register_participant));
    } else if (c.__isset.reserve_txids) {
      out.results.push_back(ApplyReserve(c.reserve_txids));
    } else if (c.__isset.decide) {
      out.results.push_back(ApplyDecide(index, c.decide));
    } else if (c.__isset.end_transaction) {
      out.results.push_back(ApplyEnd(c.end_transaction));
    } else if (c.__isset.precommit) {
      out.results.push_back(ApplyPreCommit(index, c.precommit));
    } else {
      // DecodeEntry refuses such entries; one built in memory without a field is a bug.
      out.results.push_back(Result(ResultCode::INVALID, "command with no field set"));
    }
  }
  applied_index_ = index;
  return out;
}

CommandResult TxnStateMachine::ApplyRegister(const coordlog::RegisterParticipant& c) {
  if (!IsValidParticipantName(c.name, limits_.max_name_bytes)) {
    return Result(ResultCode::INVALID,
                  fmt::format("participant name must be 1..{} bytes of [A-Za-z0-9_.-]",
                              limits_.max_name_bytes));
  }
  if (c.address.size() > limits_.max_address_bytes) {
    return Result(ResultCode::INVALID, "participant address too long");
  }
  StatusOr<HostPort> hp = ParseHostPort(c.address);
  if (!hp.ok() || hp->port == 0) {
    return Result(ResultCode::INVALID, fmt::format("bad participant address '{}'", c.address));
  }
  auto it = directory_.find(c.name);
  if (it == directory_.end() && directory_.size() >= limits_.max_directory_entries) {
    return Result(
        ResultCode::RESOURCE_EXHAUSTED,
        fmt::format("the directory holds {} participants already", limits_.max_directory_entries));
  }
  if (it == directory_.end() || it->second != c.address) {
    directory_[c.name] = c.address;
    ++directory_version_;
  }
  CommandResult r = Result(ResultCode::OK);
  r.__set_directory_version(directory_version_);
  return r;
}

CommandResult TxnStateMachine::ApplyReserve(const coordlog::ReserveTxIds& c) {
  if (c.count < 1 || c.count > limits_.max_txid_block) {
    return Result(ResultCode::INVALID,
                  fmt::format("txid block of {} (must be 1..{})", c.count, limits_.max_txid_block));
  }
  if (next_txid_ > kMaxTxId - c.count) {
    return Result(ResultCode::RESOURCE_EXHAUSTED, "txids exhausted");
  }
  CommandResult r = Result(ResultCode::OK);
  r.__set_first_txid(next_txid_);
  r.__set_txid_count(c.count);
  next_txid_ += c.count;
  return r;
}

CommandResult TxnStateMachine::ApplyDecide(uint64_t index, const coordlog::Decide& c) {
  if (c.txid <= 0 || c.txid >= next_txid_) {
    return Result(ResultCode::INVALID, fmt::format("txid {} was never issued", c.txid));
  }
  if (!IsValidOutcome(c.outcome)) {
    return Result(ResultCode::INVALID, fmt::format("unknown outcome {}", int{c.outcome}));
  }
  if (c.reason.size() > limits_.max_reason_bytes) {
    return Result(ResultCode::INVALID, "decision over a size bound");
  }
  if (auto bad = CheckParticipants(c.participants)) return *bad;
  // First decision wins.
  if (auto prior = PriorDecision(c.txid)) return *prior;
  auto pre = precommitted_.find(c.txid);
  const bool was_precommitted = pre != precommitted_.end();
  if (was_precommitted) {
    // Participants may be PRECOMMITTED and may commit on their own: only the participants'
    // own termination outcome may abort it now.
    if (c.outcome == coordlog::Outcome::ABORTED && c.origin != coordlog::Origin::TERMINATION) {
      return Result(ResultCode::PRECOMMITTED,
                    fmt::format("txid {} is pre-committed: ABORT only from its participants' "
                                "termination outcome",
                                c.txid));
    }
    // The record moves to live_ (or finishes) below; it held a place among the live ones.
    precommitted_.erase(pre);
  } else if (c.outcome == coordlog::Outcome::COMMITTED &&
             c.protocol == api::Protocol::THREE_PHASE) {
    return Result(ResultCode::INVALID,
                  fmt::format("COMMIT of THREE_PHASE txid {} without PRECOMMIT", c.txid));
  }
  if (!HasNotify(c)) {
    Finish(c.txid, c.outcome);
    return OutcomeResult(ResultCode::OK, c.outcome);
  }
  if (live_.size() + precommitted_.size() >= limits_.max_live_transactions && !was_precommitted) {
    if (c.outcome == coordlog::Outcome::COMMITTED) {
      return Result(ResultCode::RESOURCE_EXHAUSTED,
                    fmt::format("{} transactions are in phase two", live_.size()));
    }
    Finish(c.txid, c.outcome);
    return OutcomeResult(ResultCode::OK, c.outcome);
  }
  TxnRecord& rec = live_[c.txid];
  rec.decision = c;
  rec.decided_index = index;
  return OutcomeResult(ResultCode::OK, c.outcome);
}

std::optional<CommandResult> TxnStateMachine::PriorDecision(TxId txid) const {
  if (auto it = live_.find(txid); it != live_.end()) {
    return OutcomeResult(ResultCode::ALREADY_DECIDED, it->second.decision.outcome);
  }
  if (auto it = finished_.find(txid); it != finished_.end()) {
    return OutcomeResult(ResultCode::ALREADY_DECIDED, it->second);
  }
  if (txid <= forgotten_watermark_) {
    return Result(ResultCode::FORGOTTEN,
                  fmt::format("txid {} is at or below the forgotten watermark {}", txid,
                              forgotten_watermark_));
  }
  return std::nullopt;
}

std::optional<CommandResult> TxnStateMachine::CheckParticipants(
    const std::vector<coordlog::Participant>& participants) const {
  if (participants.size() > limits_.max_participants_per_transaction) {
    return Result(ResultCode::INVALID, "decision over a size bound");
  }
  std::set<std::string> names;
  for (const coordlog::Participant& p : participants) {
    if (!IsValidParticipantName(p.name, limits_.max_name_bytes) ||
        p.address.size() > limits_.max_address_bytes || !names.insert(p.name).second) {
      return Result(ResultCode::INVALID, "bad or repeated participant in decision");
    }
  }
  return std::nullopt;
}

CommandResult TxnStateMachine::ApplyPreCommit(uint64_t index, const coordlog::PreCommit& c) {
  if (c.txid <= 0 || c.txid >= next_txid_) {
    return Result(ResultCode::INVALID, fmt::format("txid {} was never issued", c.txid));
  }
  if (auto bad = CheckParticipants(c.participants)) return *bad;
  if (auto prior = PriorDecision(c.txid)) return *prior;
  if (precommitted_.count(c.txid) != 0) return Result(ResultCode::OK);  // a repeated proposal
  if (live_.size() + precommitted_.size() >= limits_.max_live_transactions) {
    return Result(ResultCode::RESOURCE_EXHAUSTED,
                  fmt::format("{} transactions are in phase two or pre-committed",
                              live_.size() + precommitted_.size()));
  }
  PreCommitRecord& rec = precommitted_[c.txid];
  rec.precommit = c;
  rec.logged_index = index;
  return Result(ResultCode::OK);
}

CommandResult TxnStateMachine::ApplyEnd(const coordlog::End& c) {
  auto it = live_.find(c.txid);
  if (it == live_.end()) {
    return Result(ResultCode::UNKNOWN_TRANSACTION,
                  fmt::format("END of txid {}, which has no live record", c.txid));
  }
  coordlog::Outcome::type outcome = it->second.decision.outcome;
  live_.erase(it);
  Finish(c.txid, outcome);
  return OutcomeResult(ResultCode::OK, outcome);
}

void TxnStateMachine::Finish(TxId txid, coordlog::Outcome::type outcome) {
  finished_[txid] = outcome;
  finished_order_.push_back(txid);
  while (finished_order_.size() > limits_.max_remembered_outcomes) {
    TxId old = finished_order_.front();
    finished_order_.pop_front();
    finished_.erase(old);
    if (old > forgotten_watermark_) forgotten_watermark_ = old;
  }
}

TxnLookup TxnStateMachine::Lookup(TxId txid) const {
  TxnLookup out;
  if (auto it = live_.find(txid); it != live_.end()) {
    out.knowledge = TxnKnowledge::kLive;
    out.outcome = it->second.decision.outcome;
    out.record = &it->second;
    return out;
  }
  if (auto it = finished_.find(txid); it != finished_.end()) {
    out.knowledge = TxnKnowledge::kFinished;
    out.outcome = it->second;
    return out;
  }
  if (auto it = precommitted_.find(txid); it != precommitted_.end()) {
    out.knowledge = TxnKnowledge::kPreCommitted;
    out.precommit = &it->second;
    return out;
  }
  if (txid <= 0 || txid >= next_txid_) {
    out.knowledge = TxnKnowledge::kNeverIssued;
  } else if (txid <= forgotten_watermark_) {
    out.knowledge = TxnKnowledge::kForgotten;
  } else {
    out.knowledge = TxnKnowledge::kUndecided;
  }
  return out;
}

std::optional<std::string> TxnStateMachine::AddressOf(const std::string& name) const {
  auto it = directory_.find(name);
  if (it == directory_.end()) return std::nullopt;
  return it->second;
}

coordlog::Snapshot TxnStateMachine::ToSnapshot() const {
  coordlog::Snapshot s;
  s.format_version = 1;
  s.applied_index = static_cast<int64_t>(applied_index_);
  s.next_txid = next_txid_;
  s.directory_version = directory_version_;
  s.directory.reserve(directory_.size());
  for (const auto& [name, address] : directory_) {
    coordlog::RegisterParticipant p;
    p.name = name;
    p.address = address;
    s.directory.push_back(std::move(p));
  }
  s.live.reserve(live_.size());
  for (const auto& [txid, rec] : live_) {
    coordlog::TransactionRecord r;
    r.decision = rec.decision;
    r.decided_index = static_cast<int64_t>(rec.decided_index);
    s.live.push_back(std::move(r));
  }
  s.finished.reserve(finished_order_.size());
  for (TxId txid : finished_order_) {
    coordlog::FinishedOutcome f;
    f.txid = txid;
    f.outcome = finished_.at(txid);
    s.finished.push_back(f);
  }
  s.forgotten_watermark = forgotten_watermark_;
  s.precommitted.reserve(precommitted_.size());
  for (const auto& [txid, rec] : precommitted_) {
    coordlog::TransactionPreCommit p;
    p.precommit = rec.precommit;
    p.logged_index = static_cast<int64_t>(rec.logged_index);
    s.precommitted.push_back(std::move(p));
  }
  return s;
}

Status TxnStateMachine::Restore(const coordlog::Snapshot& s) {
  auto bad = [](std::string what) {
    return Status::Corruption("coordinator snapshot: " + std::move(what));
  };
  if (s.applied_index < 0 || s.next_txid < 1 || s.next_txid > kMaxTxId ||
      s.forgotten_watermark < 0 || s.directory_version < 0) {
    return bad("negative or out-of-range counter");
  }
  if (s.directory.size() > limits_.max_directory_entries ||
      s.live.size() + s.precommitted.size() > limits_.max_live_transactions ||
      s.finished.size() > limits_.max_remembered_outcomes) {
    return bad(
        fmt::format("{} participants, {} live and {} finished transactions exceed the "
                    "limits of this build",
                    s.directory.size(), s.live.size(), s.finished.size()));
  }
  std::map<std::string, std::string> directory;
  for (const coordlog::RegisterParticipant& p : s.directory) {
    if (!IsValidParticipantName(p.name, limits_.max_name_bytes) ||
        !directory.emplace(p.name, p.address).second) {
      return bad(fmt::format("bad or repeated participant name '{}'", p.name));
    }
  }
  std::map<TxId, TxnRecord> live;
  for (const coordlog::TransactionRecord& r : s.live) {
    const TxId txid = r.decision.txid;
    if (txid <= 0 || txid >= s.next_txid || !IsValidOutcome(r.decision.outcome) ||
        r.decided_index <= 0 || r.decided_index > s.applied_index) {
      return bad(fmt::format("bad live record for txid {}", txid));
    }
    if (!live.empty() && live.rbegin()->first >= txid) {
      return bad(fmt::format("live records out of order at txid {}", txid));
    }
    TxnRecord& rec = live[txid];
    rec.decision = r.decision;
    rec.decided_index = static_cast<uint64_t>(r.decided_index);
  }
  std::unordered_map<TxId, coordlog::Outcome::type> finished;
  std::deque<TxId> order;
  for (const coordlog::FinishedOutcome& f : s.finished) {
    if (f.txid <= 0 || f.txid >= s.next_txid || !IsValidOutcome(f.outcome) ||
        live.count(f.txid) != 0 || !finished.emplace(f.txid, f.outcome).second) {
      return bad(fmt::format("bad or repeated finished outcome for txid {}", f.txid));
    }
    order.push_back(f.txid);
  }
  std::map<TxId, PreCommitRecord> precommitted;
  for (const coordlog::TransactionPreCommit& p : s.precommitted) {
    const TxId txid = p.precommit.txid;
    if (txid <= 0 || txid >= s.next_txid || p.logged_index <= 0 ||
        p.logged_index > s.applied_index || live.count(txid) != 0 || finished.count(txid) != 0) {
      return bad(fmt::format("bad pre-committed record for txid {}", txid));
    }
    if (!precommitted.empty() && precommitted.rbegin()->first >= txid) {
      return bad(fmt::format("pre-committed records out of order at txid {}", txid));
    }
    PreCommitRecord& rec = precommitted[txid];
    rec.precommit = p.precommit;
    rec.logged_index = static_cast<uint64_t>(p.logged_index);
  }
  applied_index_ = static_cast<uint64_t>(s.applied_index);
  next_txid_ = s.next_txid;
  directory_ = std::move(directory);
  directory_version_ = s.directory_version;
  live_ = std::move(live);
  precommitted_ = std::move(precommitted);
  finished_ = std::move(finished);
  finished_order_ = std::move(order);
  forgotten_watermark_ = s.forgotten_watermark;
  return Status::OK();
}

}  // namespace tx::coordinator
