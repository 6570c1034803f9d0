// txpart: the participant agent. Owns one SQLite database and serves ParticipantService.
//
//   txpart --name accounts-a --db /data/a.db --listen 127.0.0.1:7101
//          --coordinators 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//
// On start it recovers prepared transactions (with their locks) and asks the coordinators
// for their outcome, and registers its name and address in the coordinators' directory (so
// that clients need only the coordinators' addresses). When ready it prints one line to stdout,
// "listening on HOST:PORT" (the real port if 0 was asked for), for scripts and tests; logs go to
// stderr (and --log-file). SIGTERM or SIGINT shut it down cleanly: in-flight calls finish, prepared
// transactions stay durable, active ones are dropped (they abort).
//
// TX_DIAL_REWRITE (common/rpc/dial_rewrite.h) sends its outgoing connections (Resolve calls)
// through other addresses, e.g. txchaos's fault-injecting proxies.

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <thrift/TProcessor.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "ParticipantService.h"
#include "common/failpoint.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/metrics_http.h"
#include "common/net.h"
#include "common/rpc/dial_rewrite.h"
#include "common/rpc/server.h"
#include "common/rpc/thrift_logging.h"
#include "common/shutdown.h"
#include "participant/participant.h"
#include "participant/registrar.h"
#include "participant/resolver.h"
#include "participant/service.h"
#include "participant/termination.h"

namespace {

int Fail(const std::string& what, const tx::Status& s) {
  spdlog::critical("{}: {}", what, s.ToString());
  spdlog::shutdown();
  return 1;
}

// For an agent started without --coordinators: none is ever reachable, so 3PC transactions in
// doubt go to the termination protocol after its timeout.
class NoCoordinators final : public tx::participant::OutcomeSource {
 public:
  tx::StatusOr<Decision> Resolve(tx::participant::TxId) override {
    return tx::Status::Unavailable("no --coordinators configured");
  }
};

tx::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return tx::Status::IOError(fmt::format("cannot read {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::string name, db, listen, advertise, coordinators, metrics_listen, log_level = "info",
                                                                         log_file;
  std::string init_sql_file;
  int64_t lock_timeout_ms = 5000, idle_timeout_ms = 60000, resolve_after_ms = 10000;
  int64_t statement_timeout_ms = 10000;
  int64_t termination_timeout_ms = 5000, termination_probe_after_ms = 1000;
  size_t max_transactions = 4096;
  uint32_t max_request_bytes = tx::rpc::kDefaultMaxMessageBytes;
  int max_connections = 256;
  bool foreign_keys = true;

  CLI::App app{"txpart: a participant agent that makes one SQLite database a 2PC/3PC resource."};
  app.add_option("--name", name, "this participant's name in the coordinator's directory")
      ->required();
  app.add_option("--db", db, "the SQLite database file (created if missing)")->required();
  app.add_option("--listen", listen, "HOST:PORT to serve ParticipantService on (port 0: any)")
      ->required();
  app.add_option("--advertise", advertise,
                 "HOST:PORT clients should use to reach this agent, registered in the "
                 "coordinators' directory (default: the --listen address, with the port "
                 "actually bound)");
  app.add_option("--coordinators", coordinators,
                 "HOST:PORT,... of the coordinator replicas: this agent registers with them and "
                 "asks them for the outcome of prepared transactions");
  app.add_option("--init-sql", init_sql_file,
                 "file of SQL run at start-up outside any transaction (schema set-up; make it "
                 "idempotent with IF NOT EXISTS)");
  app.add_option("--lock-timeout-ms", lock_timeout_ms,
                 "how long a transaction waits for a row lock before it is aborted")
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}));
  app.add_option("--idle-timeout-ms", idle_timeout_ms,
                 "an unprepared transaction idle this long is aborted")
      ->check(CLI::Range(int64_t{1}, int64_t{86400000}));
  app.add_option("--statement-timeout-ms", statement_timeout_ms,
                 "an Execute whose statements run longer is stopped (TIMED_OUT)")
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}));
  app.add_option("--resolve-after-ms", resolve_after_ms,
                 "ask the coordinators about a prepared transaction whose outcome is this late")
      ->check(CLI::Range(int64_t{1}, int64_t{86400000}));
  app.add_option("--termination-timeout-ms", termination_timeout_ms,
                 "3PC: when no coordinator has answered about an in-doubt THREE_PHASE "
                 "transaction for this long, finish it with the other participants (termination "
                 "protocol)")
      ->check(CLI::Range(int64_t{1}, int64_t{86400000}));
  app.add_option("--termination-probe-after-ms", termination_probe_after_ms,
                 "3PC: start asking the coordinators about an in-doubt THREE_PHASE transaction "
                 "this late")
      ->check(CLI::Range(int64_t{1}, int64_t{86400000}));
  app.add_option("--max-transactions", max_transactions, "live transactions at most")
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  app.add_option("--max-request-bytes", max_request_bytes, "largest RPC frame accepted")
      ->check(CLI::Range(uint32_t{4096}, uint32_t{256u << 20}));
  app.add_option("--max-connections", max_connections, "concurrent client connections at most")
      ->check(CLI::Range(1, 10000));
  app.add_option("--foreign-keys", foreign_keys, "enforce FOREIGN KEY constraints");
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
  if (tx::Status s = tx::InitLogging({"txpart-" + name, *level, log_file}); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  tx::rpc::RouteThriftLoggingToSpdlog();
  if (tx::Status s = tx::InstallShutdownHandlers(); !s.ok()) return Fail("signal handlers", s);
  if (tx::Status s = tx::ArmFailPointsFromEnv(); !s.ok()) return Fail("TX_FAILPOINTS", s);
  if (tx::Status s = tx::rpc::LoadDialRewritesFromEnv(); !s.ok()) {
    return Fail("TX_DIAL_REWRITE", s);
  }

  tx::StatusOr<tx::HostPort> listen_at = tx::ParseHostPort(listen);
  if (!listen_at.ok()) return Fail("--listen", listen_at.status());
  std::vector<tx::HostPort> coordinator_list;
  if (!coordinators.empty()) {
    tx::StatusOr<std::vector<tx::HostPort>> parsed = tx::ParseHostPortList(coordinators);
    if (!parsed.ok()) return Fail("--coordinators", parsed.status());
    coordinator_list = *std::move(parsed);
  }

  tx::participant::Options options;
  options.name = name;
  options.db_path = db;
  options.lock_timeout_ms = lock_timeout_ms;
  options.idle_timeout_ms = idle_timeout_ms;
  options.statement_timeout_ms = statement_timeout_ms;
  options.max_transactions = max_transactions;
  options.foreign_keys = foreign_keys;
  if (!init_sql_file.empty()) {
    tx::StatusOr<std::string> sql = ReadFile(init_sql_file);
    if (!sql.ok()) return Fail("--init-sql", sql.status());
    options.init_sql = *std::move(sql);
  }
  tx::StatusOr<std::unique_ptr<tx::participant::Participant>> participant =
      tx::participant::Participant::Open(options);
  if (!participant.ok()) return Fail("open " + db, participant.status());

  std::unique_ptr<tx::MetricsHttpServer> metrics;
  if (!metrics_listen.empty()) {
    tx::StatusOr<tx::HostPort> at = tx::ParseHostPort(metrics_listen);
    if (!at.ok()) return Fail("--metrics-listen", at.status());
    tx::StatusOr<std::unique_ptr<tx::MetricsHttpServer>> started = tx::MetricsHttpServer::Start(
        *at, tx::MetricsRegistry::Default(), [p = participant->get()] { return p->Health(); });
    if (!started.ok()) return Fail("metrics server", started.status());
    metrics = *std::move(started);
    spdlog::info("metrics on http://{}/metrics", metrics->address());
  }

  // 3PC termination protocol: its own coordinator client and peer connections (both used from
  // its thread only).
  std::unique_ptr<tx::participant::OutcomeSource> termination_source;
  if (coordinator_list.empty()) {
    termination_source = std::make_unique<NoCoordinators>();
  } else {
    termination_source =
        std::make_unique<tx::participant::CoordinatorOutcomeSource>(coordinator_list, name);
  }
  tx::rpc::RpcClientOptions peer_options;
  // A round asks every peer in turn: a dead one must not hold it up for long.
  peer_options.connect_timeout = std::chrono::milliseconds(500);
  peer_options.recv_timeout = std::chrono::milliseconds(2000);
  peer_options.send_timeout = std::chrono::milliseconds(2000);
  peer_options.max_connections = 4;
  tx::participant::ThriftPeerChannel peer_channel(name, peer_options);
  tx::participant::TerminatorOptions terminator_options;
  terminator_options.termination_timeout = std::chrono::milliseconds(termination_timeout_ms);
  terminator_options.probe_after = std::chrono::milliseconds(termination_probe_after_ms);
  terminator_options.retry_interval =
      std::chrono::milliseconds(std::clamp<int64_t>(termination_timeout_ms / 10, 50, 1000));
  terminator_options.poll_interval =
      std::chrono::milliseconds(std::clamp<int64_t>(termination_timeout_ms / 20, 20, 200));
  tx::participant::Terminator terminator(participant->get(), name, termination_source.get(),
                                         &peer_channel, terminator_options, tx::Clock::Real());

  auto handler = std::make_shared<tx::participant::ParticipantServiceHandler>(participant->get());
  handler->set_termination_probe_hook(
      [&terminator](tx::participant::TxId txid) { terminator.NoteProbe(txid); });
  tx::rpc::RpcServerOptions server_options;
  server_options.name = "txpart-" + name;
  server_options.listen = *listen_at;
  server_options.max_message_bytes = max_request_bytes;
  server_options.max_connections = max_connections;
  // Slots above the cap for the protocol's own calls (rpc/server.h): the coordinator's Prepare,
  // Commit and Abort, other participants' Status (termination), operators' reads. Only
  // applications call Execute, so clients holding every ordinary slot cannot hold up the
  // outcome of transactions already prepared. 32: a few dozen connections keep the leader's
  // prepares and phase two moving (past them its calls wait in the backlog and time out, as any
  // caller's do under overload), with room left for peers and txctl.
  server_options.reserved = {{"the protocol's calls", 32, [](const std::string& message_name) {
                                return message_name != "Execute";
                              }}};
  tx::StatusOr<std::unique_ptr<tx::rpc::RpcServer>> server = tx::rpc::RpcServer::Start(
      std::make_shared<tx::api::ParticipantServiceProcessor>(handler), server_options);
  if (!server.ok()) return Fail("listen on " + listen, server.status());

  tx::HostPort advertised = (*server)->address();
  if (!advertise.empty()) {
    tx::StatusOr<tx::HostPort> parsed = tx::ParseHostPort(advertise);
    if (!parsed.ok()) return Fail("--advertise", parsed.status());
    advertised = *parsed;
  } else if (!coordinator_list.empty() &&
             (advertised.host == "0.0.0.0" || advertised.host == "::")) {
    return Fail("--advertise", tx::Status::InvalidArgument(
                                   "listening on a wildcard address: say with --advertise which "
                                   "address clients should use"));
  }

  std::unique_ptr<tx::participant::CoordinatorOutcomeSource> source;
  std::unique_ptr<tx::participant::Resolver> resolver;
  std::unique_ptr<tx::participant::CoordinatorOutcomeSource> registration_source;
  std::unique_ptr<tx::participant::Registrar> registrar;
  if (!coordinator_list.empty()) {
    // Its own client: the Resolver's is used from the Resolver's thread only.
    registration_source =
        std::make_unique<tx::participant::CoordinatorOutcomeSource>(coordinator_list, name);
    registrar = std::make_unique<tx::participant::Registrar>(
        [&] { return registration_source->Register(advertised); }, tx::Clock::Real());
    registrar->Start();
    source = std::make_unique<tx::participant::CoordinatorOutcomeSource>(coordinator_list, name);
    tx::participant::ResolverOptions resolver_options;
    resolver_options.resolve_after = std::chrono::milliseconds(resolve_after_ms);
    resolver = std::make_unique<tx::participant::Resolver>(participant->get(), source.get(),
                                                           resolver_options, tx::Clock::Real());
    resolver->Start();
  } else {
    spdlog::warn("no --coordinators: prepared transactions wait for the coordinator to call");
  }

  terminator.Start();

  spdlog::info("participant {} serving {} on {}", name, db, (*server)->address());
  std::printf("listening on %s\n", tx::ToString((*server)->address()).c_str());
  std::fflush(stdout);

  tx::ShutdownSignal::Process().Wait();
  spdlog::info("shutting down ({})", tx::ShutdownSignal::Process().reason());
  if (registrar) registrar->Stop();
  if (resolver) resolver->Stop();
  terminator.Stop();
  (*server)->Stop();  // waits for running calls
  if (metrics) metrics->Stop();
  participant->reset();
  spdlog::info("stopped");
  spdlog::shutdown();
  return 0;
}
