#include "participant/commit_versions.h"

#include "common/check.h"

namespace tx::participant {

namespace {
bool IsRowLock(const LockRequest& l) {
  return l.mode == LockMode::kExclusive && !l.key.empty() && l.key[0] == 'R';
}
}  // namespace

void CommitVersions::Publish(const std::vector<LockRequest>& keys, uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  TX_CHECK(seq >= last_seq_, "commit sequence went back from {} to {}", last_seq_, seq);
  last_seq_ = seq;
  for (const LockRequest& l : keys) {
    if (!IsRowLock(l)) continue;
    latest_[l.key] = seq;
    order_.emplace_back(seq, l.key);
  }
  while (order_.size() > max_entries_) {
    auto& [old_seq, key] = order_.front();
    if (old_seq > floor_) floor_ = old_seq;
    auto it = latest_.find(key);
    if (it != latest_.end() && it->second == old_seq) latest_.erase(it);
    order_.pop_front();
  }
}

std::optional<std::string> CommitVersions::FindNewer(const std::vector<LockRequest>& locks,
                                                     uint64_t since) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const LockRequest& l : locks) {
    if (!IsRowLock(l)) continue;
    auto it = latest_.find(l.key);
    uint64_t committed = it != latest_.end() ? it->second : floor_;
    if (committed > since) return l.key;
  }
  return std::nullopt;
}

void CommitVersions::Prune(uint64_t watermark) {
  std::lock_guard<std::mutex> lock(mu_);
  while (!order_.empty() && order_.front().first <= watermark) {
    auto& [seq, key] = order_.front();
    auto it = latest_.find(key);
    if (it != latest_.end() && it->second == seq) latest_.erase(it);
    order_.pop_front();
  }
}

size_t CommitVersions::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return latest_.size();
}

}  // namespace tx::participant
