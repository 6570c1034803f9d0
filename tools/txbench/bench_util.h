// Shared pieces of txbench's modes: latency statistics, child processes, temporary
// directories.

#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/status.h"

namespace tx::bench {

// Latencies of one run, in microseconds.
class Latencies {
 public:
  void Add(double us) { samples_.push_back(us); }
  void Merge(const Latencies& other);
  size_t count() const { return samples_.size(); }
  // The q-quantile (0 <= q <= 1) by nearest rank; 0 when empty. Sorts on first use.
  double Quantile(double q);

 private:
  std::vector<double> samples_;
  bool sorted_ = false;
};

// A child program. Its stdout is read for one "listening on HOST:PORT" line; its stderr goes
// to ours (or to a file). SIGTERM then SIGKILL on destruction.
class ChildProcess {
 public:
  // Starts argv (argv[0] a path) and waits up to `timeout` for its "listening on" line.
  static StatusOr<ChildProcess> StartServer(const std::vector<std::string>& argv,
                                            std::chrono::milliseconds timeout);
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  const HostPort& address() const { return address_; }
  pid_t pid() const { return pid_; }
  // SIGTERM, wait up to `timeout`, then SIGKILL. Returns the wait status.
  int Stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  HostPort address_;
};

// mkdtemp under $TMPDIR (or /tmp): on the real disk, so fsync is real.
StatusOr<std::string> MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& path);

// The directory holding this program (where the other binaries are built).
std::string SelfDir();

// "Intel(R) Xeon(R) ... , 2 CPUs": for the record of where figures were measured.
std::string MachineDescription();

}  // namespace tx::bench
