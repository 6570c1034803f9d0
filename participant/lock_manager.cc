#include "participant/lock_manager.h"

#include <fmt/format.h>

#include <algorithm>

namespace tx::participant {

struct LockManager::Waiting {
  Waiting(Clock* clock, TxId t, const std::string* k, LockMode m)
      : waiter(clock), txn(t), key(k), mode(m) {}
  Waiter waiter;
  const TxId txn;
  const std::string* const key;
  const LockMode mode;
  bool granted = false;  // GUARDED_BY(LockManager::mu_)
};

LockManager::LockManager(Clock* clock, Limits limits) : clock_(clock), limits_(limits) {}

LockManager::~LockManager() {
  std::lock_guard<std::mutex> lock(mu_);
  TX_CHECK(waiting_ == 0, "LockManager destroyed with {} transactions waiting", waiting_);
}

bool LockManager::Compatible(const Entry& e, TxId txn, LockMode mode) {
  for (const auto& [holder, held] : e.holders) {
    if (holder == txn) continue;
    if (mode == LockMode::kExclusive || held == LockMode::kExclusive) return false;
  }
  return true;
}

LockMode LockManager::HeldMode(const Entry& e, TxId txn) {
  for (const auto& [holder, held] : e.holders) {
    if (holder == txn) return held;
  }
  return static_cast<LockMode>(0);
}

void LockManager::Grant(Entry& e, const std::string& key, TxId txn, LockMode mode) {
  for (auto& [holder, held] : e.holders) {
    if (holder == txn) {
      if (mode == LockMode::kExclusive) held = LockMode::kExclusive;
      return;
    }
  }
  e.holders.emplace_back(txn, mode);
  txns_[txn].held.insert(key);
  ++total_locks_;
}

Status LockManager::CheckLimits(TxId txn) const {
  if (total_locks_ >= limits_.max_total_locks) {
    return Status::ResourceExhausted(
        fmt::format("lock table full ({} locks held in all)", limits_.max_total_locks));
  }
  auto it = txns_.find(txn);
  if (it != txns_.end() && it->second.held.size() >= limits_.max_locks_per_txn) {
    return Status::ResourceExhausted(
        fmt::format("transaction {} holds {} locks, the most one transaction may hold; split it",
                    txn, limits_.max_locks_per_txn));
  }
  return Status::OK();
}

StatusOr<bool> LockManager::TryAcquire(TxId txn, const std::string& key, LockMode mode,
                                       TxId* blocker) {
  std::lock_guard<std::mutex> lock(mu_);
  auto tit = txns_.find(txn);
  if (tit != txns_.end() && tit->second.cancelled) {
    return Status::Cancelled(fmt::format("transaction {} is being aborted", txn));
  }
  auto it = table_.find(key);
  if (it != table_.end()) {
    Entry& e = it->second;
    LockMode held = HeldMode(e, txn);
    if (held == LockMode::kExclusive || held == mode) return true;
    bool upgrade = held == LockMode::kShared;
    // An upgrader that is the only holder goes first; anyone else waits behind the queue.
    if (Compatible(e, txn, mode) && (upgrade || e.queue.empty())) {
      if (!upgrade) TX_RETURN_IF_ERROR(CheckLimits(txn));
      Grant(e, key, txn, mode);
      return true;
    }
    if (blocker != nullptr) {
      *blocker = 0;
      for (const auto& [holder, h] : e.holders) {
        if (holder != txn) {
          *blocker = holder;
          break;
        }
      }
      if (*blocker == 0 && !e.queue.empty()) *blocker = e.queue.front()->txn;
    }
    return false;
  }
  TX_RETURN_IF_ERROR(CheckLimits(txn));
  Entry& e = table_[key];
  Grant(e, key, txn, mode);
  return true;
}

bool LockManager::WouldDeadlock(TxId txn, const Entry& e, LockMode mode) const {
  // Depth-first over "waits for a holder of" edges, starting at the holders `txn` would wait
  // for. Bounded by the number of transactions (visited set).
  std::vector<TxId> stack;
  std::unordered_set<TxId> visited;
  for (const auto& [holder, held] : e.holders) {
    if (holder != txn && (mode == LockMode::kExclusive || held == LockMode::kExclusive)) {
      stack.push_back(holder);
    }
  }
  while (!stack.empty()) {
    TxId t = stack.back();
    stack.pop_back();
    if (t == txn) return true;
    if (!visited.insert(t).second) continue;
    auto it = txns_.find(t);
    if (it == txns_.end() || it->second.waiting == nullptr) continue;
    const Waiting* w = it->second.waiting;
    auto eit = table_.find(*w->key);
    if (eit == table_.end()) continue;
    for (const auto& [holder, held] : eit->second.holders) {
      if (holder != t && (w->mode == LockMode::kExclusive || held == LockMode::kExclusive)) {
        stack.push_back(holder);
      }
    }
  }
  return false;
}

Status LockManager::Acquire(TxId txn, const std::string& key, LockMode mode,
                            Clock::TimePoint deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  TxnState& ts = txns_[txn];
  TX_CHECK(ts.waiting == nullptr, "transaction {} is already waiting for a lock", txn);
  if (ts.cancelled) return Status::Cancelled(fmt::format("transaction {} is being aborted", txn));
  Entry& e = table_[key];
  LockMode held = HeldMode(e, txn);
  if (held == LockMode::kExclusive || held == mode) return Status::OK();
  bool upgrade = held == LockMode::kShared;
  if (!upgrade) {
    Status limits = CheckLimits(txn);
    if (!limits.ok()) {
      if (e.holders.empty() && e.queue.empty()) table_.erase(key);
      return limits;
    }
  }
  if (Compatible(e, txn, mode) && (upgrade || e.queue.empty())) {
    Grant(e, key, txn, mode);
    return Status::OK();
  }
  if (WouldDeadlock(txn, e, mode)) {
    return Status::Aborted(
        fmt::format("deadlock: transaction {} would wait in a cycle of lock waits", txn));
  }

  // Map nodes are stable, so the key string inside table_ outlives this wait (the entry is
  // not erased while it has a queue).
  const std::string* stable_key = &table_.find(key)->first;
  Waiting w(clock_, txn, stable_key, mode);
  if (upgrade) {
    e.queue.push_front(&w);
  } else {
    e.queue.push_back(&w);
  }
  ts.waiting = &w;
  ++waiting_;

  Status result;
  while (true) {
    if (w.granted) break;
    if (txns_[txn].cancelled) {
      result = Status::Cancelled(fmt::format("transaction {} is being aborted", txn));
      break;
    }
    if (clock_->Now() >= deadline) {
      result = Status::TimedOut(fmt::format("lock wait timed out for transaction {}", txn));
      break;
    }
    lock.unlock();
    w.waiter.WaitUntil(deadline);
    lock.lock();
  }
  TxnState& ts2 = txns_[txn];
  ts2.waiting = nullptr;
  --waiting_;
  if (!w.granted) {
    Entry& e2 = table_[*stable_key];
    e2.queue.erase(std::find(e2.queue.begin(), e2.queue.end(), &w));
    // Leaving the queue may unblock those behind us.
    GrantWaiters(e2, *stable_key);
    if (e2.holders.empty() && e2.queue.empty()) table_.erase(*stable_key);
  }
  return result;
}

void LockManager::GrantWaiters(Entry& e, const std::string& key) {
  while (!e.queue.empty()) {
    Waiting* w = e.queue.front();
    if (!Compatible(e, w->txn, w->mode)) break;
    e.queue.pop_front();
    Grant(e, key, w->txn, w->mode);
    w->granted = true;
    w->waiter.Notify();
  }
}

void LockManager::Cancel(TxId txn) {
  std::lock_guard<std::mutex> lock(mu_);
  TxnState& ts = txns_[txn];
  ts.cancelled = true;
  if (ts.waiting != nullptr) ts.waiting->waiter.Notify();
}

void LockManager::ReleaseAll(TxId txn) {
  std::lock_guard<std::mutex> lock(mu_);
  auto tit = txns_.find(txn);
  if (tit == txns_.end()) return;
  TX_CHECK(tit->second.waiting == nullptr, "ReleaseAll({}) while it waits for a lock", txn);
  for (const std::string& key : tit->second.held) {
    auto it = table_.find(key);
    TX_CHECK(it != table_.end(), "transaction {} holds a lock missing from the table", txn);
    Entry& e = it->second;
    auto h = std::find_if(e.holders.begin(), e.holders.end(),
                          [txn](const auto& p) { return p.first == txn; });
    TX_CHECK(h != e.holders.end(), "transaction {} not among the holders of its lock", txn);
    e.holders.erase(h);
    --total_locks_;
    GrantWaiters(e, key);
    if (e.holders.empty() && e.queue.empty()) table_.erase(it);
  }
  txns_.erase(tit);
}

bool LockManager::Holds(TxId txn, const std::string& key, LockMode mode) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return false;
  LockMode held = HeldMode(it->second, txn);
  return held == LockMode::kExclusive || (held == mode && mode == LockMode::kShared);
}

size_t LockManager::HeldCount(TxId txn) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = txns_.find(txn);
  return it == txns_.end() ? 0 : it->second.held.size();
}

std::vector<LockRequest> LockManager::HeldLocks(TxId txn) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LockRequest> out;
  auto it = txns_.find(txn);
  if (it == txns_.end()) return out;
  out.reserve(it->second.held.size());
  for (const std::string& key : it->second.held) {
    out.push_back(LockRequest{key, HeldMode(table_.at(key), txn)});
  }
  std::sort(out.begin(), out.end(),
            [](const LockRequest& a, const LockRequest& b) { return a.key < b.key; });
  return out;
}

size_t LockManager::TotalLocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_locks_;
}

size_t LockManager::WaitingCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_;
}

}  // namespace tx::participant
