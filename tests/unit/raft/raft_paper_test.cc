// One test per rule of Figure 2 and per election/commit rule of the Raft paper (Ongaro and
// Ousterhout, "In Search of an Understandable Consensus Algorithm", extended version). Section
// numbers refer to that paper; §10.2.1 refers to Ongaro's dissertation.
//
// These tests drive single cores by hand (messages built explicitly) or a small hand-stepped
// Network, with pre-vote and check-quorum off: that is the algorithm of Figure 2.

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "tests/unit/raft/raft_test_util.h"

namespace tx::raft::testing {
namespace {

InitialState StateWith(std::vector<Entry> entries, Term term, NodeId vote = kNoNode,
                       Index commit = 0) {
  InitialState s;
  s.hard_state = HardState{term, vote, commit};
  s.entries = std::move(entries);
  return s;
}

Message Msg(MessageType type, NodeId from, NodeId to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

Message AppendMsg(NodeId from, NodeId to, Term term, Index prev_index, Term prev_term,
                  std::vector<Entry> entries, Index commit) {
  Message m = Msg(MessageType::kAppend, from, to, term);
  m.index = prev_index;
  m.log_term = prev_term;
  m.entries = std::move(entries);
  m.commit = commit;
  return m;
}

Message VoteMsg(NodeId from, NodeId to, Term term, Index last_index, Term last_term) {
  Message m = Msg(MessageType::kVote, from, to, term);
  m.index = last_index;
  m.log_term = last_term;
  return m;
}

Message AppendResp(NodeId from, NodeId to, Term term, Index index) {
  Message m = Msg(MessageType::kAppendResponse, from, to, term);
  m.index = index;
  return m;
}

void StepOk(TestNode& n, Message m) {
  Status s = n.raft().Step(std::move(m));
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Makes node n (id 1) leader of its cluster by granting it votes from `voters` by hand.
void ElectByHand(TestNode& n, const std::vector<NodeId>& voters) {
  ASSERT_TRUE(n.raft().Campaign().ok());
  n.ProcessAllReadies();
  for (NodeId v : voters) {
    Message grant = Msg(MessageType::kVoteResponse, v, n.raft().id(), n.raft().term());
    StepOk(n, grant);
  }
  ASSERT_EQ(Role::kLeader, n.raft().role());
}

// --- §5.1 / §5.2: terms and roles -----------------------------------------------------------

TEST(RaftPaper, ServersStartAsFollowers) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}));
  EXPECT_EQ(Role::kFollower, n.raft().role());
  EXPECT_EQ(0u, n.raft().term());
  EXPECT_EQ(kNoNode, n.raft().leader_hint());
}

TEST(RaftPaper, FollowerAdoptsHigherTermFromAnyMessage) {  // §5.1, Figure 2 "All servers"
  TestNode n(TestConfig(1, {1, 2, 3}));
  StepOk(n, Msg(MessageType::kHeartbeat, 2, 1, 4));
  EXPECT_EQ(4u, n.raft().term());
  EXPECT_EQ(Role::kFollower, n.raft().role());
  EXPECT_EQ(2u, n.raft().leader_hint());
}

TEST(RaftPaper, CandidateRevertsToFollowerOnHigherTerm) {  // §5.1
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Campaign().ok());
  ASSERT_EQ(Role::kCandidate, n.raft().role());
  StepOk(n, Msg(MessageType::kAppendResponse, 3, 1, 7));
  EXPECT_EQ(Role::kFollower, n.raft().role());
  EXPECT_EQ(7u, n.raft().term());
  EXPECT_EQ(kNoNode, n.raft().leader_hint()) << "a response does not name a leader";
}

TEST(RaftPaper, LeaderRevertsToFollowerOnHigherTerm) {  // §5.1
  TestNode n(TestConfig(1, {1, 2, 3}));
  ElectByHand(n, {2});
  StepOk(n, AppendMsg(3, 1, n.raft().term() + 1, 0, 0, {}, 0));
  EXPECT_EQ(Role::kFollower, n.raft().role());
  EXPECT_EQ(3u, n.raft().leader_hint());
}

TEST(RaftPaper, MessagesWithStaleTermAreIgnored) {  // §5.1
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1}), 5));
  n.ProcessAllReadies();
  StepOk(n, AppendMsg(2, 1, 3, 1, 1, {MakeEntry(2, 3)}, 2));
  EXPECT_EQ(1u, n.raft().log().last_index()) << "stale leader's entries must not be appended";
  EXPECT_EQ(0u, n.raft().commit_index());
  EXPECT_EQ(5u, n.raft().term());
  EXPECT_TRUE(n.ProcessAllReadies().empty()) << "without pre-vote/check-quorum: no answer";
}

// --- §5.2: leader election ------------------------------------------------------------------

TEST(RaftPaper, LeaderSendsHeartbeatsEveryHeartbeatInterval) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}));
  ElectByHand(n, {2});
  n.ProcessAllReadies();
  for (int i = 0; i < kHeartbeatTicks; ++i) n.raft().Tick();
  std::vector<Message> hb = Filter(n.ProcessAllReadies(), MessageType::kHeartbeat);
  ASSERT_EQ(2u, hb.size());
  std::set<NodeId> to{hb[0].to, hb[1].to};
  EXPECT_EQ((std::set<NodeId>{2, 3}), to);
  for (const Message& m : hb) EXPECT_EQ(n.raft().term(), m.term);
}

TEST(RaftPaper, FollowerStartsElectionAfterElectionTimeout) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 1}), 1));
  for (int i = 0; i < 2 * kElectionTicks; ++i) n.raft().Tick();
  EXPECT_EQ(Role::kCandidate, n.raft().role());
  EXPECT_EQ(2u, n.raft().term()) << "increments its term";
  EXPECT_EQ(1u, n.raft().GetStatus().hard_state.vote) << "votes for itself";
  std::vector<Message> votes = Filter(n.ProcessAllReadies(), MessageType::kVote);
  ASSERT_EQ(2u, votes.size()) << "RequestVote to every other server";
  for (const Message& m : votes) {
    EXPECT_EQ(2u, m.term);
    EXPECT_EQ(2u, m.index) << "last log index";
    EXPECT_EQ(1u, m.log_term) << "last log term";
  }
}

TEST(RaftPaper, CandidateStartsNewElectionWhenElectionTimesOut) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Campaign().ok());
  ASSERT_EQ(1u, n.raft().term());
  for (int i = 0; i < 2 * kElectionTicks; ++i) n.raft().Tick();
  EXPECT_EQ(Role::kCandidate, n.raft().role());
  EXPECT_EQ(2u, n.raft().term());
}

TEST(RaftPaper, CandidateWinsWithVotesFromMajorityOnly) {  // §5.2
  struct Case {
    size_t size;
    std::map<NodeId, bool> votes;
    Role want;
  };
  std::vector<Case> cases = {
      {1, {}, Role::kLeader},
      {3, {{2, true}, {3, true}}, Role::kLeader},
      {3, {{2, true}}, Role::kLeader},
      {5, {{2, true}, {3, true}, {4, true}, {5, true}}, Role::kLeader},
      {5, {{2, true}, {3, true}}, Role::kLeader},
      {3, {{2, false}, {3, false}}, Role::kFollower},
      {5, {{2, false}, {3, false}, {4, false}, {5, false}}, Role::kFollower},
      {5, {{2, true}, {3, false}, {4, false}, {5, false}}, Role::kFollower},
      {3, {}, Role::kCandidate},
      {5, {{2, true}}, Role::kCandidate},
      {5, {{2, false}, {3, false}}, Role::kCandidate},
      {5, {}, Role::kCandidate},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<NodeId> ids;
    for (NodeId id = 1; id <= cases[i].size; ++id) ids.push_back(id);
    TestNode n(TestConfig(1, ids));
    ASSERT_TRUE(n.raft().Campaign().ok());
    for (const auto& [from, granted] : cases[i].votes) {
      Message m = Msg(MessageType::kVoteResponse, from, 1, n.raft().term());
      m.reject = !granted;
      StepOk(n, m);
    }
    EXPECT_EQ(cases[i].want, n.raft().role()) << "case " << i;
  }
}

TEST(RaftPaper, FollowerGrantsAtMostOneVotePerTermFirstComeFirstServed) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}));
  StepOk(n, VoteMsg(2, 1, 1, 0, 0));
  StepOk(n, VoteMsg(3, 1, 1, 0, 0));
  StepOk(n, VoteMsg(2, 1, 1, 0, 0));  // a retransmission to the same candidate
  std::vector<Message> resp = Filter(n.ProcessAllReadies(), MessageType::kVoteResponse);
  ASSERT_EQ(3u, resp.size());
  EXPECT_EQ(2u, resp[0].to);
  EXPECT_FALSE(resp[0].reject);
  EXPECT_EQ(3u, resp[1].to);
  EXPECT_TRUE(resp[1].reject) << "already voted for 2 in term 1";
  EXPECT_EQ(2u, resp[2].to);
  EXPECT_FALSE(resp[2].reject) << "the same vote may be granted again";
}

TEST(RaftPaper, CandidateStepsDownOnAppendFromLeaderOfSameTerm) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Campaign().ok());
  Term t = n.raft().term();
  StepOk(n, AppendMsg(2, 1, t, 0, 0, {}, 0));
  EXPECT_EQ(Role::kFollower, n.raft().role());
  EXPECT_EQ(t, n.raft().term());
  EXPECT_EQ(2u, n.raft().leader_hint());
}

TEST(RaftPaper, CandidateStepsDownOnHeartbeatFromLeaderOfSameTerm) {  // §5.2
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Campaign().ok());
  StepOk(n, Msg(MessageType::kHeartbeat, 3, 1, n.raft().term()));
  EXPECT_EQ(Role::kFollower, n.raft().role());
  EXPECT_EQ(3u, n.raft().leader_hint());
}

int TicksUntilCampaign(uint64_t seed, NodeId id) {
  Config c = TestConfig(id, {1, 2, 3, 4, 5});
  c.random_seed = seed;
  TestNode n(c);
  for (int t = 1; t <= 4 * kElectionTicks; ++t) {
    n.raft().Tick();
    if (n.raft().role() == Role::kCandidate) return t;
  }
  return -1;
}

TEST(RaftPaper, ElectionTimeoutsAreRandomizedBetweenOneAndTwoTimeouts) {  // §5.2
  std::set<int> seen;
  for (uint64_t seed = 1; seed <= 500; ++seed) {
    int t = TicksUntilCampaign(seed, 1);
    ASSERT_GE(t, kElectionTicks);
    ASSERT_LT(t, 2 * kElectionTicks);
    seen.insert(t);
  }
  EXPECT_EQ(static_cast<size_t>(kElectionTicks), seen.size()) << "every value is reachable";
}

TEST(RaftPaper, FollowersTimeOutAtDifferentTimesSoSplitVotesAreRare) {  // §5.2
  // A split vote needs two servers to time out first in the same tick.
  int conflicts = 0;
  constexpr int kRounds = 1000;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<int> times;
    for (NodeId id = 1; id <= 5; ++id) times.push_back(TicksUntilCampaign(round, id));
    int first = *std::min_element(times.begin(), times.end());
    conflicts += std::count(times.begin(), times.end(), first) > 1;
  }
  EXPECT_LT(conflicts, kRounds * 3 / 10);
}

// --- §5.3: log replication ------------------------------------------------------------------

TEST(RaftPaper, LeaderAppendsProposalAndSendsItToFollowers) {  // §5.3
  Network net({1, 2, 3});
  net.Campaign(1);
  ASSERT_EQ(Role::kLeader, net.raft(1).role());
  Index before = net.raft(1).log().last_index();
  StatusOr<EntryId> id = net.raft(1).Propose("x");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(before + 1, id->index);
  EXPECT_EQ(net.raft(1).term(), id->term);
  EXPECT_EQ("x", net.raft(1).log().At(id->index).data);
  std::vector<Message> apps = Filter(net.node(1).ProcessAllReadies(), MessageType::kAppend);
  ASSERT_EQ(2u, apps.size());
  for (const Message& m : apps) {
    ASSERT_EQ(1u, m.entries.size());
    EXPECT_EQ("x", m.entries[0].data);
    EXPECT_EQ(before, m.index) << "prev index";
  }
}

TEST(RaftPaper, LeaderCommitsEntryOnceReplicatedOnMajority) {  // §5.3
  struct Case {
    size_t size;
    std::set<NodeId> acks;
    bool committed;
  };
  std::vector<Case> cases = {
      {1, {}, true},     {3, {}, false},       {3, {2}, true},
      {3, {2, 3}, true}, {5, {}, false},       {5, {2}, false},
      {5, {2, 3}, true}, {5, {2, 3, 4}, true}, {5, {2, 3, 4, 5}, true},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<NodeId> ids;
    for (NodeId id = 1; id <= cases[i].size; ++id) ids.push_back(id);
    TestNode n(TestConfig(1, ids));
    std::vector<NodeId> voters(ids.begin() + 1, ids.end());
    ElectByHand(n, voters);
    n.ProcessAllReadies();  // the leader's no-op is durable
    Index noop = n.raft().log().last_index();
    for (NodeId a : cases[i].acks) {
      StepOk(n, AppendResp(a, 1, n.raft().term(), noop));
    }
    n.ProcessAllReadies();
    EXPECT_EQ(cases[i].committed, n.raft().commit_index() == noop) << "case " << i;
  }
}

TEST(RaftPaper, CommittingAnEntryCommitsAllPrecedingEntries) {  // §5.3
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 2}), 2));
  ElectByHand(n, {2});
  n.ProcessAllReadies();
  StepOk(n, AppendResp(2, 1, n.raft().term(), 3));
  n.ProcessAllReadies();
  EXPECT_EQ(3u, n.raft().commit_index());
  ASSERT_EQ(3u, n.applied.size());
  EXPECT_EQ(1u, n.applied[0].index);
  EXPECT_EQ(2u, n.applied[1].index);
  EXPECT_EQ(EntryType::kNoOp, n.applied[2].type);
}

TEST(RaftPaper, FollowerAppliesEntriesOnceLeaderCommitCoversThem) {  // §5.3
  TestNode n(TestConfig(1, {1, 2, 3}));
  StepOk(n, AppendMsg(2, 1, 1, 0, 0, {MakeEntry(1, 1, "a"), MakeEntry(2, 1, "b")}, 1));
  n.ProcessAllReadies();
  EXPECT_EQ(1u, n.raft().commit_index());
  ASSERT_EQ(1u, n.applied.size());
  EXPECT_EQ("a", n.applied[0].data);
  StepOk(n, AppendMsg(2, 1, 1, 2, 1, {}, 2));
  n.ProcessAllReadies();
  ASSERT_EQ(2u, n.applied.size());
  EXPECT_EQ("b", n.applied[1].data);
}

TEST(RaftPaper, FollowerAcceptsAppendWhosePrevEntryMatches) {  // §5.3, Figure 2 rule 2
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 2}), 2));
  StepOk(n, AppendMsg(2, 1, 2, 2, 2, {MakeEntry(3, 2)}, 0));
  std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kAppendResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_FALSE(r[0].reject);
  EXPECT_EQ(3u, r[0].index);
}

TEST(RaftPaper, FollowerRejectsAppendWhosePrevLogTermMismatches) {  // §5.3, Figure 2 rule 2
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 2}), 3));
  StepOk(n, AppendMsg(2, 1, 3, 2, 3, {MakeEntry(3, 3)}, 0));
  std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kAppendResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_TRUE(r[0].reject);
  EXPECT_EQ(2u, r[0].index) << "names the rejected prev index";
  EXPECT_EQ(2u, n.raft().log().last_index());
}

TEST(RaftPaper, FollowerRejectsAppendWhosePrevIndexIsMissing) {  // §5.3, Figure 2 rule 2
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 2}), 2));
  StepOk(n, AppendMsg(2, 1, 2, 5, 2, {MakeEntry(6, 2)}, 0));
  std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kAppendResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_TRUE(r[0].reject);
  EXPECT_EQ(2u, r[0].reject_hint) << "hints at our last index so the leader skips ahead";
  EXPECT_EQ(2u, r[0].log_term);
}

TEST(RaftPaper, FollowerDeletesConflictingEntryAndAllThatFollowIt) {  // §5.3, Figure 2 rule 3
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 2, 2}), 2));
  StepOk(n, AppendMsg(2, 1, 3, 1, 1, {MakeEntry(2, 3)}, 0));
  EXPECT_EQ((std::vector<Term>{1, 3}), TermsOf(n.raft().log()));
  Ready rd = n.raft().GetReady();
  EXPECT_EQ(2u, rd.truncate_from) << "the runtime is told which persisted suffix to drop";
  ASSERT_EQ(1u, rd.entries.size());
  EXPECT_EQ(3u, rd.entries[0].term);
}

TEST(RaftPaper, FollowerKeepsEntriesAlreadyInLogAfterTheAppendedOnes) {  // Figure 2 rule 4
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 1, 1}), 1));
  // A delayed append carrying a prefix must not truncate the entries after it.
  StepOk(n, AppendMsg(2, 1, 1, 0, 0, {MakeEntry(1, 1), MakeEntry(2, 1)}, 0));
  EXPECT_EQ(3u, n.raft().log().last_index());
  std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kAppendResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_EQ(2u, r[0].index) << "acknowledges only what the message proved to match";
}

TEST(RaftPaper, FollowerCommitIsMinOfLeaderCommitAndLastNewEntry) {  // Figure 2 rule 5
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 1, 1}), 1));
  StepOk(n, AppendMsg(2, 1, 1, 1, 1, {MakeEntry(2, 1)}, 3));
  EXPECT_EQ(2u, n.raft().commit_index())
      << "entry 3 was not checked against the leader's log by this message";
}

TEST(RaftPaper, LeaderBringsFollowerLogsIntoConsistency) {  // §5.3, Figure 7
  const std::vector<Term> leader_log = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
  const std::vector<std::vector<Term>> followers = {
      {1, 1, 1, 4, 4, 5, 5, 6, 6},           // (a) missing entries
      {1, 1, 1, 4},                          // (b) missing many
      {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6},     // (c) extra uncommitted entry
      {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7},  // (d) extra entries of a later term
      {1, 1, 1, 4, 4, 4, 4},                 // (e) missing and extra
      {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3},     // (f) many extra of older terms
  };
  for (size_t i = 0; i < followers.size(); ++i) {
    Network net({});
    net.AddNode(std::make_unique<TestNode>(TestConfig(1, {1, 2, 3}),
                                           StateWith(Log(leader_log), 8, kNoNode, 10)));
    net.AddNode(
        std::make_unique<TestNode>(TestConfig(2, {1, 2, 3}), StateWith(Log(followers[i]), 7)));
    // Node 3 has an empty log, so its vote lets 1 win even when 2 refuses.
    net.AddNode(std::make_unique<TestNode>(TestConfig(3, {1, 2, 3}), StateWith({}, 7)));
    net.Campaign(1);
    ASSERT_EQ(Role::kLeader, net.raft(1).role()) << "case " << i;
    EXPECT_EQ(TermsOf(net.raft(1).log()), TermsOf(net.raft(2).log())) << "case " << i;
    EXPECT_EQ(net.raft(1).commit_index(), net.raft(2).commit_index()) << "case " << i;
  }
}

TEST(RaftPaper, LeaderNeverOverwritesOrDeletesItsOwnEntries) {  // §5.3 Leader Append-Only
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 1, 2}), 2));
  ElectByHand(n, {2});
  std::vector<Term> before = TermsOf(n.raft().log());
  // A rejection from a follower with a conflicting log, and an append from a deposed leader.
  Message rej = AppendResp(2, 1, n.raft().term(), 3);
  rej.reject = true;
  rej.reject_hint = 3;
  rej.log_term = 1;
  StepOk(n, rej);
  StepOk(n, AppendMsg(3, 1, 2, 1, 1, {MakeEntry(2, 2), MakeEntry(3, 2)}, 0));
  EXPECT_EQ(before, TermsOf(n.raft().log()));
  EXPECT_EQ(Role::kLeader, n.raft().role());
}

// --- §5.4: safety ----------------------------------------------------------------------------

TEST(RaftPaper, VoterRejectsCandidateWhoseLogIsLessUpToDate) {  // §5.4.1
  struct Case {
    std::vector<Term> voter_log;
    Index cand_index;
    Term cand_term;
    bool granted;
  };
  std::vector<Case> cases = {
      {{1}, 1, 1, true},                          // same last term, same length
      {{1}, 2, 1, true},                          // same last term, longer
      {{1, 1}, 1, 1, false},                      // same last term, shorter
      {{1}, 1, 2, true},                          // later last term wins even if shorter
      {{1, 1}, 1, 2, true},  {{2}, 1, 1, false},  // earlier last term loses even if longer
      {{2}, 2, 1, false},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log(cases[i].voter_log), 2));
    StepOk(n, VoteMsg(2, 1, 3, cases[i].cand_index, cases[i].cand_term));
    std::vector<Message> r = Filter(n.ProcessAllReadies(), MessageType::kVoteResponse);
    ASSERT_EQ(1u, r.size()) << "case " << i;
    EXPECT_EQ(cases[i].granted, !r[0].reject) << "case " << i;
  }
}

TEST(RaftPaper, LeaderOnlyCommitsCurrentTermEntriesByCounting) {  // §5.4.2, Figure 8
  // The leader of term 3 holds entries of terms 1 and 2 that may already be on a majority.
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1, 2}), 2));
  ElectByHand(n, {2});
  n.ProcessAllReadies();
  Term t = n.raft().term();
  ASSERT_EQ(3u, t);
  StepOk(n, AppendResp(2, 1, t, 2));  // a majority (1 and 2) holds entry 2 of term 2
  n.ProcessAllReadies();
  EXPECT_EQ(0u, n.raft().commit_index()) << "entry 2 is from term 2: not committed by counting";
  StepOk(n, AppendResp(2, 1, t, 3));  // the no-op of term 3 reaches the majority
  n.ProcessAllReadies();
  EXPECT_EQ(3u, n.raft().commit_index()) << "and with it everything before";
}

TEST(RaftPaper, NewLeaderAppendsNoOpOfItsTerm) {  // §8
  TestNode n(TestConfig(1, {1, 2, 3}), StateWith(Log({1}), 1));
  ElectByHand(n, {2});
  const Entry& e = n.raft().log().At(n.raft().log().last_index());
  EXPECT_EQ(2u, e.index);
  EXPECT_EQ(n.raft().term(), e.term);
  EXPECT_EQ(EntryType::kNoOp, e.type);
}

TEST(RaftPaper, ElectionRestrictionKeepsCommittedEntriesAcrossLeaders) {  // §5.4.1, §5.4.3
  Network net({1, 2, 3});
  net.Campaign(1);
  ASSERT_TRUE(net.Propose(1, "committed").ok());
  Index idx = net.raft(1).commit_index();
  ASSERT_EQ("committed", net.raft(1).log().At(idx).data);
  // Node 3 misses the next entry; it cannot become leader while 1 and 2 hold more.
  net.Isolate(3);
  ASSERT_TRUE(net.Propose(1, "later").ok());
  net.Recover();
  net.Isolate(1);
  net.Campaign(3);
  EXPECT_NE(Role::kLeader, net.raft(3).role()) << "2 refuses: 3's log is behind";
  net.Campaign(2);
  ASSERT_EQ(Role::kLeader, net.raft(2).role());
  EXPECT_EQ("later", net.raft(2).log().At(idx + 1).data);
}

// --- Figure 2, "Persistent state ... updated on stable storage before responding to RPCs" ----

TEST(RaftPaper, VoteIsDurableBeforeTheGrantIsSent) {  // Figure 2
  TestNode n(TestConfig(1, {1, 2, 3}));
  StepOk(n, VoteMsg(2, 1, 1, 0, 0));
  Ready rd = n.raft().GetReady();
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(2u, rd.hard_state->vote);
  EXPECT_TRUE(rd.messages.empty());
  ASSERT_EQ(1u, rd.messages_after_persist.size());
  EXPECT_EQ(MessageType::kVoteResponse, rd.messages_after_persist[0].type);
}

TEST(RaftPaper, CandidateTermAndSelfVoteAreDurableBeforeVoteRequestsAreSent) {  // Figure 2
  TestNode n(TestConfig(1, {1, 2, 3}));
  ASSERT_TRUE(n.raft().Campaign().ok());
  Ready rd = n.raft().GetReady();
  ASSERT_TRUE(rd.hard_state.has_value());
  EXPECT_EQ(1u, rd.hard_state->term);
  EXPECT_EQ(1u, rd.hard_state->vote);
  EXPECT_TRUE(rd.messages.empty());
  EXPECT_EQ(2u, Filter(rd.messages_after_persist, MessageType::kVote).size());
}

TEST(RaftPaper, EntriesAreDurableBeforeTheAppendIsAcknowledged) {  // Figure 2
  TestNode n(TestConfig(1, {1, 2, 3}));
  StepOk(n, AppendMsg(2, 1, 1, 0, 0, {MakeEntry(1, 1)}, 0));
  Ready rd = n.raft().GetReady();
  ASSERT_EQ(1u, rd.entries.size());
  EXPECT_TRUE(rd.messages.empty());
  ASSERT_EQ(1u, rd.messages_after_persist.size());
  EXPECT_EQ(MessageType::kAppendResponse, rd.messages_after_persist[0].type);
}

TEST(RaftPaper, CommittedEntriesAreAppliedOnlyOnceDurableLocally) {  // Figure 2
  TestNode n(TestConfig(1, {1, 2, 3}));
  StepOk(n, AppendMsg(2, 1, 1, 0, 0, {MakeEntry(1, 1)}, 1));
  Ready first = n.raft().GetReady();
  EXPECT_EQ(1u, first.entries.size());
  EXPECT_TRUE(first.committed_entries.empty()) << "entry 1 is not on our disk yet";
  n.storage.Persist(first);
  n.raft().Advance(first);
  Ready second = n.raft().GetReady();
  ASSERT_EQ(1u, second.committed_entries.size());
  EXPECT_EQ(1u, second.committed_entries[0].index);
}

TEST(RaftPaper, LeaderReplicatesBeforeItsOwnWriteButCountsItselfOnlyWhenDurable) {  // §10.2.1
  TestNode n(TestConfig(1, {1, 2, 3}));
  ElectByHand(n, {2});
  n.ProcessAllReadies();
  // Both followers match the no-op, which moves them from probing to pipelined replication.
  Index noop = n.raft().log().last_index();
  StepOk(n, AppendResp(2, 1, n.raft().term(), noop));
  StepOk(n, AppendResp(3, 1, n.raft().term(), noop));
  n.ProcessAllReadies();
  StatusOr<EntryId> id = n.raft().Propose("x");
  ASSERT_TRUE(id.ok());
  Ready rd = n.raft().GetReady();
  ASSERT_EQ(1u, rd.entries.size());
  EXPECT_EQ(2u, Filter(rd.messages, MessageType::kAppend).size())
      << "appends go out in parallel with the leader's own write";
  // Node 2 acknowledges before the leader's write completes: 1 durable copy of 3 is no quorum.
  StepOk(n, AppendResp(2, 1, n.raft().term(), id->index));
  EXPECT_LT(n.raft().commit_index(), id->index);
  n.storage.Persist(rd);
  n.raft().Advance(rd);
  EXPECT_EQ(id->index, n.raft().commit_index()) << "the leader's own durable copy completes it";
}

}  // namespace
}  // namespace tx::raft::testing
