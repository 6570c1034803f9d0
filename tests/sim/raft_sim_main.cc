// raft_sim: runs the deterministic Raft simulation over a range of seeds.
//
//   raft_sim --seeds 2000              seeds 1..2000 (3 and 5 replicas alternate by seed)
//   raft_sim --seeds 500 --first-seed 1501
//   raft_sim --seed 1234               replay one seed with a full trace on stdout
//   raft_sim --seed 1234 --quiet       replay without the trace
//   options: --nodes 3|5 (default: alternate), --steps N (fault-phase length)
//
// Exit status 0 when every seed passed; 1 with the failing seed and violated property printed
// otherwise. A TX_CHECK inside the core aborts the process; a signal handler then prints the
// seed being run so it can be replayed.

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sim/raft_sim.h"

namespace {

volatile std::sig_atomic_t g_current_seed = 0;

void OnFatalSignal(int sig) {
  // Async-signal-safe: format the number by hand and write(2) it.
  char buf[96];
  const char prefix[] = "raft_sim: aborted while running seed ";
  size_t n = sizeof(prefix) - 1;
  std::memcpy(buf, prefix, n);
  char digits[24];
  size_t d = 0;
  uint64_t v = static_cast<uint64_t>(g_current_seed);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (d > 0) buf[n++] = digits[--d];
  const char suffix[] = " (replay with --seed)\n";
  std::memcpy(buf + n, suffix, sizeof(suffix) - 1);
  n += sizeof(suffix) - 1;
  ssize_t ignored = ::write(STDERR_FILENO, buf, n);
  (void)ignored;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: raft_sim (--seeds N [--first-seed F] | --seed S [--quiet]) "
               "[--nodes 3|5] [--steps N]\n");
  std::exit(2);
}

uint64_t ParseNumber(const char* s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') Usage();
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seeds = 0;
  uint64_t first_seed = 1;
  uint64_t single_seed = 0;
  int nodes = 0;  // 0: alternate 3 and 5
  int steps = -1;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--seeds") {
      seeds = ParseNumber(next());
    } else if (a == "--first-seed") {
      first_seed = ParseNumber(next());
    } else if (a == "--seed") {
      single_seed = ParseNumber(next());
    } else if (a == "--nodes") {
      nodes = static_cast<int>(ParseNumber(next()));
      if (nodes != 3 && nodes != 5) Usage();
    } else if (a == "--steps") {
      steps = static_cast<int>(ParseNumber(next()));
    } else if (a == "--quiet") {
      quiet = true;
    } else {
      Usage();
    }
  }
  if ((seeds == 0) == (single_seed == 0)) Usage();
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE}) std::signal(sig, OnFatalSignal);

  uint64_t lo = single_seed != 0 ? single_seed : first_seed;
  uint64_t hi = single_seed != 0 ? single_seed : first_seed + seeds - 1;
  tx::raft::sim::SimStats total;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t seed = lo; seed <= hi; ++seed) {
    g_current_seed = static_cast<std::sig_atomic_t>(seed);
    tx::raft::sim::SimOptions o;
    o.seed = seed;
    o.nodes = nodes != 0 ? nodes : (seed % 2 == 1 ? 3 : 5);
    if (steps >= 0) o.chaos_steps = steps;
    if (single_seed != 0 && !quiet) o.trace = stdout;
    auto seed_start = std::chrono::steady_clock::now();
    tx::raft::sim::SimResult r = tx::raft::sim::RunSimulation(o);
    double seed_secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - seed_start).count();
    if (seed_secs > 1.0) {
      // A slow seed usually means message amplification in the core: worth a look.
      fmt::print(stderr, "raft_sim: seed {} took {:.1f} s ({} messages)\n", seed, seed_secs,
                 r.stats.messages_delivered);
    }
    if (!r.ok) {
      fmt::print(stderr,
                 "raft_sim: seed {} ({} replicas) FAILED at step {}: {} violated: {}\n"
                 "raft_sim: replay with: raft_sim --seed {} --nodes {}{}\n",
                 seed, o.nodes, r.step, r.property, r.detail, seed, o.nodes,
                 steps >= 0 ? fmt::format(" --steps {}", steps) : "");
      return 1;
    }
    total.steps += r.stats.steps;
    total.messages_delivered += r.stats.messages_delivered;
    total.messages_dropped += r.stats.messages_dropped;
    total.proposals += r.stats.proposals;
    total.proposals_acked += r.stats.proposals_acked;
    total.max_term = std::max(total.max_term, r.stats.max_term);
    total.crashes += r.stats.crashes;
    total.snapshots_installed += r.stats.snapshots_installed;
    total.snapshots_created += r.stats.snapshots_created;
    total.conf_changes_applied += r.stats.conf_changes_applied;
    total.reads_served += r.stats.reads_served;
    total.transfers += r.stats.transfers;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print(
      "raft_sim: seeds {}..{} passed in {:.1f} s: {} steps, {} messages delivered ({} dropped), "
      "{} proposals ({} acknowledged), {} crashes, {} snapshots created, {} installed, {} "
      "membership changes, {} reads, {} transfers, highest term {}\n",
      lo, hi, secs, total.steps, total.messages_delivered, total.messages_dropped, total.proposals,
      total.proposals_acked, total.crashes, total.snapshots_created, total.snapshots_installed,
      total.conf_changes_applied, total.reads_served, total.transfers, total.max_term);
  return 0;
}
