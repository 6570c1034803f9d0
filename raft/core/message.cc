#include "raft/core/message.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

namespace tx::raft {
namespace {

constexpr uint8_t kConfChangeFormatVersion = 1;

void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Reads little-endian integers from a byte string; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool U8(uint8_t* v) {
    if (data_.size() < 1) return false;
    *v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return true;
  }
  bool U32(uint32_t* v) {
    if (data_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= uint32_t{static_cast<uint8_t>(data_[i])} << (8 * i);
    data_.remove_prefix(4);
    return true;
  }
  bool U64(uint64_t* v) {
    if (data_.size() < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= uint64_t{static_cast<uint8_t>(data_[i])} << (8 * i);
    data_.remove_prefix(8);
    return true;
  }
  bool empty() const { return data_.empty(); }

 private:
  std::string_view data_;
};

bool ReadIds(Reader* r, std::vector<NodeId>* ids) {
  uint32_t n = 0;
  if (!r->U32(&n) || n > kMaxConfigurationMembers) return false;
  ids->resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (!r->U64(&(*ids)[i])) return false;
  }
  return true;
}

}  // namespace

bool Configuration::IsVoter(NodeId id) const {
  return std::binary_search(voters.begin(), voters.end(), id);
}

bool Configuration::IsLearner(NodeId id) const {
  return std::binary_search(learners.begin(), learners.end(), id);
}

Status Configuration::Normalize() {
  std::sort(voters.begin(), voters.end());
  std::sort(learners.begin(), learners.end());
  if (voters.size() + learners.size() > kMaxConfigurationMembers) {
    return Status::InvalidArgument(
        fmt::format("configuration has {} members, more than the limit of {}",
                    voters.size() + learners.size(), kMaxConfigurationMembers));
  }
  for (const auto* list : {&voters, &learners}) {
    for (size_t i = 0; i < list->size(); ++i) {
      if ((*list)[i] == kNoNode) {
        return Status::InvalidArgument("configuration contains node id 0");
      }
      if (i > 0 && (*list)[i] == (*list)[i - 1]) {
        return Status::InvalidArgument(
            fmt::format("configuration lists node {} twice", (*list)[i]));
      }
    }
  }
  for (NodeId id : learners) {
    if (IsVoter(id)) {
      return Status::InvalidArgument(fmt::format("node {} is both a voter and a learner", id));
    }
  }
  return Status::OK();
}

std::string Configuration::ToString() const {
  return fmt::format("voters=[{}] learners=[{}]", fmt::join(voters, ","), fmt::join(learners, ","));
}

std::string EncodeConfChange(const ConfChangeEntry& entry) {
  std::string out;
  PutU8(&out, kConfChangeFormatVersion);
  PutU8(&out, static_cast<uint8_t>(entry.change.type));
  PutU64(&out, entry.change.node_id);
  PutU32(&out, static_cast<uint32_t>(entry.configuration.voters.size()));
  for (NodeId id : entry.configuration.voters) PutU64(&out, id);
  PutU32(&out, static_cast<uint32_t>(entry.configuration.learners.size()));
  for (NodeId id : entry.configuration.learners) PutU64(&out, id);
  return out;
}

StatusOr<ConfChangeEntry> DecodeConfChange(std::string_view data) {
  Reader r(data);
  uint8_t version = 0;
  uint8_t type = 0;
  ConfChangeEntry e;
  if (!r.U8(&version) || version != kConfChangeFormatVersion) {
    return Status::InvalidArgument(
        fmt::format("configuration change: unknown format version {}", version));
  }
  if (!r.U8(&type) || type > static_cast<uint8_t>(ConfChangeType::kRemoveNode)) {
    return Status::InvalidArgument(fmt::format("configuration change: bad type {}", type));
  }
  e.change.type = static_cast<ConfChangeType>(type);
  if (!r.U64(&e.change.node_id) || !ReadIds(&r, &e.configuration.voters) ||
      !ReadIds(&r, &e.configuration.learners)) {
    return Status::InvalidArgument(
        fmt::format("configuration change: truncated or oversize ({} bytes)", data.size()));
  }
  if (!r.empty()) {
    return Status::InvalidArgument("configuration change: trailing bytes");
  }
  TX_RETURN_IF_ERROR(e.configuration.Normalize().Annotate("configuration change"));
  return e;
}

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kAppend:
      return "Append";
    case MessageType::kAppendResponse:
      return "AppendResponse";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kHeartbeatResponse:
      return "HeartbeatResponse";
    case MessageType::kPreVote:
      return "PreVote";
    case MessageType::kPreVoteResponse:
      return "PreVoteResponse";
    case MessageType::kVote:
      return "Vote";
    case MessageType::kVoteResponse:
      return "VoteResponse";
    case MessageType::kSnapshot:
      return "Snapshot";
    case MessageType::kSnapshotResponse:
      return "SnapshotResponse";
    case MessageType::kTimeoutNow:
      return "TimeoutNow";
    case MessageType::kReadIndex:
      return "ReadIndex";
    case MessageType::kReadIndexResponse:
      return "ReadIndexResponse";
  }
  return "Unknown";
}

std::string DescribeMessage(const Message& m) {
  std::string s = fmt::format("{}->{} {} t{}", m.from, m.to, MessageTypeName(m.type), m.term);
  switch (m.type) {
    case MessageType::kAppend:
      s += fmt::format(" prev=({},{}) n={}", m.index, m.log_term, m.entries.size());
      if (!m.entries.empty()) {
        s += fmt::format(" [{}..{}]", m.entries.front().index, m.entries.back().index);
      }
      s += fmt::format(" commit={}", m.commit);
      break;
    case MessageType::kAppendResponse:
      s += fmt::format(" index={}", m.index);
      if (m.reject) s += fmt::format(" reject hint=({},{})", m.reject_hint, m.log_term);
      break;
    case MessageType::kHeartbeat:
      s += fmt::format(" commit={} read_seq={}", m.commit, m.read_seq);
      break;
    case MessageType::kHeartbeatResponse:
      s += fmt::format(" read_seq={}", m.read_seq);
      break;
    case MessageType::kPreVote:
    case MessageType::kVote:
      s +=
          fmt::format(" last=({},{}){}", m.index, m.log_term, m.leader_transfer ? " transfer" : "");
      break;
    case MessageType::kPreVoteResponse:
    case MessageType::kVoteResponse:
      s += m.reject ? " reject" : " grant";
      break;
    case MessageType::kSnapshot:
      s += fmt::format(" snap=({},{}) offset={} len={}{}", m.snapshot.index, m.snapshot.term,
                       m.snapshot_offset, m.snapshot_data.size(), m.snapshot_done ? " done" : "");
      break;
    case MessageType::kSnapshotResponse:
      s += fmt::format(" snap=({},{}) offset={}{}", m.snapshot.index, m.snapshot.term,
                       m.snapshot_offset, m.reject ? " reject" : "");
      break;
    case MessageType::kTimeoutNow:
      break;
    case MessageType::kReadIndex:
      s += fmt::format(" ctx_len={}", m.context.size());
      break;
    case MessageType::kReadIndexResponse:
      s += fmt::format(" index={}{}", m.index, m.reject ? " reject" : "");
      break;
  }
  return s;
}

}  // namespace tx::raft
