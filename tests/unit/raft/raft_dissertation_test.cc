// Rules from Ongaro's dissertation ("Consensus: Bridging Theory and Practice", 2014) beyond
// Figure 2: pre-vote (§9.6), check-quorum and the leader lease (§6.2, §4.2.3), leadership
// transfer (§3.10), membership changes (§4) and ReadIndex (§6.4). Each test cites its section.

#include <gtest/gtest.h>

#include "tests/unit/raft/raft_test_util.h"

namespace tx::raft::testing {
namespace {

Network::Tweak PreVote(bool check_quorum = false) {
  return [check_quorum](Config& c) {
    c.pre_vote = true;
    c.check_quorum = check_quorum;
  };
}

Network::Tweak CheckQuorum() {
  return [](Config& c) { c.check_quorum = true; };
}

Message Msg(MessageType type, NodeId from, NodeId to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// Elects node 1 and commits its no-op.
void ElectOne(Network& net) {
  net.Campaign(1);
  ASSERT_EQ(Role::kLeader, net.raft(1).role());
  ASSERT_EQ(net.raft(1).log().last_index(), net.raft(1).commit_index());
}

// --- §9.6 pre-vote ---------------------------------------------------------------------------

TEST(PreVote, PreCandidateKeepsItsTermAndVote) {  // §9.6
  Config c = TestConfig(1, {1, 2, 3});
  c.pre_vote = true;
  TestNode n(c);
  ASSERT_TRUE(n.raft().Campaign().ok());
  EXPECT_EQ(Role::kPreCandidate, n.raft().role());
  EXPECT_EQ(0u, n.raft().term());
  Ready rd = n.raft().GetReady();
  EXPECT_FALSE(rd.hard_state.has_value()) << "nothing to persist for a pre-vote";
  std::vector<Message> pv = Filter(rd.messages_after_persist, MessageType::kPreVote);
  ASSERT_EQ(2u, pv.size());
  EXPECT_EQ(1u, pv[0].term) << "asks for the term it would campaign in";
}

TEST(PreVote, PreVoteQuorumStartsRealElection) {  // §9.6
  Network net({1, 2, 3}, PreVote());
  net.Campaign(1);
  EXPECT_EQ(Role::kLeader, net.raft(1).role());
  EXPECT_EQ(1u, net.raft(1).term());
  EXPECT_EQ(2u, Filter(net.delivered, MessageType::kPreVote).size());
}

TEST(PreVote, GrantingPreVoteChangesNothingAtTheVoter) {  // §9.6
  Config c = TestConfig(1, {1, 2, 3});
  c.pre_vote = true;
  TestNode n(c);
  Message pv = Msg(MessageType::kPreVote, 2, 1, 1);
  ASSERT_TRUE(n.raft().Step(pv).ok());
  std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kPreVoteResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_FALSE(r[0].reject);
  EXPECT_EQ(0u, n.raft().term());
  EXPECT_EQ(kNoNode, n.raft().GetStatus().hard_state.vote);
}

TEST(PreVote, PreVoteRejectedForLessUpToDateLog) {  // §9.6 with §5.4.1
  Config c = TestConfig(1, {1, 2, 3});
  c.pre_vote = true;
  InitialState s;
  s.hard_state.term = 1;
  s.entries = Log({1, 1});
  TestNode n(c, s);
  Message pv = Msg(MessageType::kPreVote, 2, 1, 2);
  pv.index = 1;
  pv.log_term = 1;
  ASSERT_TRUE(n.raft().Step(pv).ok());
  std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kPreVoteResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_TRUE(r[0].reject);
}

TEST(PreVote, PartitionedNodeDoesNotDisruptLeaderWhenItReturns) {  // §9.6
  Network net({1, 2, 3}, PreVote());
  ElectOne(net);
  Term term = net.raft(1).term();
  net.Isolate(3);
  net.Tick(3, 10 * kElectionTicks);
  EXPECT_EQ(term, net.raft(3).term()) << "failed pre-votes do not raise the term";
  net.Recover();
  net.TickAll(3);
  EXPECT_EQ(1u, net.Leader());
  EXPECT_EQ(term, net.raft(1).term());
  EXPECT_EQ(1u, net.raft(3).leader_hint());
}

TEST(PreVote, WithoutPreVoteAReturningNodeDisruptsTheLeader) {  // §9.6, the problem it solves
  Network net({1, 2, 3});
  ElectOne(net);
  Term term = net.raft(1).term();
  net.Isolate(3);
  net.Tick(3, 10 * kElectionTicks);
  EXPECT_GT(net.raft(3).term(), term);
  net.Recover();
  net.TickAll(2 * kElectionTicks);
  EXPECT_GT(net.raft(1).term(), term) << "the inflated term forced a new election";
}

// --- §6.2 check-quorum and §4.2.3 leader lease -----------------------------------------------

TEST(CheckQuorum, LeaderStepsDownWhenItCannotReachAQuorum) {  // §6.2
  Network net({1, 2, 3}, CheckQuorum());
  ElectOne(net);
  net.Isolate(1);
  net.Tick(1, kElectionTicks);
  EXPECT_EQ(Role::kFollower, net.raft(1).role());
  EXPECT_EQ(kNoNode, net.raft(1).leader_hint());
}

TEST(CheckQuorum, LeaderThatHearsFromAQuorumStaysLeader) {  // §6.2
  Network net({1, 2, 3}, CheckQuorum());
  ElectOne(net);
  net.Isolate(3);
  net.Tick(1, 5 * kElectionTicks);
  EXPECT_EQ(Role::kLeader, net.raft(1).role());
}

TEST(CheckQuorum, FollowerIgnoresVoteRequestsWithinLeaderLease) {  // §4.2.3
  Network net({1, 2, 3}, CheckQuorum());
  ElectOne(net);
  Term term = net.raft(1).term();
  Message vote = Msg(MessageType::kVote, 3, 2, term + 1);
  vote.index = 100;
  vote.log_term = term;
  ASSERT_TRUE(net.raft(2).Step(vote).ok());
  EXPECT_EQ(term, net.raft(2).term());
  EXPECT_TRUE(net.node(2).ProcessAllReadies().empty()) << "ignored: no answer at all";
}

TEST(CheckQuorum, FollowerVotesOnceTheLeaseHasExpired) {  // §4.2.3
  Network net({1, 2, 3}, CheckQuorum());
  ElectOne(net);
  Term term = net.raft(1).term();
  net.Isolate(1);
  for (int i = 0; i < kElectionTicks; ++i) net.raft(2).Tick();  // no word from the leader
  Message vote = Msg(MessageType::kVote, 3, 2, term + 1);
  vote.index = 100;
  vote.log_term = term;
  ASSERT_TRUE(net.raft(2).Step(vote).ok());
  EXPECT_EQ(term + 1, net.raft(2).term());
  std::vector<Message> r = Filter(net.node(2).ProcessAllReadies(), MessageType::kVoteResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_FALSE(r[0].reject);
}

TEST(CheckQuorum, DeposedLeaderLearnsTheNewTermFromAnyReplica) {  // §6.2
  Network net({1, 2, 3}, CheckQuorum());
  ElectOne(net);
  net.Isolate(1);
  // Nodes 2 and 3 time out (their lease on node 1 expires) and elect one of them.
  NodeId leader = kNoNode;
  for (int i = 0; i < 4 * kElectionTicks && leader == kNoNode; ++i) {
    net.raft(2).Tick();
    net.raft(3).Tick();
    net.Stabilize();
    if (net.raft(2).role() == Role::kLeader) leader = 2;
    if (net.raft(3).role() == Role::kLeader) leader = 3;
  }
  ASSERT_NE(kNoNode, leader);
  net.Recover();
  // Node 1 has not ticked, so it still believes it leads term 1; its next heartbeat is
  // answered with the higher term.
  ASSERT_EQ(Role::kLeader, net.raft(1).role());
  net.Tick(1, kHeartbeatTicks);
  EXPECT_EQ(Role::kFollower, net.raft(1).role());
  EXPECT_EQ(net.raft(leader).term(), net.raft(1).term());
}

// --- §3.10 leadership transfer ---------------------------------------------------------------

TEST(LeaderTransfer, UpToDateTargetReceivesTimeoutNowAndWins) {  // §3.10
  Network net({1, 2, 3}, PreVote(true));
  ElectOne(net);
  ASSERT_TRUE(net.Propose(1, "a").ok());
  Term term = net.raft(1).term();
  ASSERT_TRUE(net.raft(1).TransferLeadership(2).ok());
  net.Stabilize();
  EXPECT_EQ(2u, net.Leader());
  EXPECT_EQ(term + 1, net.raft(2).term());
  EXPECT_EQ(1u, Filter(net.delivered, MessageType::kTimeoutNow).size());
  std::vector<Message> votes = Filter(net.delivered, MessageType::kVote);
  ASSERT_FALSE(votes.empty());
  EXPECT_TRUE(votes.back().leader_transfer) << "lets voters in a leader lease answer";
}

TEST(LeaderTransfer, LaggingTargetIsCaughtUpBeforeTimeoutNow) {  // §3.10
  Network net({1, 2, 3});
  ElectOne(net);
  net.Isolate(3);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net.Propose(1, "x").ok());
  net.Recover();
  Index last = net.raft(1).log().last_index();
  ASSERT_LT(net.raft(3).log().last_index(), last);
  ASSERT_TRUE(net.raft(1).TransferLeadership(3).ok());
  net.Stabilize();
  EXPECT_EQ(3u, net.Leader());
  EXPECT_GE(net.raft(3).log().last_index(), last);
}

TEST(LeaderTransfer, ProposalsAreRefusedWhileTransferring) {  // §3.10
  Network net({1, 2, 3});
  ElectOne(net);
  net.CutOneWay(1, 3);  // the target never catches up
  ASSERT_TRUE(net.Propose(1, "x").ok());
  ASSERT_TRUE(net.raft(1).TransferLeadership(3).ok());
  net.Stabilize();
  StatusOr<EntryId> r = net.raft(1).Propose("y");
  EXPECT_TRUE(r.status().IsUnavailable()) << r.status().ToString();
}

TEST(LeaderTransfer, AbandonedAfterAnElectionTimeout) {  // §3.10
  Network net({1, 2, 3});
  ElectOne(net);
  net.CutOneWay(1, 3);
  ASSERT_TRUE(net.Propose(1, "x").ok());
  ASSERT_TRUE(net.raft(1).TransferLeadership(3).ok());
  net.Tick(1, kElectionTicks);
  EXPECT_EQ(Role::kLeader, net.raft(1).role());
  EXPECT_TRUE(net.raft(1).Propose("y").ok()) << "transfer abandoned, leader serves again";
}

TEST(LeaderTransfer, TargetMustBeAVoter) {  // §3.10
  Network net({1, 2, 3});
  ElectOne(net);
  EXPECT_TRUE(net.raft(1).TransferLeadership(9).IsInvalidArgument());
  EXPECT_TRUE(net.raft(2).TransferLeadership(3).IsUnavailable()) << "only the leader";
}

// --- §4 membership changes -------------------------------------------------------------------

StatusOr<EntryId> Change(Network& net, NodeId leader, ConfChangeType type, NodeId node) {
  StatusOr<EntryId> r = net.raft(leader).ProposeConfChange(ConfChange{type, node});
  net.Stabilize();
  return r;
}

// Adds an empty replica `id` to the network (it knows no configuration yet).
void AddEmptyNode(Network& net, NodeId id) {
  net.AddNode(std::make_unique<TestNode>(TestConfig(id, {})));
}

TEST(Membership, ConfigurationTakesEffectWhenAppendedNotWhenCommitted) {  // §4.1
  Network net({1, 2, 3});
  ElectOne(net);
  net.CutOneWay(1, 3);
  net.drop_if = [](const Message& m) { return m.from == 2; };  // 2's acks are lost
  StatusOr<EntryId> r = Change(net, 1, ConfChangeType::kAddLearner, 4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(net.raft(1).commit_index(), r->index);
  EXPECT_TRUE(net.raft(1).configuration().IsLearner(4)) << "leader uses it at once";
  EXPECT_TRUE(net.raft(2).configuration().IsLearner(4)) << "so does a follower that has it";
  EXPECT_FALSE(net.raft(3).configuration().IsLearner(4));
}

TEST(Membership, AtMostOneUncommittedChange) {  // §4.1
  Network net({1, 2, 3});
  ElectOne(net);
  net.Isolate(1);
  ASSERT_TRUE(Change(net, 1, ConfChangeType::kAddLearner, 4).ok());
  StatusOr<EntryId> second = Change(net, 1, ConfChangeType::kAddLearner, 5);
  EXPECT_EQ(Status::Code::kFailedPrecondition, second.status().code())
      << second.status().ToString();
}

TEST(Membership, LeaderAcceptsChangesOnlyAfterCommittingAnEntryOfItsTerm) {  // §4.1, raft-dev
  Network net({1, 2, 3});
  net.drop_if = [](const Message& m) { return m.type == MessageType::kAppend; };
  net.Campaign(1);
  ASSERT_EQ(Role::kLeader, net.raft(1).role());
  StatusOr<EntryId> early = net.raft(1).ProposeConfChange({ConfChangeType::kAddLearner, 4});
  EXPECT_EQ(Status::Code::kFailedPrecondition, early.status().code());
  net.Recover();
  net.Tick(1, kHeartbeatTicks);  // heartbeats pull the followers up; the no-op commits
  ASSERT_EQ(net.raft(1).log().last_index(), net.raft(1).commit_index());
  EXPECT_TRUE(net.raft(1).ProposeConfChange({ConfChangeType::kAddLearner, 4}).ok());
}

TEST(Membership, TruncatedConfigurationEntryRevertsTheConfiguration) {  // §4.1
  Config c = TestConfig(1, {1, 2, 3});
  InitialState s;
  s.hard_state.term = 1;
  s.entries = Log({1});
  TestNode n(c, s);
  Entry cc = MakeEntry(2, 2);
  cc.type = EntryType::kConfChange;
  cc.data = EncodeConfChange({{ConfChangeType::kAddVoter, 4}, {{1, 2, 3, 4}, {}}});
  Message a = Msg(MessageType::kAppend, 2, 1, 2);
  a.index = 1;
  a.log_term = 1;
  a.entries = {cc};
  ASSERT_TRUE(n.raft().Step(a).ok());
  EXPECT_TRUE(n.raft().configuration().IsVoter(4));
  // A leader of term 3 never had that entry and overwrites it.
  Message b = Msg(MessageType::kAppend, 3, 1, 3);
  b.index = 1;
  b.log_term = 1;
  b.entries = {MakeEntry(2, 3)};
  ASSERT_TRUE(n.raft().Step(b).ok());
  EXPECT_EQ((std::vector<NodeId>{1, 2, 3}), n.raft().configuration().voters);
}

TEST(Membership, AddedVoterCountsTowardTheQuorum) {  // §4.1
  Network net({1, 2, 3});
  ElectOne(net);
  AddEmptyNode(net, 4);
  ASSERT_TRUE(Change(net, 1, ConfChangeType::kAddVoter, 4).ok());
  ASSERT_TRUE(net.raft(4).configuration().IsVoter(4));
  // Four voters: a quorum is three. Leader and node 2 alone cannot commit.
  net.Isolate(3);
  net.Isolate(4);
  StatusOr<EntryId> r = net.Propose(1, "x");
  ASSERT_TRUE(r.ok());
  EXPECT_LT(net.raft(1).commit_index(), r->index);
  net.Recover();
  net.Tick(1, kHeartbeatTicks);
  EXPECT_GE(net.raft(1).commit_index(), r->index);
}

TEST(Membership, RemovedFollowerNoLongerCountsOrReceivesTheLog) {  // §4.1
  Network net({1, 2, 3});
  ElectOne(net);
  ASSERT_TRUE(Change(net, 1, ConfChangeType::kRemoveNode, 3).ok());
  net.Isolate(2);  // {1, 2} is the configuration: 1 alone is no quorum...
  StatusOr<EntryId> r = net.Propose(1, "x");
  ASSERT_TRUE(r.ok());
  EXPECT_LT(net.raft(1).commit_index(), r->index) << "...and 3 does not count any more";
  net.Recover();
  net.delivered.clear();
  net.Tick(1, kHeartbeatTicks);
  EXPECT_GE(net.raft(1).commit_index(), r->index);
  for (const Message& m : net.delivered) EXPECT_NE(3u, m.to) << DescribeMessage(m);
}

TEST(Membership, RemovedLeaderStepsDownOnceTheRemovalCommits) {  // §4.2.2
  Network net({1, 2, 3});
  ElectOne(net);
  net.CutOneWay(1, 3);
  StatusOr<EntryId> r = Change(net, 1, ConfChangeType::kRemoveNode, 1);
  ASSERT_TRUE(r.ok());
  // New configuration {2, 3}: node 2's copy alone is not a quorum, and 1 does not count.
  EXPECT_LT(net.raft(1).commit_index(), r->index);
  EXPECT_EQ(Role::kLeader, net.raft(1).role()) << "it keeps managing until the commit";
  net.Recover();
  net.Tick(1, kHeartbeatTicks);
  EXPECT_EQ(Role::kFollower, net.raft(1).role());
  NodeId leader = net.Leader();
  EXPECT_TRUE(leader == 2 || leader == 3) << "handed over with TimeoutNow, got " << leader;
}

TEST(Membership, LearnerReceivesTheLogButNeitherVotesNorCampaigns) {  // §4.2.1
  Network net({1, 2, 3});
  ElectOne(net);
  AddEmptyNode(net, 4);
  ASSERT_TRUE(Change(net, 1, ConfChangeType::kAddLearner, 4).ok());
  ASSERT_TRUE(net.Propose(1, "x").ok());
  EXPECT_EQ(TermsOf(net.raft(1).log()), TermsOf(net.raft(4).log()));
  EXPECT_TRUE(net.raft(4).configuration().IsLearner(4));
  net.Isolate(4);
  net.Tick(4, 5 * kElectionTicks);
  EXPECT_EQ(Role::kFollower, net.raft(4).role()) << "learners never campaign";
  EXPECT_FALSE(net.raft(4).Campaign().ok());
  net.Recover();
  net.Isolate(2);
  net.Isolate(3);
  StatusOr<EntryId> r = net.Propose(1, "y");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->index, net.raft(4).log().last_index()) << "the learner has it";
  EXPECT_LT(net.raft(1).commit_index(), r->index) << "but its copy does not count";
}

TEST(Membership, PromotionWaitsUntilTheLearnerHasCaughtUp) {  // §4.2.1
  Network net({1, 2, 3});
  ElectOne(net);
  AddEmptyNode(net, 4);
  ASSERT_TRUE(Change(net, 1, ConfChangeType::kAddLearner, 4).ok());
  net.Isolate(4);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(net.Propose(1, "x").ok());
  StatusOr<EntryId> early = Change(net, 1, ConfChangeType::kPromoteLearner, 4);
  EXPECT_EQ(Status::Code::kFailedPrecondition, early.status().code());
  net.Recover();
  net.Tick(1, kHeartbeatTicks);
  ASSERT_TRUE(Change(net, 1, ConfChangeType::kPromoteLearner, 4).ok());
  EXPECT_TRUE(net.raft(1).configuration().IsVoter(4));
  EXPECT_TRUE(net.raft(4).configuration().IsVoter(4));
}

TEST(Membership, InvalidChangesAreRejected) {  // §4.1
  Network net({1, 2, 3});
  ElectOne(net);
  EXPECT_TRUE(
      net.raft(1).ProposeConfChange({ConfChangeType::kAddVoter, 2}).status().IsInvalidArgument());
  EXPECT_TRUE(
      net.raft(1).ProposeConfChange({ConfChangeType::kRemoveNode, 7}).status().IsInvalidArgument());
  EXPECT_TRUE(net.raft(1)
                  .ProposeConfChange({ConfChangeType::kPromoteLearner, 2})
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(
      net.raft(1).ProposeConfChange({ConfChangeType::kAddLearner, 0}).status().IsInvalidArgument());
  Network single({1});
  single.Campaign(1);
  EXPECT_TRUE(single.raft(1)
                  .ProposeConfChange({ConfChangeType::kRemoveNode, 1})
                  .status()
                  .IsInvalidArgument())
      << "the last voter stays";
}

// --- §6.4 ReadIndex --------------------------------------------------------------------------

TEST(ReadIndex, LeaderAnswersOnlyAfterAQuorumAcknowledgesAHeartbeat) {  // §6.4
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Campaign().ok());
  n.ProcessAllReadies();
  ASSERT_TRUE(n.raft().Step(Msg(MessageType::kVoteResponse, 2, 1, 1)).ok());
  n.ProcessAllReadies();
  Message ack = Msg(MessageType::kAppendResponse, 2, 1, 1);
  ack.index = n.raft().log().last_index();
  ASSERT_TRUE(n.raft().Step(ack).ok());
  n.ProcessAllReadies();
  Index commit = n.raft().commit_index();
  ASSERT_EQ(1u, commit);

  ASSERT_TRUE(n.raft().ReadIndex("ctx").ok());
  std::vector<Message> hb = Filter(n.ProcessAllReadies(), MessageType::kHeartbeat);
  ASSERT_EQ(2u, hb.size());
  EXPECT_TRUE(n.read_states.empty()) << "leadership not yet confirmed";
  Message resp = Msg(MessageType::kHeartbeatResponse, 3, 1, 1);
  resp.read_seq = hb[0].read_seq;
  ASSERT_TRUE(n.raft().Step(resp).ok());
  n.ProcessAllReadies();
  ASSERT_EQ(1u, n.read_states.size());
  EXPECT_EQ((ReadState{commit, "ctx"}), n.read_states[0]);
}

TEST(ReadIndex, PartitionedLeaderNeverAnswers) {  // §6.4
  Network net({1, 2, 3});
  ElectOne(net);
  net.Isolate(1);
  ASSERT_TRUE(net.raft(1).ReadIndex("ctx").ok());
  net.Tick(1, 3 * kHeartbeatTicks);
  EXPECT_TRUE(net.node(1).read_states.empty());
}

TEST(ReadIndex, NewLeaderWaitsForItsFirstCommit) {  // §6.4
  Network net({1, 2, 3});
  net.drop_if = [](const Message& m) { return m.type == MessageType::kAppend; };
  net.Campaign(1);
  ASSERT_TRUE(net.raft(1).ReadIndex("early").ok());
  net.Stabilize();
  EXPECT_TRUE(net.node(1).read_states.empty()) << "its commit index may be stale";
  net.Recover();
  net.Tick(1, kHeartbeatTicks);
  ASSERT_EQ(1u, net.node(1).read_states.size());
  EXPECT_EQ(net.raft(1).commit_index(), net.node(1).read_states[0].index);
  EXPECT_EQ(net.raft(1).log().last_index(), net.node(1).read_states[0].index)
      << "at least the no-op of its term";
}

TEST(ReadIndex, FollowerForwardsToTheLeader) {  // §6.4
  Network net({1, 2, 3});
  ElectOne(net);
  ASSERT_TRUE(net.Propose(1, "x").ok());
  ASSERT_TRUE(net.raft(2).ReadIndex("f").ok());
  net.Stabilize();
  ASSERT_EQ(1u, net.node(2).read_states.size());
  EXPECT_EQ((ReadState{net.raft(1).commit_index(), "f"}), net.node(2).read_states[0]);
}

TEST(ReadIndex, WithoutAKnownLeaderIsUnavailable) {  // §6.4
  TestNode n(TestConfig(1, {1, 2, 3}));
  EXPECT_TRUE(n.raft().ReadIndex("x").IsUnavailable());
}

TEST(ReadIndex, SingleVoterAnswersAtOnce) {  // §6.4
  Network net({1});
  net.Campaign(1);
  ASSERT_TRUE(net.raft(1).ReadIndex("solo").ok());
  net.Stabilize();
  ASSERT_EQ(1u, net.node(1).read_states.size());
  EXPECT_EQ(net.raft(1).commit_index(), net.node(1).read_states[0].index);
}

}  // namespace
}  // namespace tx::raft::testing
