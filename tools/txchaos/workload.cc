#include "tools/txchaos/workload.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <random>

namespace tx::chaos {
namespace {

using client::StatusCode;
using SteadyClock = std::chrono::steady_clock;

std::string CodeName(StatusCode code) { return client::StatusCodeName(code); }

}  // namespace

std::string WorkloadInitSql(const WorkloadSpec& spec) {
  std::string sql =
      "CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);\n"
      "CREATE TABLE IF NOT EXISTS ledger(id TEXT PRIMARY KEY, txid INTEGER NOT NULL,\n"
      "                                  worker INTEGER NOT NULL, participants TEXT NOT NULL);\n";
  // OR IGNORE: the file runs at every start; after the first it changes nothing.
  for (int a = 0; a < spec.accounts_per_participant; ++a) {
    sql += fmt::format("INSERT OR IGNORE INTO accounts(id, balance) VALUES ({}, {});\n", a,
                       spec.initial_balance);
  }
  return sql;
}

// One thread's loop: operations one after the other until asked to stop.
class Workload::Worker {
 public:
  Worker(Workload* w, int index, std::string kind, client::Client* c)
      : w_(w),
        index_(index),
        kind_(std::move(kind)),
        client_(c),
        rng_(w->spec_.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(index) * 7919 + 1) {}

  void Run() {
    while (!w_->stop_.load()) {
      if (kind_ == "bank") {
        Transfer();
      } else {
        LedgerInsert();
      }
    }
  }

 private:
  client::Protocol PickProtocol() {
    const std::string& p = w_->spec_.protocol;
    if (p == "3pc") return client::Protocol::kThreePhase;
    if (p == "mixed" && Uniform(0, 1) == 1) return client::Protocol::kThreePhase;
    return client::Protocol::kTwoPhase;
  }

  int64_t Uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  const std::string& RandomParticipant() {
    const auto& ps = w_->spec_.participants;
    return ps[static_cast<size_t>(Uniform(0, static_cast<int64_t>(ps.size()) - 1))];
  }

  OpRecord NewOp(const char* workload, client::Protocol protocol) {
    OpRecord op;
    op.workload = workload;
    op.worker = index_;
    op.protocol = protocol == client::Protocol::kThreePhase ? "3pc" : "2pc";
    op.start_ms = w_->history_->NowMs();
    return op;
  }

  // Begin; on failure records the operation and returns nullopt.
  std::optional<client::Transaction> Begin(OpRecord& op, client::Protocol protocol) {
    client::TransactionOptions options;
    options.protocol = protocol;
    client::StatusOr<client::Transaction> txn = client_->Begin(options);
    if (!txn.ok()) {
      if (txn.status().code() == StatusCode::kInvalidArgument &&
          protocol == client::Protocol::kThreePhase) {
        w_->SetFatal("the cluster refused a three-phase transaction: " + txn.status().ToString());
      }
      Finish(op, OpResult::kNoTxn, txn.status(), nullptr);
      return std::nullopt;
    }
    op.txid = txn->txid();
    return std::move(txn).value();
  }

  void Finish(OpRecord& op, OpResult result, const client::Status& status,
              client::Transaction* txn) {
    op.result = result;
    if (!status.ok()) {
      op.code = CodeName(status.code());
      op.detail = status.message();
    }
    op.end_ms = w_->history_->NowMs();
    w_->Record(std::move(op), result == OpResult::kUnknown ? txn : nullptr);
  }

  // An Execute failed: the transaction cannot commit (libtxclient aborted it, or we do now).
  void GiveUp(OpRecord& op, client::Transaction& txn, const client::Status& why) {
    (void)txn.Abort();  // best effort: the participants abort idle transactions anyway
    Finish(op, OpResult::kAbandoned, why, nullptr);
  }

  void Commit(OpRecord& op, client::Transaction& txn) {
    client::StatusOr<client::CommitResult> r = txn.Commit();
    if (!r.ok()) {
      Finish(op, OpResult::kUnknown, r.status(), &txn);
      return;
    }
    if (r->committed()) {
      Finish(op, OpResult::kCommitted, client::Status::OK(), nullptr);
    } else {
      Finish(op, OpResult::kAborted, client::Status(r->reason_code, r->reason), nullptr);
    }
  }

  void Transfer() {
    const WorkloadSpec& s = w_->spec_;
    const client::Protocol protocol = PickProtocol();
    OpRecord op = NewOp("bank", protocol);
    op.from_participant = RandomParticipant();
    op.to_participant = op.from_participant;
    if (s.participants.size() > 1 && Uniform(1, 5) != 1) {
      while (op.to_participant == op.from_participant) op.to_participant = RandomParticipant();
    }
    op.from_account = Uniform(0, s.accounts_per_participant - 1);
    op.to_account = Uniform(0, s.accounts_per_participant - 1);
    if (op.to_participant == op.from_participant && op.to_account == op.from_account) {
      op.to_account = (op.from_account + 1) % s.accounts_per_participant;
    }
    const int64_t wanted = Uniform(1, s.max_transfer);
    std::optional<client::Transaction> txn = Begin(op, protocol);
    if (!txn) return;
    client::StatusOr<client::ResultSet> read = txn->Execute(
        op.from_participant, "SELECT balance FROM accounts WHERE id = ?", {op.from_account});
    if (!read.ok()) return GiveUp(op, *txn, read.status());
    if (read->rows.size() != 1 || !read->rows[0][0].is_integer()) {
      return GiveUp(
          op, *txn,
          client::Status(StatusCode::kInternal, fmt::format("account {} at {} not found",
                                                            op.from_account, op.from_participant)));
    }
    const int64_t balance = read->rows[0][0].integer();
    if (balance <= 0) {
      op.read_only.push_back(op.from_participant);
      return GiveUp(op, *txn, client::Status(StatusCode::kAborted, "insufficient funds"));
    }
    op.amount = std::min(wanted, balance);
    op.written.push_back(op.from_participant);
    client::StatusOr<client::ResultSet> debit =
        txn->Execute(op.from_participant, "UPDATE accounts SET balance = ? WHERE id = ?",
                     {balance - op.amount, op.from_account});
    if (!debit.ok()) return GiveUp(op, *txn, debit.status());
    if (op.to_participant != op.from_participant) op.written.push_back(op.to_participant);
    client::StatusOr<client::ResultSet> credit =
        txn->Execute(op.to_participant, "UPDATE accounts SET balance = balance + ? WHERE id = ?",
                     {op.amount, op.to_account});
    if (!credit.ok()) return GiveUp(op, *txn, credit.status());
    if (s.participants.size() > 2 && Uniform(1, 4) == 1) {
      const std::string& third = RandomParticipant();
      if (std::find(op.written.begin(), op.written.end(), third) == op.written.end()) {
        op.read_only.push_back(third);
        client::StatusOr<client::ResultSet> r =
            txn->Execute(third, "SELECT count(*) FROM ledger", {});
        if (!r.ok()) return GiveUp(op, *txn, r.status());
      }
    }
    Commit(op, *txn);
  }

  void LedgerInsert() {
    const WorkloadSpec& s = w_->spec_;
    const client::Protocol protocol = PickProtocol();
    OpRecord op = NewOp(kind_ == "overload" ? "overload" : "ledger", protocol);
    op.key = fmt::format("{}{}-{}", kind_ == "overload" ? "o" : "w", index_, ++sequence_);
    std::vector<std::string> subset;
    for (const std::string& p : s.participants) {
      if (Uniform(0, 1) == 1) subset.push_back(p);
    }
    if (subset.empty()) subset.push_back(RandomParticipant());
    std::shuffle(subset.begin(), subset.end(), rng_);
    std::optional<client::Transaction> txn = Begin(op, protocol);
    if (!txn) return;
    const std::string list = fmt::format("{}", fmt::join(subset, ","));
    for (const std::string& p : subset) {
      op.written.push_back(p);
      client::StatusOr<client::ResultSet> r =
          txn->Execute(p, "INSERT INTO ledger(id, txid, worker, participants) VALUES (?, ?, ?, ?)",
                       {op.key, op.txid, index_, list});
      if (!r.ok()) return GiveUp(op, *txn, r.status());
    }
    Commit(op, *txn);
  }

  Workload* const w_;
  const int index_;
  const std::string kind_;
  client::Client* const client_;
  std::mt19937_64 rng_;
  uint64_t sequence_ = 0;
};

Workload::Workload(WorkloadSpec spec, History* history)
    : spec_(std::move(spec)), history_(history) {}

Workload::~Workload() { Stop(); }

Status Workload::Start() {
  if (spec_.protocol != "2pc" && spec_.protocol != "3pc" && spec_.protocol != "mixed") {
    return Status::InvalidArgument(
        fmt::format("protocol '{}' (want 2pc, 3pc or mixed)", spec_.protocol));
  }
  if (spec_.participants.empty() || spec_.coordinators.empty()) {
    return Status::InvalidArgument("a workload needs participants and coordinators");
  }
  if (spec_.accounts_per_participant < 2) {
    return Status::InvalidArgument("a bank needs two accounts per participant at least");
  }
  auto make = [&](const client::ClientOptions& o) -> StatusOr<std::unique_ptr<client::Client>> {
    client::StatusOr<std::unique_ptr<client::Client>> c =
        client::Client::Create(spec_.coordinators, o);
    if (!c.ok()) return Status::InvalidArgument(c.status().ToString());
    return std::move(c).value();
  };
  TX_ASSIGN_OR_RETURN(client_, make(spec_.client_options));
  for (int i = 0; i < spec_.overload_clients; ++i) {
    TX_ASSIGN_OR_RETURN(std::unique_ptr<client::Client> c, make(spec_.overload_options));
    overload_.push_back(std::move(c));
  }
  int index = 0;
  for (int i = 0; i < spec_.bank_workers; ++i) {
    threads_.emplace_back([this, k = index++] { RunWorker(k, "bank", client_.get()); });
  }
  for (int i = 0; i < spec_.ledger_workers; ++i) {
    threads_.emplace_back([this, k = index++] { RunWorker(k, "ledger", client_.get()); });
  }
  for (auto& c : overload_) {
    threads_.emplace_back([this, k = index++, cl = c.get()] { RunWorker(k, "overload", cl); });
  }
  return Status::OK();
}

void Workload::RunWorker(int index, const std::string& kind, client::Client* c) {
  Worker worker(this, index, kind, c);
  worker.Run();
}

void Workload::Stop() {
  stop_.store(true);
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  // The overload clients leave, as the applications they stand for would: their pooled
  // connections close and give the servers' connection slots back.
  overload_.clear();
}

void Workload::Record(OpRecord op, client::Transaction* unresolved) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    switch (op.result) {
      case OpResult::kCommitted:
        ++stats_.committed;
        break;
      case OpResult::kAborted:
        ++stats_.aborted;
        break;
      case OpResult::kAbandoned:
        ++stats_.abandoned;
        break;
      case OpResult::kUnknown:
        ++stats_.unknown;
        break;
      case OpResult::kNoTxn:
        ++stats_.no_txn;
        break;
    }
    const int64_t ms = op.end_ms - op.start_ms;
    if (op.workload == "overload") {
      stats_.max_overload_op_ms = std::max(stats_.max_overload_op_ms, ms);
    } else {
      stats_.max_op_ms = std::max(stats_.max_op_ms, ms);
    }
  }
  OpRecord copy = unresolved != nullptr ? op : OpRecord();
  const uint64_t id = history_->AddOp(std::move(op));
  if (unresolved != nullptr) {
    copy.id = id;
    std::lock_guard<std::mutex> lock(mu_);
    if (unresolved_.size() < spec_.max_unresolved) {
      unresolved_.push_back({std::move(copy), std::move(*unresolved)});
    }
  }
}

size_t Workload::ResolveUnknown(std::chrono::steady_clock::time_point deadline) {
  std::vector<Unresolved> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending.swap(unresolved_);
  }
  size_t still_unknown = 0;
  for (Unresolved& u : pending) {
    if (SteadyClock::now() >= deadline) {
      ++still_unknown;
      continue;
    }
    client::StatusOr<client::CommitResult> r = u.txn.Commit();
    if (!r.ok()) {
      ++still_unknown;
      continue;
    }
    const OpResult result = r->committed() ? OpResult::kCommitted : OpResult::kAborted;
    (void)history_->ResolveOp(u.op.id, result, r->committed() ? "" : r->reason);
    std::lock_guard<std::mutex> lock(mu_);
    --stats_.unknown;
    ++(result == OpResult::kCommitted ? stats_.committed : stats_.aborted);
  }
  return still_unknown;
}

WorkloadStats Workload::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string Workload::fatal_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fatal_;
}

void Workload::SetFatal(const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.empty()) fatal_ = message;
  }
  stop_.store(true);
}

}  // namespace tx::chaos
