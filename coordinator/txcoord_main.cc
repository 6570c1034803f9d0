// txcoord: one replica of the transaction coordinator.
//
//   txcoord --id 1 --listen 127.0.0.1:7001 --data-dir /var/lib/txcoord/1
//           --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//   txcoord --config txcoord.toml          (the same settings as TOML: id = 1, listen = "...")
//
// Three or five replicas form one Raft group; the leader coordinates, the others answer
// NOT_LEADER with its address. One port serves CoordinatorService (clients, participants,
// txctl) and RaftService (the peers). When serving, it prints "listening on HOST:PORT" on stdout
// (for scripts and tests); logs go to stderr (and --log-file). SIGTERM or SIGINT stop it
// cleanly: the server stops accepting, calls in progress are answered (UNAVAILABLE when their
// outcome is not known yet), the Raft log is closed.
//
// Failpoints (TX_FAILPOINTS, see common/failpoint.h): coordinator.before_prepare_sent,
// coordinator.after_prepare_sent, coordinator.after_decision_logged,
// coordinator.before_phase_two.
//
// TX_DIAL_REWRITE (common/rpc/dial_rewrite.h) sends this replica's outgoing connections through
// other addresses, e.g. txchaos's fault-injecting proxies.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "common/failpoint.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/metrics_http.h"
#include "common/net.h"
#include "common/rpc/dial_rewrite.h"
#include "common/rpc/thrift_logging.h"
#include "common/shutdown.h"
#include "coordinator/server.h"

namespace {

int Fail(const std::string& what, const tx::Status& s) {
  spdlog::critical("{}: {}", what, s.ToString());
  spdlog::shutdown();
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t id = 0;
  std::string listen, peers, data_dir, metrics_listen, log_level = "info", log_file;
  int tick_ms = 10, election_ticks = 15, heartbeat_ticks = 3;
  uint64_t snapshot_every = 50'000;
  int64_t txn_timeout_ms = 30'000, max_txn_timeout_ms = 600'000;
  size_t participant_threads = 128;
  size_t batch_inflight = 4;
  int max_connections = 1024;

  CLI::App app{"txcoord: a replica of the Raft-replicated two-phase commit coordinator."};
  app.set_config("--config", "", "read these settings from a TOML file (keys as the long flags)");
  app.add_option("--id", id, "this replica's id (>= 1), as in --peers")->required();
  app.add_option("--listen", listen, "HOST:PORT for clients, participants and peers (port 0: any)")
      ->required();
  app.add_option("--peers", peers, "ID=HOST:PORT,... of every replica, this one included")
      ->required();
  app.add_option("--data-dir", data_dir, "the Raft log, hard state and snapshots")->required();
  app.add_option("--txn-timeout-ms", txn_timeout_ms,
                 "default time from Begin to the decision; past it a transaction aborts")
      ->check(CLI::Range(int64_t{1}, int64_t{86'400'000}));
  app.add_option("--max-txn-timeout-ms", max_txn_timeout_ms,
                 "the longest timeout a client may ask for")
      ->check(CLI::Range(int64_t{1}, int64_t{86'400'000}));
  app.add_option("--tick-ms", tick_ms, "Raft tick interval")->check(CLI::Range(1, 1000));
  app.add_option("--election-ticks", election_ticks, "Raft election timeout in ticks")
      ->check(CLI::Range(2, 1000));
  app.add_option("--heartbeat-ticks", heartbeat_ticks, "Raft heartbeat interval in ticks")
      ->check(CLI::Range(1, 1000));
  app.add_option("--snapshot-every", snapshot_every,
                 "snapshot the state every N applied entries (0: never)");
  app.add_option("--participant-threads", participant_threads,
                 "threads making calls to participants (calls in flight at most)")
      ->check(CLI::Range(size_t{1}, size_t{4096}));
  app.add_option("--batch-inflight", batch_inflight,
                 "log entries in flight; decisions proposed meanwhile share the next entry")
      ->check(CLI::Range(size_t{1}, size_t{64}));
  app.add_option("--max-connections", max_connections, "concurrent client connections at most")
      ->check(CLI::Range(1, 100'000));
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT for Prometheus /metrics and /healthz (off if empty)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off");
  app.add_option("--log-file", log_file, "also append logs to this file");
  CLI11_PARSE(app, argc, argv);

  tx::StatusOr<spdlog::level::level_enum> level = tx::ParseLogLevel(log_level);
  if (!level.ok()) {
    std::fprintf(stderr, "%s\n", level.status().ToString().c_str());
    return 2;
  }
  if (tx::Status s = tx::InitLogging({fmt::format("txcoord-{}", id), *level, log_file}); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  tx::rpc::RouteThriftLoggingToSpdlog();
  if (tx::Status s = tx::InstallShutdownHandlers(); !s.ok()) return Fail("signal handlers", s);
  if (tx::Status s = tx::ArmFailPointsFromEnv(); !s.ok()) return Fail("TX_FAILPOINTS", s);
  if (tx::Status s = tx::rpc::LoadDialRewritesFromEnv(); !s.ok()) {
    return Fail("TX_DIAL_REWRITE", s);
  }
  if (txn_timeout_ms > max_txn_timeout_ms) {
    return Fail("--txn-timeout-ms",
                tx::Status::InvalidArgument("the default timeout exceeds --max-txn-timeout-ms"));
  }

  tx::StatusOr<tx::HostPort> listen_at = tx::ParseHostPort(listen);
  if (!listen_at.ok()) return Fail("--listen", listen_at.status());
  tx::StatusOr<std::map<tx::PeerId, tx::HostPort>> peer_map = tx::ParsePeers(peers);
  if (!peer_map.ok()) return Fail("--peers", peer_map.status());
  if (peer_map->count(id) == 0) {
    return Fail("--peers", tx::Status::InvalidArgument(
                               fmt::format("--peers does not name this replica's id {}", id)));
  }

  tx::coordinator::ServerOptions options;
  options.id = id;
  options.data_dir = data_dir;
  options.peers = *peer_map;
  options.listen = *listen_at;
  options.tick_interval = std::chrono::milliseconds(tick_ms);
  options.election_timeout_ticks = election_ticks;
  options.heartbeat_ticks = heartbeat_ticks;
  options.snapshot_every_entries = snapshot_every;
  options.driver.default_txn_timeout = std::chrono::milliseconds(txn_timeout_ms);
  options.driver.max_txn_timeout = std::chrono::milliseconds(max_txn_timeout_ms);
  options.driver.random_seed = id * 0x9e3779b97f4a7c15ULL + 1;
  options.participant_threads = participant_threads;
  options.batcher.max_inflight_entries = batch_inflight;
  options.max_connections = max_connections;
  // A Commit call waits at most the default timeout plus the time to log the decision; one that
  // takes longer (a longer timeout, a participant that does not answer a one-phase commit) is
  // answered UNAVAILABLE and the client repeats it, joining the commit in progress. Each waiting
  // call holds a server thread, so the wait is bounded.
  options.commit_wait = std::chrono::milliseconds(txn_timeout_ms) + std::chrono::seconds(10);

  tx::StatusOr<std::unique_ptr<tx::coordinator::CoordinatorServer>> server =
      tx::coordinator::CoordinatorServer::Start(options);
  if (!server.ok()) return Fail("start", server.status());

  std::unique_ptr<tx::MetricsHttpServer> metrics;
  if (!metrics_listen.empty()) {
    tx::StatusOr<tx::HostPort> at = tx::ParseHostPort(metrics_listen);
    if (!at.ok()) return Fail("--metrics-listen", at.status());
    tx::coordinator::CoordinatorServer* s = server->get();
    tx::StatusOr<std::unique_ptr<tx::MetricsHttpServer>> started = tx::MetricsHttpServer::Start(
        *at, tx::MetricsRegistry::Default(), [s] { return s->health(); });
    if (!started.ok()) return Fail("metrics server", started.status());
    metrics = *std::move(started);
    spdlog::info("metrics on http://{}/metrics", metrics->address());
  }

  spdlog::info("txcoord {} serving on {} (data in {})", id, (*server)->address(), data_dir);
  std::printf("listening on %s\n", tx::ToString((*server)->address()).c_str());
  std::fflush(stdout);

  tx::ShutdownSignal::Process().Wait();
  spdlog::info("shutting down: {}", tx::ShutdownSignal::Process().reason());
  (*server)->Stop();
  if (metrics) metrics->Stop();
  spdlog::shutdown();
  return 0;
}
