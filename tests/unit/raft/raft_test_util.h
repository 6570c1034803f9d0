// Test harness for the Raft core: an in-memory "disk" that follows the Ready contract, a node
// wrapper that plays the runtime, and a hand-stepped network in the style of etcd's
// raft_test.go `network`: tests decide which messages are delivered, dropped or held back.
//
// Single-threaded; everything is deterministic.

#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "raft/core/raft.h"

namespace tx::raft::testing {

inline constexpr int kElectionTicks = 10;
inline constexpr int kHeartbeatTicks = 1;

// Plain config for paper tests: no pre-vote, no check-quorum (Figure 2 Raft), unless enabled.
Config TestConfig(NodeId id, std::vector<NodeId> voters, std::vector<NodeId> learners = {});

Entry MakeEntry(Index index, Term term, std::string data = "");
// Entries 1..n with the given terms: Log({1, 1, 2}) = (1,t1) (2,t1) (3,t2).
std::vector<Entry> Log(const std::vector<Term>& terms);
// Terms of a log, for compact comparisons.
std::vector<Term> TermsOf(const RaftLog& log);

// Exactly what a runtime was told to persist (and acknowledged), applied in contract order.
struct MemStorage {
  HardState hard_state;
  SnapshotMetadata snapshot;
  std::shared_ptr<const std::string> snapshot_data;
  std::vector<Entry> entries;  // after snapshot.index

  void Persist(const Ready& rd);
  InitialState ToInitialState() const;
  Index LastIndex() const { return snapshot.index + entries.size(); }
};

// One replica: the core plus its storage and what it applied.
class TestNode {
 public:
  TestNode(Config config, InitialState state = {});

  Raft& raft() { return *raft_; }
  const Config& config() const { return config_; }

  // Plays one round of the runtime for one Ready (if any): persist, apply, Advance. Returns the
  // messages in the order the runtime would send them (immediate ones first).
  std::vector<Message> ProcessReady();
  // Drains every Ready until none is left.
  std::vector<Message> ProcessAllReadies();

  // Crash and restart: the core is rebuilt from storage; applied state is rebuilt from the
  // snapshot and the committed entries the new core hands out.
  void Restart();

  MemStorage storage;
  std::vector<Entry> applied;        // committed entries handed out, in order (since the snapshot)
  std::optional<Snapshot> restored;  // last snapshot received through a Ready
  std::vector<ReadState> read_states;
  std::vector<SoftState> soft_states;

 private:
  Config config_;
  std::unique_ptr<Raft> raft_;
};

// Hand-stepped network of TestNodes.
class Network {
 public:
  using Tweak = std::function<void(Config&)>;
  // Voters `ids`, each created with TestConfig and then `tweak`.
  explicit Network(std::vector<NodeId> ids, const Tweak& tweak = nullptr);

  void AddNode(std::unique_ptr<TestNode> node);
  TestNode& node(NodeId id) { return *nodes_.at(id); }
  Raft& raft(NodeId id) { return nodes_.at(id)->raft(); }
  bool Has(NodeId id) const { return nodes_.count(id) != 0; }
  std::vector<NodeId> ids() const;

  // Delivers queued messages, and every message they cause, until the network is quiet
  // (every Ready processed, nothing queued). Dropped messages go to `dropped`.
  void Stabilize();
  // Enqueues messages (as if sent) and stabilizes.
  void Send(std::vector<Message> msgs);
  // raft(id).Campaign() then Stabilize; with pre-vote too.
  void Campaign(NodeId id);
  StatusOr<EntryId> Propose(NodeId id, std::string data);
  // Ticks one node n times, stabilizing after each tick.
  void Tick(NodeId id, int n);
  void TickAll(int n);

  // Filters: a message is dropped if its link is cut or a custom filter says so.
  void Cut(NodeId a, NodeId b);  // both directions
  void CutOneWay(NodeId from, NodeId to);
  void Isolate(NodeId id);
  void Recover();                               // removes every cut and the filter
  std::function<bool(const Message&)> drop_if;  // custom: return true to drop

  NodeId Leader() const;  // the unique leader with the highest term, or 0

  std::vector<Message> delivered;  // every delivered message, in order
  std::vector<Message> dropped;

 private:
  bool Dropped(const Message& m) const;

  std::map<NodeId, std::unique_ptr<TestNode>> nodes_;
  std::deque<Message> queue_;
  std::set<std::pair<NodeId, NodeId>> cut_;
};

// Messages of one type from a list.
std::vector<Message> Filter(const std::vector<Message>& msgs, MessageType type);

}  // namespace tx::raft::testing
