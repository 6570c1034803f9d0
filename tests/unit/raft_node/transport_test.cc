// The sender's message coalescing (raft/node/transport.h): which adjacent messages may be
// merged, and that the merged batch means the same to the core as the original.

#include "raft/node/transport.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <vector>

#include "raft/core/raft.h"

namespace tx::raft {
namespace {

Message Append(Index prev, Term prev_term, std::vector<Entry> entries, Index commit,
               Term term = 2) {
  Message m;
  m.type = MessageType::kAppend;
  m.from = 1;
  m.to = 2;
  m.term = term;
  m.index = prev;
  m.log_term = prev_term;
  m.entries = std::move(entries);
  m.commit = commit;
  return m;
}

Entry E(Index i, Term t) { return Entry{t, i, EntryType::kNormal, fmt::format("d{}", i)}; }

Message Response(Index index, bool reject = false, Term term = 2) {
  Message m;
  m.type = MessageType::kAppendResponse;
  m.from = 2;
  m.to = 1;
  m.term = term;
  m.index = index;
  m.reject = reject;
  return m;
}

TEST(RaftCoalesce, ContiguousAppendsOfOneTermBecomeOne) {
  std::vector<Message> batch = {Append(4, 1, {E(5, 2)}, 3), Append(5, 2, {E(6, 2), E(7, 2)}, 5),
                                Append(7, 2, {E(8, 2)}, 4)};
  EXPECT_EQ(2u, CoalesceMessages(&batch));
  ASSERT_EQ(1u, batch.size());
  EXPECT_EQ(4u, batch[0].index);
  EXPECT_EQ(1u, batch[0].log_term);
  ASSERT_EQ(4u, batch[0].entries.size());
  EXPECT_EQ(8u, batch[0].entries.back().index);
  EXPECT_EQ(5u, batch[0].commit);
}

TEST(RaftCoalesce, AppendsThatDoNotContinueEachOtherStaySeparate) {
  std::vector<Message> gap = {Append(4, 1, {E(5, 2)}, 3), Append(6, 2, {E(7, 2)}, 3)};
  EXPECT_EQ(0u, CoalesceMessages(&gap));
  std::vector<Message> other_term = {Append(4, 1, {E(5, 2)}, 3), Append(5, 2, {E(6, 3)}, 3, 3)};
  EXPECT_EQ(0u, CoalesceMessages(&other_term));
  std::vector<Message> wrong_prev_term = {Append(4, 1, {E(5, 2)}, 3), Append(5, 1, {E(6, 2)}, 3)};
  EXPECT_EQ(0u, CoalesceMessages(&wrong_prev_term));
}

TEST(RaftCoalesce, SuccessfulResponsesKeepTheHighestAndRejectionsStay) {
  std::vector<Message> batch = {Response(5), Response(9), Response(7), Response(3, true),
                                Response(11)};
  CoalesceMessages(&batch);
  ASSERT_EQ(3u, batch.size());
  EXPECT_EQ(9u, batch[0].index);
  EXPECT_TRUE(batch[1].reject);
  EXPECT_EQ(11u, batch[2].index);
}

TEST(RaftCoalesce, OtherMessagesInBetweenPreventMerging) {
  Message vote;
  vote.type = MessageType::kVote;
  vote.from = 1;
  vote.to = 2;
  vote.term = 2;
  std::vector<Message> batch = {Append(4, 1, {E(5, 2)}, 3), vote, Append(5, 2, {E(6, 2)}, 3)};
  EXPECT_EQ(0u, CoalesceMessages(&batch));
  EXPECT_EQ(3u, batch.size());
}

// A follower stepping the merged Append ends with the same log and commit index as one stepping
// the originals, and its one answer acknowledges the last entry.
TEST(RaftCoalesce, FollowerReachesTheSameStateFromTheMergedAppend) {
  auto follower = [] {
    Config c;
    c.id = 2;
    c.voters = {1, 2, 3};
    InitialState s;
    s.hard_state = HardState{1, 0, 0};
    return std::move(Raft::Create(c, s)).value();
  };
  std::vector<Message> originals = {Append(0, 0, {E(1, 2), E(2, 2)}, 0), Append(2, 2, {E(3, 2)}, 2),
                                    Append(3, 2, {E(4, 2)}, 3)};
  std::vector<Message> merged = originals;
  ASSERT_EQ(2u, CoalesceMessages(&merged));

  auto a = follower();
  auto b = follower();
  for (const Message& m : originals) ASSERT_TRUE(a->Step(m).ok());
  for (const Message& m : merged) ASSERT_TRUE(b->Step(m).ok());
  EXPECT_EQ(a->log().last_index(), b->log().last_index());
  EXPECT_EQ(a->commit_index(), b->commit_index());
  EXPECT_EQ(4u, b->log().last_index());
  Ready rd = b->GetReady();
  ASSERT_EQ(1u, rd.messages_after_persist.size());
  EXPECT_EQ(MessageType::kAppendResponse, rd.messages_after_persist[0].type);
  EXPECT_EQ(4u, rd.messages_after_persist[0].index);
}

}  // namespace
}  // namespace tx::raft
