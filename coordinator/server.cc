#include "coordinator/server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <thrift/TProcessor.h>
#include <thrift/processor/TMultiplexedProcessor.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <utility>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "common/check.h"

namespace tx::coordinator {

// ---------------------------------------------------------------------------------------------
// Participants over Thrift
// ---------------------------------------------------------------------------------------------

class ThriftParticipantChannel::Pools {
 public:
  using Pool = rpc::ClientPool<api::ParticipantServiceClient>;
  Pools(rpc::RpcClientOptions options, Clock* clock)
      : options_(std::move(options)), clock_(clock) {}

  // The pool for `address`; nullptr (with *error set) when the address does not parse or the
  // channel is shutting down.
  Pool* For(const std::string& address, Status* error) {
    if (cancelled_.load(std::memory_order_relaxed)) {
      *error = Status::Cancelled("shutting down");
      return nullptr;
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pools_.find(address);
    if (it != pools_.end()) return it->second.get();
    StatusOr<HostPort> hp = ParseHostPort(address);
    if (!hp.ok()) {
      *error = Status::Unavailable(
          fmt::format("bad participant address '{}': {}", address, hp.status().ToString()));
      return nullptr;
    }
    // Addresses come from the directory, which is bounded (1024 entries), so this map is too.
    auto pool = std::make_unique<Pool>(*hp, options_, clock_);
    Pool* raw = pool.get();
    pools_.emplace(address, std::move(pool));
    return raw;
  }

  // Calls not yet started fail at once from now on (a quick shutdown).
  void Cancel() { cancelled_.store(true); }

  void CloseIdleConnections() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [address, pool] : pools_) pool->Reset();
  }

 private:
  const rpc::RpcClientOptions options_;
  Clock* const clock_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Pool>> pools_;  // GUARDED_BY(mu_)
};

namespace {

// Connection slots above --max-connections kept for participants (their resolver and registrar
// keep a connection or two each; room for a few dozen participants) and for operators (txctl).
// See Start().
constexpr int kReservedParticipantConnections = 64;
constexpr int kReservedOperatorConnections = 4;

// Whether `message_name` is one of the coordinator service's `methods`, called plainly or
// through the multiplexer ("coordinator:Resolve").
bool IsOneOf(std::string_view message_name, std::initializer_list<std::string_view> methods) {
  constexpr std::string_view kServicePrefix = "coordinator:";
  if (message_name.starts_with(kServicePrefix)) message_name.remove_prefix(kServicePrefix.size());
  for (std::string_view m : methods) {
    if (message_name == m) return true;
  }
  return false;
}

// A call a handler thread may make itself. A Commit's handler thread would otherwise only wait
// for the pool to make its Prepares; running the last of them on the handler thread saves a
// thread hand-off per Commit. Set only while a handler runs the driver's side effects, and
// only the last call made in that span runs here (earlier ones go to the pool, so the
// participants are still asked in parallel).
thread_local bool t_defer_allowed = false;
thread_local std::function<void()>* t_deferred = nullptr;

// Runs one call on the thread pool; `call(client, response)` may throw api::TxError.
template <typename Resp, typename Call>
void RunCall(ThreadPool* threads, ThriftParticipantChannel::Pools* pools,
             const std::string& address, Call call, ReplyCallback<Resp> done) {
  auto task = [pools, address, call = std::move(call), done]() mutable {
    ParticipantReply<Resp> reply;
    Status error;
    auto* pool = pools->For(address, &error);
    if (pool == nullptr) {
      reply.transport = error;
    } else {
      reply.transport = pool->Call([&](api::ParticipantServiceClient& client) {
        try {
          call(client, reply.response);
        } catch (const api::TxError& e) {
          reply.error = e;
        }
      });
    }
    done(std::move(reply));
  };
  if (t_defer_allowed) {
    // Keep this one for the handler thread; the one kept before goes to the pool (or, if the
    // pool is full, runs here now: a handler thread may block).
    std::function<void()> previous = std::move(*t_deferred);
    *t_deferred = std::move(task);
    if (previous && !threads->Submit(std::move(previous))) previous();
    return;
  }
  // The task owns `done`; keep a copy to fail the call if the pool refuses it.
  auto fail = done;
  if (!threads->Submit(std::move(task))) {
    ParticipantReply<Resp> reply;
    reply.transport = Status::ResourceExhausted("too many participant calls queued");
    fail(std::move(reply));
  }
}

}  // namespace

ThriftParticipantChannel::ThriftParticipantChannel(ThreadPool* pool, rpc::RpcClientOptions options,
                                                   Clock* clock)
    : pool_(pool), pools_(std::make_unique<Pools>(std::move(options), clock)) {}

ThriftParticipantChannel::~ThriftParticipantChannel() = default;

void ThriftParticipantChannel::Cancel() { pools_->Cancel(); }

void ThriftParticipantChannel::CloseIdleConnections() { pools_->CloseIdleConnections(); }

void ThriftParticipantChannel::Prepare(const std::string& address, api::PrepareRequest request,
                                       ReplyCallback<api::PrepareResponse> done) {
  RunCall<api::PrepareResponse>(
      pool_, pools_.get(), address,
      [request](api::ParticipantServiceClient& c, api::PrepareResponse& out) {
        c.Prepare(out, request);
      },
      std::move(done));
}

void ThriftParticipantChannel::Commit(const std::string& address, api::CommitRequest request,
                                      ReplyCallback<api::CommitResponse> done) {
  RunCall<api::CommitResponse>(
      pool_, pools_.get(), address,
      [request](api::ParticipantServiceClient& c, api::CommitResponse& out) {
        c.Commit(out, request);
      },
      std::move(done));
}

void ThriftParticipantChannel::Abort(const std::string& address, api::AbortRequest request,
                                     ReplyCallback<api::AbortResponse> done) {
  RunCall<api::AbortResponse>(
      pool_, pools_.get(), address,
      [request](api::ParticipantServiceClient& c, api::AbortResponse& out) {
        c.Abort(out, request);
      },
      std::move(done));
}

void ThriftParticipantChannel::CommitOnePhase(const std::string& address,
                                              api::CommitOnePhaseRequest request,
                                              ReplyCallback<api::CommitOnePhaseResponse> done) {
  RunCall<api::CommitOnePhaseResponse>(
      pool_, pools_.get(), address,
      [request](api::ParticipantServiceClient& c, api::CommitOnePhaseResponse& out) {
        c.CommitOnePhase(out, request);
      },
      std::move(done));
}

void ThriftParticipantChannel::PreCommit(const std::string& address, api::PreCommitRequest request,
                                         ReplyCallback<api::PreCommitResponse> done) {
  RunCall<api::PreCommitResponse>(
      pool_, pools_.get(), address,
      [request](api::ParticipantServiceClient& c, api::PreCommitResponse& out) {
        c.PreCommit(out, request);
      },
      std::move(done));
}

// ---------------------------------------------------------------------------------------------
// The log over RaftNode
// ---------------------------------------------------------------------------------------------

void RaftEntryLog::ProposeEntry(std::string entry,
                                std::function<void(Status, std::string result)> done) {
  node_->ProposeAsync(std::move(entry), clock_->Now() + timeout_,
                      [done = std::move(done)](raft::ProposalResult r) {
                        if (r.status.ok()) {
                          done(Status::OK(), std::move(r.result));
                        } else if (r.not_leader) {
                          done(Status::Unavailable("not the leader: " + r.status.ToString()), "");
                        } else {
                          done(r.status, "");
                        }
                      });
}

namespace {

// The Raft node's view of the replicated state.
class RaftStateMachine final : public raft::StateMachine {
 public:
  explicit RaftStateMachine(ReplicatedState* state) : state_(state) {}

  std::string Apply(uint64_t index, std::string_view data) override {
    StatusOr<std::string> r = state_->Apply(index, data);
    // Every replica applies the same entries: one that cannot apply this entry must stop rather
    // than diverge from the others (e.g. a newer format: upgrade this binary).
    TX_CHECK(r.ok(), "cannot apply coordinator log entry {}: {}", index, r.status().ToString());
    return std::move(r).value();
  }
  StatusOr<std::string> Snapshot() override { return state_->Snapshot(); }
  Status Restore(uint64_t index, std::string_view data) override {
    return state_->Restore(index, data);
  }

 private:
  ReplicatedState* const state_;
};

api::TxError Error(api::ErrorCode::type code, std::string message) {
  api::TxError e;
  e.code = code;
  e.message = std::move(message);
  return e;
}

// Waits for a Done<T> callback; throws its error, or UNAVAILABLE when it takes too long.
template <typename T, typename Start>
T Await(Start start, std::chrono::milliseconds timeout, const char* what) {
  auto promise = std::make_shared<std::promise<Reply<T>>>();
  std::future<Reply<T>> future = promise->get_future();
  std::function<void()> deferred;
  t_defer_allowed = true;
  t_deferred = &deferred;
  start([promise](Reply<T> r) { promise->set_value(std::move(r)); });
  t_defer_allowed = false;
  t_deferred = nullptr;
  if (deferred) deferred();
  if (future.wait_for(timeout) != std::future_status::ready) {
    throw Error(api::ErrorCode::UNAVAILABLE,
                fmt::format("{} did not complete within {} ms; its outcome is unknown here: "
                            "repeat it",
                            what, timeout.count()));
  }
  Reply<T> r = future.get();
  if (r.error.has_value()) throw *r.error;
  return std::move(r.value);
}

template <typename T>
T Unwrap(Reply<T> r) {
  if (r.error.has_value()) throw *r.error;
  return std::move(r.value);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

class CoordinatorHandler final : public api::CoordinatorServiceIf {
 public:
  CoordinatorHandler(const ServerOptions& options, raft::RaftNode* node, ReplicatedState* state,
                     Driver* driver)
      : options_(options), node_(node), state_(state), driver_(driver) {}

  void Resolve(api::ResolveResponse& out, const api::ResolveRequest& request) override {
    out = Await<api::ResolveResponse>([&](auto done) { driver_->Resolve(request, done); },
                                      options_.call_wait, "Resolve");
  }
  void Begin(api::BeginResponse& out, const api::BeginRequest& request) override {
    out = Unwrap(driver_->Begin(request));
  }
  void Commit(api::CommitTransactionResponse& out,
              const api::CommitTransactionRequest& request) override {
    out = Await<api::CommitTransactionResponse>([&](auto done) { driver_->Commit(request, done); },
                                                options_.commit_wait, "Commit");
  }
  void Abort(api::AbortTransactionResponse& out,
             const api::AbortTransactionRequest& request) override {
    out = Await<api::AbortTransactionResponse>([&](auto done) { driver_->Abort(request, done); },
                                               options_.call_wait, "Abort");
  }
  void GetOutcome(api::GetOutcomeResponse& out, const api::GetOutcomeRequest& request) override {
    out = Await<api::GetOutcomeResponse>([&](auto done) { driver_->GetOutcome(request, done); },
                                         options_.call_wait, "GetOutcome");
  }
  void RegisterParticipant(api::RegisterParticipantResponse& out,
                           const api::RegisterParticipantRequest& request) override {
    out = Await<api::RegisterParticipantResponse>(
        [&](auto done) { driver_->RegisterParticipant(request, done); }, options_.call_wait,
        "RegisterParticipant");
  }
  void GetDirectory(api::GetDirectoryResponse& out, const api::GetDirectoryRequest&) override {
    state_->Read([&](const TxnStateMachine& sm) {
      out.directory_version = sm.directory_version();
      for (const auto& [name, address] : sm.directory()) {
        api::ParticipantRef r;
        r.name = name;
        r.address = address;
        out.participants.push_back(std::move(r));
      }
    });
  }
  void GetClusterStatus(api::ClusterStatusResponse& out,
                        const api::ClusterStatusRequest&) override {
    raft::NodeStatus s = node_->GetStatus();
    out.replica_id = static_cast<int64_t>(s.id);
    out.role = std::string(raft::NodeRoleName(s.role));
    out.term = static_cast<int64_t>(s.term);
    out.leader_id = static_cast<int64_t>(s.leader.id);
    out.leader_address = s.leader.address.host.empty() ? "" : ToString(s.leader.address);
    out.commit_index = static_cast<int64_t>(s.commit_index);
    out.applied_index = static_cast<int64_t>(s.applied_index);
    std::map<raft::NodeId, api::ReplicaStatus> replicas;
    for (const auto& [id, address] : options_.peers) {
      api::ReplicaStatus& r = replicas[id];
      r.id = static_cast<int64_t>(id);
      r.address = ToString(address);
    }
    for (const raft::PeerStatus& p : s.peers) {
      api::ReplicaStatus& r = replicas[p.id];
      r.id = static_cast<int64_t>(p.id);
      if (!p.address.host.empty()) r.address = ToString(p.address);
      r.is_learner = p.is_learner;
      r.match_index = static_cast<int64_t>(p.match_index);
    }
    if (s.role == raft::NodeRole::kLeader) {
      replicas[s.id].match_index = static_cast<int64_t>(s.last_index);
    }
    for (auto& [id, r] : replicas) out.replicas.push_back(std::move(r));
    state_->Read([&](const TxnStateMachine& sm) {
      out.directory_version = sm.directory_version();
      for (const auto& [name, address] : sm.directory()) {
        api::ParticipantRef r;
        r.name = name;
        r.address = address;
        out.participants.push_back(std::move(r));
      }
      out.decided_transactions = static_cast<int64_t>(sm.live().size());
      out.next_txid = sm.next_txid();
    });
    Driver::Stats ds = driver_->GetStats();
    out.active_transactions = static_cast<int64_t>(ds.active + ds.begun);
    out.health = s.health.ok() ? "OK" : s.health.ToString();
  }
  void ListTransactions(api::ListTransactionsResponse& out,
                        const api::ListTransactionsRequest& request) override {
    out = Unwrap(driver_->ListTransactions(request));
  }
  void GetTransaction(api::TransactionView& out,
                      const api::GetTransactionRequest& request) override {
    out = Unwrap(driver_->GetTransaction(request));
  }

 private:
  const ServerOptions& options_;
  raft::RaftNode* const node_;
  ReplicatedState* const state_;
  Driver* const driver_;
};

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

class CoordinatorServer::Impl {
 public:
  explicit Impl(ServerOptions options)
      : options_(std::move(options)), state_(options_.limits), raft_sm_(&state_) {}

  Status Init();
  void Stop();
  void MonitorLoop();

  ServerOptions options_;
  ReplicatedState state_;
  RaftStateMachine raft_sm_;
  std::unique_ptr<raft::RaftNode> node_;
  std::unique_ptr<RaftEntryLog> entry_log_;
  std::unique_ptr<CommandBatcher> batcher_;
  std::unique_ptr<ThreadPool> threads_;
  std::unique_ptr<ThriftParticipantChannel> channel_;
  std::unique_ptr<Driver> driver_;
  std::unique_ptr<rpc::RpcServer> server_;
  HostPort address_;

  std::mutex stop_mu_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Waiter> monitor_waiter_;
  std::thread monitor_;
};

Status CoordinatorServer::Impl::Init() {
  raft::NodeOptions n;
  n.id = options_.id;
  n.data_dir = options_.data_dir;
  n.peers = options_.peers;
  n.multiplexed_service_name = "raft";
  n.tick_interval = options_.tick_interval;
  n.election_timeout_ticks = options_.election_timeout_ticks;
  n.heartbeat_ticks = options_.heartbeat_ticks;
  n.snapshot_every_entries = options_.snapshot_every_entries;
  n.fs = options_.fs;
  n.clock = options_.clock;
  n.metrics = options_.metrics;
  TX_ASSIGN_OR_RETURN(node_, raft::RaftNode::Create(n, &raft_sm_));

  entry_log_ =
      std::make_unique<RaftEntryLog>(node_.get(), options_.clock, options_.proposal_timeout);
  BatcherOptions bo = options_.batcher;
  bo.metrics = options_.metrics;
  batcher_ = std::make_unique<CommandBatcher>(entry_log_.get(), bo);
  threads_ = std::make_unique<ThreadPool>(options_.participant_threads,
                                          options_.max_queued_participant_calls);
  channel_ = std::make_unique<ThriftParticipantChannel>(threads_.get(), options_.participant_client,
                                                        options_.clock);
  DriverOptions d = options_.driver;
  d.clock = options_.clock;
  d.metrics = options_.metrics;
  raft::RaftNode* node = node_.get();
  const raft::NodeId self = options_.id;
  d.leader_hint = [node, self]() -> std::optional<std::string> {
    raft::LeaderInfo l = node->leader();
    if (l.id == raft::kNoNode || l.id == self || l.address.host.empty()) return std::nullopt;
    return ToString(l.address);
  };
  driver_ = std::make_unique<Driver>(&state_, batcher_.get(), channel_.get(), std::move(d));

  auto mux = std::make_shared<apache::thrift::TMultiplexedProcessor>();
  mux->registerProcessor("raft", node_->processor());
  auto service = std::make_shared<api::CoordinatorServiceProcessor>(
      std::make_shared<CoordinatorHandler>(options_, node_.get(), &state_, driver_.get()));
  mux->registerProcessor("coordinator", service);
  mux->registerDefault(service);

  TX_RETURN_IF_ERROR(node_->Start());
  rpc::RpcServerOptions so;
  so.name = fmt::format("txcoord-{}", options_.id);
  so.listen = options_.listen;
  so.max_connections = options_.max_connections;
  // Slots above the cap (rpc/server.h), so that clients holding every ordinary slot cannot keep
  // the replicas from reaching each other, nor participants from learning outcomes and
  // registering, nor an operator from looking. Each class has its own slots, so that neither
  // participants nor operators can take the Raft peers'.
  // - Raft peers: each other replica dials this one with a pool of n.client.max_connections;
  //   room for a five-replica group, so a membership change that grows the group still finds
  //   slots.
  // - Participants: Resolve (a participant in doubt asks for the outcome) and registration.
  //   A participant's resolver and registrar keep one connection each.
  // - Operators: txctl's status and transaction views.
  so.reserved = {
      {"raft peers",
       n.client.max_connections * static_cast<int>(std::max<size_t>(options_.peers.size(), 5) - 1),
       [](const std::string& message_name) { return message_name.starts_with("raft:"); }},
      {"participants", kReservedParticipantConnections,
       [](const std::string& message_name) {
         return IsOneOf(message_name, {"Resolve", "RegisterParticipant"});
       }},
      {"operators", kReservedOperatorConnections,
       [](const std::string& message_name) {
         return IsOneOf(message_name, {"GetClusterStatus", "ListTransactions", "GetTransaction"});
       }},
  };
  so.max_message_bytes = options_.max_message_bytes;
  TX_ASSIGN_OR_RETURN(server_, rpc::RpcServer::Start(mux, so));
  address_ = server_->address();

  monitor_waiter_ = std::make_unique<Waiter>(options_.clock);
  monitor_ = std::thread([this] { MonitorLoop(); });
  return Status::OK();
}

void CoordinatorServer::Impl::MonitorLoop() {
  uint64_t served_term = 0;
  while (!stopping_.load()) {
    raft::NodeStatus s = node_->GetStatus();
    const bool leading = s.role == raft::NodeRole::kLeader && s.health.ok();
    if (leading && (!driver_->serving() || served_term != s.term)) {
      if (driver_->serving()) driver_->StepDown();
      // The state must hold every entry committed before this term before the driver reads it
      // (to re-drive phase two and to answer "not decided"): a ReadIndex barrier on the leader
      // completes only after the term's first entry is committed and applied here.
      Status barrier = node_->ReadBarrier(std::chrono::seconds(2));
      raft::NodeStatus now = node_->GetStatus();
      if (barrier.ok() && now.role == raft::NodeRole::kLeader && now.term == s.term) {
        driver_->BecomeLeader(s.term);
        served_term = s.term;
      }
    } else if (!leading && driver_->serving()) {
      driver_->StepDown();
    }
    // Every tick, not only at the step-down: calls in flight then return their connections to
    // the pools afterwards. Cheap when the pools are empty.
    if (!driver_->serving()) channel_->CloseIdleConnections();
    driver_->Tick();
    monitor_waiter_->WaitFor(options_.driver_tick);
  }
}

void CoordinatorServer::Impl::Stop() {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (stopping_.exchange(true)) return;
  if (monitor_waiter_) monitor_waiter_->Notify();
  if (monitor_.joinable()) monitor_.join();
  if (server_) server_->Stop();
  if (driver_) driver_->StepDown();
  if (node_) node_->Stop();
  if (channel_) channel_->Cancel();
  threads_.reset();  // queued participant calls fail at once; calls in flight finish
}

StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  Status s = impl->Init();
  if (!s.ok()) {
    impl->Stop();
    return s;
  }
  return std::unique_ptr<CoordinatorServer>(new CoordinatorServer(std::move(impl)));
}

CoordinatorServer::CoordinatorServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoordinatorServer::~CoordinatorServer() { Stop(); }
void CoordinatorServer::Stop() { impl_->Stop(); }
const HostPort& CoordinatorServer::address() const { return impl_->address_; }
Status CoordinatorServer::health() const { return impl_->node_->health(); }
raft::RaftNode* CoordinatorServer::node() { return impl_->node_.get(); }
Driver* CoordinatorServer::driver() { return impl_->driver_.get(); }
const ReplicatedState* CoordinatorServer::state() const { return &impl_->state_; }

}  // namespace tx::coordinator
