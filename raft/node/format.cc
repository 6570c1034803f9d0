#include "raft/node/format.h"

#include <fmt/format.h>

#include <cstring>

#include "common/crc32c.h"

namespace tx::raft::node_format {
namespace {

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
void PutU16(std::string* out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// Reads little-endian fields from untrusted bytes; every read is bounds-checked and a failed
// read leaves the reader failed, so decoders check ok() once at the end of a group.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  size_t position() const { return pos_; }

  uint8_t U8() { return static_cast<uint8_t>(Fixed(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Fixed(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Fixed(4)); }
  uint64_t U64() { return Fixed(8); }
  std::string_view Bytes(size_t n) {
    if (!ok_ || n > remaining()) {
      ok_ = false;
      return {};
    }
    std::string_view v = bytes_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  std::string_view Rest() { return Bytes(remaining()); }

 private:
  uint64_t Fixed(size_t n) {
    if (!ok_ || n > remaining()) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      v |= uint64_t{static_cast<uint8_t>(bytes_[pos_ + i])} << (8 * i);
    }
    pos_ += n;
    return v;
  }

  std::string_view bytes_;
  size_t pos_ = 0;
  bool ok_ = true;
};

void PutCrc(std::string* out) {
  PutU32(out, crc32c::Mask(crc32c::Value(out->data(), out->size())));
}

// Checks the trailing masked CRC over everything before it; returns the covered bytes.
StatusOr<std::string_view> CheckCrc(std::string_view bytes, std::string_view what) {
  if (bytes.size() < 4) return Status::Corruption(fmt::format("{}: {} bytes", what, bytes.size()));
  std::string_view body = bytes.substr(0, bytes.size() - 4);
  Reader r(bytes.substr(bytes.size() - 4));
  uint32_t stored = crc32c::Unmask(r.U32());
  uint32_t actual = crc32c::Value(body.data(), body.size());
  if (stored != actual) {
    return Status::Corruption(fmt::format("{}: checksum mismatch (stored {:08x}, computed {:08x})",
                                          what, stored, actual));
  }
  return body;
}

void PutAddress(std::string* out, NodeId id, const HostPort& hp) {
  PutU64(out, id);
  TX_CHECK(hp.host.size() <= kMaxHostBytes, "host name of {} bytes", hp.host.size());
  PutU16(out, static_cast<uint16_t>(hp.host.size()));
  out->append(hp.host);
  PutU16(out, hp.port);
}

bool ReadAddress(Reader& r, NodeId* id, HostPort* hp) {
  *id = r.U64();
  uint16_t len = r.U16();
  if (!r.ok() || len > kMaxHostBytes) return false;
  hp->host = std::string(r.Bytes(len));
  hp->port = r.U16();
  return r.ok() && *id != kNoNode && !hp->host.empty();
}

}  // namespace

std::string EncodeEntryRecord(const Entry& e) {
  std::string out;
  out.reserve(kEntryRecordHeaderBytes + e.data.size());
  PutU64(&out, e.term);
  PutU8(&out, static_cast<uint8_t>(e.type));
  out.append(e.data);
  return out;
}

StatusOr<Entry> DecodeEntryRecord(uint64_t index, uint8_t record_type, std::string_view payload) {
  if (record_type != kEntryRecordType) {
    return Status::Corruption(
        fmt::format("WAL record {} has type {}, expected a log entry", index, record_type));
  }
  Reader r(payload);
  Entry e;
  e.index = index;
  e.term = r.U64();
  uint8_t type = r.U8();
  if (!r.ok()) {
    return Status::Corruption(fmt::format("WAL record {} is {} bytes, shorter than an entry header",
                                          index, payload.size()));
  }
  if (type > static_cast<uint8_t>(EntryType::kConfChange)) {
    return Status::Corruption(fmt::format("WAL record {} has entry type {}", index, type));
  }
  e.type = static_cast<EntryType>(type);
  e.data = std::string(r.Rest());
  return e;
}

std::string EncodeHardState(const HardState& hs) {
  std::string out(kHardStateMagic);
  PutU32(&out, kHardStateVersion);
  PutU64(&out, hs.term);
  PutU64(&out, hs.vote);
  PutU64(&out, hs.commit);
  PutCrc(&out);
  TX_CHECK(out.size() == kHardStateFileBytes, "hard state encoded to {} bytes", out.size());
  return out;
}

StatusOr<HardState> DecodeHardState(std::string_view bytes) {
  if (bytes.size() != kHardStateFileBytes) {
    return Status::Corruption(
        fmt::format("hard state file is {} bytes, expected {}", bytes.size(), kHardStateFileBytes));
  }
  TX_ASSIGN_OR_RETURN(std::string_view body, CheckCrc(bytes, "hard state file"));
  Reader r(body);
  if (r.Bytes(kHardStateMagic.size()) != kHardStateMagic) {
    return Status::Corruption("hard state file: bad magic");
  }
  uint32_t version = r.U32();
  if (version != kHardStateVersion) {
    return Status::Corruption(fmt::format("hard state file: unknown version {}", version));
  }
  HardState hs;
  hs.term = r.U64();
  hs.vote = r.U64();
  hs.commit = r.U64();
  TX_CHECK(r.ok() && r.remaining() == 0, "hard state decoder out of step");
  return hs;
}

std::string EncodeSnapshotFile(const SnapshotMetadata& meta, std::string_view data) {
  std::string out(kSnapshotMagic);
  out.reserve(64 + 8 * (meta.configuration.voters.size() + meta.configuration.learners.size()) +
              data.size());
  PutU32(&out, kSnapshotVersion);
  PutU64(&out, meta.index);
  PutU64(&out, meta.term);
  for (const auto* list : {&meta.configuration.voters, &meta.configuration.learners}) {
    PutU32(&out, static_cast<uint32_t>(list->size()));
    for (NodeId id : *list) PutU64(&out, id);
  }
  PutU64(&out, data.size());
  out.append(data);
  PutCrc(&out);
  return out;
}

StatusOr<SnapshotFile> DecodeSnapshotFile(std::string_view bytes) {
  TX_ASSIGN_OR_RETURN(std::string_view body, CheckCrc(bytes, "snapshot file"));
  Reader r(body);
  if (r.Bytes(kSnapshotMagic.size()) != kSnapshotMagic) {
    return Status::Corruption("snapshot file: bad magic");
  }
  uint32_t version = r.U32();
  if (r.ok() && version != kSnapshotVersion) {
    return Status::Corruption(fmt::format("snapshot file: unknown version {}", version));
  }
  SnapshotFile f;
  f.metadata.index = r.U64();
  f.metadata.term = r.U64();
  for (auto* list : {&f.metadata.configuration.voters, &f.metadata.configuration.learners}) {
    uint32_t n = r.U32();
    if (!r.ok() || n > kMaxConfigurationMembers) {
      return Status::Corruption("snapshot file: bad configuration size");
    }
    for (uint32_t i = 0; i < n; ++i) list->push_back(r.U64());
  }
  uint64_t len = r.U64();
  if (!r.ok() || len != r.remaining()) {
    return Status::Corruption(
        fmt::format("snapshot file: data length {} but {} bytes remain", len, r.remaining()));
  }
  f.data = std::string(r.Rest());
  if (f.metadata.index == 0 || f.metadata.term == 0) {
    return Status::Corruption(
        fmt::format("snapshot file: index {} term {}", f.metadata.index, f.metadata.term));
  }
  if (Status s = f.metadata.configuration.Normalize(); !s.ok()) {
    return Status::Corruption("snapshot file: " + s.message());
  }
  return f;
}

std::string EncodeUserPayload(std::string_view data) {
  std::string out;
  out.reserve(1 + data.size());
  PutU8(&out, static_cast<uint8_t>(PayloadTag::kUser));
  out.append(data);
  return out;
}

std::string EncodePeerAddressPayload(NodeId id, const HostPort& address) {
  std::string out;
  PutU8(&out, static_cast<uint8_t>(PayloadTag::kPeerAddress));
  PutAddress(&out, id, address);
  return out;
}

StatusOr<Payload> DecodePayload(std::string_view bytes) {
  if (bytes.empty()) return Status::InvalidArgument("entry payload is empty (no tag)");
  Payload p;
  switch (static_cast<uint8_t>(bytes[0])) {
    case static_cast<uint8_t>(PayloadTag::kUser):
      p.tag = PayloadTag::kUser;
      p.user_data = bytes.substr(1);
      return p;
    case static_cast<uint8_t>(PayloadTag::kPeerAddress): {
      p.tag = PayloadTag::kPeerAddress;
      Reader r(bytes.substr(1));
      if (!ReadAddress(r, &p.peer_id, &p.peer_address) || r.remaining() != 0) {
        return Status::InvalidArgument("malformed peer address entry");
      }
      return p;
    }
    default:
      return Status::InvalidArgument(
          fmt::format("entry payload has unknown tag {}", static_cast<uint8_t>(bytes[0])));
  }
}

std::string EncodeEnvelope(const AddressBook& addresses, std::string_view app_snapshot) {
  TX_CHECK(addresses.size() <= kMaxAddressBookEntries, "address book of {} entries",
           addresses.size());
  std::string out(kEnvelopeMagic);
  out.reserve(16 + addresses.size() * 32 + app_snapshot.size());
  PutU32(&out, static_cast<uint32_t>(addresses.size()));
  for (const auto& [id, hp] : addresses) PutAddress(&out, id, hp);
  out.append(app_snapshot);
  return out;
}

StatusOr<Envelope> DecodeEnvelope(std::string_view bytes) {
  Reader r(bytes);
  if (r.Bytes(kEnvelopeMagic.size()) != kEnvelopeMagic) {
    return Status::InvalidArgument("snapshot data does not start with the node's envelope");
  }
  uint32_t n = r.U32();
  if (!r.ok() || n > kMaxAddressBookEntries) {
    return Status::InvalidArgument("snapshot envelope: bad address count");
  }
  Envelope env;
  for (uint32_t i = 0; i < n; ++i) {
    NodeId id = kNoNode;
    HostPort hp;
    if (!ReadAddress(r, &id, &hp)) {
      return Status::InvalidArgument(fmt::format("snapshot envelope: malformed address {}", i));
    }
    env.addresses[id] = std::move(hp);
  }
  env.app_snapshot = r.Rest();
  return env;
}

}  // namespace tx::raft::node_format
