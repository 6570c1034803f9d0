// Scenario tests for replication mechanics beyond the paper's rules: per-follower flow control
// (probe / replicate / snapshot states, in-flight bounds, batching), fast back-off, snapshots
// streamed in chunks, back-pressure on proposals, and the Ready/Advance contract.

#include <gtest/gtest.h>

#include <algorithm>

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

size_t CountAppendsTo(const std::vector<Message>& msgs, NodeId to, bool with_entries) {
  return std::count_if(msgs.begin(), msgs.end(), [&](const Message& m) {
    return m.type == MessageType::kAppend && m.to == to && (!with_entries || !m.entries.empty());
  });
}

void ElectOne(Network& net) {
  net.Campaign(1);
  ASSERT_EQ(Role::kLeader, net.raft(1).role());
  ASSERT_EQ(net.raft(1).log().last_index(), net.raft(1).commit_index());
}

// --- flow control ----------------------------------------------------------------------------

TEST(FlowControl, ProbeStateSendsOneAppendUntilTheFollowerAnswers) {
  Network net({1, 2, 3});
  net.drop_if = [](const Message& m) { return m.from == 2; };  // 2 never answers
  net.Campaign(1);
  ASSERT_EQ(Role::kLeader, net.raft(1).role());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net.Propose(1, "x").ok());
  EXPECT_EQ(1u, CountAppendsTo(net.delivered, 2, false)) << "only the election's probe";
  EXPECT_EQ(Progress::State::kProbe, net.raft(1).GetStatus().progress.at(2).state);
  // A heartbeat answer would re-open the probe; 2's are lost too, so still one.
  net.Tick(1, 3 * kHeartbeatTicks);
  EXPECT_EQ(1u, CountAppendsTo(net.delivered, 2, false));
}

TEST(FlowControl, ReplicateStatePipelinesUpToMaxInflightMessages) {
  Network net({1, 2, 3}, [](Config& c) { c.max_inflight_msgs = 2; });
  ElectOne(net);
  ASSERT_EQ(Progress::State::kReplicate, net.raft(1).GetStatus().progress.at(2).state);
  net.delivered.clear();
  net.drop_if = [](const Message& m) { return m.from == 2; };  // acks from 2 are lost
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net.Propose(1, "x").ok());
  EXPECT_EQ(2u, CountAppendsTo(net.delivered, 2, true)) << "two unacknowledged, then it waits";
  EXPECT_EQ(5u, CountAppendsTo(net.delivered, 3, true)) << "node 3 acknowledges each";
}

TEST(FlowControl, ReplicateStateStopsAtMaxInflightBytes) {
  Network net({1, 2, 3}, [](Config& c) { c.max_inflight_bytes = 300; });
  ElectOne(net);
  net.delivered.clear();
  net.drop_if = [](const Message& m) { return m.from == 2; };
  std::string payload(100, 'b');  // 132 bytes with the per-entry overhead
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(net.Propose(1, payload).ok());
  // 132, 264 (< 300: one more), 396 (>= 300: full).
  EXPECT_EQ(3u, CountAppendsTo(net.delivered, 2, true));
}

TEST(FlowControl, CatchUpIsBatchedIntoMessagesOfBoundedSize) {
  Network net({1, 2, 3}, [](Config& c) { c.max_entries_bytes_per_msg = 200; });
  ElectOne(net);
  net.Isolate(3);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(net.Propose(1, std::string(50, 'c')).ok());
  net.Recover();
  net.delivered.clear();
  net.Tick(1, kHeartbeatTicks);
  std::vector<Message> apps;
  for (const Message& m : net.delivered) {
    if (m.type == MessageType::kAppend && m.to == 3 && !m.entries.empty()) apps.push_back(m);
  }
  ASSERT_GE(apps.size(), 4u) << "10 entries of 82 bytes need at least 4 messages of 200 bytes";
  for (const Message& m : apps) {
    uint64_t bytes = 0;
    for (const Entry& e : m.entries) bytes += EntryBytes(e);
    EXPECT_TRUE(bytes <= 200 || m.entries.size() == 1) << bytes;
  }
  EXPECT_EQ(TermsOf(net.raft(1).log()), TermsOf(net.raft(3).log()));
}

TEST(FlowControl, ProposalsBetweenReadiesShareOneAppendMessage) {
  Network net({1, 2, 3});
  ElectOne(net);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(net.raft(1).Propose("x").ok());
  std::vector<Message> out = net.node(1).ProcessReady();
  std::vector<Message> apps = Filter(out, MessageType::kAppend);
  ASSERT_EQ(2u, apps.size()) << "one per follower";
  EXPECT_EQ(4u, apps[0].entries.size());
}

TEST(FlowControl, HeartbeatAnswerReopensAWindowStalledByLostAppends) {
  Network net({1, 2, 3}, [](Config& c) { c.max_inflight_msgs = 1; });
  ElectOne(net);
  net.drop_if = [](const Message& m) { return m.type == MessageType::kAppend && m.to == 2; };
  ASSERT_TRUE(net.Propose(1, "lost").ok());
  ASSERT_TRUE(net.Propose(1, "waiting").ok());
  net.drop_if = nullptr;
  net.Tick(1, 2 * kHeartbeatTicks);
  EXPECT_EQ(TermsOf(net.raft(1).log()), TermsOf(net.raft(2).log()));
  EXPECT_EQ(net.raft(1).commit_index(), net.raft(2).commit_index());
}

TEST(FlowControl, RejectionHintSkipsAConflictingTermInOneRoundTrip) {  // §5.3 optimization
  InitialState leader;
  leader.hard_state = HardState{8, kNoNode, 10};
  leader.entries = Log({1, 1, 1, 4, 4, 5, 5, 6, 6, 6});
  InitialState follower;
  follower.hard_state.term = 7;
  follower.entries = Log({1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3});  // Figure 7 (f)
  InitialState empty;
  empty.hard_state.term = 7;
  Network net({});
  net.AddNode(std::make_unique<TestNode>(TestConfig(1, {1, 2, 3}), leader));
  net.AddNode(std::make_unique<TestNode>(TestConfig(2, {1, 2, 3}), follower));
  net.AddNode(std::make_unique<TestNode>(TestConfig(3, {1, 2, 3}), empty));
  net.Campaign(1);
  size_t rejections = 0;
  for (const Message& m : net.delivered) {
    if (m.type == MessageType::kAppendResponse && m.from == 2 && m.reject) ++rejections;
  }
  EXPECT_EQ(1u, rejections) << "one entry at a time would take 7";
  EXPECT_EQ(TermsOf(net.raft(1).log()), TermsOf(net.raft(2).log()));
}

// --- snapshots -------------------------------------------------------------------------------

// A three-node cluster whose leader compacted its log after `entries` proposals, with node 3
// cut off so that it must receive the snapshot.
struct SnapshotFixture {
  explicit SnapshotFixture(const Network::Tweak& tweak = nullptr) : net({1, 2, 3}, tweak) {
    net.Campaign(1);
    net.Isolate(3);
    for (char c = 'a'; c < 'f'; ++c) EXPECT_TRUE(net.Propose(1, std::string(1, c)).ok());
    Index applied = net.node(1).applied.back().index;
    data = std::make_shared<const std::string>(std::string(95, 's'));
    EXPECT_TRUE(net.raft(1).OnSnapshotCreated(applied, data).ok());
    snapshot_index = applied;
  }
  Network net;
  std::shared_ptr<const std::string> data;
  Index snapshot_index = 0;
};

TEST(Snapshot, FollowerBehindCompactionReceivesTheSnapshotInChunks) {
  SnapshotFixture f([](Config& c) { c.snapshot_chunk_bytes = 10; });
  ASSERT_EQ(f.snapshot_index + 1, f.net.raft(1).log().first_index());
  f.net.Recover();
  f.net.Tick(1, kHeartbeatTicks);
  std::vector<Message> chunks = Filter(f.net.delivered, MessageType::kSnapshot);
  ASSERT_EQ(10u, chunks.size()) << "95 bytes in chunks of 10";
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(10 * i, chunks[i].snapshot_offset);
    EXPECT_LE(chunks[i].snapshot_data.size(), 10u);
    EXPECT_EQ(i + 1 == chunks.size(), chunks[i].snapshot_done);
  }
  TestNode& n3 = f.net.node(3);
  ASSERT_TRUE(n3.restored.has_value());
  EXPECT_EQ(*f.data, *n3.restored->data);
  EXPECT_EQ(f.snapshot_index, n3.restored->metadata.index);
  EXPECT_EQ((std::vector<NodeId>{1, 2, 3}), n3.restored->metadata.configuration.voters);
  EXPECT_EQ(f.snapshot_index, n3.storage.snapshot.index) << "persisted through the Ready";
  // Replication continues with entries after the snapshot.
  ASSERT_TRUE(f.net.Propose(1, "after").ok());
  EXPECT_EQ("after", n3.applied.back().data);
}

TEST(Snapshot, ALostChunkIsResentAfterAHeartbeatWithoutProgress) {
  SnapshotFixture f([](Config& c) { c.snapshot_chunk_bytes = 10; });
  f.net.Recover();
  bool dropped = false;
  f.net.drop_if = [&](const Message& m) {
    if (m.type == MessageType::kSnapshot && m.snapshot_offset == 30 && !dropped) {
      dropped = true;
      return true;
    }
    return false;
  };
  f.net.Tick(1, 4 * kHeartbeatTicks);
  EXPECT_TRUE(dropped);
  ASSERT_TRUE(f.net.node(3).restored.has_value());
  EXPECT_EQ(*f.data, *f.net.node(3).restored->data);
}

TEST(Snapshot, FollowerRestartedMidTransferStartsOver) {
  SnapshotFixture f([](Config& c) { c.snapshot_chunk_bytes = 10; });
  f.net.Recover();
  int chunks = 0;
  f.net.drop_if = [&](const Message& m) {
    if (m.type != MessageType::kSnapshot) return false;
    if (++chunks == 4) f.net.node(3).Restart();  // loses the partial snapshot
    return false;
  };
  f.net.Tick(1, 4 * kHeartbeatTicks);
  ASSERT_TRUE(f.net.node(3).restored.has_value());
  EXPECT_EQ(*f.data, *f.net.node(3).restored->data);
}

TEST(Snapshot, LeaderMovesToItsNewerSnapshotWhenItCompactedDuringTheTransfer) {
  // Regression (sim seed 1): the follower installed the snapshot being streamed while the
  // leader compacted again; its answer did not move the leader out of snapshot state, which
  // kept resending the old snapshot for ever.
  SnapshotFixture f([](Config& c) { c.snapshot_chunk_bytes = 10; });
  f.net.Recover();
  std::vector<Message> held;
  f.net.drop_if = [&](const Message& m) {
    if (m.from == 3 && m.type == MessageType::kAppendResponse && !m.reject &&
        m.index >= f.snapshot_index) {
      held.push_back(m);
      return true;
    }
    return false;
  };
  f.net.Tick(1, kHeartbeatTicks);
  ASSERT_TRUE(f.net.node(3).restored.has_value());
  ASSERT_FALSE(held.empty()) << "node 3's answer to the first snapshot is held back";
  ASSERT_TRUE(f.net.Propose(1, "more").ok());
  Index applied = f.net.node(1).applied.back().index;
  ASSERT_TRUE(f.net.raft(1).OnSnapshotCreated(applied, f.data).ok());
  ASSERT_GT(f.net.raft(1).log().first_index(), f.snapshot_index + 1);
  f.net.drop_if = nullptr;
  f.net.Send(held);
  f.net.Tick(1, 3 * kHeartbeatTicks);
  EXPECT_EQ(f.net.raft(1).commit_index(), f.net.raft(3).commit_index());
  EXPECT_EQ(Progress::State::kReplicate, f.net.raft(1).GetStatus().progress.at(3).state);
  EXPECT_EQ(applied, f.net.node(3).restored->metadata.index) << "got the newer snapshot";
}

TEST(Snapshot, StaleAndDuplicateChunkAnswersDoNotAmplifyTraffic) {
  // Regression (sim seeds 34 and 3199): every gap answer used to rewind the window, so with
  // reordering the chunk traffic grew without bound. Feed the leader a burst of stale and
  // duplicate answers and count what it sends.
  SnapshotFixture f([](Config& c) {
    c.snapshot_chunk_bytes = 10;
    c.max_inflight_msgs = 4;
  });
  f.net.Recover();
  f.net.drop_if = [](const Message& m) { return m.type == MessageType::kSnapshot; };
  f.net.Tick(1, kHeartbeatTicks);  // the leader starts the transfer; chunks are held back
  TestNode& leader = f.net.node(1);
  Term term = leader.raft().term();
  std::vector<Message> sent;
  auto answer = [&](uint64_t offset, bool reject) {
    Message r = Msg(MessageType::kSnapshotResponse, 3, 1, term);
    r.snapshot.index = f.snapshot_index;
    r.snapshot.term = leader.raft().log().snapshot_term();
    r.snapshot_offset = offset;
    r.reject = reject;
    ASSERT_TRUE(leader.raft().Step(r).ok());
    for (Message& m : leader.ProcessAllReadies()) sent.push_back(std::move(m));
  };
  answer(20, false);  // progress: two chunks acknowledged, two more may go
  size_t after_progress = Filter(sent, MessageType::kSnapshot).size();
  EXPECT_EQ(2u, after_progress);
  for (int i = 0; i < 50; ++i) answer(i % 2 == 0 ? 10 : 20, false);  // stale and duplicates
  size_t after_noise = Filter(sent, MessageType::kSnapshot).size();
  EXPECT_LE(after_noise - after_progress, 4u) << "at most one fast retransmit of the window";
  for (int i = 0; i < 50; ++i) answer(0, true);  // a burst of "start over"
  EXPECT_LE(Filter(sent, MessageType::kSnapshot).size() - after_noise, 4u)
      << "one restart, not fifty";
}

TEST(Snapshot, DelayedChunkOfAnOldSnapshotKeepsThePartialNewOne) {
  // Regression (sim seed 242): a stale chunk of an installed snapshot wiped a partial newer
  // one, leaving the follower behind what the leader believed acknowledged.
  Config c = TestConfig(2, {1, 2, 3});
  TestNode n(c);
  auto chunk = [&](Index index, uint64_t offset, std::string data, bool done) {
    Message m = Msg(MessageType::kSnapshot, 1, 2, 1);
    m.snapshot.index = index;
    m.snapshot.term = 1;
    m.snapshot.configuration.voters = {1, 2, 3};
    m.snapshot_offset = offset;
    m.snapshot_data = std::move(data);
    m.snapshot_done = done;
    EXPECT_TRUE(n.raft().Step(m).ok());
    return n.ProcessAllReadies();
  };
  chunk(5, 0, "old", true);
  ASSERT_EQ(5u, n.raft().commit_index());
  chunk(9, 0, "new-", false);
  chunk(5, 0, "old", true);  // delayed duplicate of the installed snapshot
  std::vector<Message> r = Filter(chunk(9, 4, "part", false), MessageType::kSnapshotResponse);
  ASSERT_EQ(1u, r.size());
  EXPECT_EQ(8u, r[0].snapshot_offset) << "still holds the first 4 bytes of snapshot 9";
}

TEST(Snapshot, FollowerHoldingTheLastEntryOnlyAdvancesItsCommitIndex) {
  Config c = TestConfig(2, {1, 2, 3});
  InitialState s;
  s.hard_state.term = 1;
  s.entries = Log({1, 1, 1, 1});
  TestNode n(c, s);
  Message m = Msg(MessageType::kSnapshot, 1, 2, 1);
  m.snapshot.index = 3;
  m.snapshot.term = 1;
  m.snapshot.configuration.voters = {1, 2, 3};
  m.snapshot_data = "ignored";
  m.snapshot_done = true;
  ASSERT_TRUE(n.raft().Step(m).ok());
  EXPECT_EQ(3u, n.raft().commit_index());
  EXPECT_EQ(4u, n.raft().log().last_index()) << "log kept";
  Ready rd = n.raft().GetReady();
  EXPECT_FALSE(rd.snapshot.has_value());
}

TEST(Snapshot, SnapshotBeyondTheConfiguredLimitIsRejected) {
  Config c = TestConfig(2, {1, 2, 3});
  c.max_snapshot_bytes = 50;
  TestNode n(c);
  Message m = Msg(MessageType::kSnapshot, 1, 2, 1);
  m.snapshot.index = 3;
  m.snapshot.term = 1;
  m.snapshot_offset = 45;
  m.snapshot_data = std::string(10, 'x');
  EXPECT_TRUE(n.raft().Step(m).IsInvalidArgument());
  m.snapshot_offset = 0;
  m.snapshot_data = std::string(30, 'x');
  ASSERT_TRUE(n.raft().Step(m).ok());
  m.snapshot_offset = 30;
  m.snapshot_data = std::string(30, 'x');
  EXPECT_TRUE(n.raft().Step(m).IsInvalidArgument()) << "the continuation would exceed it";
}

TEST(Snapshot, CompactionIsBoundedByWhatWasApplied) {
  Network net({1});
  net.Campaign(1);
  ASSERT_TRUE(net.Propose(1, "x").ok());
  Index applied = net.node(1).applied.back().index;
  auto data = std::make_shared<const std::string>("s");
  EXPECT_EQ(Status::Code::kOutOfRange,
            net.raft(1).OnSnapshotCreated(applied + 1, data).status().code());
  StatusOr<SnapshotMetadata> meta = net.raft(1).OnSnapshotCreated(applied, data);
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(applied, meta->index);
  EXPECT_EQ(net.raft(1).term(), meta->term);
  EXPECT_EQ((std::vector<NodeId>{1}), meta->configuration.voters);
  EXPECT_EQ(Status::Code::kOutOfRange, net.raft(1).OnSnapshotCreated(applied, data).status().code())
      << "already compacted";
}

// --- proposals and back-pressure -------------------------------------------------------------

TEST(Propose, FollowerRefusesWithALeaderHint) {
  Network net({1, 2, 3});
  ElectOne(net);
  StatusOr<EntryId> r = net.raft(2).Propose("x");
  EXPECT_TRUE(r.status().IsUnavailable());
  EXPECT_EQ(1u, net.raft(2).leader_hint());
}

TEST(Propose, UncommittedBytesAreBounded) {
  Network net({1, 2, 3}, [](Config& c) { c.max_uncommitted_bytes = 500; });
  ElectOne(net);
  net.Isolate(1);
  int accepted = 0;
  Status last;
  for (int i = 0; i < 10; ++i) {
    StatusOr<EntryId> r = net.Propose(1, std::string(100, 'u'));
    if (!r.ok()) {
      last = r.status();
      break;
    }
    ++accepted;
  }
  EXPECT_EQ(Status::Code::kResourceExhausted, last.code()) << last.ToString();
  EXPECT_EQ(3, accepted) << "3 x 132 = 396 bytes fit under 500, a fourth does not";
  net.Recover();
  net.Tick(1, kHeartbeatTicks);
  EXPECT_TRUE(net.Propose(1, std::string(100, 'u')).ok()) << "room again once committed";
}

TEST(Propose, OversizeProposalIsRejected) {
  Network net({1}, [](Config& c) { c.max_proposal_bytes = 10; });
  net.Campaign(1);
  EXPECT_TRUE(net.raft(1).Propose(std::string(11, 'x')).status().IsInvalidArgument());
}

// --- the Ready contract ----------------------------------------------------------------------

TEST(ReadyContract, NoNewReadyWhileOneIsOutstanding) {
  Network net({1, 2, 3});
  ElectOne(net);
  ASSERT_TRUE(net.raft(1).Propose("a").ok());
  Ready rd = net.raft(1).GetReady();
  ASSERT_TRUE(net.raft(1).Propose("b").ok());
  EXPECT_FALSE(net.raft(1).HasReady());
  net.node(1).storage.Persist(rd);
  net.raft(1).Advance(rd);
  ASSERT_TRUE(net.raft(1).HasReady());
  Ready next = net.raft(1).GetReady();
  ASSERT_EQ(1u, next.entries.size());
  EXPECT_EQ("b", next.entries[0].data);
}

TEST(ReadyContract, LeaderTrafficCanBeTakenWhileAReadyIsOutstanding) {
  Network net({1, 2, 3});
  ElectOne(net);
  ASSERT_TRUE(net.raft(1).Propose("a").ok());
  Ready rd = net.raft(1).GetReady();
  ASSERT_TRUE(net.raft(1).Propose("b").ok());
  std::vector<Message> early = net.raft(1).TakeMessages();
  ASSERT_EQ(2u, Filter(early, MessageType::kAppend).size());
  EXPECT_EQ("b", early[0].entries.back().data) << "replicated before 'a' is even durable";
}

TEST(ReadyContract, CommittedEntriesCanBeTakenWhileAReadyIsOutstanding) {
  Network net({1, 2, 3});
  ElectOne(net);
  ASSERT_TRUE(net.raft(1).Propose("a").ok());
  Ready with_a = net.raft(1).GetReady();
  net.node(1).storage.Persist(with_a);
  net.raft(1).Advance(with_a);
  std::vector<Message> appends_of_a = net.raft(1).TakeMessages();
  for (Message& m : with_a.messages) appends_of_a.push_back(std::move(m));
  // "b" is being written when the followers' acknowledgements of "a" arrive.
  ASSERT_TRUE(net.raft(1).Propose("b").ok());
  Ready with_b = net.raft(1).GetReady();
  ASSERT_EQ(1u, with_b.entries.size());
  std::vector<Message> acks;
  for (Message& m : Filter(appends_of_a, MessageType::kAppend)) {
    ASSERT_TRUE(net.raft(m.to).Step(m).ok());
    for (Message& r : net.node(m.to).ProcessAllReadies()) acks.push_back(std::move(r));
  }
  for (Message& r : acks) ASSERT_TRUE(net.raft(1).Step(r).ok());
  std::vector<Entry> taken = net.raft(1).TakeCommittedEntries(1 << 20);
  ASSERT_EQ(1u, taken.size()) << "b is neither committed nor durable here";
  EXPECT_EQ("a", taken[0].data);
  EXPECT_TRUE(net.raft(1).TakeCommittedEntries(1 << 20).empty()) << "handed out once";
  net.node(1).storage.Persist(with_b);
  net.raft(1).Advance(with_b);
  while (net.raft(1).HasReady()) {
    Ready rd = net.raft(1).GetReady();
    for (const Entry& e : rd.committed_entries) EXPECT_NE("a", e.data) << "handed out again";
    net.node(1).storage.Persist(rd);
    net.raft(1).Advance(rd);
  }
}

TEST(ReadyContract, AdvancingTheWrongReadyAborts) {
  EXPECT_DEATH(
      {
        Network net({1});
        net.Campaign(1);
        ASSERT_TRUE(net.raft(1).Propose("a").ok());
        Ready rd = net.raft(1).GetReady();
        Ready wrong = rd;
        wrong.seq += 7;
        net.raft(1).Advance(wrong);
      },
      "Advance of Ready");
}

TEST(ReadyContract, TruncationOfHandedEntriesIsAnnouncedOnce) {
  Config c = TestConfig(1, {1, 2, 3});
  TestNode n(c);
  Message a = Msg(MessageType::kAppend, 2, 1, 1);
  a.entries = {MakeEntry(1, 1), MakeEntry(2, 1), MakeEntry(3, 1)};
  ASSERT_TRUE(n.raft().Step(a).ok());
  n.ProcessAllReadies();
  Message b = Msg(MessageType::kAppend, 3, 1, 2);
  b.index = 1;
  b.log_term = 1;
  b.entries = {MakeEntry(2, 2)};
  ASSERT_TRUE(n.raft().Step(b).ok());
  Ready rd = n.raft().GetReady();
  EXPECT_EQ(2u, rd.truncate_from);
  n.storage.Persist(rd);
  n.raft().Advance(rd);
  EXPECT_EQ((std::vector<Term>{1, 2}), TermsOf(n.raft().log()));
  EXPECT_EQ(2u, n.storage.LastIndex());
  EXPECT_EQ(2u, n.storage.entries[1].term);
}

}  // namespace
}  // namespace tx::raft::testing
