#include "common/status.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>

namespace tx {
namespace {

TEST(Status, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(Status::Code::kOk, s.code());
  EXPECT_EQ("", s.message());
  EXPECT_EQ("OK", s.ToString());
}

TEST(Status, ErrorCarriesCodeAndMessage) {
  Status s = Status::Corruption("bad checksum in 0001.wal at offset 42");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ("bad checksum in 0001.wal at offset 42", s.message());
  EXPECT_EQ("Corruption: bad checksum in 0001.wal at offset 42", s.ToString());
}

TEST(Status, AnnotatePrefixesMessageAndKeepsCode) {
  Status s = Status::IOError("disk gone").Annotate("open wal");
  EXPECT_TRUE(s.IsIOError());
  EXPECT_EQ("open wal: disk gone", s.message());
  EXPECT_TRUE(Status::OK().Annotate("ignored").ok());
}

TEST(Status, FromErrnoMapsNoSpaceAndNotFound) {
  EXPECT_TRUE(Status::FromErrno(ENOSPC, "write f").IsNoSpace());
  EXPECT_TRUE(Status::FromErrno(ENOENT, "open f").IsNotFound());
  EXPECT_TRUE(Status::FromErrno(EIO, "fsync f").IsIOError());
  EXPECT_NE(std::string::npos, Status::FromErrno(ENOSPC, "write f").message().find("write f: "));
}

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return Status::InvalidArgument("odd");
  return x / 2;
}

StatusOr<int> Quarter(int x) {
  TX_ASSIGN_OR_RETURN(int half, Half(x));
  TX_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

Status CheckEven(int x) {
  TX_RETURN_IF_ERROR(Half(x).status());
  return Status::OK();
}

TEST(StatusOr, HoldsValueOrError) {
  EXPECT_EQ(2, Quarter(8).value());
  EXPECT_TRUE(Quarter(6).status().IsInvalidArgument());
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(3).ok());
}

TEST(StatusOr, MovesOnlyTypes) {
  StatusOr<std::unique_ptr<int>> p = std::make_unique<int>(7);
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> owned = std::move(p).value();
  EXPECT_EQ(7, *owned);
}

TEST(StatusOrDeathTest, ValueOfErrorAborts) {
  StatusOr<int> e = Status::NotFound("txid 9");
  EXPECT_DEATH((void)e.value(), "NotFound: txid 9");
}

TEST(CheckDeathTest, FailedCheckNamesConditionAndValues) {
  int term = 3;
  EXPECT_DEATH(TX_CHECK(term == 4, "two leaders in term {}", term),
               "CHECK failed: term == 4 .*two leaders in term 3");
}

}  // namespace
}  // namespace tx
