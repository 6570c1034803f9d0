// Plain data exchanged between Raft replicas and between the core and its runtime.
//
// Everything here is a flat value type with public fields so that the node runtime can map it
// 1:1 to Thrift (thrift/raft.thrift) and to WAL records. Field meanings depend on
// Message::type; the table on MessageType says which fields each type uses. Unused fields keep
// their zero values.
//
// Configuration-change entries (EntryType::kConfChange) carry an encoded ConfChangeEntry: the
// change itself plus the complete configuration that results from it, so a replica never needs
// to replay earlier changes to know its membership (see EncodeConfChange below).

#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tx::raft {

using NodeId = uint64_t;  // 0 means "none"; real replicas have ids >= 1
using Term = uint64_t;    // 0 is before any election
using Index = uint64_t;   // log positions start at 1; 0 is "before the first entry"

inline constexpr NodeId kNoNode = 0;

enum class EntryType : uint8_t {
  kNormal = 0,      // application data, applied to the state machine
  kNoOp = 1,        // appended by each new leader (§8 of the Raft paper); data is empty
  kConfChange = 2,  // data is an encoded ConfChangeEntry
};

struct Entry {
  Term term = 0;
  Index index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;

  friend bool operator==(const Entry&, const Entry&) = default;
};

// Voting members and non-voting learners. Both lists are sorted and disjoint.
struct Configuration {
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;

  bool IsVoter(NodeId id) const;
  bool IsLearner(NodeId id) const;
  bool Contains(NodeId id) const { return IsVoter(id) || IsLearner(id); }
  // Sorts both lists; InvalidArgument on id 0, duplicates or an id in both lists.
  Status Normalize();
  std::string ToString() const;

  friend bool operator==(const Configuration&, const Configuration&) = default;
};

// Durable per-replica state that must reach disk before any message depending on it is sent
// (Figure 2: "persistent state on all servers"; commit is persisted too so a restart does not
// re-apply from the snapshot when it need not).
struct HardState {
  Term term = 0;
  NodeId vote = kNoNode;  // candidate voted for in `term`, or kNoNode
  Index commit = 0;

  friend bool operator==(const HardState&, const HardState&) = default;
};

struct SnapshotMetadata {
  Index index = 0;              // last log index covered by the snapshot
  Term term = 0;                // term of that entry
  Configuration configuration;  // membership as of `index`

  friend bool operator==(const SnapshotMetadata&, const SnapshotMetadata&) = default;
};

enum class ConfChangeType : uint8_t {
  kAddVoter = 0,        // add a new voter (or turn a learner into a voter directly)
  kAddLearner = 1,      // add a non-voting member that receives the log
  kPromoteLearner = 2,  // turn a caught-up learner into a voter
  kRemoveNode = 3,      // remove a voter or a learner
};

struct ConfChange {
  ConfChangeType type = ConfChangeType::kAddVoter;
  NodeId node_id = kNoNode;

  friend bool operator==(const ConfChange&, const ConfChange&) = default;
};

// The payload of a kConfChange entry.
struct ConfChangeEntry {
  ConfChange change;
  Configuration configuration;  // the configuration in force once this entry is in the log

  friend bool operator==(const ConfChangeEntry&, const ConfChangeEntry&) = default;
};

// Bounds the decoder: a configuration larger than this is malformed input, not a cluster.
inline constexpr uint32_t kMaxConfigurationMembers = 1024;

std::string EncodeConfChange(const ConfChangeEntry& entry);
// InvalidArgument (never a crash) on truncated, oversize or otherwise malformed input.
StatusOr<ConfChangeEntry> DecodeConfChange(std::string_view data);

// Which fields each type uses ("-" = unused). All types use from, to and term.
//
//   type               log_term      index          entries commit reject/hint  other
//   kAppend            prev term     prev index     yes     yes    -            -
//   kAppendResponse    hint term     see below      -       -      yes          -
//   kHeartbeat         -             -              -       yes    -            read_seq
//   kHeartbeatResponse -             -              -       -      -            read_seq
//   kPreVote, kVote    last term     last index     -       -      -            leader_transfer
//   k*VoteResponse     -             -              -       -      reject       -
//   kSnapshot          -             -              -       -      -            snapshot*
//   kSnapshotResponse  -             -              -       -      reject       snapshot.index,
//                                                                               snapshot.term,
//                                                                               snapshot_offset
//   kTimeoutNow        -             -              -       -      -            -
//   kReadIndex         -             -              -       -      -            context
//   kReadIndexResponse -             read index     -       -      reject       context
//
// kSnapshotResponse: snapshot_offset is how many contiguous bytes of the snapshot the follower
// holds; reject means it holds nothing of it (e.g. after a restart) and the leader starts over.
// The chunk with snapshot_done is answered by a kAppendResponse once the snapshot is installed.
//
// kAppendResponse: on success `index` is the highest index known to match the leader's log;
// on reject `index` is the rejected prev index and (reject_hint, log_term) is the follower's
// suggestion for where the logs may match (fast back-off, §5.3 of the Raft paper's extended
// version; the search by term is etcd's).
enum class MessageType : uint8_t {
  kAppend = 0,
  kAppendResponse = 1,
  kHeartbeat = 2,
  kHeartbeatResponse = 3,
  kPreVote = 4,
  kPreVoteResponse = 5,
  kVote = 6,
  kVoteResponse = 7,
  kSnapshot = 8,
  kSnapshotResponse = 9,
  kTimeoutNow = 10,
  kReadIndex = 11,
  kReadIndexResponse = 12,
};
inline constexpr uint8_t kMaxMessageType = 12;

std::string_view MessageTypeName(MessageType type);

struct Message {
  MessageType type = MessageType::kAppend;
  NodeId from = kNoNode;
  NodeId to = kNoNode;
  Term term = 0;

  Term log_term = 0;
  Index index = 0;
  std::vector<Entry> entries;
  Index commit = 0;
  bool reject = false;
  Index reject_hint = 0;

  // Vote requests sent because the leader asked (TimeoutNow) bypass the leader lease (§3.10
  // and §4.2.3 of Ongaro's dissertation).
  bool leader_transfer = false;

  // ReadIndex: the leader numbers its confirmation rounds; a heartbeat response acknowledges
  // every round up to read_seq.
  uint64_t read_seq = 0;
  std::string context;  // caller's ReadIndex request context, returned unchanged

  // InstallSnapshot, sent in chunks: bytes [snapshot_offset, snapshot_offset + data size) of
  // the snapshot described by `snapshot`. snapshot_done marks the last chunk.
  SnapshotMetadata snapshot;
  uint64_t snapshot_offset = 0;
  std::string snapshot_data;
  bool snapshot_done = false;

  friend bool operator==(const Message&, const Message&) = default;
};

// One line describing a message, for traces: "2->3 kAppend t5 prev=(7,4) n=3 commit=6".
std::string DescribeMessage(const Message& m);

}  // namespace tx::raft
