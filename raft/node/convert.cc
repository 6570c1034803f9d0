#include "raft/node/convert.h"

#include <fmt/format.h>

#include <cstring>
#include <string_view>
#include <utility>

namespace tx::raft {
namespace {

// The integer in a Thrift enum field, read without loading it as the enum type.
template <typename Enum>
int32_t RawEnum(const Enum& e) {
  static_assert(sizeof(Enum) == sizeof(int32_t), "Thrift enums are 32-bit");
  int32_t v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

int64_t ToWire(uint64_t v) {
  // Our own values: a core that produced one this large has a bug.
  TX_CHECK(v < kMaxWireValue, "raft value {} does not fit the wire bound", v);
  return static_cast<int64_t>(v);
}

// Converts one wire integer, or records the first bad field in *error.
class FieldReader {
 public:
  explicit FieldReader(std::string_view what) : what_(what) {}

  uint64_t Get(int64_t v, std::string_view field) {
    if (v < 0 || static_cast<uint64_t>(v) >= kMaxWireValue) {
      Fail(fmt::format("{} is {}, outside [0, 2^62)", field, v));
      return 0;
    }
    return static_cast<uint64_t>(v);
  }

  void Fail(std::string message) {
    if (error_.ok()) error_ = Status::InvalidArgument(fmt::format("{}: {}", what_, message));
  }
  const Status& error() const { return error_; }

 private:
  std::string_view what_;
  Status error_;
};

raft_api::Configuration ToThrift(const Configuration& c) {
  raft_api::Configuration out;
  out.voters.reserve(c.voters.size());
  for (NodeId id : c.voters) out.voters.push_back(ToWire(id));
  out.learners.reserve(c.learners.size());
  for (NodeId id : c.learners) out.learners.push_back(ToWire(id));
  return out;
}

Configuration FromThrift(const raft_api::Configuration& c, FieldReader& r) {
  Configuration out;
  if (c.voters.size() + c.learners.size() > kMaxConfigurationMembers) {
    r.Fail(fmt::format("configuration of {} members", c.voters.size() + c.learners.size()));
    return out;
  }
  for (int64_t id : c.voters) out.voters.push_back(r.Get(id, "voter id"));
  for (int64_t id : c.learners) out.learners.push_back(r.Get(id, "learner id"));
  if (!r.error().ok()) return out;
  if (Status s = out.Normalize(); !s.ok()) r.Fail(s.message());
  return out;
}

}  // namespace

raft_api::Message ToThrift(Message m) {
  raft_api::Message out;
  out.type = static_cast<raft_api::MessageType::type>(m.type);
  out.from_node = ToWire(m.from);
  out.to_node = ToWire(m.to);
  out.term = ToWire(m.term);
  out.log_term = ToWire(m.log_term);
  out.index = ToWire(m.index);
  out.entries.reserve(m.entries.size());
  for (Entry& e : m.entries) {
    raft_api::Entry w;
    w.term = ToWire(e.term);
    w.index = ToWire(e.index);
    w.type = static_cast<raft_api::EntryType::type>(e.type);
    w.data = std::move(e.data);
    out.entries.push_back(std::move(w));
  }
  out.commit = ToWire(m.commit);
  out.reject = m.reject;
  out.reject_hint = ToWire(m.reject_hint);
  out.leader_transfer = m.leader_transfer;
  out.read_seq = ToWire(m.read_seq);
  out.context = std::move(m.context);
  out.snapshot.index = ToWire(m.snapshot.index);
  out.snapshot.term = ToWire(m.snapshot.term);
  out.snapshot.configuration = ToThrift(m.snapshot.configuration);
  out.snapshot_offset = ToWire(m.snapshot_offset);
  out.snapshot_data = std::move(m.snapshot_data);
  out.snapshot_done = m.snapshot_done;
  return out;
}

StatusOr<Message> FromThrift(raft_api::Message& w) {
  int32_t type = RawEnum(w.type);
  if (type < 0 || type > kMaxMessageType) {
    return Status::InvalidArgument(fmt::format("message has unknown type {}", type));
  }
  Message m;
  m.type = static_cast<MessageType>(type);
  FieldReader r(MessageTypeName(m.type));
  m.from = r.Get(w.from_node, "from");
  m.to = r.Get(w.to_node, "to");
  m.term = r.Get(w.term, "term");
  m.log_term = r.Get(w.log_term, "log_term");
  m.index = r.Get(w.index, "index");
  m.commit = r.Get(w.commit, "commit");
  m.reject = w.reject;
  m.reject_hint = r.Get(w.reject_hint, "reject_hint");
  m.leader_transfer = w.leader_transfer;
  m.read_seq = r.Get(w.read_seq, "read_seq");
  m.context = std::move(w.context);
  m.snapshot.index = r.Get(w.snapshot.index, "snapshot.index");
  m.snapshot.term = r.Get(w.snapshot.term, "snapshot.term");
  m.snapshot.configuration = FromThrift(w.snapshot.configuration, r);
  m.snapshot_offset = r.Get(w.snapshot_offset, "snapshot_offset");
  m.snapshot_done = w.snapshot_done;
  if (!w.entries.empty() && m.type != MessageType::kAppend) {
    r.Fail(fmt::format("carries {} entries", w.entries.size()));
  }
  if (!w.snapshot_data.empty() && m.type != MessageType::kSnapshot) {
    r.Fail(fmt::format("carries {} bytes of snapshot data", w.snapshot_data.size()));
  }
  TX_RETURN_IF_ERROR(r.error());
  m.snapshot_data = std::move(w.snapshot_data);
  m.entries.reserve(w.entries.size());
  for (raft_api::Entry& we : w.entries) {
    int32_t entry_type = RawEnum(we.type);
    if (entry_type < 0 || entry_type > static_cast<int32_t>(EntryType::kConfChange)) {
      return Status::InvalidArgument(
          fmt::format("{}: entry has unknown type {}", MessageTypeName(m.type), entry_type));
    }
    Entry e;
    e.term = r.Get(we.term, "entry term");
    e.index = r.Get(we.index, "entry index");
    e.type = static_cast<EntryType>(entry_type);
    e.data = std::move(we.data);
    m.entries.push_back(std::move(e));
  }
  TX_RETURN_IF_ERROR(r.error());
  return m;
}

StatusOr<std::vector<Message>> FromThriftBatch(raft_api::MessageBatch& batch, NodeId self) {
  FieldReader r("batch");
  NodeId from = r.Get(batch.from_node, "from");
  NodeId to = r.Get(batch.to_node, "to");
  TX_RETURN_IF_ERROR(r.error());
  if (from == kNoNode || from == self) {
    return Status::InvalidArgument(fmt::format("batch from invalid node {}", from));
  }
  if (to != self) {
    return Status::InvalidArgument(fmt::format("batch for node {} delivered to node {}", to, self));
  }
  if (batch.messages.size() > kMaxMessagesPerBatch) {
    return Status::InvalidArgument(fmt::format("batch of {} messages exceeds the limit of {}",
                                               batch.messages.size(), kMaxMessagesPerBatch));
  }
  std::vector<Message> out;
  out.reserve(batch.messages.size());
  for (size_t i = 0; i < batch.messages.size(); ++i) {
    StatusOr<Message> m = FromThrift(batch.messages[i]);
    if (!m.ok()) return m.status().Annotate(fmt::format("message {} of batch from {}", i, from));
    if (m->from != from || m->to != to) {
      return Status::InvalidArgument(
          fmt::format("message {} of batch {}->{} claims {}->{}", i, from, to, m->from, m->to));
    }
    out.push_back(std::move(m).value());
  }
  return out;
}

}  // namespace tx::raft
