// rpc_bench: round-trip latency and throughput of common/rpc (RpcServer + ClientPool) on
// loopback, with the test-only Echo service, so that the cost of our RPC layer is known.
//
//   rpc_bench [calls_per_thread]   (default 20000)
//
// Prints, for 1, 8 and 32 client threads sharing one ClientPool: calls per second and p50/p99
// latency of a 32-byte Echo.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "Echo.h"
#include "common/rpc/client.h"
#include "common/rpc/server.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

class EchoHandler final : public tx::rpc_test::EchoIf {
 public:
  void Echo(std::string& reply, const std::string& message) override { reply = message; }
  void Blob(std::string& reply, int32_t size) override { reply.assign(size, 'b'); }
  void Sleep(int32_t ms) override { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
  void Fail(const std::string& message) override {
    tx::rpc_test::EchoError e;
    e.message = message;
    throw e;
  }
  void Crash() override {}
};

void Run(tx::rpc::ClientPool<tx::rpc_test::EchoClient>& pool, int threads, int calls) {
  std::vector<std::vector<double>> latencies_us(threads);
  std::vector<std::thread> workers;
  auto start = SteadyClock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::string message(32, 'm');
      std::string reply;
      latencies_us[t].reserve(calls);
      for (int i = 0; i < calls; ++i) {
        auto call_start = SteadyClock::now();
        tx::Status s = pool.Call([&](tx::rpc_test::EchoClient& c) { c.Echo(reply, message); });
        if (!s.ok()) {
          fmt::print(stderr, "call failed: {}\n", s.ToString());
          std::exit(1);
        }
        latencies_us[t].push_back(
            std::chrono::duration<double, std::micro>(SteadyClock::now() - call_start).count());
      }
    });
  }
  for (auto& w : workers) w.join();
  double seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  std::vector<double> all;
  for (auto& v : latencies_us) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  fmt::print(
      "threads={:<3} calls={:<7} {:>9.0f} calls/s   p50 {:>7.1f} us   p99 {:>7.1f} us   "
      "connections={}\n",
      threads, all.size(), all.size() / seconds, all[all.size() / 2], all[all.size() * 99 / 100],
      pool.connects());
}

}  // namespace

int main(int argc, char** argv) {
  int calls = argc > 1 ? std::atoi(argv[1]) : 20000;
  if (calls <= 0) {
    fmt::print(stderr, "usage: rpc_bench [calls_per_thread > 0]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  tx::rpc::RpcServerOptions options;
  options.listen = {"127.0.0.1", 0};
  auto server = tx::rpc::RpcServer::Start(
      std::make_shared<tx::rpc_test::EchoProcessor>(std::make_shared<EchoHandler>()), options);
  if (!server.ok()) {
    fmt::print(stderr, "{}\n", server.status().ToString());
    return 1;
  }
  for (int threads : {1, 8, 32}) {
    tx::rpc::ClientPool<tx::rpc_test::EchoClient> pool((*server)->address());
    Run(pool, threads, threads == 1 ? calls : calls / 4);
  }
  return 0;
}
