// FaultInjector: runs a schedule (scenario.h) against a LocalCluster and its NetworkProxy on a
// thread of its own, and heals everything when the fault window ends.
//
// Each step is applied at its time and undone at its time + hold: a killed process is started
// again, a paused one continued, cut or flaky links made whole (set back to no faults). Every
// action goes into the history as a "fault" event with the process or links it hit, so a run's
// history says exactly what was done when.
//
// Heal (at the window's end, or when Stop() is called early): every pending undo runs at once,
// every link is cleared, every paused process continued, every process that is down started
// again, then `on_heal` runs (the runner disarms crash points there).
//
// Thread-safe: Start() once, then Stop()/Join() from the controlling thread.

#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tools/txchaos/history.h"
#include "tools/txchaos/local_cluster.h"
#include "tools/txchaos/proxy.h"
#include "tools/txchaos/scenario.h"

namespace tx::chaos {

// The proxy's name for the clients (txchaos's workload).
inline constexpr const char* kClientNode = "client";

struct InjectorOptions {
  LocalCluster* cluster = nullptr;
  NetworkProxy* proxy = nullptr;
  History* history = nullptr;
  std::vector<FaultStep> steps;
  Timeline timeline;
  // Extra environment for a process the injector starts again (e.g. its next crash point).
  std::function<std::vector<std::string>(const std::string& node)> start_env;
  std::function<void()> on_heal;
  // Around a "down:coordinators" step, on the injector's thread: right after every replica
  // was killed, and right before they are started again (also when a heal cuts the outage
  // short). The runner reads the participants' files there (3PC's termination check).
  std::function<void()> after_coordinators_down;
  std::function<void()> before_coordinators_restart;
};

// fault kind -> protocol phase -> how many of those faults struck while at least one
// transaction was in that phase (the leader's TransactionPhase names, and PREPARED for a
// transaction prepared at some participant), sampled just before each fault.
using PhaseCoverage = std::map<std::string, std::map<std::string, uint64_t>>;

struct InjectorStats {
  uint64_t steps_run = 0;
  uint64_t steps_skipped = 0;  // the target was already down, or no target
  std::map<std::string, uint64_t> by_kind;
  std::vector<int64_t> leader_kill_ms;  // when a leader was killed (failover measurements)
  PhaseCoverage coverage;
};

class FaultInjector {
 public:
  explicit FaultInjector(InjectorOptions options);
  ~FaultInjector();  // Stop() + Join()
  FaultInjector(const FaultInjector&) = delete;
  FaultInjector& operator=(const FaultInjector&) = delete;

  void Start();
  // Heals now and ends the thread (idempotent).
  void Stop();
  // Waits for the thread (which ends after healing at the window's end).
  void Join();

  InjectorStats stats() const;

 private:
  struct Action {
    int64_t at_ms;
    uint64_t order;  // ties: in insertion order
    std::function<void()> run;
    bool undo;
  };

  void Loop();
  void Apply(const FaultStep& step);
  void Heal();
  void Schedule(int64_t at_ms, bool undo, std::function<void()> run);
  void Event(const std::string& members);
  // What is in flight now: phase -> transactions (the leader's list, and PREPARED summed over
  // the participants), as JSON members for the step's event; counts it into the coverage.
  std::string SamplePhases(const std::string& kind);

  // Role resolution for a step (may return "" when nothing fits).
  std::string PickLeaderOrAny(std::mt19937_64& rng, bool* was_leader);
  std::string PickFollower(std::mt19937_64& rng);
  std::string PickParticipant(std::mt19937_64& rng);
  std::string PickAny(std::mt19937_64& rng);
  std::string PickRole(const std::string& role, std::mt19937_64& rng, bool* was_leader);

  // Every directed link of the proxy's network: coordinators to each other and to participants,
  // participants to coordinators and to each other, the client to everyone.
  std::vector<std::pair<std::string, std::string>> AllLinks() const;
  void SetLinks(const std::vector<std::pair<std::string, std::string>>& links,
                const LinkFaults& faults);

  const InjectorOptions options_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> healed_{false};

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Action> agenda_;  // GUARDED_BY(mu_)
  uint64_t next_order_ = 0;     // GUARDED_BY(mu_)
  InjectorStats stats_;         // GUARDED_BY(mu_)
};

}  // namespace tx::chaos
