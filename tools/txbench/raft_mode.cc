// txbench raft: three raft_example_server replicas as separate processes on loopback (real
// Thrift, real WAL, fdatasync on every replica), driven by concurrent proposers over Thrift.
//
// Throughput: for each proposer count (default 1 and 64), --runs runs of --seconds on a fresh
// cluster; each proposer proposes --size-byte items in a closed loop (the next as soon as the
// last is committed and applied on the leader), one Propose RPC per item, or with
// --in-flight K, K items at a time in one ProposeMany RPC (each item its own log entry and
// outcome). With --proposer-model loop the proposers are connections driven by one epoll
// thread (one Propose in flight each) rather than threads. Printed per run and as the median run:
// proposals committed per second and commit latency p50/p99 as the proposer sees it (the RPC to the
// leader + replication + fdatasync on a majority + apply). After each run the replicas must
// converge on the same list, holding at least every acknowledged item.
//
// Failover: --failover-rounds rounds on one cluster under a light stream of proposals: kill -9
// the leader, measure until the first proposal is committed by a new leader, restart the
// killed replica and let it catch up. Prints each round and the median.
//
// Compare with `../shared/bench/etcd-baseline throughput xl` and `... failover` in the same
// session (docs/benchmarks.md, "Raft").

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "raft/node/example/example_client.h"
#include "tools/txbench/bench_util.h"
#include "tools/txbench/mode.h"

namespace tx::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;
using raft::example::ExampleClusterClient;
using raft::example::ProposeOutcome;

struct Options {
  std::string server;  // raft_example_server; default: next to txbench
  std::string dir;     // data directories; default: a fresh temporary directory
  std::string proposers = "1,64";
  // Proposals each proposer keeps in flight: 1 is one Propose RPC per proposal; more sends
  // that many at once in one ProposeMany RPC (each its own log entry) and waits for all.
  int in_flight = 1;
  int size = 128;
  double seconds = 5;
  int runs = 3;
  int failover_rounds = 5;
  int tick_ms = 10;
  int election_ticks = 15;
  int heartbeat_ticks = 3;
  uint64_t snapshot_every = 100000;
  // Proposers call the replicas' client ports (raft_example_server --client-listen: an epoll
  // server whose calls hold no thread while they wait) instead of the shared Raft port
  // (one handler thread per connection).
  bool client_port = true;
  // Followers return their acknowledgements in the replies to the leader's batches.
  bool acks_in_replies = true;
  // Followers' RPC handlers persist received entries themselves when the Ready loop is idle.
  bool persist_on_handler = true;
  // The leaders' NodeOptions::max_append_gather, in microseconds.
  int64_t append_gather_us = 1000;
  // "threads": each proposer is a thread making blocking calls through ExampleClusterClient.
  // "loop": each proposer is a connection of its own to the leader's client port, still with
  // one proposal in flight, and one thread drives them all with epoll (as a load generator of
  // lightweight tasks would; etcd's benchmark runs its 1,000 clients as goroutines). The
  // replicas do the same work either way; the loop spends less of the shared CPUs on the
  // proposers' own thread switches.
  std::string proposer_model = "threads";
  std::string only;    // "throughput", "failover" or empty for both
  bool stats = false;  // replicas print their batching/fsync statistics at exit
};

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TX_CHECK(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  TX_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  TX_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Three replicas in their own directory under `dir`.
class Cluster {
 public:
  Cluster(const Options& o, const std::string& dir) : o_(o), dir_(dir) {
    for (uint64_t id = 1; id <= 3; ++id) {
      addresses_[id] = {"127.0.0.1", FreePort()};
      client_addresses_[id] = o.client_port ? HostPort{"127.0.0.1", FreePort()} : addresses_[id];
    }
    for (const auto& [id, hp] : addresses_) {
      peers_ += fmt::format("{}{}={}", peers_.empty() ? "" : ",", id, ToString(hp));
    }
  }

  Status Start(uint64_t id) {
    std::vector<std::string> argv = {o_.server,
                                     "--id",
                                     std::to_string(id),
                                     "--listen",
                                     ToString(addresses_.at(id)),
                                     "--peers",
                                     peers_,
                                     "--data-dir",
                                     fmt::format("{}/r{}", dir_, id),
                                     "--tick-ms",
                                     std::to_string(o_.tick_ms),
                                     "--election-ticks",
                                     std::to_string(o_.election_ticks),
                                     "--heartbeat-ticks",
                                     std::to_string(o_.heartbeat_ticks),
                                     "--snapshot-every",
                                     std::to_string(o_.snapshot_every),
                                     "--keep-items",
                                     "false",
                                     "--log-level",
                                     "error"};
    if (o_.stats) argv.push_back("--print-stats");
    if (!o_.acks_in_replies) {
      argv.push_back("--acks-in-replies");
      argv.push_back("false");
    }
    if (!o_.persist_on_handler) {
      argv.push_back("--persist-on-handler");
      argv.push_back("false");
    }
    argv.push_back("--append-gather-us");
    argv.push_back(std::to_string(o_.append_gather_us));
    if (o_.client_port) {
      argv.push_back("--client-listen");
      argv.push_back(ToString(client_addresses_.at(id)));
    }
    TX_ASSIGN_OR_RETURN(ChildProcess p, ChildProcess::StartServer(argv, std::chrono::seconds(20)));
    procs_.erase(id);
    procs_.emplace(id, std::move(p));
    return Status::OK();
  }

  Status StartAll() {
    for (uint64_t id = 1; id <= 3; ++id) TX_RETURN_IF_ERROR(Start(id));
    return Status::OK();
  }

  void Kill(uint64_t id) {
    auto it = procs_.find(id);
    if (it == procs_.end()) return;
    ::kill(it->second.pid(), SIGKILL);
    (void)it->second.Stop();  // reaps
    procs_.erase(it);
  }

  void StopAll() {
    for (auto& [id, p] : procs_) (void)p.Stop();
    procs_.clear();
  }

  // Where proposers and the benchmark's own queries go.
  const std::map<uint64_t, HostPort>& client_addresses() const { return client_addresses_; }

 private:
  const Options& o_;
  const std::string dir_;
  std::map<uint64_t, HostPort> addresses_;
  std::map<uint64_t, HostPort> client_addresses_;
  std::string peers_;
  std::map<uint64_t, ChildProcess> procs_;
};

rpc::RpcClientOptions ClientOptions(int connections) {
  rpc::RpcClientOptions c;
  c.connect_timeout = std::chrono::milliseconds(300);
  c.recv_timeout = std::chrono::milliseconds(5000);
  c.max_connections = connections + 4;
  c.max_idle_connections = connections + 4;
  c.backoff.initial = std::chrono::milliseconds(5);
  c.backoff.max = std::chrono::milliseconds(50);
  return c;
}

uint64_t WaitForLeader(ExampleClusterClient& client, std::chrono::seconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (uint64_t l = client.FindLeader(); l != 0) return l;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return 0;
}

std::string Item(int proposer, uint64_t seq, int size) {
  std::string s = fmt::format("p{}-{}-", proposer, seq);
  s.resize(static_cast<size_t>(size), 'x');
  return s;
}

double CpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct RunResult {
  double client_cpu_seconds = 0;  // txbench's own CPU (the proposers) during the interval
  double seconds = 0;
  int64_t committed = 0;
  int64_t failed = 0;
  Latencies latency_us;
  double per_second() const { return static_cast<double>(committed) / seconds; }
};

// The "loop" proposer model (Options::proposer_model): `proposers` connections to `leader`, each
// with one Propose call in flight, driven by the calling thread with epoll until `stop`. Counts
// into *totals while `measuring`. A refused proposal (not leader, timeout) counts as failed; the
// connection goes on. Returns an error only if a connection cannot be set up or breaks.
Status RunProposerLoop(const HostPort& leader, int proposers, const Options& o,
                       const std::atomic<bool>& measuring, const std::atomic<bool>& stop,
                       RunResult* totals) {
  using apache::thrift::protocol::TBinaryProtocolT;
  using apache::thrift::transport::TMemoryBuffer;
  struct Conn {
    int fd = -1;
    int id = 0;
    uint64_t seq = 0;
    int32_t call = 0;
    std::string in;
    SteadyClock::time_point start;
  };
  std::vector<Conn> conns(static_cast<size_t>(proposers));
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return Status::FromErrno(errno, "epoll_create1");
  auto cleanup = [&] {
    for (Conn& c : conns) {
      if (c.fd >= 0) ::close(c.fd);
    }
    ::close(ep);
  };
  const int32_t timeout_ms = 5000;
  // One encoder and one decoder for every call: the loop's own CPU is what this model saves.
  auto encoded = std::make_shared<TMemoryBuffer>(512);
  TBinaryProtocolT<TMemoryBuffer> encoder(encoded);
  auto decoded = std::make_shared<TMemoryBuffer>();
  TBinaryProtocolT<TMemoryBuffer> decoder(decoded);
  std::string frame;
  // Sends conn's next Propose as one framed, strict binary Thrift call.
  auto send_next = [&](Conn& c) -> Status {
    const std::string item = Item(c.id, c.seq++, o.size);
    encoded->resetBuffer();
    encoder.writeMessageBegin("Propose", apache::thrift::protocol::T_CALL, ++c.call);
    raft_example::RaftExample_Propose_pargs args;
    args.item = &item;
    args.timeout_ms = &timeout_ms;
    args.write(&encoder);
    encoder.writeMessageEnd();
    uint8_t* body = nullptr;
    uint32_t body_size = 0;
    encoded->getBuffer(&body, &body_size);
    const uint32_t n = htonl(body_size);
    frame.assign(reinterpret_cast<const char*>(&n), 4);
    frame.append(reinterpret_cast<const char*>(body), body_size);
    c.start = SteadyClock::now();
    size_t sent = 0;
    while (sent < frame.size()) {  // a few hundred bytes: at once, barring a full socket buffer
      const ssize_t w = ::send(c.fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (w < 0) return Status::FromErrno(errno, "send to the leader");
      sent += static_cast<size_t>(w);
    }
    return Status::OK();
  };
  for (int p = 0; p < proposers; ++p) {
    Conn& c = conns[static_cast<size_t>(p)];
    c.id = p;
    StatusOr<int> fd = ConnectTcp(leader, std::chrono::seconds(10));
    if (!fd.ok()) {
      cleanup();
      return fd.status();
    }
    c.fd = *fd;
    const int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(p);
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
      cleanup();
      return Status::FromErrno(errno, "epoll_ctl");
    }
    if (Status s = send_next(c); !s.ok()) {
      cleanup();
      return s;
    }
  }
  std::vector<epoll_event> events(static_cast<size_t>(proposers));
  char buf[64 << 10];
  Status result;
  while (result.ok() && !stop.load(std::memory_order_relaxed)) {
    const int n = ::epoll_wait(ep, events.data(), proposers, 100);
    for (int e = 0; e < n && result.ok(); ++e) {
      Conn& c = conns[events[static_cast<size_t>(e)].data.u32];
      const ssize_t r = ::recv(c.fd, buf, sizeof(buf), 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        result = Status::Unavailable("the leader closed a proposer's connection");
        break;
      }
      if (r < 0) continue;
      c.in.append(buf, static_cast<size_t>(r));
      while (c.in.size() >= 4) {
        uint32_t len;
        std::memcpy(&len, c.in.data(), 4);
        len = ntohl(len);
        if (c.in.size() < 4 + static_cast<size_t>(len)) break;
        const double us =
            std::chrono::duration<double, std::micro>(SteadyClock::now() - c.start).count();
        decoded->resetBuffer(reinterpret_cast<uint8_t*>(c.in.data() + 4), len,
                             TMemoryBuffer::OBSERVE);
        bool ok = false;
        try {
          std::string name;
          apache::thrift::protocol::TMessageType type;
          int32_t seqid = 0;
          decoder.readMessageBegin(name, type, seqid);
          if (type == apache::thrift::protocol::T_REPLY) {
            raft_example::ProposeResponse response;
            raft_example::RaftExample_Propose_presult presult;
            presult.success = &response;
            presult.read(&decoder);
            ok = presult.__isset.success;
          }
        } catch (const apache::thrift::TException&) {
          ok = false;
        }
        c.in.erase(0, 4 + static_cast<size_t>(len));
        if (measuring.load(std::memory_order_relaxed)) {
          if (ok) {
            ++totals->committed;
            totals->latency_us.Add(us);
          } else {
            ++totals->failed;
          }
        }
        if (!stop.load(std::memory_order_relaxed)) result = send_next(c);
      }
    }
  }
  cleanup();
  return result;
}

StatusOr<RunResult> ThroughputRun(const Options& o, int proposers, int run) {
  const std::string dir = fmt::format("{}/t{}-{}", o.dir, proposers, run);
  Cluster cluster(o, dir);
  TX_RETURN_IF_ERROR(cluster.StartAll());
  ExampleClusterClient client(cluster.client_addresses(), ClientOptions(proposers));
  if (WaitForLeader(client, std::chrono::seconds(20)) == 0) {
    return Status::Unavailable("no leader elected");
  }
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::vector<RunResult> per(static_cast<size_t>(proposers));
  std::vector<std::thread> threads;
  Status loop_status;
  if (o.proposer_model == "loop") {
    const uint64_t leader = client.FindLeader();
    if (leader == 0) return Status::Unavailable("no leader to propose to");
    const HostPort at = cluster.client_addresses().at(leader);
    threads.emplace_back(
        [&, at] { loop_status = RunProposerLoop(at, proposers, o, measuring, stop, &per[0]); });
  }
  for (int p = 0; o.proposer_model == "threads" && p < proposers; ++p) {
    threads.emplace_back([&, p] {
      uint64_t seq = 0;
      std::vector<std::string> items;
      while (!stop.load(std::memory_order_relaxed)) {
        auto start = SteadyClock::now();
        std::vector<ProposeOutcome> outcomes;
        if (o.in_flight == 1) {
          outcomes.push_back(client.Propose(Item(p, seq++, o.size), std::chrono::seconds(5)));
        } else {
          items.clear();
          for (int i = 0; i < o.in_flight; ++i) items.push_back(Item(p, seq++, o.size));
          outcomes = client.ProposeMany(items, std::chrono::seconds(5));
        }
        auto us = std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
        if (!measuring.load(std::memory_order_relaxed)) continue;
        for (const ProposeOutcome& r : outcomes) {
          if (r.status.ok()) {
            ++per[p].committed;
            per[p].latency_us.Add(us);
          } else {
            ++per[p].failed;
          }
        }
      }
    });
  }
  // A short warm-up (connections, first batches), then the measured interval.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  measuring.store(true);
  auto start = SteadyClock::now();
  const double cpu_start = CpuSeconds();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  measuring.store(false);
  RunResult total;
  total.seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  total.client_cpu_seconds = CpuSeconds() - cpu_start;
  stop.store(true);
  for (auto& t : threads) t.join();
  TX_RETURN_IF_ERROR(loop_status);
  for (RunResult& r : per) {
    total.committed += r.committed;
    total.failed += r.failed;
    total.latency_us.Merge(r.latency_us);
  }
  // The replicas must agree (same length and checksum) once the stream stops.
  auto deadline = SteadyClock::now() + std::chrono::seconds(20);
  while (true) {
    std::vector<raft_example::ReadResponse> heads;
    for (uint64_t id = 1; id <= 3; ++id) {
      StatusOr<raft_example::ReadResponse> h = client.ReadHead(id);
      if (h.ok()) heads.push_back(*h);
    }
    if (heads.size() == 3 && heads[0].total == heads[1].total && heads[1].total == heads[2].total &&
        heads[0].checksum == heads[1].checksum && heads[1].checksum == heads[2].checksum) {
      if (heads[0].total < total.committed) {
        return Status::Internal(fmt::format("replicas hold {} items but {} were acknowledged",
                                            heads[0].total, total.committed));
      }
      break;
    }
    if (SteadyClock::now() > deadline) return Status::Internal("replicas did not converge");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  cluster.StopAll();
  RemoveTree(dir);
  return total;
}

void PrintRun(const std::string& label, RunResult& r) {
  std::printf(
      "%-26s %9.0f proposals/s   commit latency p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms"
      "   (%lld committed, %lld failed; client CPU %.2f s)\n",
      label.c_str(), r.per_second(), r.latency_us.Quantile(0.5) / 1000,
      r.latency_us.Quantile(0.99) / 1000, r.latency_us.Quantile(1.0) / 1000,
      static_cast<long long>(r.committed), static_cast<long long>(r.failed), r.client_cpu_seconds);
  std::fflush(stdout);
}

int Throughput(const Options& o) {
  std::vector<int> counts;
  std::stringstream ss(o.proposers);
  for (std::string part; std::getline(ss, part, ',');) counts.push_back(std::stoi(part));
  int exit_code = 0;
  for (int proposers : counts) {
    std::vector<RunResult> results;
    for (int run = 0; run < o.runs; ++run) {
      StatusOr<RunResult> r = ThroughputRun(o, proposers, run);
      if (!r.ok()) {
        std::fprintf(stderr, "run failed: %s\n", r.status().ToString().c_str());
        exit_code = 1;
        break;
      }
      PrintRun(fmt::format("  run {}, {} proposer(s)", run + 1, proposers), *r);
      results.push_back(*std::move(r));
    }
    if (results.empty()) continue;
    std::sort(results.begin(), results.end(), [](const RunResult& a, const RunResult& b) {
      return a.per_second() < b.per_second();
    });
    PrintRun(fmt::format("median, {} proposer(s)", proposers), results[results.size() / 2]);
  }
  return exit_code;
}

int Failover(const Options& o) {
  const std::string dir = fmt::format("{}/failover", o.dir);
  Cluster cluster(o, dir);
  if (Status s = cluster.StartAll(); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  // A light stream: a few proposers, so the first commit of a new leader is seen within a
  // fraction of a millisecond of when it can happen.
  constexpr int kProbers = 4;
  ExampleClusterClient client(cluster.client_addresses(), ClientOptions(kProbers));
  std::mutex mu;
  std::optional<SteadyClock::time_point> killed_at;  // GUARDED_BY(mu)
  uint64_t killed = 0;                               // GUARDED_BY(mu)
  std::optional<SteadyClock::time_point> first_new;  // GUARDED_BY(mu)
  std::atomic<bool> stop{false};
  std::vector<std::thread> probers;
  for (int p = 0; p < kProbers; ++p) {
    probers.emplace_back([&, p] {
      for (uint64_t seq = 0; !stop.load(); ++seq) {
        ProposeOutcome r = client.Propose(Item(p, seq, o.size), std::chrono::seconds(5));
        auto now = SteadyClock::now();
        if (!r.status.ok()) continue;
        std::lock_guard lock(mu);
        // Counts only proposals sent after the kill and acknowledged by another replica.
        if (killed_at.has_value() && r.leader != killed && !first_new.has_value()) {
          first_new = now;
        }
      }
    });
  }
  std::vector<double> seconds;
  int exit_code = 0;
  for (int round = 0; round < o.failover_rounds; ++round) {
    uint64_t leader = WaitForLeader(client, std::chrono::seconds(20));
    if (leader == 0) {
      std::fprintf(stderr, "round %d: no leader\n", round + 1);
      exit_code = 1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // steady stream first
    {
      std::lock_guard lock(mu);
      killed = leader;
      first_new.reset();
      killed_at = SteadyClock::now();
    }
    cluster.Kill(leader);
    auto deadline = SteadyClock::now() + std::chrono::seconds(20);
    std::optional<double> took;
    while (SteadyClock::now() < deadline) {
      {
        std::lock_guard lock(mu);
        if (first_new.has_value()) {
          took = std::chrono::duration<double>(*first_new - *killed_at).count();
          killed_at.reset();
          break;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!took.has_value()) {
      std::fprintf(stderr, "round %d: no commit by a new leader within 20 s\n", round + 1);
      exit_code = 1;
      break;
    }
    seconds.push_back(*took);
    std::printf("  failover round %d: %.3f s (killed node %llu)\n", round + 1, *took,
                static_cast<unsigned long long>(leader));
    std::fflush(stdout);
    if (Status s = cluster.Start(leader); !s.ok()) {
      std::fprintf(stderr, "restart: %s\n", s.ToString().c_str());
      exit_code = 1;
      break;
    }
    // Let the restarted replica catch up before the next round.
    auto catch_up = SteadyClock::now() + std::chrono::seconds(20);
    while (SteadyClock::now() < catch_up) {
      StatusOr<raft_example::NodeInfo> info = client.Info(leader);
      uint64_t now_leader = client.FindLeader();
      StatusOr<raft_example::NodeInfo> lead =
          now_leader != 0 ? client.Info(now_leader)
                          : StatusOr<raft_example::NodeInfo>(Status::Unavailable("no leader"));
      if (info.ok() && lead.ok() && info->applied_index + 100 >= lead->commit_index) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  stop.store(true);
  for (auto& t : probers) t.join();
  cluster.StopAll();
  if (!seconds.empty()) {
    std::vector<double> sorted = seconds;
    std::sort(sorted.begin(), sorted.end());
    std::printf(
        "median failover (kill -9 of the leader to the first commit by a new leader): "
        "%.3f s over %zu rounds (min %.3f, max %.3f)\n",
        sorted[sorted.size() / 2], sorted.size(), sorted.front(), sorted.back());
  }
  return exit_code;
}

int Run(const Options& opts) {
  Options o = opts;
  if (o.server.empty()) o.server = SelfDir() + "/raft_example_server";
  bool own_dir = o.dir.empty();
  if (own_dir) {
    StatusOr<std::string> d = MakeTempDir("txbench-raft");
    if (!d.ok()) {
      std::fprintf(stderr, "%s\n", d.status().ToString().c_str());
      return 1;
    }
    o.dir = *d;
  }
  std::printf(
      "txbench raft: 3 replicas (separate processes, loopback, fdatasync on), %d-byte "
      "proposals, %d in flight per proposer (%s, %s, proposers as %s), tick %d ms, election "
      "timeout %d-%d ticks; %s\n",
      o.size, o.in_flight, o.in_flight == 1 ? "one Propose RPC each" : "one ProposeMany RPC",
      o.client_port ? "epoll client port" : "threaded Raft port",
      o.proposer_model == "loop" ? "connections on one epoll thread" : "threads", o.tick_ms,
      o.election_ticks, 2 * o.election_ticks, MachineDescription().c_str());
  if (o.proposer_model == "loop" && (o.in_flight != 1 || !o.client_port)) {
    std::fprintf(stderr, "--proposer-model loop needs --in-flight 1 and --client-port true\n");
    return 2;
  }
  int exit_code = 0;
  if (o.only.empty() || o.only == "throughput") {
    std::printf("throughput: %.1f s x %d runs per proposer count (median shown)\n", o.seconds,
                o.runs);
    exit_code |= Throughput(o);
  }
  if (o.only.empty() || o.only == "failover") exit_code |= Failover(o);
  if (own_dir) RemoveTree(o.dir);
  return exit_code;
}

RunFn Setup(CLI::App* cmd) {
  auto o = std::make_shared<Options>();
  cmd->add_option("--server", o->server, "raft_example_server binary (default: next to txbench)");
  cmd->add_option("--dir", o->dir, "directory for the replicas' data (default: a temporary one)");
  cmd->add_option("--proposers", o->proposers, "comma-separated proposer counts");
  cmd->add_option("--in-flight", o->in_flight,
                  "proposals each proposer keeps in flight (more than 1: sent together in one "
                  "ProposeMany RPC, each its own log entry)")
      ->check(CLI::Range(1, static_cast<int>(raft::example::kMaxProposeManyItems)));
  cmd->add_option("--size", o->size, "bytes per proposal")->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--seconds", o->seconds, "length of each throughput run")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--runs", o->runs, "runs per proposer count; the median is reported")
      ->check(CLI::Range(1, 99));
  cmd->add_option("--failover-rounds", o->failover_rounds, "kill -9 rounds")
      ->check(CLI::Range(1, 100));
  cmd->add_option("--tick-ms", o->tick_ms, "Raft tick")->check(CLI::Range(1, 1000));
  cmd->add_option("--election-ticks", o->election_ticks, "election timeout in ticks")
      ->check(CLI::Range(2, 1000));
  cmd->add_option("--heartbeat-ticks", o->heartbeat_ticks, "heartbeat interval in ticks")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--snapshot-every", o->snapshot_every, "snapshot every N applied entries");
  cmd->add_flag("--stats", o->stats, "replicas print batching and fsync statistics at exit");
  cmd->add_option("--acks-in-replies", o->acks_in_replies,
                  "true: followers acknowledge in the reply to the batch; false: in RPCs of "
                  "their own (the runtime before this option)");
  cmd->add_option("--persist-on-handler", o->persist_on_handler,
                  "true: a follower's RPC handler persists received entries itself when the "
                  "Ready loop is idle; false: it always hands them to the Ready loop and waits");
  cmd->add_option("--append-gather-us", o->append_gather_us,
                  "longest a leader holds a follower's next batch to gather the proposals that "
                  "come back after a commit (0: never)")
      ->check(CLI::Range(int64_t{0}, int64_t{10'000}));
  cmd->add_option("--client-port", o->client_port,
                  "true: proposers call the replicas' epoll client ports (no thread per waiting "
                  "call); false: the Raft port's thread-per-connection server");
  cmd->add_option("--proposer-model", o->proposer_model,
                  "threads: a thread per proposer, blocking calls; loop: a connection per "
                  "proposer, one in flight each, all driven by one epoll thread (needs "
                  "--in-flight 1 and --client-port true)")
      ->check(CLI::IsMember({"threads", "loop"}));
  cmd->add_option("--only", o->only, "throughput or failover (default: both)")
      ->check(CLI::IsMember({"throughput", "failover"}));
  return [o] {
    spdlog::set_level(spdlog::level::err);
    return Run(*o);
  };
}

const ModeRegistration kRaftMode(
    "raft", "three raft_example_server replicas on loopback: commit throughput, latency, failover",
    Setup);

}  // namespace
}  // namespace tx::bench
