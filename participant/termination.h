// The 3PC termination protocol at a participant: finishes THREE_PHASE transactions in doubt here
// when no coordinator replica can be reached (docs/protocol.md, "Termination protocol").
//
// The Terminator's loop looks at every in-doubt (PREPARED or PRECOMMITTED) THREE_PHASE
// transaction that has waited at least probe_after:
//   - it asks the coordinators (OutcomeSource::Resolve). COMMITTED / ABORTED are applied here.
//     PENDING means a coordinator is alive and deciding: wait. Unavailable (no replica answered)
//     starts a clock;
//   - once no coordinator has answered for termination_timeout, or the transaction has already
//     joined a round (durable; a round, once joined, is finished whether or not a coordinator
//     comes back), or a peer's round probed this participant, it runs a round (RunRound).
// A round, with this participant as candidate backup coordinator:
//   1. probes every participant of the recorded list (TerminationState, join = false);
//   2. defers unless this participant has the lowest name among the reachable ones still in
//      doubt (the deterministic election: those are the ones running rounds);
//   3. collects the state of EVERY participant with join = true; if any does not answer it
//      decides nothing (blocked, like 2PC) and tries again later;
//   4. decides by Skeen's rule (participant/termination_rules.h); to commit, it first
//      pre-commits every PREPARED participant, all of them, and only then sends Commit; to
//      abort, it sends Abort.
// Safety never depends on there being one backup: rounds that run at once collect states no
// participant can change on its own once it joined, so they decide the same.
//
// Thread-safety: Start/Stop from one thread; the loop runs on its own thread; NoteProbe and
// RunOnce/RunRound may be called from any thread (RunOnce and RunRound not concurrently with
// the loop: tests call them without Start).

#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/status.h"
#include "participant/participant.h"
#include "participant/resolver.h"

namespace tx::api {
class ParticipantServiceClient;
}

namespace tx::participant {

// Calls to the other participants of a transaction. Implementations are thread-compatible (the
// Terminator calls from its one thread).
class PeerChannel {
 public:
  virtual ~PeerChannel() = default;
  // Errors: the peer did not answer (Unavailable, TimedOut) or answered with an error.
  virtual StatusOr<ThreePhaseState> TerminationState(const std::string& address, TxId txid,
                                                     bool join) = 0;
  // PreCommit with from_termination = true.
  virtual StatusOr<ThreePhaseState> PreCommit(const std::string& address, TxId txid) = 0;
  virtual Status Commit(const std::string& address, TxId txid) = 0;
  virtual Status Abort(const std::string& address, TxId txid) = 0;
};

// PeerChannel over Thrift: a ClientPool per peer address.
class ThriftPeerChannel final : public PeerChannel {
 public:
  ThriftPeerChannel(std::string self_name, rpc::RpcClientOptions options);
  ~ThriftPeerChannel() override;
  StatusOr<ThreePhaseState> TerminationState(const std::string& address, TxId txid,
                                             bool join) override;
  StatusOr<ThreePhaseState> PreCommit(const std::string& address, TxId txid) override;
  Status Commit(const std::string& address, TxId txid) override;
  Status Abort(const std::string& address, TxId txid) override;

 private:
  using Pool = rpc::ClientPool<api::ParticipantServiceClient>;
  // Bounds the pools kept: peers come from prepared records, a few per transaction.
  static constexpr size_t kMaxPools = 1024;
  StatusOr<Pool*> PoolFor(const std::string& address);
  Status Call(const std::string& address,
              const std::function<void(api::ParticipantServiceClient&)>& call);

  const std::string self_name_;
  const rpc::RpcClientOptions options_;
  std::map<std::string, std::unique_ptr<Pool>> pools_;
};

struct TerminatorOptions {
  // No coordinator answered for this long: start the termination protocol.
  std::chrono::milliseconds termination_timeout{5000};
  // A transaction in doubt for this long is looked at (normally phase two arrives within
  // milliseconds; asking earlier only adds load on the coordinators).
  std::chrono::milliseconds probe_after{1000};
  // Between two questions to the coordinators, and between two rounds, about one transaction.
  std::chrono::milliseconds retry_interval{500};
  // How often the loop looks for in-doubt transactions.
  std::chrono::milliseconds poll_interval{200};
};

class Terminator {
 public:
  // Borrows everything; all must outlive the Terminator. `self_name` is this participant's name
  // in the transactions' participant lists.
  Terminator(Participant* participant, std::string self_name, OutcomeSource* coordinators,
             PeerChannel* peers, TerminatorOptions options, Clock* clock);
  ~Terminator();  // Stop()
  Terminator(const Terminator&) = delete;
  Terminator& operator=(const Terminator&) = delete;

  void Start();
  void Stop();

  // A peer's round probed txid here: if it is in doubt, run rounds for it too (this participant
  // may be the one to elect). Cheap; called by the service handler.
  void NoteProbe(TxId txid);

  // One pass of the loop. Returns how many transactions it finished.
  int RunOnce();

  enum class RoundResult : uint8_t {
    kNotInDoubt,    // nothing to do (not in doubt here, or not THREE_PHASE)
    kDeferred,      // a lower-named participant in doubt is reachable: it is the backup
    kBlocked,       // some participant did not answer: nothing decided
    kCommitted,     // decided COMMIT and told everyone it could reach
    kAborted,       // decided ABORT and told everyone it could reach
    kInconsistent,  // states the invariants rule out: nothing decided (logged as an error)
  };
  // One round for txid with this participant as candidate backup.
  RoundResult RunRound(TxId txid);

  struct Stats {
    uint64_t rounds = 0;
    uint64_t committed = 0;  // rounds that decided COMMIT
    uint64_t aborted = 0;    // rounds that decided ABORT
    uint64_t blocked = 0;
    uint64_t deferred = 0;
  };
  Stats GetStats() const;

 private:
  struct Tracked {
    Clock::TimePoint unreachable_since{};  // epoch: a coordinator answered (or not asked yet)
    Clock::TimePoint next_attempt{};
    bool probed = false;  // a peer's round asked about it
  };
  void Loop();
  // Applies an outcome to this participant's copy; true once finished here.
  bool Apply(TxId txid, bool commit);

  Participant* const participant_;
  const std::string self_name_;
  OutcomeSource* const coordinators_;
  PeerChannel* const peers_;
  const TerminatorOptions options_;
  Clock* const clock_;

  mutable std::mutex mu_;
  std::map<TxId, Tracked> tracked_;  // GUARDED_BY(mu_): in-doubt 3PC transactions seen
  std::set<TxId> probed_;            // GUARDED_BY(mu_): NoteProbe'd, not yet tracked
  Stats stats_;                      // GUARDED_BY(mu_)
  bool stop_ = false;                // GUARDED_BY(mu_)
  Waiter waiter_;
  std::thread thread_;
};

}  // namespace tx::participant
