// Test doubles for libtxclient's unit tests: a scriptable coordinator and participant served
// over real Thrift on loopback, and a TCP proxy that can cut every connection through it (to
// lose a reply the way a crashed server or a broken network does).
//
// The fakes are thread-safe: the RPC server calls them from its connection threads while the
// test thread reads what they saw and changes their behaviour, all under `mu`.

#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thrift/TProcessor.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "common/check.h"
#include "common/net.h"
#include "common/rpc/server.h"

namespace tx::client::testing {

inline api::TxError MakeTxError(api::ErrorCode::type code, std::string message,
                                bool transaction_aborted = false) {
  api::TxError e;
  e.code = code;
  e.message = std::move(message);
  e.transaction_aborted = transaction_aborted;
  return e;
}

// Serves a Thrift handler on 127.0.0.1 (port 0 picks a free one). Stop and Start again to
// simulate a restart on the same port.
template <typename Processor, typename Handler>
class FakeServer {
 public:
  explicit FakeServer(std::shared_ptr<Handler> handler) : handler_(std::move(handler)) {}

  void Start(uint16_t port = 0) {
    rpc::RpcServerOptions o;
    o.name = "fake";
    o.listen = HostPort{"127.0.0.1", port};
    tx::StatusOr<std::unique_ptr<rpc::RpcServer>> s =
        rpc::RpcServer::Start(std::make_shared<Processor>(handler_), o);
    TX_CHECK(s.ok(), "fake server: {}", s.status().ToString());
    server_ = *std::move(s);
    address_ = server_->address();
  }
  void Stop() {
    if (server_) server_->Stop();
    server_.reset();
  }
  void Restart() {
    Stop();
    Start(address_.port);
  }
  const HostPort& address() const { return address_; }
  std::string endpoint() const { return ToString(address_); }
  Handler& handler() { return *handler_; }

 private:
  std::shared_ptr<Handler> handler_;
  std::unique_ptr<rpc::RpcServer> server_;
  HostPort address_;
};

// A coordinator replica whose answers the test scripts.
class FakeCoordinator final : public api::CoordinatorServiceNull {
 public:
  enum class Role {
    kLeader,    // answers every call
    kFollower,  // NOT_LEADER, with leader_hint when one is set
    kNoLeader,  // UNAVAILABLE ("no leader is serving here yet")
  };

  std::mutex mu;
  // Behaviour. GUARDED_BY(mu).
  Role role = Role::kLeader;
  std::string leader_hint;
  std::function<std::string()> leader_hint_fn;  // when set, each NOT_LEADER's hint comes from it
  int64_t next_txid = 100;
  int32_t timeout_ms = 30'000;
  int64_t directory_version = 1;
  std::vector<api::ParticipantRef> directory;
  // The "log": txid -> decision. Commit decides here; GetOutcome answers from here (or
  // UNDECIDED), after any scripted answers queued in get_outcome_script.
  std::map<int64_t, api::Decision::type> decided;
  api::Decision::type commit_decision = api::Decision::COMMITTED;
  std::deque<api::Decision::type> get_outcome_script;
  // Runs inside Commit after the decision is made (decide_before_commit_hook) or before it; it
  // may cut the connection (the reply is then lost) or throw a TxError.
  std::function<void(int64_t txid)> commit_hook;
  bool decide_before_commit_hook = true;
  // Runs inside Begin before answering (e.g. to block).
  std::function<void()> begin_hook;

  // What it saw. GUARDED_BY(mu).
  std::vector<std::string> calls;  // method names in arrival order
  std::vector<api::BeginRequest> begins;
  std::vector<api::CommitTransactionRequest> commits;
  std::vector<api::AbortTransactionRequest> aborts;
  std::vector<api::RegisterParticipantRequest> registrations;

  int Count(const std::string& method) {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (const std::string& c : calls) n += c == method;
    return n;
  }

  void Begin(api::BeginResponse& out, const api::BeginRequest& request) override {
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mu);
      calls.push_back("Begin");
      CheckServing();
      begins.push_back(request);
      hook = begin_hook;
    }
    if (hook) hook();
    std::lock_guard<std::mutex> lock(mu);
    if (request.options.protocol != api::Protocol::TWO_PHASE) {
      throw MakeTxError(api::ErrorCode::INVALID_ARGUMENT, "only TWO_PHASE");
    }
    out.txid = next_txid++;
    out.timeout_ms = request.options.timeout_ms > 0 ? request.options.timeout_ms : timeout_ms;
    out.directory_version = directory_version;
    if (request.directory_version != directory_version) out.__set_participants(directory);
  }

  void Commit(api::CommitTransactionResponse& out,
              const api::CommitTransactionRequest& request) override {
    std::function<void(int64_t)> hook;
    bool decide_first;
    {
      std::lock_guard<std::mutex> lock(mu);
      calls.push_back("Commit");
      CheckServing();
      commits.push_back(request);
      hook = commit_hook;
      decide_first = decide_before_commit_hook;
      if (decide_first) decided.emplace(request.txid, commit_decision);
    }
    if (hook) hook(request.txid);
    std::lock_guard<std::mutex> lock(mu);
    auto it = decided.emplace(request.txid, commit_decision).first;
    out.decision = it->second;
    if (out.decision == api::Decision::ABORTED) {
      out.__set_reason_code(api::ErrorCode::CONFLICT);
      out.__set_reason("participant 'b' voted NO: conflict");
    }
  }

  void Abort(api::AbortTransactionResponse& out,
             const api::AbortTransactionRequest& request) override {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back("Abort");
    CheckServing();
    aborts.push_back(request);
    auto it = decided.emplace(request.txid, api::Decision::ABORTED).first;
    out.decision = it->second;
  }

  void GetOutcome(api::GetOutcomeResponse& out, const api::GetOutcomeRequest& request) override {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back("GetOutcome");
    CheckServing();
    if (!get_outcome_script.empty()) {
      out.decision = get_outcome_script.front();
      get_outcome_script.pop_front();
      return;
    }
    auto it = decided.find(request.txid);
    out.decision = it == decided.end() ? api::Decision::UNDECIDED : it->second;
    if (out.decision == api::Decision::ABORTED) {
      out.__set_reason_code(api::ErrorCode::CONFLICT);
      out.__set_reason("participant 'b' voted NO: conflict");
    }
  }

  void GetDirectory(api::GetDirectoryResponse& out, const api::GetDirectoryRequest&) override {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back("GetDirectory");
    // Any replica answers GetDirectory from its own state.
    out.directory_version = directory_version;
    out.participants = directory;
  }

  void RegisterParticipant(api::RegisterParticipantResponse& out,
                           const api::RegisterParticipantRequest& request) override {
    std::lock_guard<std::mutex> lock(mu);
    calls.push_back("RegisterParticipant");
    CheckServing();
    registrations.push_back(request);
    ++directory_version;
    out.directory_version = directory_version;
  }

 private:
  void CheckServing() {  // REQUIRES(mu)
    if (role == Role::kFollower) {
      api::TxError e = MakeTxError(api::ErrorCode::NOT_LEADER, "not the leader");
      const std::string hint = leader_hint_fn ? leader_hint_fn() : leader_hint;
      if (!hint.empty()) e.__set_leader_hint(hint);
      throw e;
    }
    if (role == Role::kNoLeader) {
      throw MakeTxError(api::ErrorCode::UNAVAILABLE, "no leader is serving here yet; retry");
    }
  }
};

// A participant whose Execute answers the test scripts. By default each statement answers an
// empty result with rows_changed = 1.
class FakeParticipant final : public api::ParticipantServiceNull {
 public:
  std::mutex mu;
  // GUARDED_BY(mu). May fill the response or throw a TxError; runs without mu held.
  std::function<void(const api::ExecuteRequest&, api::ExecuteResponse&)> on_execute;
  std::vector<api::ExecuteRequest> executes;  // GUARDED_BY(mu)

  void Execute(api::ExecuteResponse& out, const api::ExecuteRequest& request) override {
    std::function<void(const api::ExecuteRequest&, api::ExecuteResponse&)> hook;
    {
      std::lock_guard<std::mutex> lock(mu);
      executes.push_back(request);
      hook = on_execute;
    }
    if (hook) {
      hook(request, out);
      return;
    }
    for (size_t i = 0; i < request.statements.size(); ++i) {
      api::ResultSet rs;
      rs.rows_changed = 1;
      out.results.push_back(rs);
    }
  }

  size_t execute_count() {
    std::lock_guard<std::mutex> lock(mu);
    return executes.size();
  }
};

using CoordinatorServer = FakeServer<api::CoordinatorServiceProcessor, FakeCoordinator>;
using ParticipantServer = FakeServer<api::ParticipantServiceProcessor, FakeParticipant>;

// A TCP proxy on 127.0.0.1 to one target. CutAll() shuts down every connection through it at
// once: a request already forwarded may have been served, but its reply cannot reach the
// client, which sees the connection break mid-call.
class CuttingProxy {
 public:
  explicit CuttingProxy(HostPort target) : target_(std::move(target)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    TX_CHECK(listen_fd_ >= 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    TX_CHECK(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    TX_CHECK(::listen(listen_fd_, 64) == 0);
    socklen_t len = sizeof(addr);
    TX_CHECK(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    address_ = HostPort{"127.0.0.1", ntohs(addr.sin_port)};
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~CuttingProxy() {
    stopping_.store(true);
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    CutAll();
    std::vector<std::thread> pumps;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pumps.swap(pumps_);
    }
    for (std::thread& t : pumps) t.join();
  }

  const HostPort& address() const { return address_; }
  std::string endpoint() const { return ToString(address_); }

  void CutAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    cuts_.fetch_add(1);
  }
  int cuts() const { return cuts_.load(); }

 private:
  void AcceptLoop() {
    while (!stopping_.load()) {
      int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) {
        if (stopping_.load()) return;
        continue;
      }
      tx::StatusOr<int> connected = ConnectTcp(target_);
      if (!connected.ok()) {
        ::close(client);
        continue;
      }
      const int server = *connected;
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.push_back(client);
      open_fds_.push_back(server);
      pumps_.emplace_back([this, client, server] { Pump(client, server); });
    }
  }

  void Pump(int a, int b) {
    char buf[16 << 10];
    pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    while (true) {
      if (::poll(fds, 2, 200) < 0) break;
      if (stopping_.load()) break;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (fds[i].revents == 0) continue;
        ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          done = true;
          break;
        }
        const int to = fds[1 - i].fd;
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
          if (w <= 0) {
            done = true;
            break;
          }
          off += w;
        }
      }
      if (done) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : {a, b}) {
      ::shutdown(fd, SHUT_RDWR);
      ::close(fd);
      open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
    }
  }

  const HostPort target_;
  HostPort address_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> cuts_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> open_fds_;       // GUARDED_BY(mu_)
  std::vector<std::thread> pumps_;  // GUARDED_BY(mu_)
};

}  // namespace tx::client::testing
