// Runs a child program for integration tests: real processes, killed for real.
//
// The child's stdout is a pipe the test reads line by line (with a deadline); its stderr goes
// to the test's stderr so that failures show the child's logs. The child is killed with
// SIGKILL and reaped when the object is destroyed, so a failing test leaves no strays.
// Not thread-safe: one test thread owns a Subprocess.

#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tx::testing {

class Subprocess {
 public:
  // Starts argv[0] (a path) with the given arguments and extra environment entries
  // ("NAME=value"), inheriting the rest of the environment.
  static StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                    const std::vector<std::string>& extra_env = {});

  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }

  // The next line of the child's stdout without its newline; nullopt at EOF or when the
  // deadline passes first (then timed_out() is true).
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout);
  bool timed_out() const { return timed_out_; }

  // Sends a signal (SIGKILL, SIGTERM, SIGSTOP, SIGCONT, ...).
  void Signal(int signo);

  // Waits for the child to exit, up to timeout. Returns its wait status (as waitpid gives it),
  // or nullopt if it is still running at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

  // SIGKILL and reap. Idempotent.
  void Kill();

 private:
  Subprocess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  bool timed_out_ = false;
  std::string buffer_;  // bytes read from stdout past the last returned line
};

// Directory holding the built programs (<build>/bin), for tests that start them.
std::string BinaryDir();

}  // namespace tx::testing
