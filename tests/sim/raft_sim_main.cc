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

#include <chrono>
#include <cstdint>
#include <string>

#include "tests/sim/raft_sim.h"
#include "tests/sim/seed_runner.h"

int main(int argc, char** argv) {
  const tx::sim::SeedRunnerArgs args =
      tx::sim::ParseSeedRunnerArgs(argc, argv, {"raft_sim", "--nodes", "--steps"});
  tx::sim::InstallSeedReporter("raft_sim");
  const uint64_t lo = args.first_seed;
  const uint64_t hi = args.last_seed;
  tx::raft::sim::SimStats total;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t seed = lo; seed <= hi; ++seed) {
    tx::sim::SetCurrentSeed(seed);
    tx::raft::sim::SimOptions o;
    o.seed = seed;
    o.nodes = args.GroupSizeFor(seed);
    if (args.fault_phase >= 0) o.chaos_steps = static_cast<int>(args.fault_phase);
    if (args.single_seed && !args.quiet) o.trace = stdout;
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
                 args.fault_phase >= 0 ? fmt::format(" --steps {}", args.fault_phase) : "");
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
