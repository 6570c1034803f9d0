#include "tools/txchaos/runner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "common/failpoint.h"
#include "common/rpc/dial_rewrite.h"
#include "tools/txchaos/bad_input.h"
#include "tools/txchaos/control.h"
#include "tools/txchaos/faults.h"
#include "tools/txchaos/local_cluster.h"
#include "tools/txchaos/proxy.h"
#include "tools/txchaos/scenario.h"
#include "tools/txchaos/workload.h"

namespace tx::chaos {
namespace {

using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1 << 20;
// 3PC: a participant in doubt that hears from no coordinator for this long starts a
// termination round (txpart --termination-timeout-ms; 5 s by default, shorter here so that
// the rounds run within a short run's outages).
constexpr int64_t kTerminationTimeoutMs = 1000;
// An outage of every coordinator at least this long must see the pre-committed transactions
// finished: the timeout, a probe interval, and a round's calls on a loaded machine.
constexpr int64_t kTerminationCheckAfterMs = kTerminationTimeoutMs + 2000;

// The flags every chaos cluster runs with (before the scenario's own). Short timeouts make
// faults resolve within a short run: a transaction undecided for 5 s aborts, a prepared
// participant asks after 1 s, a lock wait gives up after 1 s, an idle transaction after 10 s.
// Snapshots every 2,000 entries, so that runs compact the log and restarted replicas catch up
// through InstallSnapshot.
std::vector<std::string> CoordinatorFlags(const Scenario& s, const RunOptions& o) {
  std::vector<std::string> f = {"--tick-ms",         "10",   "--election-ticks", "20",
                                "--heartbeat-ticks", "3",    "--snapshot-every", "2000",
                                "--txn-timeout-ms",  "5000", "--log-level",      o.log_level};
  f.insert(f.end(), s.txcoord_flags.begin(), s.txcoord_flags.end());
  return f;
}

std::vector<std::string> ParticipantFlags(const Scenario& s, const RunOptions& o) {
  std::vector<std::string> f = {"--resolve-after-ms",
                                "1000",
                                "--lock-timeout-ms",
                                "1000",
                                "--idle-timeout-ms",
                                "10000",
                                "--statement-timeout-ms",
                                "2000",
                                "--termination-timeout-ms",
                                std::to_string(kTerminationTimeoutMs),
                                "--log-level",
                                o.log_level};
  f.insert(f.end(), s.txpart_flags.begin(), s.txpart_flags.end());
  return f;
}

// Deadlines of the checked workload's client: an attempt waits 5 s at most (longer than a
// participant's lock wait plus statement limit, 1 s + 2 s), a call retries for 10 s, a Commit
// tries to learn its outcome for 30 s.
client::ClientOptions CheckedClientOptions() {
  client::ClientOptions o;
  o.connect_timeout = 1000ms;
  o.rpc_timeout = 5000ms;
  o.call_deadline = 10'000ms;
  o.commit_deadline = 30'000ms;
  return o;
}

// The overload clients give up quickly: they are there to press, not to finish.
client::ClientOptions OverloadClientOptions() {
  client::ClientOptions o;
  o.connect_timeout = 500ms;
  o.rpc_timeout = 2000ms;
  o.call_deadline = 3000ms;
  o.commit_deadline = 6000ms;
  o.max_connections_per_server = 2;
  return o;
}

std::string JsonNames(const std::vector<std::string>& names) {
  std::vector<std::string> items;
  for (const std::string& n : names) items.push_back(JsonString(n));
  return fmt::format("[{}]", fmt::join(items, ","));
}

CheckResult Check(std::string name, bool ok, std::string detail) {
  return CheckResult{std::move(name), ok, std::move(detail)};
}

// The crash points armed on processes of a crash-points run, and the restarts after their
// crashes. Thread-safe.
class CrashPoints {
 public:
  CrashPoints(const Scenario& s, uint64_t seed) : points_(s.crash_points), seed_(seed) {}

  bool enabled() const { return !points_.empty(); }
  void Disable() {
    std::lock_guard<std::mutex> lock(mu_);
    disabled_ = true;
  }

  // Extra environment for the next start of `node`: a random crash point of its kind, or none.
  std::vector<std::string> NextEnv(const std::string& node) {
    std::lock_guard<std::mutex> lock(mu_);
    armed_.erase(node);
    if (points_.empty() || disabled_) return {};
    const bool coordinator = node[0] == 'c';
    std::vector<const CrashPoint*> fit;
    for (const CrashPoint& p : points_) {
      if (p.coordinator == coordinator) fit.push_back(&p);
    }
    if (fit.empty()) return {};
    auto [it, inserted] =
        rngs_.try_emplace(node, MixSeed(seed_, 500 + std::hash<std::string>()(node)));
    std::mt19937_64& rng = it->second;
    const CrashPoint& p = *fit[rng() % fit.size()];
    const int n = std::uniform_int_distribution<int>(p.nth_min, p.nth_max)(rng);
    const std::string spec = p.action == "crash"
                                 ? fmt::format("{}=crash,nth={}", p.failpoint, n)
                                 : fmt::format("{}={},skip={},times=5", p.failpoint, p.action, n);
    armed_[node] = spec;
    return {"TX_FAILPOINTS=" + spec, fmt::format("TX_FAILPOINTS_SEED={}", rng())};
  }

  // The spec armed on `node`, if any; forgets it (the process crashed or is being restarted).
  std::string TakeArmed(const std::string& node) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = armed_.find(node);
    if (it == armed_.end()) return "";
    std::string spec = it->second;
    armed_.erase(it);
    return spec;
  }

  std::vector<std::string> ArmedNodes() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [node, spec] : armed_) out.push_back(node);
    return out;
  }

 private:
  const std::vector<CrashPoint> points_;
  const uint64_t seed_;
  mutable std::mutex mu_;
  bool disabled_ = false;                        // GUARDED_BY(mu_)
  std::map<std::string, std::string> armed_;     // GUARDED_BY(mu_): node -> spec
  std::map<std::string, std::mt19937_64> rngs_;  // GUARDED_BY(mu_)
};

// Watches the processes: reaps exits nobody caused, restarts crashed processes, samples memory.
class Monitor {
 public:
  Monitor(LocalCluster* cluster, History* history, CrashPoints* crash_points)
      : cluster_(cluster), history_(history), crash_points_(crash_points) {}
  ~Monitor() { Stop(); }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::vector<std::string> unexpected_exits() const {
    std::lock_guard<std::mutex> lock(mu_);
    return unexpected_;
  }
  uint64_t crash_point_crashes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return crashes_;
  }
  std::map<std::string, uint64_t> max_rss() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_rss_;
  }
  std::map<std::string, std::vector<ResourceSample>> samples() const {
    std::lock_guard<std::mutex> lock(mu_);
    return samples_;
  }
  // failpoint -> crashes it caused.
  std::map<std::string, uint64_t> crashes_by_failpoint() const {
    std::lock_guard<std::mutex> lock(mu_);
    return by_failpoint_;
  }

 private:
  void Loop() {
    int64_t last_sample = -1'000'000;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      lock.unlock();
      for (const ExitEvent& e : cluster_->ReapExits()) HandleExit(e);
      const int64_t now = history_->NowMs();
      if (now - last_sample >= 1000) {
        last_sample = now;
        Sample(now);
      }
      lock.lock();
      wake_.wait_for(lock, 50ms, [&] { return stop_; });
    }
  }

  void HandleExit(const ExitEvent& e) {
    const std::string armed = crash_points_->TakeArmed(e.node);
    const bool injected = !armed.empty() && WIFEXITED(e.wait_status) &&
                          WEXITSTATUS(e.wait_status) == kFailPointCrashExitCode;
    history_->AddEvent(injected ? "crash" : "unexpected_exit",
                       fmt::format("\"node\":{},\"status\":{},\"failpoint\":{}", JsonString(e.node),
                                   JsonString(e.Describe()), JsonString(armed)));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (injected) {
        ++crashes_;
        ++by_failpoint_[armed.substr(0, armed.find('='))];
      } else {
        unexpected_.push_back(
            fmt::format("{} {} (armed: '{}'; see its .log)", e.node, e.Describe(), armed));
      }
    }
    // Brought back after a moment (a crashed process is restarted by its supervisor), with the
    // next crash point while the window lasts.
    std::this_thread::sleep_for(300ms);
    Status s = cluster_->LaunchNode(e.node, crash_points_->NextEnv(e.node));
    history_->AddEvent(
        "fault",
        fmt::format("\"action\":\"restart\",\"node\":{},\"why\":\"exit\"{}", JsonString(e.node),
                    s.ok() ? "" : ",\"error\":" + JsonString(s.ToString())));
  }

  void Sample(int64_t now) {
    std::vector<std::string> parts;
    for (const std::string& node : cluster_->Nodes()) {
      const uint64_t rss = cluster_->RssBytes(node);
      const uint64_t disk = cluster_->DiskBytes(node);
      // What can grow without bound if compaction or checkpointing stalls: a replica's Raft
      // log and snapshots, a participant's SQLite -wal (its database grows with the ledger).
      const uint64_t watched = cluster_->Info(node).kind == NodeKind::kCoordinator
                                   ? disk
                                   : cluster_->SqliteWalBytes(node);
      {
        std::lock_guard<std::mutex> lock(mu_);
        max_rss_[node] = std::max(max_rss_[node], rss);
        samples_[node].push_back(ResourceSample{now, rss, watched});
      }
      parts.push_back(fmt::format("{}:{{\"rss_mb\":{:.1f},\"disk_mb\":{:.1f}}}", JsonString(node),
                                  static_cast<double>(rss) / kMiB,
                                  static_cast<double>(disk) / kMiB));
    }
    if (now / 1000 % 5 == 0) {
      history_->AddEvent("resources", fmt::format("\"by_node\":{{{}}}", fmt::join(parts, ",")));
    }
  }

  LocalCluster* const cluster_;
  History* const history_;
  CrashPoints* const crash_points_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;                             // GUARDED_BY(mu_)
  std::vector<std::string> unexpected_;           // GUARDED_BY(mu_)
  uint64_t crashes_ = 0;                          // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> max_rss_;       // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> by_failpoint_;  // GUARDED_BY(mu_)
  // GUARDED_BY(mu_). One per process per second: 24 bytes each, 700 KB for eight processes
  // over a 60-minute run, so the run's length bounds it.
  std::map<std::string, std::vector<ResourceSample>> samples_;
};

std::string MakeRunDir(const RunOptions& o) {
  std::string parent = o.work_dir;
  if (parent.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  std::string pattern = fmt::format("{}/txchaos-{}-{}-XXXXXX", parent, o.scenario, o.seed);
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) return "";
  return buf.data();
}

void Progress(const RunOptions& o, const History& h, const std::string& what) {
  if (o.verbose) std::fprintf(stderr, "[txchaos %6.1fs] %s\n", h.NowMs() / 1000.0, what.c_str());
}

}  // namespace

std::string RunReport::Summary() const {
  std::string out = fmt::format(
      "scenario {} seed {} duration {:.0f}s: {}\n  transactions {} (committed {}, aborted {}, "
      "never committed {}, unknown {}, no txn {}; {} outcomes learned by asking again); faults "
      "{}; wall {:.1f}s\n",
      scenario, seed, duration_ms / 1000.0, ok ? "PASS" : "FAIL", transactions, committed, aborted,
      abandoned, unknown, no_txn, resolved_later, faults, wall_ms / 1000.0);
  if (!failover_ms.empty()) {
    std::vector<int64_t> sorted = failover_ms;
    std::sort(sorted.begin(), sorted.end());
    out += fmt::format(
        "  failover (leader killed -> first commit): {} samples, median {} ms, max "
        "{} ms\n",
        sorted.size(), sorted[sorted.size() / 2], sorted.back());
  }
  out += fmt::format(
      "  peaks: replica memory {:.0f} MiB, participant memory {:.0f} MiB, replica data "
      "directory {:.1f} MiB, participant SQLite -wal {:.1f} MiB\n",
      static_cast<double>(peak_coordinator_rss_bytes) / kMiB,
      static_cast<double>(peak_participant_rss_bytes) / kMiB,
      static_cast<double>(peak_coordinator_disk_bytes) / kMiB,
      static_cast<double>(peak_sqlite_wal_bytes) / kMiB);
  for (const auto& [fault, phases] : coverage) {
    std::vector<std::string> items;
    for (const auto& [phase, n] : phases) items.push_back(fmt::format("{} {}", phase, n));
    out += fmt::format("  {} struck during: {}\n", fault, fmt::join(items, ", "));
  }
  for (const CheckResult& c : checks) {
    out += fmt::format("  [{}] {}: {}\n", c.ok ? " ok " : "FAIL", c.name, c.detail);
  }
  if (!ok) {
    out += fmt::format("  history: {}\n  run directory: {}\n  replay: {}\n", history_path, run_dir,
                       replay_command);
  }
  return out;
}

RunReport RunScenario(const RunOptions& o) {
  const auto wall_start = SteadyClock::now();
  RunReport report;
  report.scenario = o.scenario;
  report.seed = o.seed;
  report.duration_ms = o.duration_ms;
  report.replay_command = fmt::format(
      "txchaos run --scenario {} --seed {} --duration {}s{}{}", o.scenario, o.seed,
      o.duration_ms / 1000, o.protocol == "2pc" ? "" : " --protocol " + o.protocol,
      o.crash_points.empty() ? ""
                             : fmt::format(" --crash-points {}", fmt::join(o.crash_points, ",")));
  auto harness_failure = [&](const std::string& what) {
    report.checks.push_back(Check("harness", false, what));
    report.ok = false;
    report.wall_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - wall_start)
            .count();
    return report;
  };
  const Scenario* found = FindScenario(o.scenario);
  if (found == nullptr) return harness_failure("unknown scenario '" + o.scenario + "'");
  Scenario scenario = *found;
  if (o.replicas > 0) scenario.replicas = o.replicas;
  if (o.participants > 0) scenario.participants = o.participants;
  if (!o.crash_points.empty()) {
    StatusOr<std::vector<CrashPoint>> chosen = SelectCrashPoints(o.crash_points);
    if (!chosen.ok()) return harness_failure(chosen.status().ToString());
    scenario.crash_points = *std::move(chosen);
  }
  const Timeline timeline = MakeTimeline(o.duration_ms);
  const std::vector<FaultStep> schedule = PlanSchedule(scenario, o.seed, timeline);

  report.run_dir = MakeRunDir(o);
  if (report.run_dir.empty()) return harness_failure("cannot create a run directory");
  History history;
  report.history_path = report.run_dir + "/history.jsonl";
  {
    std::vector<std::string> steps;
    for (const FaultStep& s : schedule) {
      steps.push_back(fmt::format("{{\"at\":{},\"hold\":{},\"kind\":{}}}", s.at_ms, s.hold_ms,
                                  JsonString(s.kind)));
    }
    Status s = history.Open(
        report.history_path,
        fmt::format("\"scenario\":{},\"seed\":{},\"duration_ms\":{},\"protocol\":{},"
                    "\"replicas\":{},\"participants\":{},\"fault_window\":[{},{}],"
                    "\"replay\":{},\"bin\":{},\"schedule\":[{}]",
                    JsonString(o.scenario), o.seed, o.duration_ms, JsonString(o.protocol),
                    scenario.replicas, scenario.participants, timeline.fault_start_ms,
                    timeline.fault_end_ms, JsonString(report.replay_command), JsonString(o.bin_dir),
                    fmt::join(steps, ",")));
    if (!s.ok()) return harness_failure(s.ToString());
  }

  // The network.
  NetworkProxy::Options proxy_options;
  proxy_options.seed = MixSeed(o.seed, 2);
  proxy_options.on_event = [&history](const ProxyEvent& e) {
    history.AddEvent("net", fmt::format("\"what\":{},\"link\":{},\"method\":{},\"request\":{}",
                                        JsonString(e.what), JsonString(e.from + ">" + e.to),
                                        JsonString(e.method), e.request ? "true" : "false"));
  };
  StatusOr<std::unique_ptr<NetworkProxy>> proxy = NetworkProxy::Start(proxy_options);
  if (!proxy.ok()) return harness_failure(proxy.status().ToString());

  // The cluster, behind it.
  WorkloadSpec workload_spec;
  workload_spec.bank_workers = scenario.bank_workers;
  workload_spec.ledger_workers = scenario.ledger_workers;
  workload_spec.overload_clients = scenario.overload_clients;
  workload_spec.protocol = o.protocol;
  workload_spec.seed = MixSeed(o.seed, 3);
  workload_spec.client_options = CheckedClientOptions();
  workload_spec.overload_options = OverloadClientOptions();
  ClusterSpec spec;
  spec.bin_dir = o.bin_dir;
  spec.work_dir = report.run_dir;
  spec.replicas = scenario.replicas;
  spec.participants = scenario.participants;
  spec.init_sql = WorkloadInitSql(workload_spec);
  spec.txcoord_flags = CoordinatorFlags(scenario, o);
  spec.txpart_flags = ParticipantFlags(scenario, o);
  LocalCluster cluster(spec);
  if (Status s = cluster.Plan(); !s.ok()) return harness_failure(s.ToString());

  std::map<std::string, std::vector<std::string>> rewrites;  // node -> "real=proxy" items
  rpc::DialRewrites client_rewrites;
  {
    std::vector<std::string> nodes = cluster.Nodes();
    nodes.push_back(kClientNode);
    for (const std::string& from : nodes) {
      for (const std::string& to : cluster.Nodes()) {
        if (from == to) continue;
        const HostPort real = cluster.Info(to).address;
        StatusOr<HostPort> via = (*proxy)->AddLink(from, to, real);
        if (!via.ok()) return harness_failure(via.status().ToString());
        if (from == kClientNode) {
          client_rewrites[real] = *via;
        } else {
          rewrites[from].push_back(fmt::format("{}={}", ToString(real), ToString(*via)));
        }
      }
    }
    for (const auto& [node, items] : rewrites) {
      cluster.SetEnv(node, {fmt::format("{}={}", rpc::kDialRewriteEnv, fmt::join(items, ","))});
    }
  }
  Progress(o, history,
           fmt::format("starting {} replicas and {} participants in {}", scenario.replicas,
                       scenario.participants, report.run_dir));
  if (Status s = cluster.Start(); !s.ok()) return harness_failure("cluster start: " + s.ToString());
  history.AddEvent("cluster_started", fmt::format("\"nodes\":{}", JsonNames(cluster.Nodes())));
  if (Status s = rpc::SetDialRewrites(client_rewrites); !s.ok()) {
    return harness_failure(s.ToString());
  }

  for (const HostPort& c : cluster.CoordinatorAddresses()) {
    workload_spec.coordinators.push_back(ToString(c));
  }
  workload_spec.participants = cluster.Participants();
  Workload workload(workload_spec, &history);
  CrashPoints crash_points(scenario, o.seed);
  Monitor monitor(&cluster, &history, &crash_points);
  monitor.Start();
  if (Status s = workload.Start(); !s.ok()) {
    monitor.Stop();
    (void)rpc::SetDialRewrites({});
    return harness_failure(s.ToString());
  }
  Progress(o, history, "workload running");

  InjectorOptions io;
  io.cluster = &cluster;
  io.proxy = proxy->get();
  io.history = &history;
  io.steps = schedule;
  io.timeline = timeline;
  io.start_env = [&crash_points](const std::string& node) { return crash_points.NextEnv(node); };
  io.on_heal = [&] {
    crash_points.Disable();
    // A process with a crash point still armed is restarted without it: after the heal the
    // cluster runs clean. One at a time, each serving again before the next goes, so that
    // the disarming does not take a majority of the replicas down at once.
    for (const std::string& node : crash_points.ArmedNodes()) {
      cluster.Kill(node);
      (void)crash_points.TakeArmed(node);
      Status s = cluster.StartNode(node);
      history.AddEvent(
          "fault",
          fmt::format("\"action\":\"restart\",\"node\":{},\"why\":\"disarm\"{}", JsonString(node),
                      s.ok() ? "" : ",\"error\":" + JsonString(s.ToString())));
    }
  };
  // 3PC's termination check (checker.h, CheckThreePhaseFinishWithoutCoordinators): only
  // where three-phase transactions run and faults do not overlap, since the promise needs
  // every participant up and reachable while the coordinators are down.
  std::mutex outages_mu;
  std::vector<CoordinatorOutage> outages;           // GUARDED_BY(outages_mu)
  std::optional<CoordinatorOutage> current_outage;  // GUARDED_BY(outages_mu)
  std::string outage_read_error;                    // GUARDED_BY(outages_mu)
  const bool check_termination = o.protocol != "2pc" && !scenario.overlap;
  auto read_participants = [&](std::vector<ParticipantData>* out) -> bool {
    for (const std::string& p : cluster.Participants()) {
      StatusOr<ParticipantData> d = ReadParticipant(p, cluster.Info(p).data);
      if (!d.ok()) {
        std::lock_guard<std::mutex> lock(outages_mu);
        outage_read_error = d.status().ToString();
        return false;
      }
      out->push_back(*std::move(d));
    }
    return true;
  };
  if (check_termination) {
    io.after_coordinators_down = [&] {
      CoordinatorOutage outage;
      outage.down_ms = history.NowMs();
      if (!read_participants(&outage.at_down)) return;
      std::lock_guard<std::mutex> lock(outages_mu);
      current_outage = std::move(outage);
    };
    io.before_coordinators_restart = [&] {
      std::optional<CoordinatorOutage> outage;
      {
        std::lock_guard<std::mutex> lock(outages_mu);
        outage.swap(current_outage);
      }
      // Shorter outages (cut by the heal, or drawn short) may end before a termination round
      // could: the participants wait kTerminationTimeoutMs without an answer first.
      if (!outage || history.NowMs() - outage->down_ms < kTerminationCheckAfterMs) return;
      outage->restart_ms = history.NowMs();
      if (!read_participants(&outage->before_restart)) return;
      std::lock_guard<std::mutex> lock(outages_mu);
      outages.push_back(*std::move(outage));
    };
  }
  FaultInjector injector(io);

  auto sleep_until_ms = [&](int64_t t) {
    while (history.NowMs() < t && workload.fatal_error().empty()) std::this_thread::sleep_for(20ms);
  };
  sleep_until_ms(timeline.fault_start_ms);
  injector.Start();
  if (crash_points.enabled()) {
    // Arm the first crash point of every process: restart each with one, 300 ms apart, so that
    // a majority of replicas stays up.
    for (const std::string& node : cluster.Nodes()) {
      if (history.NowMs() >= timeline.fault_end_ms) break;
      cluster.Kill(node);
      Status s = cluster.LaunchNode(node, crash_points.NextEnv(node));
      history.AddEvent("fault",
                       fmt::format("\"action\":\"arm\",\"node\":{}{}", JsonString(node),
                                   s.ok() ? "" : ",\"error\":" + JsonString(s.ToString())));
      std::this_thread::sleep_for(300ms);
    }
  }
  std::unique_ptr<BadInputSender> bad_input;
  if (scenario.bad_input) {
    std::vector<BadInputTarget> targets;
    for (const std::string& node : cluster.Nodes()) {
      NodeInfo info = cluster.Info(node);
      const bool coordinator = info.kind == NodeKind::kCoordinator;
      targets.push_back(
          {node,
           coordinator ? BadInputTarget::Kind::kCoordinator : BadInputTarget::Kind::kParticipant,
           info.address, coordinator ? info.index : 0});
      targets.push_back({node, BadInputTarget::Kind::kMetrics, info.metrics, 0});
    }
    bad_input = std::make_unique<BadInputSender>(targets, MixSeed(o.seed, 4), &history);
    bad_input->Start();
  }
  Progress(o, history,
           fmt::format("fault window until {:.1f}s ({} steps planned)",
                       timeline.fault_end_ms / 1000.0, schedule.size()));
  sleep_until_ms(timeline.fault_end_ms);
  if (bad_input) bad_input->Stop();
  injector.Stop();
  injector.Join();  // healed
  const int64_t healed_ms = history.NowMs();
  Progress(o, history, "healed");
  for (const std::string& node : cluster.Nodes()) {
    if (cluster.Info(node).state == NodeState::kRunning) (void)cluster.AwaitServing(node);
  }

  // Cool-down: the workload must commit again after the heal.
  sleep_until_ms(timeline.duration_ms);
  auto committed_since = [&](int64_t t) {
    for (const OpRecord& op : history.Ops()) {
      if (op.result == OpResult::kCommitted && op.start_ms >= t) return true;
    }
    return false;
  };
  const auto liveness_deadline =
      SteadyClock::now() + std::chrono::milliseconds(o.liveness_timeout_ms);
  while (!committed_since(healed_ms) && SteadyClock::now() < liveness_deadline &&
         workload.fatal_error().empty()) {
    std::this_thread::sleep_for(100ms);
  }
  const bool live_after_heal = committed_since(healed_ms);
  Progress(o, history, "stopping the workload");
  workload.Stop();
  const int64_t stopped_ms = history.NowMs();
  const size_t still_unknown = workload.ResolveUnknown(SteadyClock::now() + 30s);

  // Nothing in doubt: the leader lists no transaction in progress and no participant holds a
  // prepared one.
  Progress(o, history, "waiting until nothing is in doubt");
  std::string doubt;
  const auto resolve_deadline =
      SteadyClock::now() + std::chrono::milliseconds(o.resolve_timeout_ms);
  bool resolved = false;
  int64_t resolved_after_ms = 0;
  while (true) {
    doubt.clear();
    std::optional<std::string> leader = cluster.Leader(2s);
    if (!leader.has_value()) {
      doubt = "no leader";
    } else {
      StatusOr<api::ListTransactionsResponse> list =
          ListTransactions(cluster.Info(*leader).address, 2s);
      StatusOr<api::ClusterStatusResponse> st = GetClusterStatus(cluster.Info(*leader).address, 2s);
      if (!list.ok() || !st.ok()) {
        doubt = "leader did not answer";
      } else if (!list->transactions.empty() || st->decided_transactions != 0) {
        std::vector<std::string> txids;
        for (const api::TransactionView& v : list->transactions) {
          txids.push_back(fmt::format("{}({})", v.txid, static_cast<int>(v.phase)));
          if (txids.size() >= 10) break;
        }
        doubt = fmt::format("{} lists {} transactions in progress, {} decided and unfinished: [{}]",
                            *leader, list->transactions.size(), st->decided_transactions,
                            fmt::join(txids, " "));
      }
    }
    for (const std::string& p : cluster.Participants()) {
      StatusOr<api::ListPreparedResponse> prepared = ListPrepared(cluster.Info(p).address, 2s);
      std::string problem;
      if (!prepared.ok()) {
        problem = fmt::format("{} did not answer ({})", p, prepared.status().ToString());
      } else if (!prepared->transactions.empty()) {
        std::vector<int64_t> txids;
        for (const api::TransactionStatus& t : prepared->transactions) txids.push_back(t.txid);
        problem = fmt::format("{} holds prepared [{}]", p, fmt::join(txids, ","));
      }
      if (problem.empty()) continue;
      if (!doubt.empty()) doubt += "; ";
      doubt += problem;
    }
    if (doubt.empty()) {
      resolved = true;
      resolved_after_ms = history.NowMs() - stopped_ms;
      break;
    }
    if (SteadyClock::now() >= resolve_deadline) break;
    std::this_thread::sleep_for(200ms);
  }
  history.AddEvent("resolution",
                   fmt::format("\"resolved\":{},\"after_ms\":{},\"doubt\":{}",
                               resolved ? "true" : "false", resolved_after_ms, JsonString(doubt)));

  // Every process still serves, on every port.
  std::vector<std::string> not_serving;
  for (const std::string& node : cluster.Nodes()) {
    NodeInfo info = cluster.Info(node);
    Status s = info.kind == NodeKind::kCoordinator ? GetClusterStatus(info.address, 3s).status()
                                                   : GetParticipantInfo(info.address, 3s).status();
    if (!s.ok()) not_serving.push_back(fmt::format("{}: {}", node, s.ToString()));
    StatusOr<int> health = HttpGet(info.metrics, "/healthz", 3s);
    if (!health.ok() || *health != 200) {
      not_serving.push_back(
          fmt::format("{} /healthz: {}", node,
                      health.ok() ? std::to_string(*health) : health.status().ToString()));
    }
  }

  // Resources, at the end of the run.
  std::vector<std::string> over;
  std::string resources;
  monitor.Stop();
  const std::map<std::string, uint64_t> max_rss = monitor.max_rss();
  std::map<std::string, std::vector<ResourceSample>> samples = monitor.samples();
  for (const std::string& node : cluster.Nodes()) {
    NodeInfo info = cluster.Info(node);
    const uint64_t rss =
        std::max(max_rss.count(node) ? max_rss.at(node) : 0, cluster.RssBytes(node));
    const uint64_t disk = cluster.DiskBytes(node);
    resources +=
        fmt::format("{}{} rss {:.0f} MiB disk {:.1f} MiB", resources.empty() ? "" : ", ", node,
                    static_cast<double>(rss) / kMiB, static_cast<double>(disk) / kMiB);
    if (rss > o.max_rss_mb * kMiB) {
      over.push_back(fmt::format("{} reached {} MiB of memory", node, rss / kMiB));
    }
    const bool coordinator = info.kind == NodeKind::kCoordinator;
    uint64_t& peak_rss =
        coordinator ? report.peak_coordinator_rss_bytes : report.peak_participant_rss_bytes;
    peak_rss = std::max(peak_rss, rss);
    uint64_t& peak_disk =
        coordinator ? report.peak_coordinator_disk_bytes : report.peak_sqlite_wal_bytes;
    peak_disk = std::max(peak_disk, coordinator ? disk : cluster.SqliteWalBytes(node));
    for (const ResourceSample& sample : samples[node]) {
      peak_disk = std::max(peak_disk, sample.disk_bytes);
    }
    if (info.kind == NodeKind::kCoordinator && disk > o.max_coordinator_disk_mb * kMiB) {
      over.push_back(fmt::format("{} holds {} MiB on disk", node, disk / kMiB));
    }
    if (info.kind == NodeKind::kParticipant &&
        cluster.SqliteWalBytes(node) > o.max_sqlite_wal_mb * kMiB) {
      over.push_back(
          fmt::format("{}'s SQLite WAL is {} MiB", node, cluster.SqliteWalBytes(node) / kMiB));
    }
  }

  // A clean stop: SIGTERM, exit status 0.
  std::vector<std::string> unclean;
  for (const std::string& node : cluster.Nodes()) {
    std::optional<int> status = cluster.Terminate(node, 15s);
    if (!status.has_value()) {
      unclean.push_back(
          node +
          " did not stop within 15 s of SIGTERM (its threads' stacks, if gdb is installed: " +
          node + ".stacks in the run directory)");
    } else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      unclean.push_back(node + " " + ExitEvent{node, *status}.Describe() + " on SIGTERM");
    }
  }
  (void)rpc::SetDialRewrites({});
  const LinkStats net = (*proxy)->TotalStats();
  (*proxy)->Stop();

  // The files.
  std::vector<ParticipantData> data;
  std::string read_error;
  for (const std::string& p : cluster.Participants()) {
    StatusOr<ParticipantData> d = ReadParticipant(p, cluster.Info(p).data);
    if (!d.ok()) {
      read_error = d.status().ToString();
      break;
    }
    data.push_back(*std::move(d));
  }
  const std::vector<OpRecord> ops = history.Ops();
  const std::vector<std::string> unexpected = monitor.unexpected_exits();
  const InjectorStats injected = injector.stats();
  const WorkloadStats ws = workload.stats();

  std::vector<CheckResult>& checks = report.checks;
  if (!workload.fatal_error().empty()) {
    checks.push_back(Check("workload", false, workload.fatal_error()));
  }
  checks.push_back(Check("processes.no_unexpected_exit", unexpected.empty(),
                         unexpected.empty() ? fmt::format("{} crash-point crashes, all injected",
                                                          monitor.crash_point_crashes())
                                            : fmt::format("{}", fmt::join(unexpected, "; "))));
  checks.push_back(Check("processes.serving_at_end", not_serving.empty(),
                         not_serving.empty() ? "every service and metrics port answers"
                                             : fmt::format("{}", fmt::join(not_serving, "; "))));
  checks.push_back(Check("processes.clean_shutdown", unclean.empty(),
                         unclean.empty() ? "every process exited 0 on SIGTERM"
                                         : fmt::format("{}", fmt::join(unclean, "; "))));
  checks.push_back(Check(
      "liveness.commits_after_heal", live_after_heal,
      live_after_heal ? "transactions committed after the faults healed"
                      : fmt::format("no commit within {} ms of healing", o.liveness_timeout_ms)));
  checks.push_back(Check("resolved.nothing_in_doubt", resolved,
                         resolved
                             ? fmt::format("{} ms after the workload stopped", resolved_after_ms)
                             : fmt::format("after {} ms: {}", o.resolve_timeout_ms, doubt)));
  if (!read_error.empty()) {
    checks.push_back(Check("files.readable", false, read_error));
  } else {
    checks.push_back(CheckNothingPrepared(data));
    BankSpec bank;
    bank.accounts_per_participant = workload_spec.accounts_per_participant;
    bank.initial_balance = workload_spec.initial_balance;
    for (CheckResult& c : CheckBank(data, bank)) checks.push_back(c);
    for (CheckResult& c : CheckLedger(data, ops)) checks.push_back(c);
    for (CheckResult& c : CheckOutcomes(data, ops)) checks.push_back(c);
  }
  // Every call ends by its deadlines: Begin, each Execute and the final Abort within the call
  // deadline, Commit within the commit deadline; 5 s of slack for scheduling on a loaded box.
  auto bound_ms = [&](const client::ClientOptions& c) {
    return (2 + static_cast<int64_t>(scenario.participants)) * c.call_deadline.count() +
           c.commit_deadline.count() + 5000;
  };
  const int64_t checked_bound = bound_ms(workload_spec.client_options);
  checks.push_back(Check("client.calls_end_by_deadlines", ws.max_op_ms <= checked_bound,
                         fmt::format("longest transaction {} ms (bound {} ms); {} unknown after "
                                     "asking again",
                                     ws.max_op_ms, checked_bound, still_unknown)));
  if (scenario.overload_clients > 0) {
    const int64_t bound = bound_ms(workload_spec.overload_options);
    uint64_t refused = 0, overload_total = 0;
    for (const OpRecord& op : ops) {
      if (op.workload != "overload") continue;
      ++overload_total;
      if (op.result != OpResult::kCommitted) ++refused;
    }
    checks.push_back(Check(
        "overload.refused_or_timed_out_cleanly", ws.max_overload_op_ms <= bound,
        fmt::format("{} overload transactions, {} not committed (refused, timed out, aborted); "
                    "longest {} ms (bound {} ms)",
                    overload_total, refused, ws.max_overload_op_ms, bound)));
  }
  checks.push_back(Check("resources.bounded", over.empty(),
                         over.empty() ? resources : fmt::format("{}", fmt::join(over, "; "))));
  // Below two minutes a run is mostly warm-up (caches filling, the first snapshots), so growth
  // says nothing there; longer runs must level off.
  constexpr int64_t kMinGrowthCheckMs = 120'000;
  if (o.duration_ms >= kMinGrowthCheckMs) {
    GrowthBounds g;
    g.early_from_ms = o.duration_ms / 4;
    g.early_to_ms = o.duration_ms / 2;
    g.late_from_ms = o.duration_ms * 3 / 4;
    checks.push_back(CheckNoGrowth(samples, g));
  }
  if (scenario.measure_failover) {
    for (int64_t t : injected.leader_kill_ms) {
      for (const OpRecord& op : ops) {
        if (op.result == OpResult::kCommitted && op.start_ms >= t) {
          int64_t first = op.end_ms;
          for (const OpRecord& other : ops) {
            if (other.result == OpResult::kCommitted && other.start_ms >= t) {
              first = std::min(first, other.end_ms);
            }
          }
          report.failover_ms.push_back(first - t);
          break;
        }
      }
    }
    const int64_t worst = report.failover_ms.empty() ? 0
                                                     : *std::max_element(report.failover_ms.begin(),
                                                                         report.failover_ms.end());
    const bool ok = !report.failover_ms.empty() && worst <= o.max_failover_ms;
    checks.push_back(Check("failover.time", ok,
                           report.failover_ms.empty()
                               ? "no leader was killed, or no commit followed"
                               : fmt::format("{} leader kills, worst {} ms to the next commit "
                                             "(bound {} ms): [{}]",
                                             report.failover_ms.size(), worst, o.max_failover_ms,
                                             fmt::join(report.failover_ms, ", "))));
  }
  if (check_termination && injected.by_kind.count("down:coordinators") != 0) {
    std::lock_guard<std::mutex> lock(outages_mu);
    if (!outage_read_error.empty()) {
      checks.push_back(
          Check("threepc.finished_without_coordinators", false,
                "reading a participant's files during an outage: " + outage_read_error));
    } else {
      checks.push_back(CheckThreePhaseFinishWithoutCoordinators(outages));
    }
  }
  if (bad_input) {
    BadInputStats b = bad_input->stats();
    std::vector<std::string> outcomes;
    for (const auto& [k, v] : b.by_outcome) outcomes.push_back(fmt::format("{} {}", v, k));
    checks.push_back(
        Check("bad_input.answered_or_closed", b.violation_count == 0 && b.attacks > 0,
              b.violation_count == 0
                  ? fmt::format("{} bad inputs: {}", b.attacks, fmt::join(outcomes, ", "))
                  : fmt::format("{} of {} bad inputs: {}", b.violation_count, b.attacks,
                                fmt::join(b.violations, "; "))));
    report.faults += b.attacks;
  }

  report.transactions = 0;
  for (const OpRecord& op : ops) {
    if (op.txid != 0) ++report.transactions;
    if (op.resolved_later) ++report.resolved_later;
  }
  report.committed = ws.committed;
  report.aborted = ws.aborted;
  report.abandoned = ws.abandoned;
  report.unknown = ws.unknown;
  report.no_txn = ws.no_txn;
  report.faults += injected.steps_run + monitor.crash_point_crashes() + net.dropped_frames +
                   net.duplicated_frames;
  report.coverage = injected.coverage;
  for (const auto& [failpoint, n] : monitor.crashes_by_failpoint()) {
    report.coverage["crash-point"][failpoint] += n;
  }
  report.ok = std::all_of(checks.begin(), checks.end(), [](const CheckResult& c) { return c.ok; });
  report.wall_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - wall_start)
          .count();

  std::vector<std::string> check_json;
  for (const CheckResult& c : checks) {
    check_json.push_back(fmt::format("{{\"name\":{},\"ok\":{},\"detail\":{}}}", JsonString(c.name),
                                     c.ok ? "true" : "false", JsonString(c.detail)));
  }
  std::vector<std::string> coverage_json;
  for (const auto& [fault, phases] : report.coverage) {
    std::vector<std::string> items;
    for (const auto& [phase, n] : phases)
      items.push_back(fmt::format("{}:{}", JsonString(phase), n));
    coverage_json.push_back(fmt::format("{}:{{{}}}", JsonString(fault), fmt::join(items, ",")));
  }
  const std::string summary = fmt::format(
      "\"ok\":{},\"transactions\":{},\"committed\":{},\"aborted\":{},\"abandoned\":{},"
      "\"unknown\":{},\"no_txn\":{},\"resolved_later\":{},\"faults\":{},\"schedule_steps_run\":{},"
      "\"crash_point_crashes\":{},\"frames_dropped\":{},\"frames_duplicated\":{},"
      "\"frames_delayed\":{},\"frames_blackholed\":{},\"failover_ms\":[{}],\"wall_ms\":{},"
      "\"coverage\":{{{}}},\"checks\":[{}]",
      report.ok ? "true" : "false", report.transactions, report.committed, report.aborted,
      report.abandoned, report.unknown, report.no_txn, report.resolved_later, report.faults,
      injected.steps_run, monitor.crash_point_crashes(), net.dropped_frames, net.duplicated_frames,
      net.delayed_frames, net.blackholed_frames, fmt::join(report.failover_ms, ","), report.wall_ms,
      fmt::join(coverage_json, ","), fmt::join(check_json, ","));
  history.AddEvent("summary", summary);
  {
    std::ofstream out(report.run_dir + "/summary.json");
    out << "{" << summary << "}\n";
  }
  if (report.ok && !o.keep) {
    std::error_code ec;
    std::filesystem::remove_all(report.run_dir, ec);
  }
  return report;
}

}  // namespace tx::chaos
