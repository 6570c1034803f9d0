// txchaos: the failure-injection runner. Launches a local cluster from the built binaries, runs a
// checked workload through libtxclient, injects faults on a seeded schedule, heals, waits until
// nothing is in doubt, and checks atomicity and the rest (docs/reliability.md).
//
//   txchaos list
//   txchaos run --scenario leader-kill --seed 7 --duration 60s
//   txchaos soak --minutes 30
//
// Exit status: 0 when every check held, 1 when one failed (the seed, the scenario, the history
// file and the command that replays it are printed), 2 on bad usage.

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/rpc/thrift_logging.h"
#include "tools/txchaos/runner.h"
#include "tools/txchaos/scenario.h"

namespace {

using tx::chaos::RunOptions;
using tx::chaos::RunReport;

// "60s", "2m", "1500ms", "90" (seconds) -> milliseconds; -1 if malformed.
int64_t ParseDuration(const std::string& text) {
  size_t end = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &end);
  } catch (...) {
    return -1;
  }
  const std::string unit = text.substr(end);
  if (n < 0) return -1;
  if (unit.empty() || unit == "s") return n * 1000;
  if (unit == "ms") return n;
  if (unit == "m" || unit == "min") return n * 60'000;
  return -1;
}

std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32 | rd()) % 1'000'000'000;
}

void AddRunFlags(CLI::App* cmd, RunOptions* o, std::string* duration) {
  cmd->add_option("--duration", *duration, "how long the workload runs: 60s, 2m, 1500ms");
  cmd->add_option("--bin", o->bin_dir, "directory holding txcoord and txpart (default: ours)");
  cmd->add_option("--dir", o->work_dir, "where run directories go (default: $TMPDIR or /tmp)");
  cmd->add_flag("--keep", o->keep, "keep the run directory even when every check held");
  cmd->add_option("--protocol", o->protocol, "2pc, 3pc or mixed (per transaction)")
      ->check(CLI::IsMember({"2pc", "3pc", "mixed"}));
  cmd->add_option("--replicas", o->replicas, "coordinator replicas (default: the scenario's)")
      ->check(CLI::IsMember({3, 5}));
  cmd->add_option("--participants", o->participants, "participants (default: the scenario's)")
      ->check(CLI::Range(2, 16));
  cmd->add_option("--crash-points", o->crash_points,
                  "failpoints to crash at, by name (e.g. coordinator.after_decision_logged); "
                  "added to the scenario's faults (crash-points: instead of all)")
      ->delimiter(',');
  cmd->add_option("--log-level", o->log_level, "the processes' log level (their .log files)");
  cmd->add_flag("--verbose", o->verbose, "progress on stderr");
  cmd->add_option("--max-failover-ms", o->max_failover_ms, "failover bound checked");
  cmd->add_option("--max-rss-mb", o->max_rss_mb, "memory bound per process");
  cmd->add_option("--max-coordinator-disk-mb", o->max_coordinator_disk_mb,
                  "bound on a replica's data directory");
  cmd->add_option("--max-sqlite-wal-mb", o->max_sqlite_wal_mb, "bound on a participant's -wal");
  cmd->add_option("--resolve-timeout-ms", o->resolve_timeout_ms,
                  "after the workload, how long until nothing may be in doubt");
}

}  // namespace

int main(int argc, char** argv) {
  // Our own Thrift connections (the workload's, the probes') log failures through spdlog;
  // under faults they are expected and many, so only errors are shown.
  spdlog::set_level(spdlog::level::err);
  tx::rpc::RouteThriftLoggingToSpdlog();

  CLI::App app{"txchaos: failure injection against a local txcoord/txpart cluster"};
  app.require_subcommand(1);

  CLI::App* list = app.add_subcommand("list", "name the scenarios");

  RunOptions run_options;
  std::string run_duration = "60s";
  std::string run_seed;
  CLI::App* run = app.add_subcommand("run", "run one scenario and check");
  run->add_option("--scenario", run_options.scenario, "see txchaos list")->required();
  run->add_option("--seed", run_seed, "the schedule's seed (default: random, printed)");
  AddRunFlags(run, &run_options, &run_duration);

  RunOptions soak_options;
  std::string soak_duration = "60s";
  std::string soak_seed;
  int minutes = 10;
  std::vector<std::string> soak_scenarios;
  CLI::App* soak = app.add_subcommand("soak", "run scenarios in rotation with fresh seeds");
  soak->add_option("--minutes", minutes, "keep starting runs for this long")
      ->check(CLI::Range(1, 100'000));
  soak->add_option("--seed", soak_seed, "first seed (the next runs add 1); default random");
  soak->add_option("--scenarios", soak_scenarios, "which ones (default: all)")->delimiter(',');
  AddRunFlags(soak, &soak_options, &soak_duration);

  CLI11_PARSE(app, argc, argv);

  if (list->parsed()) {
    for (const tx::chaos::Scenario& s : tx::chaos::AllScenarios()) {
      std::printf("%-20s %s\n", s.name.c_str(), s.description.c_str());
    }
    return 0;
  }

  auto finish_options = [](RunOptions* o, const std::string& duration) {
    o->duration_ms = ParseDuration(duration);
    if (o->duration_ms < 5000) {
      std::fprintf(stderr, "txchaos: --duration '%s': want at least 5s\n", duration.c_str());
      return false;
    }
    if (o->bin_dir.empty()) o->bin_dir = SelfDir();
    return true;
  };
  auto parse_seed = [](const std::string& text, uint64_t* seed) {
    if (text.empty()) {
      *seed = RandomSeed();
      return true;
    }
    try {
      *seed = std::stoull(text);
    } catch (...) {
      std::fprintf(stderr, "txchaos: --seed '%s' is not a number\n", text.c_str());
      return false;
    }
    return true;
  };

  if (run->parsed()) {
    if (!finish_options(&run_options, run_duration) || !parse_seed(run_seed, &run_options.seed)) {
      return 2;
    }
    if (tx::StatusOr<std::vector<tx::chaos::CrashPoint>> points =
            tx::chaos::SelectCrashPoints(run_options.crash_points);
        !points.ok()) {
      std::fprintf(stderr, "txchaos: --crash-points: %s\n", points.status().ToString().c_str());
      return 2;
    }
    if (tx::chaos::FindScenario(run_options.scenario) == nullptr) {
      std::fprintf(stderr, "txchaos: unknown scenario '%s' (txchaos list names them)\n",
                   run_options.scenario.c_str());
      return 2;
    }
    std::printf("txchaos: scenario %s, seed %llu, duration %llds\n", run_options.scenario.c_str(),
                static_cast<unsigned long long>(run_options.seed),
                static_cast<long long>(run_options.duration_ms / 1000));
    std::fflush(stdout);
    RunReport r = tx::chaos::RunScenario(run_options);
    std::printf("%s", r.Summary().c_str());
    if (!r.ok) {
      std::printf("txchaos: FAILED scenario %s seed %llu; history %s\n", r.scenario.c_str(),
                  static_cast<unsigned long long>(r.seed), r.history_path.c_str());
    }
    return r.ok ? 0 : 1;
  }

  // soak
  if (!finish_options(&soak_options, soak_duration)) return 2;
  uint64_t seed = 0;
  if (!parse_seed(soak_seed, &seed)) return 2;
  std::vector<std::string> names = soak_scenarios;
  if (names.empty()) {
    for (const tx::chaos::Scenario& s : tx::chaos::AllScenarios()) names.push_back(s.name);
  }
  if (tx::StatusOr<std::vector<tx::chaos::CrashPoint>> points =
          tx::chaos::SelectCrashPoints(soak_options.crash_points);
      !points.ok()) {
    std::fprintf(stderr, "txchaos: --crash-points: %s\n", points.status().ToString().c_str());
    return 2;
  }
  for (const std::string& n : names) {
    if (tx::chaos::FindScenario(n) == nullptr) {
      std::fprintf(stderr, "txchaos: unknown scenario '%s'\n", n.c_str());
      return 2;
    }
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::minutes(minutes);
  std::vector<std::string> failures;
  uint64_t runs = 0, transactions = 0, faults = 0;
  std::vector<int64_t> failover_ms;
  RunReport peaks;  // the highest of each run's peaks
  std::map<std::string, std::map<std::string, uint64_t>> coverage;
  for (size_t i = 0; std::chrono::steady_clock::now() < end; ++i, ++seed) {
    RunOptions o = soak_options;
    o.scenario = names[i % names.size()];
    o.seed = seed;
    RunReport r = tx::chaos::RunScenario(o);
    ++runs;
    transactions += r.transactions;
    faults += r.faults;
    failover_ms.insert(failover_ms.end(), r.failover_ms.begin(), r.failover_ms.end());
    peaks.peak_coordinator_rss_bytes =
        std::max(peaks.peak_coordinator_rss_bytes, r.peak_coordinator_rss_bytes);
    peaks.peak_participant_rss_bytes =
        std::max(peaks.peak_participant_rss_bytes, r.peak_participant_rss_bytes);
    peaks.peak_coordinator_disk_bytes =
        std::max(peaks.peak_coordinator_disk_bytes, r.peak_coordinator_disk_bytes);
    peaks.peak_sqlite_wal_bytes = std::max(peaks.peak_sqlite_wal_bytes, r.peak_sqlite_wal_bytes);
    for (const auto& [fault, phases] : r.coverage) {
      for (const auto& [phase, n] : phases) coverage[fault][phase] += n;
    }
    std::printf("%s", r.Summary().c_str());
    std::fflush(stdout);
    if (!r.ok) {
      failures.push_back(fmt::format("{} seed {}: history {}; replay: {}", r.scenario, r.seed,
                                     r.history_path, r.replay_command));
    }
  }
  std::printf("txchaos soak: %llu runs, %llu transactions, %llu faults, %zu failed\n",
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(transactions),
              static_cast<unsigned long long>(faults), failures.size());
  if (!failover_ms.empty()) {
    std::sort(failover_ms.begin(), failover_ms.end());
    std::printf(
        "failover (leader killed -> first commit): %zu samples, median %lld ms, max %lld ms\n",
        failover_ms.size(), static_cast<long long>(failover_ms[failover_ms.size() / 2]),
        static_cast<long long>(failover_ms.back()));
  }
  constexpr double kMiB = 1 << 20;
  std::printf(
      "peaks over all runs: replica memory %.0f MiB, participant memory %.0f MiB, replica data "
      "directory %.1f MiB, participant SQLite -wal %.1f MiB\n",
      peaks.peak_coordinator_rss_bytes / kMiB, peaks.peak_participant_rss_bytes / kMiB,
      peaks.peak_coordinator_disk_bytes / kMiB, peaks.peak_sqlite_wal_bytes / kMiB);
  std::printf(
      "faults by the protocol phase they struck (transactions in that phase at the "
      "moment; crash points by name):\n");
  for (const auto& [fault, phases] : coverage) {
    std::string line;
    for (const auto& [phase, n] : phases) line += fmt::format(" {}={}", phase, n);
    std::printf("  %-28s%s\n", fault.c_str(), line.c_str());
  }
  for (const std::string& f : failures) std::printf("  FAILED %s\n", f.c_str());
  return failures.empty() ? 0 : 1;
}
