#include "tools/txchaos/scenario.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <random>

namespace tx::chaos {

std::vector<CrashPoint> AllCrashPoints() {
  // nth ranges follow how often each point is hit: per transaction on the leader (prepare,
  // decision), per fsync or Raft batch on every replica, per durable batch at participants,
  // per snapshot (rare: txchaos snapshots every 2,000 entries).
  return {
      {"coordinator.before_prepare_sent", true, 20, 300},
      {"coordinator.after_prepare_sent", true, 20, 300},
      {"coordinator.after_decision_logged", true, 10, 200},
      {"coordinator.before_phase_two", true, 10, 200},
      {"raft.node.before_persist", true, 50, 1500},
      {"raft.node.after_persist", true, 50, 1500},
      {"raft.node.before_apply", true, 50, 1500},
      {"raft.storage.after_snapshot_file", true, 1, 2},
      {"wal.before_fsync", true, 50, 1500},
      {"participant.after_prepare_durable", false, 10, 200},
      {"participant.batch_commit", false, 20, 400},
      // A full disk at a participant: the batch is rolled back and its calls fail UNAVAILABLE
      // (not a crash); bounded by "times" so the agent recovers by itself.
      {"participant.batch_commit", false, 5, 50, "error(NoSpace)"},
  };
}

StatusOr<std::vector<CrashPoint>> SelectCrashPoints(const std::vector<std::string>& names) {
  const std::vector<CrashPoint> all = AllCrashPoints();
  std::vector<CrashPoint> out;
  for (const std::string& name : names) {
    size_t before = out.size();
    for (const CrashPoint& p : all) {
      if (p.failpoint == name) out.push_back(p);  // both actions of a point, if it has two
    }
    if (out.size() == before) {
      std::vector<std::string> known;
      for (const CrashPoint& p : all) {
        if (known.empty() || known.back() != p.failpoint) known.push_back(p.failpoint);
      }
      return Status::InvalidArgument(
          fmt::format("unknown crash point '{}' (known: {})", name, fmt::join(known, ", ")));
    }
  }
  return out;
}

namespace {

std::vector<Scenario> MakeScenarios() {
  std::vector<Scenario> all;
  {
    Scenario s;
    s.name = "leader-kill";
    s.description = "SIGKILL the Raft leader, restart it after a while; checks failover time";
    s.kinds = {"kill:leader"};
    s.hold_ms_min = 300;
    s.hold_ms_max = 2000;
    s.gap_ms_min = 1000;
    s.gap_ms_max = 2500;
    s.measure_failover = true;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "follower-kill";
    s.description = "SIGKILL a follower replica, restart it (it catches up, maybe by snapshot)";
    s.kinds = {"kill:follower"};
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "participant-kill";
    s.description = "SIGKILL a participant under load (often between its YES and the outcome)";
    s.kinds = {"kill:participant"};
    s.hold_ms_min = 300;
    s.hold_ms_max = 2500;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "kill-any";
    s.description = "SIGKILL any process (leader, follower, participant), restart it";
    s.kinds = {"kill:any"};
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "pause";
    s.description = "SIGSTOP the leader, a follower or a participant, SIGCONT it later";
    s.kinds = {"pause:leader", "pause:follower", "pause:participant"};
    s.hold_ms_min = 300;
    s.hold_ms_max = 3000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "partition-leader";
    s.description = "cut the leader off from everyone (replicas, participants, clients), heal";
    s.kinds = {"partition:isolate-leader"};
    s.hold_ms_min = 1000;
    s.hold_ms_max = 4000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "partition-majority";
    s.description = "five replicas split 3/2; participants and the client spread over both sides";
    s.replicas = 5;
    s.participants = 3;
    s.kinds = {"partition:majority"};
    s.hold_ms_min = 1500;
    s.hold_ms_max = 4000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "partition-oneway";
    s.description =
        "one-way cuts (a node can send but not receive, or the reverse), and the "
        "client cut from the leader";
    s.kinds = {"partition:one-way", "partition:one-way", "partition:client-cut"};
    s.hold_ms_min = 1000;
    s.hold_ms_max = 3000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "participant-cut";
    s.description =
        "cut a participant off from every coordinator (both ways) while clients "
        "still reach it";
    s.kinds = {"partition:participant-cut"};
    s.hold_ms_min = 1000;
    s.hold_ms_max = 4000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "flaky-network";
    s.description = "drop, delay and duplicate messages on many links at once";
    s.kinds = {"flaky:drop", "flaky:delay", "flaky:dup", "flaky:all"};
    s.hold_ms_min = 2000;
    s.hold_ms_max = 5000;
    s.gap_ms_min = 200;
    s.gap_ms_max = 1000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "crash-points";
    s.description =
        "crash processes at named failpoints (coordinator.after_decision_logged, "
        "participant.after_prepare_durable, wal.before_fsync, ...), restart them";
    s.crash_points = AllCrashPoints();
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "coordinators-down";
    s.description =
        "SIGKILL every coordinator replica at once (prepared participants wait), "
        "restart them all";
    s.kinds = {"down:coordinators"};
    // Long enough, most of the time, for 3PC's termination rounds to finish pre-committed
    // transactions before the replicas return (runner.cc, kTerminationCheckAfterMs).
    s.hold_ms_min = 2000;
    s.hold_ms_max = 4500;
    s.gap_ms_min = 2000;
    s.gap_ms_max = 3000;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "bad-input";
    s.description =
        "random bytes, truncated and oversize frames, absurd requests to every port "
        "(coordinator, Raft, participant, metrics) under the workload";
    s.bad_input = true;
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "overload";
    s.description =
        "150 extra clients with short deadlines against small connection and "
        "transaction limits: refused or timed out cleanly, memory bounded";
    s.overload_clients = 150;
    s.txcoord_flags = {"--max-connections", "96"};
    s.txpart_flags = {"--max-connections", "48", "--max-transactions", "64"};
    all.push_back(s);
  }
  {
    Scenario s;
    s.name = "mixed";
    s.description =
        "every kind of fault above, overlapping, on five replicas and three "
        "participants (the soak's staple)";
    s.replicas = 5;
    s.participants = 3;
    s.kinds = {"kill:leader",
               "kill:follower",
               "kill:participant",
               "pause:any",
               "partition:isolate-leader",
               "partition:majority",
               "partition:one-way",
               "partition:participant-cut",
               "partition:client-cut",
               "flaky:all",
               "flaky:drop",
               "down:coordinators"};
    s.overlap = true;
    s.gap_ms_min = 200;
    s.gap_ms_max = 1500;
    all.push_back(s);
  }
  return all;
}

}  // namespace

const std::vector<Scenario>& AllScenarios() {
  static const std::vector<Scenario> all = MakeScenarios();
  return all;
}

const Scenario* FindScenario(const std::string& name) {
  for (const Scenario& s : AllScenarios()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

Timeline MakeTimeline(int64_t duration_ms) {
  Timeline t;
  t.duration_ms = duration_ms;
  t.fault_start_ms = std::min<int64_t>(3000, duration_ms / 6);
  t.fault_end_ms = duration_ms - std::max<int64_t>(4000, duration_ms / 5);
  if (t.fault_end_ms < t.fault_start_ms) t.fault_end_ms = t.fault_start_ms;
  return t;
}

uint64_t MixSeed(uint64_t seed, uint64_t stream) {
  // splitmix64 of (seed, stream): independent streams from one seed.
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<FaultStep> PlanSchedule(const Scenario& scenario, uint64_t seed, const Timeline& t) {
  std::vector<FaultStep> steps;
  if (scenario.kinds.empty()) return steps;
  std::mt19937_64 rng(MixSeed(seed, 0));
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, std::max(lo, hi))(rng);
  };
  int64_t at = t.fault_start_ms;
  uint64_t index = 0;
  while (true) {
    FaultStep step;
    step.kind = scenario.kinds[static_cast<size_t>(
        uniform(0, static_cast<int64_t>(scenario.kinds.size()) - 1))];
    step.at_ms = at;
    step.hold_ms = uniform(scenario.hold_ms_min, scenario.hold_ms_max);
    step.seed = MixSeed(seed, 1000 + index++);
    // A step needs time to act (200 ms at least) inside the window.
    if (step.at_ms + 200 > t.fault_end_ms) break;
    step.hold_ms = std::min(step.hold_ms, t.fault_end_ms - step.at_ms);
    steps.push_back(step);
    const int64_t gap = uniform(scenario.gap_ms_min, scenario.gap_ms_max);
    at = scenario.overlap ? step.at_ms + std::min(step.hold_ms, gap)
                          : step.at_ms + step.hold_ms + gap;
  }
  return steps;
}

}  // namespace tx::chaos
