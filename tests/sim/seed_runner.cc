#include "tests/sim/seed_runner.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tx::sim {
namespace {

volatile std::sig_atomic_t g_current_seed = 0;
const char* g_program = "sim";

void Append(char* buf, size_t* n, size_t capacity, const char* text) {
  for (; *text != '\0' && *n < capacity; ++text) buf[(*n)++] = *text;
}

void OnFatalSignal(int sig) {
  // Async-signal-safe: the number is formatted by hand and written with write(2).
  char buf[160];
  size_t n = 0;
  Append(buf, &n, sizeof(buf), g_program);
  Append(buf, &n, sizeof(buf), ": aborted while running seed ");
  char digits[24];
  size_t d = 0;
  uint64_t v = static_cast<uint64_t>(g_current_seed);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (d > 0 && n < sizeof(buf)) buf[n++] = digits[--d];
  Append(buf, &n, sizeof(buf), " (replay with --seed)\n");
  ssize_t ignored = ::write(STDERR_FILENO, buf, n);
  (void)ignored;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

SeedRunnerArgs ParseSeedRunnerArgs(int argc, char** argv, const SeedRunnerFlags& flags) {
  auto usage = [&] {
    std::fprintf(stderr,
                 "usage: %s (--seeds N [--first-seed F] | --seed S [--quiet]) [%s 3|5] [%s N]\n",
                 flags.program, flags.group_flag, flags.length_flag);
    std::exit(2);
  };
  auto number = [&](const char* s) -> uint64_t {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end != '\0') usage();
    return v;
  };
  SeedRunnerArgs args;
  uint64_t seeds = 0, single = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (a == "--seeds") {
      seeds = number(next());
    } else if (a == "--first-seed") {
      args.first_seed = number(next());
    } else if (a == "--seed") {
      single = number(next());
    } else if (a == flags.group_flag) {
      args.group_size = static_cast<int>(number(next()));
      if (args.group_size != 3 && args.group_size != 5) usage();
    } else if (a == flags.length_flag) {
      args.fault_phase = static_cast<int64_t>(number(next()));
    } else if (a == "--quiet") {
      args.quiet = true;
    } else {
      usage();
    }
  }
  if ((seeds == 0) == (single == 0)) usage();
  if (single != 0) {
    args.single_seed = true;
    args.first_seed = args.last_seed = single;
  } else {
    args.last_seed = args.first_seed + seeds - 1;
  }
  return args;
}

void InstallSeedReporter(const char* program) {
  g_program = program;
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE}) std::signal(sig, OnFatalSignal);
}

void SetCurrentSeed(uint64_t seed) { g_current_seed = static_cast<std::sig_atomic_t>(seed); }

}  // namespace tx::sim
