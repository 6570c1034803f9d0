// The command line and crash reporting shared by the simulation runners (raft_sim,
// coordinator_sim):
//
//   <program> --seeds N [--first-seed F]      seeds F..F+N-1 (F defaults to 1)
//   <program> --seed S [--quiet]              one seed, replayed with its trace on stdout
//   options: --<group flag> 3|5 (default: 3 and 5 alternate by seed), --<length flag> N
//
// Bad usage prints the usage line and exits with status 2. Once InstallSeedReporter() ran, a
// crash inside the code under test (a TX_CHECK aborting, a segfault) prints the seed being run
// (SetCurrentSeed), so that it can be replayed.

#pragma once

#include <cstdint>

namespace tx::sim {

struct SeedRunnerFlags {
  const char* program;      // "raft_sim"
  const char* group_flag;   // "--nodes": the group size, 3 or 5
  const char* length_flag;  // "--steps": how long the fault phase lasts, in the runner's unit
};

struct SeedRunnerArgs {
  uint64_t first_seed = 1;
  uint64_t last_seed = 0;
  bool single_seed = false;  // --seed: replay one, traced unless quiet
  bool quiet = false;
  int group_size = 0;        // 0: 3 and 5 alternate by seed (GroupSizeFor)
  int64_t fault_phase = -1;  // -1: the simulation's default

  // 3 for odd seeds, 5 for even ones, unless --<group flag> fixed it.
  int GroupSizeFor(uint64_t seed) const {
    return group_size != 0 ? group_size : (seed % 2 == 1 ? 3 : 5);
  }
};

SeedRunnerArgs ParseSeedRunnerArgs(int argc, char** argv, const SeedRunnerFlags& flags);

// Installs handlers for SIGABRT, SIGSEGV, SIGBUS and SIGFPE that print "<program>: aborted while
// running seed S (replay with --seed)" and then die of the signal.
void InstallSeedReporter(const char* program);
void SetCurrentSeed(uint64_t seed);

}  // namespace tx::sim
