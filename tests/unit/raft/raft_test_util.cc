#include "tests/unit/raft/raft_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/check.h"

namespace tx::raft::testing {

Config TestConfig(NodeId id, std::vector<NodeId> voters, std::vector<NodeId> learners) {
  Config c;
  c.id = id;
  c.voters = std::move(voters);
  c.learners = std::move(learners);
  c.election_timeout_ticks = kElectionTicks;
  c.heartbeat_ticks = kHeartbeatTicks;
  c.random_seed = 42;
  c.pre_vote = false;
  c.check_quorum = false;
  return c;
}

Entry MakeEntry(Index index, Term term, std::string data) {
  Entry e;
  e.index = index;
  e.term = term;
  e.data = std::move(data);
  return e;
}

std::vector<Entry> Log(const std::vector<Term>& terms) {
  std::vector<Entry> out;
  for (size_t i = 0; i < terms.size(); ++i) out.push_back(MakeEntry(i + 1, terms[i]));
  return out;
}

std::vector<Term> TermsOf(const RaftLog& log) {
  std::vector<Term> out;
  for (Index i = log.first_index(); i <= log.last_index(); ++i) out.push_back(log.At(i).term);
  return out;
}

void MemStorage::Persist(const Ready& rd) {
  if (rd.snapshot.has_value()) {
    TX_CHECK(rd.snapshot->data != nullptr, "Ready snapshot without data");
    snapshot = rd.snapshot->metadata;
    snapshot_data = rd.snapshot->data;
    entries.clear();
  }
  if (rd.truncate_from != 0) {
    TX_CHECK(rd.truncate_from > snapshot.index, "truncate_from {} at or below snapshot {}",
             rd.truncate_from, snapshot.index);
    TX_CHECK(!rd.entries.empty() && rd.entries.front().index == rd.truncate_from,
             "truncate_from {} but entries start elsewhere", rd.truncate_from);
    if (rd.truncate_from <= LastIndex()) entries.resize(rd.truncate_from - snapshot.index - 1);
  }
  for (const Entry& e : rd.entries) {
    TX_CHECK(e.index == LastIndex() + 1, "Ready appends index {} after persisted last {}", e.index,
             LastIndex());
    entries.push_back(e);
  }
  if (rd.hard_state.has_value()) hard_state = *rd.hard_state;
}

InitialState MemStorage::ToInitialState() const {
  InitialState s;
  s.hard_state = hard_state;
  s.snapshot = snapshot;
  s.snapshot_data = snapshot_data;
  s.entries = entries;
  return s;
}

TestNode::TestNode(Config config, InitialState state) : config_(std::move(config)) {
  storage.hard_state = state.hard_state;
  storage.snapshot = state.snapshot;
  storage.snapshot_data = state.snapshot_data;
  storage.entries = state.entries;
  auto r = Raft::Create(config_, std::move(state));
  TX_CHECK(r.ok(), "Raft::Create: {}", r.status().ToString());
  raft_ = std::move(r).value();
}

std::vector<Message> TestNode::ProcessReady() {
  std::vector<Message> out;
  if (!raft_->HasReady()) return out;
  Ready rd = raft_->GetReady();
  out = std::move(rd.messages);
  storage.Persist(rd);
  for (Message& m : rd.messages_after_persist) out.push_back(std::move(m));
  if (rd.snapshot.has_value()) {
    restored = rd.snapshot;
    applied.clear();
  }
  for (const Entry& e : rd.committed_entries) {
    TX_CHECK(applied.empty() || e.index == applied.back().index + 1,
             "committed entry {} does not follow applied {}", e.index, applied.back().index);
    applied.push_back(e);
  }
  for (ReadState& r : rd.read_states) read_states.push_back(std::move(r));
  if (rd.soft_state.has_value()) soft_states.push_back(*rd.soft_state);
  raft_->Advance(rd);
  return out;
}

std::vector<Message> TestNode::ProcessAllReadies() {
  std::vector<Message> out;
  while (raft_->HasReady()) {
    for (Message& m : ProcessReady()) out.push_back(std::move(m));
  }
  return out;
}

void TestNode::Restart() {
  auto r = Raft::Create(config_, storage.ToInitialState());
  TX_CHECK(r.ok(), "Raft::Create after restart: {}", r.status().ToString());
  raft_ = std::move(r).value();
  applied.clear();
  read_states.clear();
}

Network::Network(std::vector<NodeId> ids, const Tweak& tweak) {
  for (NodeId id : ids) {
    Config c = TestConfig(id, ids);
    if (tweak) tweak(c);
    AddNode(std::make_unique<TestNode>(c));
  }
}

void Network::AddNode(std::unique_ptr<TestNode> node) {
  NodeId id = node->config().id;
  nodes_[id] = std::move(node);
}

std::vector<NodeId> Network::ids() const {
  std::vector<NodeId> out;
  for (const auto& [id, n] : nodes_) out.push_back(id);
  return out;
}

bool Network::Dropped(const Message& m) const {
  if (cut_.count({m.from, m.to}) != 0) return true;
  if (drop_if && drop_if(m)) return true;
  return nodes_.count(m.to) == 0;
}

void Network::Stabilize() {
  // Bounded so a livelock in the core fails the test instead of hanging it.
  for (int round = 0; round < 1'000'000; ++round) {
    for (auto& [id, n] : nodes_) {
      for (Message& m : n->ProcessAllReadies()) queue_.push_back(std::move(m));
    }
    if (queue_.empty()) return;
    Message m = std::move(queue_.front());
    queue_.pop_front();
    if (Dropped(m)) {
      dropped.push_back(std::move(m));
      continue;
    }
    delivered.push_back(m);
    Status s = nodes_.at(m.to)->raft().Step(std::move(m));
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  ADD_FAILURE() << "network did not become quiet";
}

void Network::Send(std::vector<Message> msgs) {
  for (Message& m : msgs) queue_.push_back(std::move(m));
  Stabilize();
}

void Network::Campaign(NodeId id) {
  Status s = raft(id).Campaign();
  EXPECT_TRUE(s.ok()) << s.ToString();
  Stabilize();
}

StatusOr<EntryId> Network::Propose(NodeId id, std::string data) {
  StatusOr<EntryId> r = raft(id).Propose(std::move(data));
  Stabilize();
  return r;
}

void Network::Tick(NodeId id, int n) {
  for (int i = 0; i < n; ++i) {
    raft(id).Tick();
    Stabilize();
  }
}

void Network::TickAll(int n) {
  for (int i = 0; i < n; ++i) {
    for (auto& [id, node] : nodes_) node->raft().Tick();
    Stabilize();
  }
}

void Network::Cut(NodeId a, NodeId b) {
  cut_.insert({a, b});
  cut_.insert({b, a});
}

void Network::CutOneWay(NodeId from, NodeId to) { cut_.insert({from, to}); }

void Network::Isolate(NodeId id) {
  for (const auto& [other, n] : nodes_) {
    if (other != id) Cut(id, other);
  }
}

void Network::Recover() {
  cut_.clear();
  drop_if = nullptr;
}

NodeId Network::Leader() const {
  NodeId leader = kNoNode;
  Term best = 0;
  for (const auto& [id, n] : nodes_) {
    Raft& r = n->raft();
    if (r.role() == Role::kLeader && r.term() >= best) {
      leader = id;
      best = r.term();
    }
  }
  return leader;
}

std::vector<Message> Filter(const std::vector<Message>& msgs, MessageType type) {
  std::vector<Message> out;
  std::copy_if(msgs.begin(), msgs.end(), std::back_inserter(out),
               [type](const Message& m) { return m.type == type; });
  return out;
}

}  // namespace tx::raft::testing
