// Lock key encoding and the prepared record's BLOB codecs.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "participant/lock_keys.h"
#include "participant/record_codec.h"

namespace tx::participant {
namespace {

TableInfo Table(std::string name, std::vector<KeyCollation> pk_collations) {
  TableInfo t;
  t.name = std::move(name);
  t.has_primary_key = true;
  t.primary_key.name = "pk";
  for (size_t i = 0; i < pk_collations.size(); ++i) {
    t.columns.push_back(fmt::format("c{}", i));
    t.primary_key.columns.push_back(static_cast<int>(i));
    t.primary_key.collations.push_back(pk_collations[i]);
  }
  return t;
}

TEST(LockKeys, RowKeysAreCaseInsensitiveInTheTableName) {
  TableInfo a = Table("Accounts", {KeyCollation::kBinary});
  TableInfo b = Table("accounts", {KeyCollation::kBinary});
  EXPECT_EQ(RowLockKey(a, {int64_t{7}}), RowLockKey(b, {int64_t{7}}));
  EXPECT_NE(RowLockKey(a, {int64_t{7}}), RowLockKey(a, {int64_t{8}}));
}

TEST(LockKeys, IntegralRealAndIntegerShareAKey) {
  // SQLite's indexes compare 1 and 1.0 as equal, so they must collide.
  TableInfo t = Table("t", {KeyCollation::kBinary});
  EXPECT_EQ(RowLockKey(t, {int64_t{1}}), RowLockKey(t, {1.0}));
  EXPECT_NE(RowLockKey(t, {int64_t{1}}), RowLockKey(t, {1.5}));
  // TEXT '1' is a different value from INTEGER 1.
  EXPECT_NE(RowLockKey(t, {int64_t{1}}), RowLockKey(t, {std::string("1")}));
  EXPECT_NE(RowLockKey(t, {std::string("x")}), RowLockKey(t, {Blob{"x"}}));
}

TEST(LockKeys, CollationsNormalizeText) {
  TableInfo nocase = Table("t", {KeyCollation::kNoCase});
  EXPECT_EQ(RowLockKey(nocase, {std::string("Alice")}), RowLockKey(nocase, {std::string("aLICE")}));
  TableInfo binary = Table("t", {KeyCollation::kBinary});
  EXPECT_NE(RowLockKey(binary, {std::string("Alice")}), RowLockKey(binary, {std::string("alice")}));
  TableInfo rtrim = Table("t", {KeyCollation::kRtrim});
  EXPECT_EQ(RowLockKey(rtrim, {std::string("a  ")}), RowLockKey(rtrim, {std::string("a")}));
}

TEST(LockKeys, CompositeKeysDoNotCollideAcrossBoundaries) {
  TableInfo t = Table("t", {KeyCollation::kBinary, KeyCollation::kBinary});
  EXPECT_NE(RowLockKey(t, {std::string("ab"), std::string("c")}),
            RowLockKey(t, {std::string("a"), std::string("bc")}));
}

TEST(LockKeys, IndexKeysAreDistinctFromRowKeysAndPerIndex) {
  TableInfo t = Table("t", {KeyCollation::kBinary});
  KeyIndex email{"idx_email", {0}, {KeyCollation::kBinary}, false};
  KeyIndex other{"idx_other", {0}, {KeyCollation::kBinary}, false};
  EXPECT_NE(RowLockKey(t, {int64_t{1}}), IndexLockKey(t, email, {int64_t{1}}));
  EXPECT_NE(IndexLockKey(t, email, {int64_t{1}}), IndexLockKey(t, other, {int64_t{1}}));
  KeyIndex whole{"ix", {}, {}, true};
  EXPECT_EQ(IndexLockKey(t, whole, {}), IndexLockKey(t, whole, {}));
}

TEST(LockKeys, DescribeNamesTheRowOrKey) {
  TableInfo t = Table("Accounts", {KeyCollation::kBinary});
  EXPECT_EQ("row accounts(7)", DescribeLockKey(RowLockKey(t, {int64_t{7}})));
  KeyIndex email{"idx_email", {0}, {KeyCollation::kNoCase}, false};
  EXPECT_EQ("key accounts.idx_email('a@b')",
            DescribeLockKey(IndexLockKey(t, email, {std::string("A@B")})));
  EXPECT_EQ("<malformed lock key>", DescribeLockKey("Rno-terminator"));
}

TEST(RecordCodec, TxnInfoRoundTrips) {
  TxnInfo info{Protocol::kThreePhase, {{"a", "127.0.0.1:1"}, {"b", "[::1]:2"}}};
  StatusOr<TxnInfo> back = DecodeTxnInfo(EncodeTxnInfo(info));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(info, *back);
}

TEST(RecordCodec, LocksRoundTrip) {
  std::vector<LockRequest> locks = {{std::string("Ra\0x", 4), LockMode::kExclusive},
                                    {"Ub", LockMode::kShared}};
  StatusOr<std::vector<LockRequest>> back = DecodeLocks(EncodeLocks(locks));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(locks, *back);
}

TEST(RecordCodec, EveryTruncationIsCorruptionNotACrash) {
  std::string info = EncodeTxnInfo({Protocol::kTwoPhase, {{"name", "h:1"}}});
  for (size_t n = 0; n < info.size(); ++n) {
    EXPECT_TRUE(DecodeTxnInfo(info.substr(0, n)).status().IsCorruption()) << n;
  }
  std::string locks = EncodeLocks({{"key", LockMode::kExclusive}});
  for (size_t n = 0; n < locks.size(); ++n) {
    EXPECT_TRUE(DecodeLocks(locks.substr(0, n)).status().IsCorruption()) << n;
  }
  EXPECT_TRUE(DecodeLocks(locks + "x").status().IsCorruption());
  std::string bad_mode = locks;
  bad_mode[5] = 9;
  EXPECT_TRUE(DecodeLocks(bad_mode).status().IsCorruption());
  std::string huge_count = locks;
  huge_count[1] = '\x7f';
  EXPECT_TRUE(DecodeLocks(huge_count).status().IsCorruption());
}

}  // namespace
}  // namespace tx::participant
