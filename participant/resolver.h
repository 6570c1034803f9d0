// The Resolve loop: asks the coordinators for the outcome of prepared transactions whose
// outcome has not arrived, and applies it.
//
// A prepared transaction is "in doubt" until Commit or Abort reaches it. Normally the
// coordinator delivers the outcome within milliseconds; after a restart of this agent, or a
// coordinator failover that lost the phase-two messages, nobody may ever send it. So the
// Resolver asks (CoordinatorService.Resolve) about:
//   - every transaction recovered at start-up, at once;
//   - every transaction prepared longer than resolve_after ago.
// COMMITTED and ABORTED are applied through the engine (Commit / Abort, which are idempotent
// and race safely with the coordinator's own phase two). PENDING (the coordinator is still
// collecting votes) and errors (no coordinator reachable, no leader) are retried per
// transaction with exponential back-off, forever: a prepared transaction may not be decided
// here.
//
// Thread-safe: Start/Stop from one thread; the loop runs on its own thread.

#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/net.h"
#include "common/rpc/backoff.h"
#include "common/rpc/client.h"
#include "common/status.h"
#include "participant/participant.h"

namespace tx::api {
class CoordinatorServiceClient;
}

namespace tx::participant {

// Where outcomes come from. Implementations are thread-compatible (the Resolver calls from
// its one thread).
class OutcomeSource {
 public:
  enum class Decision { kCommitted, kAborted, kPending };
  virtual ~OutcomeSource() = default;
  // Unavailable when no coordinator could answer.
  virtual StatusOr<Decision> Resolve(TxId txid) = 0;
};

// Asks a coordinator cluster over Thrift: tries the replica believed to lead, follows
// NOT_LEADER hints, and falls back to the others in turn.
class CoordinatorOutcomeSource final : public OutcomeSource {
 public:
  CoordinatorOutcomeSource(std::vector<HostPort> coordinators, std::string participant_name,
                           rpc::RpcClientOptions options = {});
  ~CoordinatorOutcomeSource() override;
  StatusOr<Decision> Resolve(TxId txid) override;

  // Registers this participant (its name and the address clients should use) in the
  // coordinators' directory, through the leader, so that clients need only the coordinators'
  // addresses. Idempotent (the latest registration of a name wins). Unavailable when no leader
  // answered; InvalidArgument when the coordinators refuse the name or address.
  Status Register(const HostPort& advertised);

 private:
  using Pool = rpc::ClientPool<api::CoordinatorServiceClient>;
  Pool* PoolFor(const HostPort& endpoint);
  // Calls the leader: tries the replica believed to lead, follows NOT_LEADER hints, moves on
  // from replicas that are down or have no leader. `call` makes one call on a client and lets
  // TxError escape. Returns OK once a replica answered without error, else the last error.
  Status CallLeader(const std::string& what,
                    const std::function<void(api::CoordinatorServiceClient&)>& call);

  const std::string participant_name_;
  const rpc::RpcClientOptions options_;
  std::vector<HostPort> endpoints_;  // configured ones first, then hinted ones
  std::map<HostPort, std::unique_ptr<Pool>> pools_;
  size_t leader_guess_ = 0;  // index into endpoints_
};

struct ResolverOptions {
  // A prepared transaction whose outcome has not arrived after this long is asked about.
  std::chrono::milliseconds resolve_after{10000};
  // Back-off between questions about one transaction.
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{10000};
  // How often the loop looks for newly overdue transactions.
  std::chrono::milliseconds poll_interval{500};
};

class Resolver {
 public:
  // `participant` and `source` must outlive the Resolver.
  Resolver(Participant* participant, OutcomeSource* source, ResolverOptions options, Clock* clock);
  ~Resolver();  // Stop()
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Marks every transaction in doubt now (those recovered at start-up) as due at once, and
  // starts the loop.
  void Start();
  void Stop();

  // One pass over the due transactions (the loop calls it; tests call it directly without
  // Start). Returns how many outcomes it applied.
  int RunOnce();

  uint64_t questions_asked() const;

 private:
  struct Pending {
    Clock::TimePoint next_attempt;
    std::unique_ptr<rpc::Backoff> backoff;
  };
  void Loop();

  Participant* const participant_;
  OutcomeSource* const source_;
  const ResolverOptions options_;
  Clock* const clock_;

  mutable std::mutex mu_;
  std::map<TxId, Pending> pending_;  // GUARDED_BY(mu_): known in-doubt transactions
  uint64_t questions_ = 0;           // GUARDED_BY(mu_)
  bool stop_ = false;                // GUARDED_BY(mu_)
  Waiter waiter_;
  std::thread thread_;
};

}  // namespace tx::participant
