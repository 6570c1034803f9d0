// txbench: load generator and benchmark reporter. One subcommand per mode:
//
//   txbench participant [options]   one txpart: execute+prepare+commit throughput and latency
//
// Modes live in tools/txbench/*_mode.cc (see mode.h). Every mode prints its figures and the
// command line that reproduces them.

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>

#include "tools/txbench/mode.h"

namespace tx::bench {
std::vector<Mode>& Modes() {
  static std::vector<Mode> modes;
  return modes;
}
}  // namespace tx::bench

int main(int argc, char** argv) {
  CLI::App app{"txbench: benchmarks of the transaction coordinator's components."};
  app.require_subcommand(1);
  std::map<CLI::App*, tx::bench::RunFn> runs;
  for (const tx::bench::Mode& mode : tx::bench::Modes()) {
    CLI::App* cmd = app.add_subcommand(mode.name, mode.description);
    runs[cmd] = mode.setup(cmd);
  }
  CLI11_PARSE(app, argc, argv);
  for (auto& [cmd, run] : runs) {
    if (cmd->parsed()) return run();
  }
  std::fprintf(stderr, "no mode chosen\n");
  return 2;
}
