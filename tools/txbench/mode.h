// txbench's modes. Each mode is one file, tools/txbench/<name>_mode.cc, which registers
// itself at static-initialization time:
//
//   namespace {
//   tx::bench::RunFn Setup(CLI::App* cmd) {
//     auto opts = std::make_shared<Options>();
//     cmd->add_option("--clients", opts->clients, "concurrent clients");
//     return [opts] { return Run(*opts); };  // called after parsing; returns the exit code
//   }
//   const tx::bench::ModeRegistration kMode("raft", "three txcoord replicas on loopback", Setup);
//   }  // namespace
//
// CMake picks up every *_mode.cc in this directory, so adding a mode is adding that file.

#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace tx::bench {

// Runs the mode after the command line was parsed; returns the process exit code.
using RunFn = std::function<int()>;
// Adds the mode's options to its subcommand and returns what runs it.
using SetupFn = std::function<RunFn(CLI::App* command)>;

struct Mode {
  std::string name;
  std::string description;
  SetupFn setup;
};

// Every registered mode, in registration order.
std::vector<Mode>& Modes();

struct ModeRegistration {
  ModeRegistration(std::string name, std::string description, SetupFn setup) {
    Modes().push_back(Mode{std::move(name), std::move(description), std::move(setup)});
  }
};

}  // namespace tx::bench
