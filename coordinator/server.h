// tx::coordinator::CoordinatorServer: one txcoord replica, assembled.
//
//   RaftNode (raft/node)  <- applies entries ->  ReplicatedState  <- reads -  Driver
//        ^ proposals                                                           |  ^
//   CommandBatcher  <-------------------- commands ----------------------------+  |
//                                                                              v  |
//   ThriftParticipantChannel (thread pool + ClientPool per participant)  <- calls +
//   CoordinatorService handler (Thrift) -> Driver
//
// One port serves both services through a TMultiplexedProcessor: RaftService under "raft" (peers
// send multiplexed messages) and CoordinatorService as the default processor, so ordinary
// clients (libtxclient, txctl, participants' Resolve) need no service name.
//
// A monitor thread watches the Raft role: when this replica leads and a ReadIndex barrier has
// confirmed that its state holds everything committed before its term, the driver starts
// serving (BecomeLeader); when it stops leading the driver steps down. The same thread ticks the
// driver's timers.
//
// Thread-safe. Stop() (also run by the destructor) stops serving, then the node, then the
// threads.

#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/file_system.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/rpc/server.h"
#include "common/status.h"
#include "coordinator/batcher.h"
#include "coordinator/driver.h"
#include "coordinator/interfaces.h"
#include "coordinator/replicated_state.h"
#include "coordinator/thread_pool.h"
#include "raft/node/node.h"

namespace tx::coordinator {

struct ServerOptions {
  raft::NodeId id = raft::kNoNode;
  std::string data_dir;                    // the Raft log, hard state and snapshots
  std::map<raft::NodeId, HostPort> peers;  // every replica, this one included
  HostPort listen;                         // both services; port 0: the kernel picks

  std::chrono::milliseconds tick_interval{10};
  int election_timeout_ticks = 15;
  int heartbeat_ticks = 3;
  // A snapshot holds the live records and the remembered outcomes (a few MB at most); taking
  // one every 50,000 entries keeps the log short without snapshotting every few seconds.
  uint64_t snapshot_every_entries = 50'000;

  DriverOptions driver;
  BatcherOptions batcher;
  StateMachineLimits limits;

  // Calls to participants run on this many threads (each blocks for one call). Bounds the
  // calls in flight; with 2 calls per transaction per phase it allows 64 concurrent commits.
  size_t participant_threads = 128;
  // Calls waiting for a thread; past it a call fails at once and is retried with back-off.
  size_t max_queued_participant_calls = 100'000;
  rpc::RpcClientOptions participant_client = [] {
    rpc::RpcClientOptions o;
    o.connect_timeout = std::chrono::milliseconds(500);
    // Prepare may wait for row locks at the participant (its lock timeout is 5 s by default).
    o.recv_timeout = std::chrono::milliseconds(10'000);
    o.send_timeout = std::chrono::milliseconds(5'000);
    o.max_connections = 128;
    o.max_idle_connections = 128;
    o.backoff.initial = std::chrono::milliseconds(10);
    o.backoff.max = std::chrono::milliseconds(500);
    return o;
  }();

  // A proposal not applied within this long is reported as unknown (the driver re-reads the
  // state and retries).
  std::chrono::milliseconds proposal_timeout{5'000};
  // How long a Commit call waits for its outcome before answering UNAVAILABLE (outcome unknown).
  std::chrono::milliseconds commit_wait{60'000};
  // Other calls that go through the log (Resolve, Abort, RegisterParticipant, GetOutcome).
  std::chrono::milliseconds call_wait{15'000};
  std::chrono::milliseconds driver_tick{5};

  int max_connections = 1024;  // client connections (each holds a server thread)
  uint32_t max_message_bytes = rpc::kDefaultMaxMessageBytes;

  Clock* clock = Clock::Real();
  MetricsRegistry* metrics = MetricsRegistry::Default();
  FileSystem* fs = FileSystem::Default();
};

class CoordinatorServer {
 public:
  // Recovers the replica from data_dir, starts the node, the server and the monitor. IOError
  // when the port cannot be bound; Corruption when the data directory is damaged.
  static StatusOr<std::unique_ptr<CoordinatorServer>> Start(ServerOptions options);
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  void Stop();

  const HostPort& address() const;
  Status health() const;
  raft::RaftNode* node();
  Driver* driver();
  const ReplicatedState* state() const;

  class Impl;

 private:
  explicit CoordinatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ParticipantChannel over Thrift: a ClientPool per participant address, calls run on a
// ThreadPool. Exposed for tests.
class ThriftParticipantChannel final : public ParticipantChannel {
 public:
  ThriftParticipantChannel(ThreadPool* pool, rpc::RpcClientOptions options, Clock* clock);
  ~ThriftParticipantChannel() override;

  void Prepare(const std::string& address, api::PrepareRequest request,
               ReplyCallback<api::PrepareResponse> done) override;
  void Commit(const std::string& address, api::CommitRequest request,
              ReplyCallback<api::CommitResponse> done) override;
  void Abort(const std::string& address, api::AbortRequest request,
             ReplyCallback<api::AbortResponse> done) override;
  void CommitOnePhase(const std::string& address, api::CommitOnePhaseRequest request,
                      ReplyCallback<api::CommitOnePhaseResponse> done) override;
  void PreCommit(const std::string& address, api::PreCommitRequest request,
                 ReplyCallback<api::PreCommitResponse> done) override;

  // Calls not yet started fail with Cancelled from now on (shutdown).
  void Cancel();

  // Closes every idle pooled connection (a call in flight keeps its own and returns it to the
  // pool afterwards). For a replica that does not lead: it will not call participants until it
  // leads again, and its pools (up to max_idle_connections per participant) would otherwise hold
  // the participants' connection slots until their idle timeout, while the new leader needs
  // them. The replica's monitor calls it on every tick while it does not serve.
  void CloseIdleConnections();

  class Pools;

 private:
  ThreadPool* const pool_;
  std::unique_ptr<Pools> pools_;
};

// EntryLog over a RaftNode.
class RaftEntryLog final : public EntryLog {
 public:
  RaftEntryLog(raft::RaftNode* node, Clock* clock, std::chrono::milliseconds timeout)
      : node_(node), clock_(clock), timeout_(timeout) {}
  void ProposeEntry(std::string entry,
                    std::function<void(Status, std::string result)> done) override;

 private:
  raft::RaftNode* const node_;
  Clock* const clock_;
  const std::chrono::milliseconds timeout_;
};

}  // namespace tx::coordinator
