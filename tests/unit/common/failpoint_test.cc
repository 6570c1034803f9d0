#include "common/failpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

namespace tx {
namespace {

using namespace std::chrono_literals;

Status StepThatMayFail() {
  TX_FAILPOINT_RETURN_IF_ERROR("test.step");
  return Status::OK();
}

StatusOr<int> ComputeThatMayFail() {
  TX_FAILPOINT_RETURN_IF_ERROR("test.compute");
  return 42;
}

int PlainSite() {
  TX_FAILPOINT("test.plain");
  return 7;
}

class FailPointTest : public ::testing::Test {
 protected:
  void TearDown() override { DisarmAllFailPoints(); }
};

std::string SpecOf(std::string_view name) {
  for (const FailPointInfo& info : ListFailPoints()) {
    if (info.name == name) return info.spec;
  }
  return "<unknown>";
}

TEST_F(FailPointTest, UnarmedSitesDoNothing) {
  EXPECT_TRUE(StepThatMayFail().ok());
  EXPECT_EQ(42, *ComputeThatMayFail());
  EXPECT_EQ(7, PlainSite());
  EXPECT_EQ(0u, failpoint_internal::g_armed_count.load());
}

TEST_F(FailPointTest, ErrorReturnsInjectedStatusFromEnclosingFunction) {
  ASSERT_TRUE(ArmFailPoint("test.step", "error").ok());
  Status s = StepThatMayFail();
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ("injected by failpoint test.step", s.message());
  // Only the armed name fires.
  EXPECT_EQ(42, *ComputeThatMayFail());
  EXPECT_EQ(1u, FailPointFireCount("test.step"));
}

TEST_F(FailPointTest, ErrorCodeIsConfigurableAndWorksForStatusOr) {
  ASSERT_TRUE(ArmFailPoint("test.compute", "error(NoSpace)").ok());
  auto r = ComputeThatMayFail();
  EXPECT_TRUE(r.status().IsNoSpace()) << r.status().ToString();
}

TEST_F(FailPointTest, StatusExpressionForm) {
  ASSERT_TRUE(ArmFailPoint("test.expr", "error(Unavailable)").ok());
  Status s = TX_FAILPOINT_STATUS("test.expr");
  EXPECT_TRUE(s.IsUnavailable());
  DisarmFailPoint("test.expr");
  EXPECT_TRUE(TX_FAILPOINT_STATUS("test.expr").ok());
}

TEST_F(FailPointTest, PlainSiteIgnoresErrorAction) {
  ASSERT_TRUE(ArmFailPoint("test.plain", "error").ok());
  EXPECT_EQ(7, PlainSite());
  EXPECT_EQ(7, PlainSite());
  EXPECT_EQ(0u, FailPointFireCount("test.plain"));
}

TEST_F(FailPointTest, NthFiresOnNthHitOnlyThenDisarms) {
  ASSERT_TRUE(ArmFailPoint("test.step", "error,nth=3").ok());
  std::vector<bool> failed;
  for (int i = 0; i < 6; ++i) failed.push_back(!StepThatMayFail().ok());
  EXPECT_EQ((std::vector<bool>{false, false, true, false, false, false}), failed);
  EXPECT_EQ("off", SpecOf("test.step"));
  EXPECT_EQ(0u, failpoint_internal::g_armed_count.load());  // back on the fast path
}

TEST_F(FailPointTest, SkipThenFireEveryTime) {
  ASSERT_TRUE(ArmFailPoint("test.step", "error, skip=2").ok());
  std::vector<bool> failed;
  for (int i = 0; i < 5; ++i) failed.push_back(!StepThatMayFail().ok());
  EXPECT_EQ((std::vector<bool>{false, false, true, true, true}), failed);
}

TEST_F(FailPointTest, TimesLimitsFires) {
  ASSERT_TRUE(ArmFailPoint("test.step", "error,times=2").ok());
  int failures = 0;
  for (int i = 0; i < 10; ++i) failures += StepThatMayFail().ok() ? 0 : 1;
  EXPECT_EQ(2, failures);
  EXPECT_EQ(2u, FailPointFireCount("test.step"));
}

TEST_F(FailPointTest, RearmingRestartsCounts) {
  ASSERT_TRUE(ArmFailPoint("test.step", "error,nth=2").ok());
  EXPECT_TRUE(StepThatMayFail().ok());
  ASSERT_TRUE(ArmFailPoint("test.step", "error,nth=2").ok());
  EXPECT_TRUE(StepThatMayFail().ok());  // hit 1 again, not hit 2
  EXPECT_FALSE(StepThatMayFail().ok());
}

std::vector<bool> FirePattern(uint64_t seed, int hits) {
  SetFailPointSeed(seed);
  TX_CHECK(ArmFailPoint("test.step", "error,prob=0.3").ok());
  std::vector<bool> pattern;
  for (int i = 0; i < hits; ++i) pattern.push_back(!StepThatMayFail().ok());
  return pattern;
}

TEST_F(FailPointTest, ProbabilityIsRoughlyRightAndReplayableFromSeed) {
  std::vector<bool> a = FirePattern(42, 2000);
  std::vector<bool> b = FirePattern(42, 2000);
  std::vector<bool> c = FirePattern(43, 2000);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  long fires = std::count(a.begin(), a.end(), true);
  EXPECT_GT(fires, 480);  // mean 600, standard deviation about 20
  EXPECT_LT(fires, 720);
}

TEST_F(FailPointTest, SleepDelaysTheHittingThread) {
  ASSERT_TRUE(ArmFailPoint("test.plain", "sleep(30)").ok());
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(7, PlainSite());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  EXPECT_EQ(1u, FailPointFireCount("test.plain"));
}

TEST_F(FailPointTest, CallbackCanHoldAThreadAtTheSite) {
  std::atomic<bool> reached{false};
  std::atomic<bool> release{false};
  ScopedFailPoint fp("test.plain", [&] {
    reached = true;
    while (!release) std::this_thread::yield();
  });
  std::atomic<bool> returned{false};
  std::thread t([&] {
    PlainSite();
    returned = true;
  });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!reached && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  ASSERT_TRUE(reached.load());
  EXPECT_FALSE(returned.load());  // held inside the callback until released
  release = true;
  t.join();
  EXPECT_TRUE(returned.load());
}

TEST_F(FailPointTest, ScopedFailPointDisarmsOnExit) {
  {
    ScopedFailPoint fp("test.step", "error");
    EXPECT_FALSE(StepThatMayFail().ok());
  }
  EXPECT_TRUE(StepThatMayFail().ok());
  EXPECT_EQ(0u, failpoint_internal::g_armed_count.load());
}

TEST_F(FailPointTest, ArmingAnUnrelatedNameLeavesSitesAlone) {
  ASSERT_TRUE(ArmFailPoint("test.elsewhere", "crash").ok());
  EXPECT_TRUE(StepThatMayFail().ok());
  EXPECT_EQ(7, PlainSite());
}

TEST_F(FailPointTest, ListParsesAndArmsEveryItem) {
  ASSERT_TRUE(ArmFailPoints(" test.step=error(TimedOut) ; test.compute=error,nth=2;").ok());
  EXPECT_TRUE(StepThatMayFail().IsTimedOut());
  EXPECT_TRUE(ComputeThatMayFail().ok());
  EXPECT_FALSE(ComputeThatMayFail().ok());
  EXPECT_EQ("error(TimedOut)", SpecOf("test.step"));
}

TEST_F(FailPointTest, BadListArmsNothing) {
  Status s = ArmFailPoints("test.step=error;test.compute=explode");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(std::string::npos, s.message().find("test.compute")) << s.ToString();
  EXPECT_NE(std::string::npos, s.message().find("unknown action 'explode'")) << s.ToString();
  EXPECT_TRUE(StepThatMayFail().ok());
}

TEST_F(FailPointTest, RejectsBadNamesAndSpecs) {
  struct Case {
    const char* name;
    const char* spec;
    const char* message;
  };
  const Case cases[] = {
      {"", "crash", "bad failpoint name"},
      {"Upper.Case", "crash", "bad failpoint name"},
      {"has space", "crash", "bad failpoint name"},
      {"ok", "", "unknown action ''"},
      {"ok", "crash(1)", "takes no argument"},
      {"ok", "error(Bogus)", "unknown Status code 'Bogus'"},
      {"ok", "error(OK", "unbalanced parenthesis"},
      {"ok", "sleep", "sleep needs milliseconds"},
      {"ok", "sleep(-1)", "sleep needs milliseconds"},
      {"ok", "sleep(600001)", "sleep needs milliseconds"},
      {"ok", "crash,nth=0", "nth counts from 1"},
      {"ok", "crash,times=0", "times must be at least 1"},
      {"ok", "crash,nth=2,times=3", "cannot be combined"},
      {"ok", "crash,prob=0", "not in (0, 1]"},
      {"ok", "crash,prob=1.5", "not in (0, 1]"},
      {"ok", "crash,prob=nan", "not in (0, 1]"},
      {"ok", "crash,often=1", "unknown modifier 'often'"},
      {"ok", "crash,nth", "lacks '='"},
      {"ok", "crash,skip=x", "not a non-negative integer"},
      {"ok", "off,nth=1", "off takes no modifiers"},
  };
  for (const Case& c : cases) {
    Status s = ArmFailPoint(c.name, c.spec);
    EXPECT_TRUE(s.IsInvalidArgument()) << c.name << "=" << c.spec << ": " << s.ToString();
    EXPECT_NE(std::string::npos, s.message().find(c.message))
        << c.name << "=" << c.spec << ": " << s.ToString();
  }
  EXPECT_TRUE(ArmFailPoints("no_equals_sign").IsInvalidArgument());
  EXPECT_EQ(0u, failpoint_internal::g_armed_count.load());
}

TEST_F(FailPointTest, ArmsFromEnvironment) {
  ASSERT_EQ(0, ::setenv("TX_FAILPOINTS", "test.step=error(Aborted)", 1));
  ASSERT_EQ(0, ::setenv("TX_FAILPOINTS_SEED", "7", 1));
  ASSERT_TRUE(ArmFailPointsFromEnv().ok());
  EXPECT_EQ(Status::Code::kAborted, StepThatMayFail().code());
  ASSERT_EQ(0, ::setenv("TX_FAILPOINTS_SEED", "seven", 1));
  EXPECT_TRUE(ArmFailPointsFromEnv().IsInvalidArgument());
  ASSERT_EQ(0, ::setenv("TX_FAILPOINTS_SEED", "7", 1));
  ASSERT_EQ(0, ::setenv("TX_FAILPOINTS", "test.step=bogus", 1));
  Status s = ArmFailPointsFromEnv();
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(std::string::npos, s.message().find("TX_FAILPOINTS")) << s.ToString();
  ::unsetenv("TX_FAILPOINTS");
  ::unsetenv("TX_FAILPOINTS_SEED");
}

TEST_F(FailPointTest, ConcurrentHitsFireExactlyTimesAllowed) {
  constexpr int kThreads = 4;
#if defined(TX_SANITIZE_BUILD)
  constexpr int kHitsPerThread = 5000;
#else
  constexpr int kHitsPerThread = 50000;
#endif
  ASSERT_TRUE(ArmFailPoint("test.step", "error,skip=1000,times=100").ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kHitsPerThread; ++i) {
        if (!StepThatMayFail().ok()) failures.fetch_add(1);
      }
    });
  }
  // Arming and disarming another failpoint meanwhile must not disturb this one.
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(ArmFailPoint("test.other", "error").ok());
    DisarmFailPoint("test.other");
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(100, failures.load());
  EXPECT_EQ(0u, failpoint_internal::g_armed_count.load());
}

TEST_F(FailPointTest, RegistryIsBounded) {
  Status last;
  size_t armed = 0;
  for (size_t i = 0; i <= kMaxFailPoints; ++i) {
    last = ArmFailPoint(fmt::format("test.many{}", i), "error");
    if (!last.ok()) break;
    ++armed;
  }
  EXPECT_EQ(Status::Code::kResourceExhausted, last.code()) << last.ToString();
  EXPECT_LE(armed, kMaxFailPoints);
  // Known names can still be re-armed.
  EXPECT_TRUE(ArmFailPoint("test.many0", "off").ok());
}

// The death tests fork ("fast" style) so that the child sees the parent's temporary directory.
TEST(FailPointDeathTest, CrashExitsAtOnceWithoutFlushingBufferedOutput) {
  GTEST_FLAG_SET(death_test_style, "fast");
  testing::TempDir dir;
  std::string path = dir.path() + "/buffered";
  EXPECT_EXIT(
      {
        std::FILE* f = std::fopen(path.c_str(), "w");
        std::fputs("written but never flushed", f);  // stays in stdio's buffer
        TX_CHECK(ArmFailPoint("test.plain", "crash").ok());
        PlainSite();
        std::fclose(f);
        std::exit(0);
      },
      ::testing::ExitedWithCode(kFailPointCrashExitCode), "failpoint test.plain: crash");
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  EXPECT_EQ("", contents.str());  // like kill -9: the stdio buffer died with the process
}

TEST(FailPointDeathTest, CrashOnNthHit) {
  GTEST_FLAG_SET(death_test_style, "fast");
  EXPECT_EXIT(
      {
        TX_CHECK(ArmFailPoint("test.plain", "crash,nth=3").ok());
        PlainSite();
        PlainSite();
        std::fprintf(stderr, "survived two hits\n");
        PlainSite();
        std::exit(0);
      },
      ::testing::ExitedWithCode(kFailPointCrashExitCode), "survived two hits");
}

TEST(FailPointDeathTest, InvalidNameAtSiteIsAProgrammerError) {
  EXPECT_DEATH(
      {
        TX_CHECK(ArmFailPoint("test.x", "crash").ok());  // make sites evaluate
        TX_FAILPOINT("Bad Name");
      },
      "invalid failpoint name 'Bad Name' in code");
}

}  // namespace
}  // namespace tx
