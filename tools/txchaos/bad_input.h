// BadInputSender: hostile bytes to every port of a cluster while the checked workload runs.
//
// Attacks, each on a fresh connection straight to the process (not through the proxy):
//   garbage      1..4096 random bytes, then the write side is closed
//   truncated    a well-formed request frame cut short, then the write side is closed
//   oversize     a frame length past the 16 MiB bound (up to 4 GiB), with a few bytes
//   absurd       a well-formed call with absurd fields: negative, zero or never-issued txids,
//                unknown enum values, negative timeouts and limits, 100,000 participant names,
//                1,001 statements, a Value with no type, invalid SQL, an unknown method or
//                service, Raft batches for another replica or with an unknown message type
//   http         on the metrics port: random bytes, a 100 KB URL, 20 KB of headers, a POST
//                announcing a 1 GB body
// What must come back within the answer timeout: for garbage, truncated and oversize frames
// anything, or the connection closed; for an absurd call an error (a declared exception, a
// TApplicationException) or the connection closed, never a success; for HTTP a status >= 400 or
// the connection closed. A connection that neither answers nor closes is a hang, and a success
// answer to an absurd call is "accepted": both are violations. Whether the processes survived
// and kept serving is checked by the runner.
//
// Absurd txids are far above any a cluster issues (2^61 and up) or not positive, so the attacks
// never touch the workload's transactions.
//
// Thread-safe: Start()/Stop() from one thread; Attack() is a pure function of its arguments
// (plus the network).

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/net.h"
#include "tools/txchaos/history.h"

namespace tx::chaos {

struct BadInputTarget {
  enum class Kind { kCoordinator, kParticipant, kMetrics };
  std::string node;  // "c1", "p2"
  Kind kind = Kind::kCoordinator;
  HostPort address;
  int replica_id = 0;  // coordinators: for Raft batches addressed to it
};

struct AttackResult {
  std::string attack;   // e.g. "garbage", "absurd:Commit(txid=-1)"
  std::string outcome;  // closed, error, reply, http-4xx, refused, hang, accepted, http-2xx
  bool violation = false;
};

struct BadInputStats {
  uint64_t attacks = 0;
  std::map<std::string, uint64_t> by_outcome;
  std::vector<std::string> violations;  // "attack on node: outcome" (first 20)
  uint64_t violation_count = 0;
};

class BadInputSender {
 public:
  // How long an attacked process has to answer or close.
  static constexpr std::chrono::milliseconds kAnswerTimeout{5000};

  BadInputSender(std::vector<BadInputTarget> targets, uint64_t seed, History* history);
  ~BadInputSender();  // Stop()

  // Attacks a random target every 20-100 ms until Stop().
  void Start();
  void Stop();
  BadInputStats stats() const;

  // One attack: `index` picks it among those for the target's kind (modulo their number).
  static AttackResult Attack(const BadInputTarget& target, uint64_t index, std::mt19937_64& rng,
                             std::chrono::milliseconds timeout = kAnswerTimeout);

 private:
  void Loop();

  const std::vector<BadInputTarget> targets_;
  const uint64_t seed_;
  History* const history_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  BadInputStats stats_;  // GUARDED_BY(mu_)
};

}  // namespace tx::chaos
