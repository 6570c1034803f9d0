// Restart from persisted state, validation of recovered state and of incoming messages, and
// the invariants that abort the process when broken.

#include <gtest/gtest.h>

#include "tests/unit/raft/raft_test_util.h"

namespace tx::raft::testing {
namespace {

Message Msg(MessageType type, NodeId from, NodeId to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// --- restart ---------------------------------------------------------------------------------

TEST(Recovery, RestartedReplicaResumesFromWhatItPersisted) {
  Network net({1, 2, 3});
  net.Campaign(1);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(net.Propose(1, "x").ok());
  RaftStatus before = net.raft(2).GetStatus();
  std::vector<Term> log_before = TermsOf(net.raft(2).log());
  net.node(2).Restart();
  RaftStatus after = net.raft(2).GetStatus();
  EXPECT_EQ(before.hard_state, after.hard_state);
  EXPECT_EQ(log_before, TermsOf(net.raft(2).log()));
  EXPECT_EQ(Role::kFollower, after.role);
  // It re-applies what was committed (its state machine is rebuilt) and rejoins.
  net.Stabilize();
  EXPECT_EQ(before.hard_state.commit, net.node(2).applied.back().index);
  ASSERT_TRUE(net.Propose(1, "after restart").ok());
  EXPECT_EQ("after restart", net.node(2).applied.back().data);
}

TEST(Recovery, RestartedLeaderBecomesFollowerAndTheClusterMovesOn) {
  Network net({1, 2, 3});
  net.Campaign(1);
  ASSERT_TRUE(net.Propose(1, "x").ok());
  Term term = net.raft(1).term();
  net.node(1).Restart();
  EXPECT_EQ(Role::kFollower, net.raft(1).role());
  EXPECT_EQ(term, net.raft(1).term());
  EXPECT_EQ(1u, net.raft(1).GetStatus().hard_state.vote) << "its vote in that term survives";
  net.TickAll(3 * kElectionTicks);
  NodeId leader = net.Leader();
  ASSERT_NE(kNoNode, leader);
  EXPECT_GT(net.raft(leader).term(), term);
}

TEST(Recovery, ReplicaRestartsFromItsSnapshotAndTheEntriesAfterIt) {
  Network net({1});
  net.Campaign(1);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(net.Propose(1, "x").ok());
  Index applied = net.node(1).applied.back().index;
  auto data = std::make_shared<const std::string>("state");
  StatusOr<SnapshotMetadata> meta = net.raft(1).OnSnapshotCreated(applied - 1, data);
  ASSERT_TRUE(meta.ok());
  // The runtime persists the snapshot and drops the log prefix it covers.
  MemStorage& st = net.node(1).storage;
  st.entries.erase(st.entries.begin(), st.entries.begin() + (meta->index - st.snapshot.index));
  st.snapshot = *meta;
  st.snapshot_data = data;
  net.node(1).Restart();
  EXPECT_EQ(meta->index + 1, net.raft(1).log().first_index());
  EXPECT_EQ(applied, net.raft(1).log().last_index());
  net.Campaign(1);
  ASSERT_TRUE(net.Propose(1, "y").ok());
  EXPECT_EQ("y", net.node(1).applied.back().data);
}

TEST(Recovery, HardStateOlderThanItsEntriesAdoptsTheirTermWithoutAVote) {
  // The hard state is written after the entries; a crash in between leaves this state.
  InitialState s;
  s.hard_state = HardState{3, 2, 0};
  s.entries = Log({1, 5});
  TestNode n(TestConfig(1, {1, 2, 3}), s);
  EXPECT_EQ(5u, n.raft().term());
  EXPECT_EQ(kNoNode, n.raft().GetStatus().hard_state.vote);
  Ready rd = n.raft().GetReady();
  ASSERT_TRUE(rd.hard_state.has_value()) << "the adjusted hard state is persisted";
  EXPECT_EQ(5u, rd.hard_state->term);
}

TEST(Recovery, InconsistentStateIsRejectedNotTrusted) {
  Config c = TestConfig(1, {1, 2, 3});
  InitialState gap;
  gap.entries = {MakeEntry(1, 1), MakeEntry(3, 1)};
  EXPECT_TRUE(Raft::Create(c, gap).status().IsCorruption());

  InitialState backwards;
  backwards.entries = Log({2, 1});
  EXPECT_TRUE(Raft::Create(c, backwards).status().IsCorruption());

  InitialState commit_beyond;
  commit_beyond.hard_state.commit = 5;
  commit_beyond.entries = Log({1});
  EXPECT_TRUE(Raft::Create(c, commit_beyond).status().IsCorruption());

  InitialState no_data;
  no_data.snapshot.index = 4;
  no_data.snapshot.term = 1;
  EXPECT_TRUE(Raft::Create(c, no_data).status().IsCorruption());

  InitialState bad_conf;
  Entry e = MakeEntry(1, 1, "garbage");
  e.type = EntryType::kConfChange;
  bad_conf.entries = {e};
  EXPECT_TRUE(Raft::Create(c, bad_conf).status().IsCorruption());
}

TEST(Recovery, InvalidConfigIsRejected) {
  Config c = TestConfig(1, {1, 2, 3});
  c.id = 0;
  EXPECT_TRUE(Raft::Create(c, {}).status().IsInvalidArgument());
  c = TestConfig(1, {1, 2, 3});
  c.heartbeat_ticks = c.election_timeout_ticks;
  EXPECT_TRUE(Raft::Create(c, {}).status().IsInvalidArgument());
  c = TestConfig(1, {1, 2, 2});
  EXPECT_TRUE(Raft::Create(c, {}).status().IsInvalidArgument());
  c = TestConfig(1, {1, 2, 3}, {3});
  EXPECT_TRUE(Raft::Create(c, {}).status().IsInvalidArgument());
  c = TestConfig(1, {1, 2, 3});
  c.max_inflight_msgs = 0;
  EXPECT_TRUE(Raft::Create(c, {}).status().IsInvalidArgument());
}

TEST(Recovery, JoiningReplicaWithoutConfigurationWaitsForTheLeader) {
  TestNode n(TestConfig(4, {}));
  EXPECT_TRUE(n.raft().configuration().voters.empty());
  for (int i = 0; i < 5 * kElectionTicks; ++i) n.raft().Tick();
  EXPECT_EQ(Role::kFollower, n.raft().role()) << "not a voter: never campaigns";
  EXPECT_FALSE(n.raft().Campaign().ok());
}

// --- malformed input -------------------------------------------------------------------------

TEST(Validation, MalformedMessagesAreRejectedAndChangeNothing) {
  InitialState s;
  s.hard_state.term = 2;
  s.entries = Log({1, 2});
  TestNode n(TestConfig(1, {1, 2, 3}), s);
  n.ProcessAllReadies();
  RaftStatus before = n.raft().GetStatus();

  std::vector<std::pair<std::string, Message>> bad;
  Message wrong_to = Msg(MessageType::kHeartbeat, 2, 9, 3);
  bad.push_back({"wrong recipient", wrong_to});
  bad.push_back({"no sender", Msg(MessageType::kHeartbeat, 0, 1, 3)});
  bad.push_back({"from itself", Msg(MessageType::kHeartbeat, 1, 1, 3)});
  bad.push_back({"term 0", Msg(MessageType::kHeartbeat, 2, 1, 0)});
  Message bad_type = Msg(MessageType::kHeartbeat, 2, 1, 3);
  bad_type.type = static_cast<MessageType>(99);
  bad.push_back({"unknown type", bad_type});
  Message gap = Msg(MessageType::kAppend, 2, 1, 3);
  gap.index = 2;
  gap.log_term = 2;
  gap.entries = {MakeEntry(4, 3)};
  bad.push_back({"entries not after prev", gap});
  Message future = Msg(MessageType::kAppend, 2, 1, 3);
  future.index = 2;
  future.log_term = 2;
  future.entries = {MakeEntry(3, 4)};
  bad.push_back({"entry term above message term", future});
  Message down = Msg(MessageType::kAppend, 2, 1, 3);
  down.index = 2;
  down.log_term = 2;
  down.entries = {MakeEntry(3, 3), MakeEntry(4, 2)};
  bad.push_back({"entry terms decreasing", down});
  Message conf = Msg(MessageType::kAppend, 2, 1, 3);
  conf.index = 2;
  conf.log_term = 2;
  conf.entries = {MakeEntry(3, 3, "\x01\x09")};
  conf.entries[0].type = EntryType::kConfChange;
  bad.push_back({"undecodable configuration entry", conf});
  Message snap = Msg(MessageType::kSnapshot, 2, 1, 3);
  snap.snapshot.index = 0;
  bad.push_back({"snapshot at index 0", snap});
  Message snap_conf = Msg(MessageType::kSnapshot, 2, 1, 3);
  snap_conf.snapshot.index = 5;
  snap_conf.snapshot.term = 3;
  snap_conf.snapshot.configuration.voters = {1, 1};
  bad.push_back({"snapshot with a bad configuration", snap_conf});

  for (auto& [what, m] : bad) {
    Status st = n.raft().Step(m);
    EXPECT_TRUE(st.IsInvalidArgument()) << what << ": " << st.ToString();
  }
  RaftStatus after = n.raft().GetStatus();
  EXPECT_EQ(before.hard_state, after.hard_state);
  EXPECT_EQ(before.last_index, after.last_index);
  EXPECT_FALSE(n.raft().HasReady()) << "no message, no state change";
}

TEST(Validation, ResponsesClaimingEntriesTheLeaderNeverHadAreIgnored) {
  Network net({1, 2, 3});
  net.Campaign(1);
  Progress before = net.raft(1).GetStatus().progress.at(2);
  Message bogus = Msg(MessageType::kAppendResponse, 2, 1, net.raft(1).term());
  bogus.index = 1000;
  ASSERT_TRUE(net.raft(1).Step(bogus).ok());
  EXPECT_EQ(before.match_index, net.raft(1).GetStatus().progress.at(2).match_index);
  EXPECT_LT(net.raft(1).commit_index(), 1000u);
}

// --- invariants that abort -------------------------------------------------------------------

TEST(InvariantDeathTest, TwoLeadersInOneTermAbort) {
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Step(Msg(MessageType::kHeartbeat, 2, 1, 1)).ok());
  EXPECT_DEATH((void)n.raft().Step(Msg(MessageType::kHeartbeat, 3, 1, 1)),
               "election safety violated: node 1 in term 1 follows leader 2 .* node 3");
}

TEST(InvariantDeathTest, LeaderHearingFromAnotherLeaderOfItsTermAborts) {
  Network net({1, 2, 3});
  net.Campaign(1);
  Term t = net.raft(1).term();
  EXPECT_DEATH((void)net.raft(1).Step(Msg(MessageType::kAppend, 3, 1, t)),
               "node 1 is leader of term .* from node 3");
}

TEST(InvariantDeathTest, EntryConflictingWithACommittedOneAborts) {
  InitialState s;
  s.hard_state = HardState{1, kNoNode, 2};
  s.entries = Log({1, 1});
  TestNode n(TestConfig(1, {1, 2, 3}), s);
  Message m = Msg(MessageType::kAppend, 2, 1, 2);
  m.index = 1;
  m.log_term = 1;
  m.entries = {MakeEntry(2, 2)};
  m.commit = 2;
  EXPECT_DEATH((void)n.raft().Step(m), "conflicts with committed entry .* commit index 2");
}

TEST(InvariantDeathTest, CommitIndexBeyondTheLogAborts) {
  InitialState s;
  s.hard_state.term = 1;
  s.entries = Log({1});
  TestNode n(TestConfig(1, {1, 2, 3}), s);
  Message hb = Msg(MessageType::kHeartbeat, 2, 1, 1);
  hb.commit = 5;
  EXPECT_DEATH((void)n.raft().Step(hb), "commit index 5 beyond last index 1");
}

}  // namespace
}  // namespace tx::raft::testing
