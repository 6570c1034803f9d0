// Byte formats owned by the Raft node runtime, in one place: the WAL record of a log entry,
// the hard-state file, the snapshot file, the payload of normal entries and the snapshot
// envelope. docs/raft.md ("Runtime: files on disk") shows the same layouts.
//
// All integers are little-endian. Every decoder takes untrusted bytes (a damaged disk, a peer's
// snapshot) and returns Corruption or InvalidArgument, never crashes, never reads out of bounds.
//
// Internal to raft/node.

#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/net.h"
#include "common/status.h"
#include "raft/core/message.h"

namespace tx::raft::node_format {

// --- WAL: one record per log entry, WAL index == Raft index ---------------------------------
//   type  kEntryRecordType
//   payload:  term u64 | entry type u8 | data
inline constexpr uint8_t kEntryRecordType = 1;
inline constexpr size_t kEntryRecordHeaderBytes = 9;

std::string EncodeEntryRecord(const Entry& e);
// `index` is the record's WAL index. Corruption on a short payload or an unknown entry type.
StatusOr<Entry> DecodeEntryRecord(uint64_t index, uint8_t record_type, std::string_view payload);

// --- "hardstate": term, vote and commit, replaced atomically (WriteFileAtomically) ------------
//   magic "TXRAFTHS" (8) | version u32 | term u64 | vote u64 | commit u64 | masked crc32c u32
// The CRC covers every byte before it.
inline constexpr std::string_view kHardStateMagic = "TXRAFTHS";
inline constexpr uint32_t kHardStateVersion = 1;
inline constexpr size_t kHardStateFileBytes = 8 + 4 + 8 + 8 + 8 + 4;
static_assert(kHardStateFileBytes == 40);

std::string EncodeHardState(const HardState& hs);
StatusOr<HardState> DecodeHardState(std::string_view bytes);

// --- "snapshot": the latest snapshot, replaced atomically --------------------------------------
//   magic "TXRAFTSN" (8) | version u32 | index u64 | term u64
//   | voter count u32 | voters u64... | learner count u32 | learners u64...
//   | data length u64 | data | masked crc32c u32 (over every byte before it)
// `data` is the snapshot envelope below, exactly as the core ships it to followers.
inline constexpr std::string_view kSnapshotMagic = "TXRAFTSN";
inline constexpr uint32_t kSnapshotVersion = 1;

std::string EncodeSnapshotFile(const SnapshotMetadata& meta, std::string_view data);
struct SnapshotFile {
  SnapshotMetadata metadata;
  std::string data;
};
StatusOr<SnapshotFile> DecodeSnapshotFile(std::string_view bytes);

// --- payload of kNormal entries: a tag byte, then the body ------------------------------------
// The node shares the log with the application: its own bookkeeping (the address of a member
// being added) travels in entries the StateMachine never sees.
enum class PayloadTag : uint8_t {
  kUser = 0,         // body: the application's proposal
  kPeerAddress = 1,  // body: id u64 | host length u16 | host | port u16
};

std::string EncodeUserPayload(std::string_view data);
std::string EncodePeerAddressPayload(NodeId id, const HostPort& address);

struct Payload {
  PayloadTag tag = PayloadTag::kUser;
  std::string_view user_data;  // kUser: points into the decoded bytes
  NodeId peer_id = kNoNode;    // kPeerAddress
  HostPort peer_address;       // kPeerAddress
};
// InvalidArgument on an empty payload, an unknown tag or a malformed body.
StatusOr<Payload> DecodePayload(std::string_view bytes);

// --- snapshot envelope: what the core stores and ships as a snapshot's data --------------------
//   magic "TXSE" (4) | address count u32 | { id u64 | host length u16 | host | port u16 }...
//   | application snapshot (the rest)
inline constexpr std::string_view kEnvelopeMagic = "TXSE";
// Bounds the address book (and the decoder): as many as a configuration may hold.
inline constexpr uint32_t kMaxAddressBookEntries = kMaxConfigurationMembers;
// Bounds one host name (DNS names are at most 253 bytes).
inline constexpr size_t kMaxHostBytes = 255;

using AddressBook = std::map<NodeId, HostPort>;

std::string EncodeEnvelope(const AddressBook& addresses, std::string_view app_snapshot);
struct Envelope {
  AddressBook addresses;
  std::string_view app_snapshot;  // points into the decoded bytes
};
StatusOr<Envelope> DecodeEnvelope(std::string_view bytes);

}  // namespace tx::raft::node_format
