// LocalCluster: txcoord replicas and txpart agents as real processes on 127.0.0.1, started from
// the built binaries with their data, logs and stdout in one directory, and the operations a
// failure-injection run needs on them: start, restart, SIGKILL, SIGSTOP/SIGCONT, SIGTERM with
// the exit status, unexpected exits, memory (RSS from /proc) and disk use.
//
// Nodes are named "c1".."cN" (replica id N) and "p1".."pM" (participant "p1", ...). Every node
// keeps its addresses for the life of the cluster, so a restarted process is where its peers
// expect it. Ports are picked at random below the kernel's ephemeral range (20000-32767) and
// checked free, so that no outgoing connection can hold a port while its process is down.
//
//   LocalCluster cluster(spec);
//   cluster.Plan();                         // addresses, directories
//   ... cluster.SetEnv("c1", {...}) ...     // e.g. TX_DIAL_REWRITE from the proxy's ports
//   cluster.Start();                        // everything; a leader; participants registered
//
// A process's stdout goes to <dir>/<node>.out (where "listening on" is awaited) and its stderr
// to <dir>/<node>.log, appended across restarts. Children get PR_SET_PDEATHSIG(SIGKILL): if the
// program driving the cluster dies, so do they. That signal follows the death of the *thread*
// that forked, so every fork happens on one thread the cluster owns for its whole life, whichever
// thread asks for the start.
//
// Thread-safe. Every waitpid() happens under the cluster's lock, so exits are seen exactly once:
// by Kill()/Terminate() for the ones the caller caused, by ReapExits() for the others.

#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <istream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/net.h"
#include "common/status.h"

namespace tx::chaos {

struct ClusterSpec {
  std::string bin_dir;   // holds txcoord and txpart
  std::string work_dir;  // created if missing; data, logs
  int replicas = 3;      // 3 or 5
  int participants = 2;  // >= 1
  std::string init_sql;  // written to <work_dir>/init.sql, given to every txpart
  // Extra flags, after the ones LocalCluster sets (--id/--name, --listen, --peers/--coordinators,
  // --data-dir/--db, --metrics-listen, --init-sql).
  std::vector<std::string> txcoord_flags;
  std::vector<std::string> txpart_flags;
  std::chrono::milliseconds start_timeout{30'000};  // per process, to "listening on"
};

enum class NodeKind { kCoordinator, kParticipant };

enum class NodeState {
  kDown,     // not started, killed, or exited
  kRunning,  // serving (or at least started and printed "listening on")
  kPaused,   // SIGSTOP
};

struct NodeInfo {
  std::string name;  // "c2", "p1"
  NodeKind kind = NodeKind::kCoordinator;
  int index = 0;     // replica id (1..) or participant number (1..)
  HostPort address;  // the service (Thrift; Raft multiplexed on coordinators)
  HostPort metrics;  // /metrics and /healthz
  std::string data;  // coordinator: data directory; participant: database file
  NodeState state = NodeState::kDown;
  pid_t pid = -1;
  int starts = 0;
};

// An exit nobody asked for (a crash, a crash failpoint, a failed start).
struct ExitEvent {
  std::string node;
  int wait_status = 0;           // as waitpid() gives it
  std::string Describe() const;  // "exited with status 86", "killed by signal 6 (Aborted)"
};

class LocalCluster {
 public:
  explicit LocalCluster(ClusterSpec spec);
  ~LocalCluster();  // SIGKILLs whatever still runs
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Picks addresses and creates the directories. Call once, before anything else.
  Status Plan();

  // Environment entries ("NAME=value") added for a node's next starts (replacing earlier ones).
  void SetEnv(const std::string& node, std::vector<std::string> env);

  // Starts every coordinator, waits (up to start_timeout) until one of them leads, starts every
  // participant and registers each in the directory under its name and real address.
  Status Start();

  // Starts (or restarts) one node and waits for its "listening on" line. `extra_env` is added
  // for this start only (e.g. TX_FAILPOINTS). FailedPrecondition if it is not down.
  Status StartNode(const std::string& node, const std::vector<std::string>& extra_env = {});

  // Launches a node without waiting for it to serve (StartNode waits); for restarting several
  // nodes at once. Then AwaitServing().
  Status LaunchNode(const std::string& node, const std::vector<std::string>& extra_env = {});
  Status AwaitServing(const std::string& node);

  // SIGKILL and reap (a paused process dies too). No-op if it is down.
  void Kill(const std::string& node);
  // SIGSTOP / SIGCONT. No-op unless running / paused.
  void Pause(const std::string& node);
  void Resume(const std::string& node);
  // SIGTERM (SIGCONT first if paused) and wait up to `timeout`; then, if gdb is installed, its
  // threads' stacks go to <work_dir>/<node>.stacks, and SIGKILL. Returns the wait status, or
  // nullopt if it had to be killed (or was down).
  std::optional<int> Terminate(const std::string& node, std::chrono::milliseconds timeout);

  // Exits of running or paused processes that nobody caused, since the last call; such nodes
  // are down afterwards.
  std::vector<ExitEvent> ReapExits();

  // The replica that leads according to a majority-independent question: each running replica is
  // asked (directly) and the first that says "leader" and is healthy wins. Empty if none.
  std::optional<std::string> Leader(std::chrono::milliseconds timeout_per_call);
  // Polls Leader() until one answers, up to `timeout`.
  StatusOr<std::string> AwaitLeader(std::chrono::milliseconds timeout);

  std::vector<std::string> Nodes() const;         // coordinators first, by index
  std::vector<std::string> Coordinators() const;  // "c1", ...
  std::vector<std::string> Participants() const;  // "p1", ...
  NodeInfo Info(const std::string& node) const;
  std::vector<HostPort> CoordinatorAddresses() const;
  const ClusterSpec& spec() const { return spec_; }

  // Resident memory of a running process (VmRSS), bytes; 0 if unknown.
  uint64_t RssBytes(const std::string& node) const;
  // Bytes on disk: a coordinator's data directory; a participant's database with its -wal.
  uint64_t DiskBytes(const std::string& node) const;
  // A participant's write-ahead file alone (<db>-wal), bytes.
  uint64_t SqliteWalBytes(const std::string& node) const;

 private:
  struct Node {
    NodeInfo info;
    std::vector<std::string> env;
    std::string out_path, log_path;
  };

  Node& At(const std::string& node);              // requires mu_
  const Node& At(const std::string& node) const;  // requires mu_
  std::vector<std::string> Argv(const Node& n) const;
  // Waits for the exit of a process we signalled; requires mu_.
  void ReapLocked(Node& n);
  // Writes every thread's stack of `pid` to `path` with gdb, if installed, and a summary of
  // them (SummarizeThreadStacks) to stderr.
  static void DumpThreadStacks(pid_t pid, const std::string& path);

  // Runs `fork_and_exec` on the spawner thread and returns its result.
  pid_t Spawn(std::function<pid_t()> fork_and_exec);
  void SpawnerLoop();

  const ClusterSpec spec_;

  std::mutex spawn_mu_;
  std::condition_variable spawn_cv_;
  std::deque<std::packaged_task<pid_t()>> spawn_queue_;  // GUARDED_BY(spawn_mu_)
  bool spawner_stop_ = false;                            // GUARDED_BY(spawn_mu_)
  std::thread spawner_;

  mutable std::mutex mu_;
  std::map<std::string, Node> nodes_;  // GUARDED_BY(mu_)
  std::string peers_flag_;             // constant after Plan()
  std::string coordinators_flag_;      // constant after Plan()
};

// gdb's `thread apply all bt` output, one line per thread: "Thread 3 (LWP 1234): f0 < f1 <
// ..." with the innermost frame first and at most 12 function names (no arguments), so that the
// stacks of a hung process fit in a log.
std::string SummarizeThreadStacks(std::istream& gdb_output);

}  // namespace tx::chaos
