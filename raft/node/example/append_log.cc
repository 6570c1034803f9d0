#include "raft/node/example/append_log.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/crc32c.h"

namespace tx::raft::example {
namespace {

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= uint64_t{static_cast<uint8_t>((*in)[i])} << (8 * i);
  in->remove_prefix(8);
  return true;
}

}  // namespace

std::string EncodeApplyResult(const ApplyResult& r) {
  std::string out;
  PutU64(&out, r.position);
  PutU64(&out, r.checksum);
  return out;
}

StatusOr<ApplyResult> DecodeApplyResult(std::string_view bytes) {
  ApplyResult r;
  if (bytes.size() != 16 || !GetU64(&bytes, &r.position) || !GetU64(&bytes, &r.checksum)) {
    return Status::InvalidArgument("malformed apply result");
  }
  return r;
}

uint64_t AppendLog::ExtendChecksum(uint64_t checksum, std::string_view item) {
  std::string len;
  PutU64(&len, item.size());
  uint32_t crc = static_cast<uint32_t>(checksum);
  crc = crc32c::Extend(crc, len.data(), len.size());
  crc = crc32c::Extend(crc, item.data(), item.size());
  // The high half counts items, so lists of different lengths never collide.
  return ((checksum >> 32) + 1) << 32 | crc;
}

std::string AppendLog::Apply(uint64_t index, std::string_view data) {
  std::lock_guard lock(mu_);
  if (keep_items_) items_.emplace_back(data);
  ++count_;
  checksum_ = ExtendChecksum(checksum_, data);
  applied_index_ = index;
  return EncodeApplyResult({count_, checksum_});
}

StatusOr<std::string> AppendLog::Snapshot() {
  std::lock_guard lock(mu_);
  std::string out;
  PutU64(&out, applied_index_);
  PutU64(&out, checksum_);
  PutU64(&out, count_);
  PutU64(&out, keep_items_ ? 1 : 0);
  for (const std::string& item : items_) {
    PutU64(&out, item.size());
    out.append(item);
  }
  return out;
}

Status AppendLog::Restore(uint64_t index, std::string_view data) {
  uint64_t applied = 0;
  uint64_t checksum = 0;
  uint64_t count = 0;
  uint64_t has_items = 0;
  if (!GetU64(&data, &applied) || !GetU64(&data, &checksum) || !GetU64(&data, &count) ||
      !GetU64(&data, &has_items) || has_items > 1 || (has_items == 1 && count > data.size() / 8) ||
      has_items != (keep_items_ ? 1u : 0u)) {
    return Status::Corruption("append log snapshot: bad header");
  }
  std::vector<std::string> items;
  uint64_t recomputed = has_items ? 0 : checksum;
  for (uint64_t i = 0; has_items && i < count; ++i) {
    uint64_t len = 0;
    if (!GetU64(&data, &len) || len > data.size()) {
      return Status::Corruption(fmt::format("append log snapshot: item {} truncated", i));
    }
    items.emplace_back(data.substr(0, len));
    recomputed = ExtendChecksum(recomputed, items.back());
    data.remove_prefix(len);
  }
  if (!data.empty() || recomputed != checksum) {
    return Status::Corruption("append log snapshot: checksum or length mismatch");
  }
  std::lock_guard lock(mu_);
  items_ = std::move(items);
  count_ = count;
  checksum_ = checksum;
  applied_index_ = index;
  return Status::OK();
}

AppendLog::View AppendLog::Read(uint64_t offset, size_t max_items) const {
  std::lock_guard lock(mu_);
  View v;
  v.total = count_;
  v.checksum = checksum_;
  v.applied_index = applied_index_;
  for (uint64_t i = offset; i < items_.size() && v.items.size() < max_items; ++i) {
    v.items.push_back(items_[i]);
  }
  return v;
}

uint64_t AppendLog::size() const {
  std::lock_guard lock(mu_);
  return count_;
}

uint64_t AppendLog::checksum() const {
  std::lock_guard lock(mu_);
  return checksum_;
}

uint64_t AppendLog::applied_index() const {
  std::lock_guard lock(mu_);
  return applied_index_;
}

}  // namespace tx::raft::example
