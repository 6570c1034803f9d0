#include "participant/record_codec.h"

#include <fmt/format.h>

namespace tx::participant {
namespace {

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

void PutString(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool U8(uint8_t* v) {
    if (pos_ + 1 > bytes_.size()) return false;
    *v = static_cast<uint8_t>(bytes_[pos_++]);
    return true;
  }
  bool U32(uint32_t* v) {
    if (pos_ + 4 > bytes_.size()) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v = (*v << 8) | static_cast<uint8_t>(bytes_[pos_++]);
    return true;
  }
  bool String(std::string* s) {
    uint32_t n = 0;
    if (!U32(&n) || n > bytes_.size() - pos_) return false;
    s->assign(bytes_.substr(pos_, n));
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == bytes_.size(); }
  size_t remaining() const { return bytes_.size() - pos_; }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

}  // namespace

std::string EncodeTxnInfo(const TxnInfo& info) {
  std::string out;
  out.push_back(static_cast<char>(kRecordFormatVersion));
  out.push_back(static_cast<char>(info.protocol));
  PutU32(&out, static_cast<uint32_t>(info.participants.size()));
  for (const ParticipantRef& p : info.participants) {
    PutString(&out, p.name);
    PutString(&out, p.address);
  }
  return out;
}

StatusOr<TxnInfo> DecodeTxnInfo(std::string_view bytes) {
  Reader r(bytes);
  uint8_t version = 0, protocol = 0;
  uint32_t n = 0;
  if (!r.U8(&version) || version != kRecordFormatVersion) {
    return Status::Corruption(fmt::format("transaction info: format version {} (want {})", version,
                                          kRecordFormatVersion));
  }
  if (!r.U8(&protocol) || (protocol != static_cast<uint8_t>(Protocol::kTwoPhase) &&
                           protocol != static_cast<uint8_t>(Protocol::kThreePhase))) {
    return Status::Corruption(fmt::format("transaction info: bad protocol {}", protocol));
  }
  // Each participant takes at least 8 bytes, which bounds n by the input size.
  if (!r.U32(&n) || n > r.remaining() / 8) {
    return Status::Corruption("transaction info: bad participant count");
  }
  TxnInfo info;
  info.protocol = static_cast<Protocol>(protocol);
  for (uint32_t i = 0; i < n; ++i) {
    ParticipantRef p;
    if (!r.String(&p.name) || !r.String(&p.address)) {
      return Status::Corruption("transaction info: truncated participant");
    }
    info.participants.push_back(std::move(p));
  }
  if (!r.done()) return Status::Corruption("transaction info: trailing bytes");
  return info;
}

std::string EncodeLocks(const std::vector<LockRequest>& locks) {
  std::string out;
  out.push_back(static_cast<char>(kRecordFormatVersion));
  PutU32(&out, static_cast<uint32_t>(locks.size()));
  for (const LockRequest& l : locks) {
    out.push_back(static_cast<char>(l.mode));
    PutString(&out, l.key);
  }
  return out;
}

StatusOr<std::vector<LockRequest>> DecodeLocks(std::string_view bytes) {
  Reader r(bytes);
  uint8_t version = 0;
  uint32_t n = 0;
  if (!r.U8(&version) || version != kRecordFormatVersion) {
    return Status::Corruption(
        fmt::format("locks: format version {} (want {})", version, kRecordFormatVersion));
  }
  // Each lock takes at least 5 bytes.
  if (!r.U32(&n) || n > r.remaining() / 5) return Status::Corruption("locks: bad count");
  std::vector<LockRequest> locks;
  locks.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    uint8_t mode = 0;
    LockRequest l;
    if (!r.U8(&mode) || (mode != static_cast<uint8_t>(LockMode::kShared) &&
                         mode != static_cast<uint8_t>(LockMode::kExclusive))) {
      return Status::Corruption(fmt::format("locks: bad mode {}", mode));
    }
    l.mode = static_cast<LockMode>(mode);
    if (!r.String(&l.key) || l.key.empty()) return Status::Corruption("locks: truncated key");
    locks.push_back(std::move(l));
  }
  if (!r.done()) return Status::Corruption("locks: trailing bytes");
  return locks;
}

}  // namespace tx::participant
