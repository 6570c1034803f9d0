#include "tests/support/coordinator_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

namespace tx::testing {

template <typename T>
std::string CoordReply<T>::Describe() const {
  if (!transport.ok()) return transport.ToString();
  if (error.has_value()) {
    return fmt::format("TxError {}: {}", static_cast<int>(error->code), error->message);
  }
  return "ok";
}

template struct CoordReply<api::BeginResponse>;
template struct CoordReply<api::CommitTransactionResponse>;
template struct CoordReply<api::AbortTransactionResponse>;
template struct CoordReply<api::GetOutcomeResponse>;
template struct CoordReply<api::ResolveResponse>;
template struct CoordReply<api::RegisterParticipantResponse>;
template struct CoordReply<api::GetDirectoryResponse>;
template struct CoordReply<api::ListTransactionsResponse>;
template struct CoordReply<api::TransactionView>;
template struct CoordReply<api::ClusterStatusResponse>;

namespace {

rpc::RpcClientOptions ClientOptions() {
  rpc::RpcClientOptions o;
  o.connect_timeout = std::chrono::milliseconds(300);
  o.recv_timeout = std::chrono::milliseconds(20'000);
  o.send_timeout = std::chrono::milliseconds(5'000);
  o.backoff.initial = std::chrono::milliseconds(5);
  o.backoff.max = std::chrono::milliseconds(100);
  return o;
}

bool Retryable(api::ErrorCode::type code) {
  return code == api::ErrorCode::NOT_LEADER || code == api::ErrorCode::UNAVAILABLE;
}

}  // namespace

CoordinatorClient::CoordinatorClient(std::vector<HostPort> endpoints,
                                     std::chrono::milliseconds deadline)
    : configured_(endpoints), deadline_(deadline), endpoints_(std::move(endpoints)) {}

CoordinatorClient::~CoordinatorClient() = default;

CoordinatorClient::Pool* CoordinatorClient::PoolFor(const HostPort& endpoint) {
  auto it = pools_.find(endpoint);
  if (it == pools_.end()) {
    it = pools_.emplace(endpoint, std::make_unique<Pool>(endpoint, ClientOptions())).first;
  }
  return it->second.get();
}

HostPort CoordinatorClient::leader_guess() const {
  std::lock_guard<std::mutex> lock(mu_);
  return endpoints_[leader_];
}

template <typename T, typename Fn>
CoordReply<T> CoordinatorClient::Call(Fn fn) {
  CoordReply<T> out;
  const auto deadline = std::chrono::steady_clock::now() + deadline_;
  int pause_ms = 2;
  while (true) {
    Pool* pool;
    HostPort endpoint;
    {
      std::lock_guard<std::mutex> lock(mu_);
      endpoint = endpoints_[leader_];
      pool = PoolFor(endpoint);
    }
    ++out.attempts;
    out.error.reset();
    out.transport = pool->Call([&](api::CoordinatorServiceClient& c) {
      try {
        fn(c, out.value);
      } catch (const api::TxError& e) {
        out.error = e;
      }
    });
    if (out.ok()) return out;
    if (out.transport.ok() && !Retryable(out.error->code)) return out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::optional<HostPort> hint;
      if (out.transport.ok() && out.error->code == api::ErrorCode::NOT_LEADER &&
          out.error->__isset.leader_hint) {
        StatusOr<HostPort> hp = ParseHostPort(out.error->leader_hint);
        if (hp.ok()) hint = *hp;
      }
      if (hint.has_value()) {
        auto it = std::find(endpoints_.begin(), endpoints_.end(), *hint);
        if (it == endpoints_.end()) it = endpoints_.insert(endpoints_.end(), *hint);
        leader_ = static_cast<size_t>(it - endpoints_.begin());
      } else if (endpoints_[leader_] == endpoint) {
        leader_ = (leader_ + 1) % endpoints_.size();
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    pause_ms = std::min(pause_ms * 2, 50);
  }
}

CoordReply<api::BeginResponse> CoordinatorClient::Begin(int32_t timeout_ms) {
  api::BeginRequest req;
  req.options.timeout_ms = timeout_ms;
  return Call<api::BeginResponse>(
      [&](api::CoordinatorServiceClient& c, api::BeginResponse& out) { c.Begin(out, req); });
}

CoordReply<api::CommitTransactionResponse> CoordinatorClient::Commit(
    int64_t txid, const std::vector<std::string>& participants) {
  api::CommitTransactionRequest req;
  req.txid = txid;
  req.participants = participants;
  return Call<api::CommitTransactionResponse>(
      [&](api::CoordinatorServiceClient& c, api::CommitTransactionResponse& out) {
        c.Commit(out, req);
      });
}

CoordReply<api::AbortTransactionResponse> CoordinatorClient::Abort(
    int64_t txid, const std::vector<std::string>& participants) {
  api::AbortTransactionRequest req;
  req.txid = txid;
  req.participants = participants;
  return Call<api::AbortTransactionResponse>(
      [&](api::CoordinatorServiceClient& c, api::AbortTransactionResponse& out) {
        c.Abort(out, req);
      });
}

CoordReply<api::GetOutcomeResponse> CoordinatorClient::GetOutcome(int64_t txid) {
  api::GetOutcomeRequest req;
  req.txid = txid;
  return Call<api::GetOutcomeResponse>(
      [&](api::CoordinatorServiceClient& c, api::GetOutcomeResponse& out) {
        c.GetOutcome(out, req);
      });
}

CoordReply<api::ResolveResponse> CoordinatorClient::Resolve(int64_t txid) {
  api::ResolveRequest req;
  req.txid = txid;
  req.participant = "test";
  return Call<api::ResolveResponse>(
      [&](api::CoordinatorServiceClient& c, api::ResolveResponse& out) { c.Resolve(out, req); });
}

CoordReply<api::RegisterParticipantResponse> CoordinatorClient::Register(
    const std::string& name, const std::string& address) {
  api::RegisterParticipantRequest req;
  req.participant.name = name;
  req.participant.address = address;
  return Call<api::RegisterParticipantResponse>(
      [&](api::CoordinatorServiceClient& c, api::RegisterParticipantResponse& out) {
        c.RegisterParticipant(out, req);
      });
}

CoordReply<api::GetDirectoryResponse> CoordinatorClient::GetDirectory() {
  return Call<api::GetDirectoryResponse>(
      [&](api::CoordinatorServiceClient& c, api::GetDirectoryResponse& out) {
        c.GetDirectory(out, api::GetDirectoryRequest());
      });
}

CoordReply<api::ListTransactionsResponse> CoordinatorClient::ListTransactions(bool include_begun) {
  api::ListTransactionsRequest req;
  req.include_begun = include_begun;
  return Call<api::ListTransactionsResponse>(
      [&](api::CoordinatorServiceClient& c, api::ListTransactionsResponse& out) {
        c.ListTransactions(out, req);
      });
}

CoordReply<api::TransactionView> CoordinatorClient::GetTransaction(int64_t txid) {
  api::GetTransactionRequest req;
  req.txid = txid;
  return Call<api::TransactionView>([&](api::CoordinatorServiceClient& c,
                                        api::TransactionView& out) { c.GetTransaction(out, req); });
}

CoordReply<api::ClusterStatusResponse> CoordinatorClient::Status(const HostPort& replica) {
  CoordReply<api::ClusterStatusResponse> out;
  Pool* pool;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pool = PoolFor(replica);
  }
  out.attempts = 1;
  out.transport = pool->Call([&](api::CoordinatorServiceClient& c) {
    try {
      c.GetClusterStatus(out.value, api::ClusterStatusRequest{});
    } catch (const api::TxError& e) {
      out.error = e;
    }
  });
  return out;
}

}  // namespace tx::testing
