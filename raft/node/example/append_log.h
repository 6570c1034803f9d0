// AppendLog: the example replicated state machine, an append-only list of byte strings with a
// running checksum. Every replica that applies the same entries in the same order holds the
// same list and checksum, which is what the Raft tests compare.
//
// Apply returns the item's position and the checksum after it, encoded with EncodeApplyResult.
// The checksum chains CRC-32C over each item's length and bytes, so two lists with equal
// checksums and lengths are (with overwhelming probability) equal.
//
// Thread-safe: the node applies from its apply thread while readers call Read/Size/Checksum.

#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "raft/node/node.h"

namespace tx::raft::example {

struct ApplyResult {
  uint64_t position = 0;  // 1-based
  uint64_t checksum = 0;
};
std::string EncodeApplyResult(const ApplyResult& r);
StatusOr<ApplyResult> DecodeApplyResult(std::string_view bytes);

// Bounds one item: the list is held in memory.
inline constexpr size_t kMaxItemBytes = 1 << 20;

class AppendLog final : public StateMachine {
 public:
  // With keep_items false only the length and checksum are kept (benchmarks: snapshots stay
  // tiny however many items are applied); Read then returns no items.
  explicit AppendLog(bool keep_items = true) : keep_items_(keep_items) {}

  std::string Apply(uint64_t index, std::string_view data) override;
  StatusOr<std::string> Snapshot() override;
  Status Restore(uint64_t index, std::string_view data) override;

  struct View {
    uint64_t total = 0;
    uint64_t checksum = 0;
    uint64_t applied_index = 0;
    std::vector<std::string> items;  // [offset, offset + items.size())
  };
  View Read(uint64_t offset, size_t max_items) const;
  uint64_t size() const;
  uint64_t checksum() const;
  uint64_t applied_index() const;

  static uint64_t ExtendChecksum(uint64_t checksum, std::string_view item);

 private:
  const bool keep_items_;

  mutable std::mutex mu_;
  std::vector<std::string> items_;  // GUARDED_BY(mu_)
  uint64_t count_ = 0;              // GUARDED_BY(mu_); == items_.size() when keep_items_
  uint64_t checksum_ = 0;           // GUARDED_BY(mu_)
  uint64_t applied_index_ = 0;      // GUARDED_BY(mu_)
};

}  // namespace tx::raft::example
