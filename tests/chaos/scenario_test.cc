// Scenarios and schedules (tools/txchaos/scenario.h): a seed replays its schedule exactly, steps
// stay inside the fault window, and every scenario names only faults the injector knows.

#include "tools/txchaos/scenario.h"

#include <gtest/gtest.h>

#include <set>

#include "tools/txchaos/thrift_frame.h"

namespace tx::chaos {
namespace {

bool SameSchedule(const std::vector<FaultStep>& a, const std::vector<FaultStep>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].at_ms != b[i].at_ms || a[i].hold_ms != b[i].hold_ms || a[i].kind != b[i].kind ||
        a[i].seed != b[i].seed) {
      return false;
    }
  }
  return true;
}

TEST(Schedule, TheSameSeedGivesTheSameSchedule) {
  const Timeline t = MakeTimeline(60'000);
  for (const Scenario& s : AllScenarios()) {
    EXPECT_TRUE(SameSchedule(PlanSchedule(s, 7, t), PlanSchedule(s, 7, t))) << s.name;
  }
}

TEST(Schedule, DifferentSeedsGiveDifferentSchedules) {
  const Scenario* s = FindScenario("mixed");
  ASSERT_NE(nullptr, s);
  const Timeline t = MakeTimeline(60'000);
  EXPECT_FALSE(SameSchedule(PlanSchedule(*s, 1, t), PlanSchedule(*s, 2, t)));
}

TEST(Schedule, StepsStayInsideTheFaultWindowAndDoNotOverlapUnlessAllowed) {
  for (int64_t duration : {5'000, 20'000, 60'000, 600'000}) {
    const Timeline t = MakeTimeline(duration);
    EXPECT_LE(t.fault_start_ms, t.fault_end_ms);
    EXPECT_LE(t.fault_end_ms, t.duration_ms);
    for (const Scenario& s : AllScenarios()) {
      for (uint64_t seed : {1, 2, 3, 99}) {
        std::vector<FaultStep> steps = PlanSchedule(s, seed, t);
        for (size_t i = 0; i < steps.size(); ++i) {
          EXPECT_GE(steps[i].at_ms, t.fault_start_ms) << s.name;
          EXPECT_LE(steps[i].at_ms + steps[i].hold_ms, t.fault_end_ms) << s.name;
          if (i > 0 && !s.overlap) {
            EXPECT_GE(steps[i].at_ms, steps[i - 1].at_ms + steps[i - 1].hold_ms) << s.name;
          }
        }
      }
    }
  }
}

TEST(Schedule, ALongerRunGetsMoreFaults) {
  const Scenario* s = FindScenario("leader-kill");
  ASSERT_NE(nullptr, s);
  EXPECT_GT(PlanSchedule(*s, 5, MakeTimeline(600'000)).size(),
            PlanSchedule(*s, 5, MakeTimeline(20'000)).size());
  EXPECT_GE(PlanSchedule(*s, 5, MakeTimeline(20'000)).size(), 3u);
}

TEST(Scenarios, NamesAreUniqueAndEveryFaultKindIsKnown) {
  const std::set<std::string> known = {"kill:leader",
                                       "kill:follower",
                                       "kill:participant",
                                       "kill:any",
                                       "pause:leader",
                                       "pause:follower",
                                       "pause:participant",
                                       "pause:any",
                                       "partition:isolate-leader",
                                       "partition:majority",
                                       "partition:one-way",
                                       "partition:participant-cut",
                                       "partition:client-cut",
                                       "flaky:drop",
                                       "flaky:delay",
                                       "flaky:dup",
                                       "flaky:all",
                                       "down:coordinators"};
  std::set<std::string> names;
  for (const Scenario& s : AllScenarios()) {
    EXPECT_TRUE(names.insert(s.name).second) << s.name;
    EXPECT_FALSE(s.description.empty()) << s.name;
    EXPECT_TRUE(s.replicas == 3 || s.replicas == 5) << s.name;
    for (const std::string& k : s.kinds) EXPECT_EQ(1u, known.count(k)) << s.name << ": " << k;
    for (const CrashPoint& c : s.crash_points) {
      EXPECT_LE(1, c.nth_min) << c.failpoint;
      EXPECT_LE(c.nth_min, c.nth_max) << c.failpoint;
    }
  }
  EXPECT_EQ(nullptr, FindScenario("no-such-scenario"));
}

TEST(SelectCrashPoints, ArmsTheNamedPointsOnly) {
  StatusOr<std::vector<CrashPoint>> chosen =
      SelectCrashPoints({"coordinator.after_decision_logged", "participant.after_prepare_durable"});
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  ASSERT_EQ(2u, chosen->size());
  EXPECT_EQ("coordinator.after_decision_logged", (*chosen)[0].failpoint);
  EXPECT_TRUE((*chosen)[0].coordinator);
  EXPECT_EQ("participant.after_prepare_durable", (*chosen)[1].failpoint);
  EXPECT_FALSE((*chosen)[1].coordinator);
  // A point with two actions (crash, and a full disk) is armed with both.
  chosen = SelectCrashPoints({"participant.batch_commit"});
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(2u, chosen->size());
}

TEST(SelectCrashPoints, AnUnknownNameIsAnErrorListingTheKnownOnes) {
  StatusOr<std::vector<CrashPoint>> chosen = SelectCrashPoints({"coordinator.after_lunch"});
  ASSERT_FALSE(chosen.ok());
  EXPECT_TRUE(chosen.status().IsInvalidArgument());
  EXPECT_NE(std::string::npos, chosen.status().message().find("coordinator.after_lunch"));
  EXPECT_NE(std::string::npos, chosen.status().message().find("wal.before_fsync"));
}

TEST(MixSeed, StreamsDiffer) {
  EXPECT_NE(MixSeed(1, 0), MixSeed(1, 1));
  EXPECT_NE(MixSeed(1, 0), MixSeed(2, 0));
  EXPECT_EQ(MixSeed(3, 4), MixSeed(3, 4));
}

TEST(ThriftFrame, ParsesAStrictBinaryHeader) {
  std::string payload = std::string("\x80\x01\x00\x01", 4) + std::string("\x00\x00\x00\x0c", 4) +
                        "raft:Deliver" + std::string("\x00\x00\x00\x2a", 4) + '\0';
  std::optional<MessageHeader> h = ParseMessageHeader(payload);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(MessageType::kCall, h->type);
  EXPECT_EQ("raft:Deliver", h->name);
  EXPECT_EQ(42, h->seqid);
  EXPECT_EQ("Deliver", MethodOf(h->name));
  EXPECT_EQ("Commit", MethodOf("Commit"));
}

TEST(ThriftFrame, RejectsWhatIsNotAStrictBinaryHeader) {
  EXPECT_FALSE(ParseMessageHeader("").has_value());
  EXPECT_FALSE(ParseMessageHeader("GET / HTTP/1.0\r\n\r\n").has_value());
  // Unknown type 9.
  EXPECT_FALSE(
      ParseMessageHeader(std::string("\x80\x01\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00", 12))
          .has_value());
  // A name longer than the payload.
  EXPECT_FALSE(
      ParseMessageHeader(std::string("\x80\x01\x00\x01\x00\x00\x10\x00", 8) + "abc").has_value());
}

TEST(ThriftFrame, LengthPrefixRoundTrips) {
  for (uint32_t n : {0u, 1u, 255u, 256u, 65'536u, 0xfffffffeu}) {
    std::string out;
    AppendFrameLength(&out, n);
    ASSERT_EQ(4u, out.size());
    EXPECT_EQ(n, ReadFrameLength(out.data()));
  }
}

}  // namespace
}  // namespace tx::chaos
