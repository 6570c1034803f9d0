// RaftLog (the in-memory log with its persistence bookkeeping) and the message-level helpers:
// configuration-change encoding and Configuration validation.

#include "raft/core/raft_log.h"

#include <gtest/gtest.h>

#include "tests/unit/raft/raft_test_util.h"

namespace tx::raft::testing {
namespace {

TEST(RaftLog, TermAtCoversTheSnapshotBaseButNotTheCompactedPrefix) {
  RaftLog log(5, 2, {MakeEntry(6, 2), MakeEntry(7, 3)}, 5);
  EXPECT_FALSE(log.TermAt(4).has_value());
  EXPECT_EQ(2u, *log.TermAt(5));
  EXPECT_EQ(3u, *log.TermAt(7));
  EXPECT_FALSE(log.TermAt(8).has_value());
  EXPECT_EQ(6u, log.first_index());
  EXPECT_EQ(7u, log.last_index());
  EXPECT_EQ(3u, log.last_term());
}

TEST(RaftLog, FindConflictReturnsTheFirstDifferingOrNewIndex) {
  RaftLog log(0, 0, Log({1, 2, 3}), 0);
  EXPECT_EQ(0u, log.FindConflict({}));
  EXPECT_EQ(0u, log.FindConflict({MakeEntry(1, 1), MakeEntry(2, 2)}));
  EXPECT_EQ(4u, log.FindConflict({MakeEntry(3, 3), MakeEntry(4, 4)}));
  EXPECT_EQ(2u, log.FindConflict({MakeEntry(1, 1), MakeEntry(2, 4), MakeEntry(3, 4)}));
}

TEST(RaftLog, FindConflictByTermSkipsAWholeTerm) {
  RaftLog log(0, 0, Log({1, 1, 2, 2, 2, 4}), 0);
  EXPECT_EQ((std::pair<Index, Term>{5, 2}), log.FindConflictByTerm(6, 3));
  EXPECT_EQ((std::pair<Index, Term>{2, 1}), log.FindConflictByTerm(5, 1));
  EXPECT_EQ((std::pair<Index, Term>{6, 4}), log.FindConflictByTerm(9, 5)) << "clamped to last";
  EXPECT_EQ((std::pair<Index, Term>{0, 0}), log.FindConflictByTerm(6, 0));
}

TEST(RaftLog, SliceStopsAtTheByteLimitButReturnsAtLeastOneEntry) {
  RaftLog log(0, 0, {MakeEntry(1, 1, std::string(100, 'a')), MakeEntry(2, 1, "b")}, 0);
  EXPECT_EQ(1u, log.Slice(1, 3, 10).size()) << "one oversize entry still goes";
  EXPECT_EQ(1u, log.Slice(1, 3, 140).size());
  EXPECT_EQ(2u, log.Slice(1, 3, 1000).size());
  EXPECT_TRUE(log.Slice(2, 2, 1000).empty());
}

TEST(RaftLog, TruncatingHandedEntriesIsReportedAndLowersTheStableIndex) {
  RaftLog log(0, 0, {}, 0);
  log.Append(MakeEntry(1, 1));
  log.Append(MakeEntry(2, 1));
  log.Append(MakeEntry(3, 1));
  Index truncate_from = 99;
  EXPECT_EQ(3u, log.TakeUnhanded(&truncate_from).size());
  EXPECT_EQ(0u, truncate_from);
  log.StableTo(3, 1);
  EXPECT_EQ(3u, log.stable_index());
  log.TruncateAndAppend({MakeEntry(2, 2)});
  EXPECT_EQ(1u, log.stable_index());
  EXPECT_EQ(2u, log.truncated_from());
  std::vector<Entry> out = log.TakeUnhanded(&truncate_from);
  EXPECT_EQ(2u, truncate_from);
  ASSERT_EQ(1u, out.size());
  EXPECT_EQ(2u, out[0].term);
}

TEST(RaftLog, StableToIgnoresAnEntryThatWasReplacedMeanwhile) {
  RaftLog log(0, 0, {}, 0);
  log.Append(MakeEntry(1, 1));
  log.Append(MakeEntry(2, 1));
  Index t = 0;
  (void)log.TakeUnhanded(&t);
  log.TruncateAndAppend({MakeEntry(2, 2)});  // before the write of (2, term 1) completes
  log.StableTo(2, 1);
  EXPECT_EQ(0u, log.stable_index()) << "(2, term 1) is no longer in the log";
}

TEST(RaftLog, CompactionKeepsTheTermOfTheNewBase) {
  RaftLog log(0, 0, Log({1, 2, 3}), 3);
  log.CompactTo(2);
  EXPECT_EQ(2u, log.snapshot_index());
  EXPECT_EQ(2u, log.snapshot_term());
  EXPECT_EQ(3u, log.first_index());
  EXPECT_EQ(3u, *log.TermAt(3));
}

TEST(RaftLog, RestoreReplacesEverything) {
  RaftLog log(0, 0, Log({1, 1}), 1);
  log.RestoreSnapshot(10, 3);
  EXPECT_EQ(10u, log.commit());
  EXPECT_EQ(10u, log.last_index());
  EXPECT_EQ(3u, log.last_term());
  EXPECT_FALSE(log.HasUnhanded());
}

TEST(RaftLogDeathTest, TruncatingACommittedEntryAborts) {
  RaftLog log(0, 0, Log({1, 1}), 2);
  EXPECT_DEATH(log.TruncateAndAppend({MakeEntry(2, 2)}), "conflicts with committed entry");
}

TEST(RaftLogDeathTest, TermsGoingBackwardsAbort) {
  RaftLog log(0, 0, Log({2}), 0);
  EXPECT_DEATH(log.Append(MakeEntry(2, 1)), "append of term 1 after term 2");
}

TEST(ConfChangeEncoding, RoundTrips) {
  ConfChangeEntry e{{ConfChangeType::kPromoteLearner, 7}, {{1, 2, 7}, {9}}};
  StatusOr<ConfChangeEntry> d = DecodeConfChange(EncodeConfChange(e));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(e, *d);
}

TEST(ConfChangeEncoding, MalformedInputIsAnErrorNotACrash) {
  std::string good = EncodeConfChange({{ConfChangeType::kAddVoter, 4}, {{1, 2, 3, 4}, {}}});
  for (size_t len = 0; len < good.size(); ++len) {
    EXPECT_TRUE(DecodeConfChange(good.substr(0, len)).status().IsInvalidArgument()) << len;
  }
  EXPECT_TRUE(DecodeConfChange(good + "x").status().IsInvalidArgument()) << "trailing bytes";
  std::string bad_version = good;
  bad_version[0] = 9;
  EXPECT_TRUE(DecodeConfChange(bad_version).status().IsInvalidArgument());
  std::string bad_type = good;
  bad_type[1] = 42;
  EXPECT_TRUE(DecodeConfChange(bad_type).status().IsInvalidArgument());
  // A member count beyond the bound is refused before any allocation.
  std::string huge = good.substr(0, 10) + std::string("\xff\xff\xff\x7f", 4);
  EXPECT_TRUE(DecodeConfChange(huge).status().IsInvalidArgument());
  // Duplicates in the encoded configuration.
  std::string dup = EncodeConfChange({{ConfChangeType::kAddVoter, 4}, {{1, 1}, {}}});
  EXPECT_TRUE(DecodeConfChange(dup).status().IsInvalidArgument());
}

TEST(Configuration, NormalizeSortsAndRejectsOverlapDuplicatesAndZero) {
  Configuration c{{3, 1, 2}, {5, 4}};
  ASSERT_TRUE(c.Normalize().ok());
  EXPECT_EQ((std::vector<NodeId>{1, 2, 3}), c.voters);
  EXPECT_EQ((std::vector<NodeId>{4, 5}), c.learners);
  EXPECT_TRUE(c.IsVoter(2));
  EXPECT_TRUE(c.IsLearner(5));
  EXPECT_FALSE(c.IsVoter(5));
  Configuration overlap{{1, 2}, {2}};
  EXPECT_TRUE(overlap.Normalize().IsInvalidArgument());
  Configuration dup{{1, 1}, {}};
  EXPECT_TRUE(dup.Normalize().IsInvalidArgument());
  Configuration zero{{0, 1}, {}};
  EXPECT_TRUE(zero.Normalize().IsInvalidArgument());
}

TEST(DescribeMessage, NamesTheFieldsThatMatter) {
  Message m;
  m.type = MessageType::kAppend;
  m.from = 2;
  m.to = 3;
  m.term = 5;
  m.index = 7;
  m.log_term = 4;
  m.entries = {MakeEntry(8, 5), MakeEntry(9, 5)};
  m.commit = 6;
  EXPECT_EQ("2->3 Append t5 prev=(7,4) n=2 [8..9] commit=6", DescribeMessage(m));
}

}  // namespace
}  // namespace tx::raft::testing
