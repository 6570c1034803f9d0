// txctl's output helpers: aligned tables, JSON (escaping, commas, nesting), ages.

#include <gtest/gtest.h>

#include "tools/txctl/output.h"

namespace tx::txctl {
namespace {

TEST(TxctlTable, PadsColumnsToTheWidestCellAndTrimsLineEnds) {
  Table t({"ID", "NAME", "NOTE"});
  t.Add({"1", "accounts-even", ""});
  t.Add({"12", "b", "x"});
  EXPECT_EQ(
      "ID  NAME           NOTE\n"
      "1   accounts-even\n"
      "12  b              x\n",
      t.Render());
}

TEST(TxctlJson, EscapesStringsAndSeparatesElements) {
  JsonWriter j;
  j.BeginObject().Key("s").String("a\"b\\c\nd\x01").Key("n").Int(-5).Key("list").BeginArray();
  j.Bool(true).Null().BeginObject().EndObject().EndArray().EndObject();
  EXPECT_EQ(R"({"s":"a\"b\\c\nd\u0001","n":-5,"list":[true,null,{}]})", j.Take());
}

TEST(TxctlJsonDeathTest, UnclosedContainerIsAProgrammerError) {
  JsonWriter j;
  j.BeginObject();
  EXPECT_DEATH((void)j.Take(), "open container");
}

TEST(TxctlAge, ReadableUnits) {
  EXPECT_EQ("0ms", FormatAge(-3));
  EXPECT_EQ("850ms", FormatAge(850));
  EXPECT_EQ("12.3s", FormatAge(12'345));
  EXPECT_EQ("4m05s", FormatAge(245'000));
  EXPECT_EQ("2h13m", FormatAge((2 * 3600 + 13 * 60) * 1000));
}

}  // namespace
}  // namespace tx::txctl
