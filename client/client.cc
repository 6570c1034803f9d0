#include "txclient/client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <climits>
#include <set>

#include "client/client_impl.h"
#include "client/convert.h"
#include "client/transaction_impl.h"

namespace tx::client {

using internal::CallResult;
using internal::FromCallResult;
using internal::SteadyTime;

namespace {

SteadyTime DeadlineIn(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

internal::ChannelOptions ChannelOptionsFrom(const ClientOptions& o) {
  internal::ChannelOptions c;
  c.connect_timeout = o.connect_timeout;
  c.rpc_timeout = o.rpc_timeout;
  c.retry_initial = o.retry_initial;
  c.retry_max = o.retry_max;
  c.max_connections_per_server = o.max_connections_per_server;
  return c;
}

rpc::RpcClientOptions ParticipantPoolOptions(const ClientOptions& o) {
  rpc::RpcClientOptions r;
  r.connect_timeout = o.connect_timeout;
  r.recv_timeout = o.rpc_timeout;
  r.send_timeout = o.rpc_timeout;
  r.max_connections = o.max_connections_per_server;
  r.max_idle_connections = o.max_connections_per_server;
  r.acquire_timeout = o.rpc_timeout;
  r.backoff.initial = std::chrono::milliseconds(5);
  r.backoff.max = std::chrono::milliseconds(200);
  return r;
}

Status ValidateOptions(const ClientOptions& o) {
  using std::chrono::milliseconds;
  auto positive = [](milliseconds d) { return d > milliseconds(0); };
  if (!positive(o.call_deadline) || !positive(o.commit_deadline) || !positive(o.connect_timeout) ||
      !positive(o.rpc_timeout) || !positive(o.retry_initial) || o.retry_max < o.retry_initial) {
    return Status(StatusCode::kInvalidArgument,
                  "ClientOptions: deadlines, timeouts and retry_initial must be positive, and "
                  "retry_max at least retry_initial");
  }
  // Thrift takes socket timeouts as int milliseconds.
  if (o.rpc_timeout.count() > INT_MAX || o.connect_timeout.count() > INT_MAX) {
    return Status(StatusCode::kInvalidArgument, "ClientOptions: timeouts above INT_MAX ms");
  }
  if (o.max_connections_per_server < 1 || o.max_connections_per_server > 4096) {
    return Status(StatusCode::kInvalidArgument,
                  "ClientOptions: max_connections_per_server must be in 1..4096");
  }
  return Status();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Client::Impl
// ---------------------------------------------------------------------------------------------

Client::Impl::Impl(std::vector<HostPort> coordinators, const ClientOptions& options)
    : options_(options),
      coordinators_(std::move(coordinators), ChannelOptionsFrom(options)),
      participants_(ParticipantPoolOptions(options)) {}

std::optional<HostPort> Client::Impl::LookupParticipant(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = directory_.find(name);
  if (it == directory_.end()) return std::nullopt;
  return it->second;
}

int64_t Client::Impl::directory_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return directory_version_;
}

void Client::Impl::UpdateDirectory(int64_t version,
                                   const std::vector<api::ParticipantRef>& participants) {
  std::map<std::string, HostPort> fresh;
  for (const api::ParticipantRef& p : participants) {
    tx::StatusOr<HostPort> hp = ParseHostPort(p.address);
    if (!hp.ok() || hp->port == 0) {
      spdlog::warn("txclient: directory entry '{}' has an unusable address '{}'", p.name,
                   p.address);
      continue;
    }
    fresh[p.name] = *hp;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (version == directory_version_ && version != 0) return;
  directory_version_ = version;
  directory_ = std::move(fresh);
}

void Client::Impl::InvalidateDirectory() {
  std::lock_guard<std::mutex> lock(mu_);
  directory_version_ = 0;
}

client::Status Client::Impl::RefreshDirectory(SteadyTime deadline) {
  directory_refreshes_.fetch_add(1);
  api::GetDirectoryResponse resp;
  CallResult r = coordinators_.Call(
      "GetDirectory",
      [&](api::CoordinatorServiceClient& c) { c.GetDirectory(resp, api::GetDirectoryRequest()); },
      deadline);
  CountRetries(static_cast<uint64_t>(std::max(0, r.attempts - 1)));
  if (!r.ok()) return FromCallResult(r, "fetching the participant directory");
  UpdateDirectory(resp.directory_version, resp.participants);
  return client::Status();
}

ClientStats Client::Impl::stats() const {
  ClientStats s;
  s.attempts = coordinators_.attempts() + participant_attempts_.load();
  s.redirects = coordinators_.redirects();
  s.retries = retries_.load();
  s.commits_resolved = commits_resolved_.load();
  s.directory_refreshes = directory_refreshes_.load();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<Client>> Client::Create(const std::vector<std::string>& coordinators,
                                                 const ClientOptions& options) {
  if (coordinators.empty()) {
    return Status(StatusCode::kInvalidArgument, "no coordinator endpoints given");
  }
  if (coordinators.size() > internal::kMaxCoordinatorEndpoints) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("{} coordinator endpoints; at most {}", coordinators.size(),
                              internal::kMaxCoordinatorEndpoints));
  }
  std::vector<HostPort> endpoints;
  std::set<HostPort> seen;
  for (const std::string& text : coordinators) {
    tx::StatusOr<HostPort> hp = ParseHostPort(text);
    if (!hp.ok()) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("coordinator endpoint: {}", hp.status().message()));
    }
    if (hp->port == 0) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("coordinator endpoint '{}' has port 0", text));
    }
    if (!seen.insert(*hp).second) {
      return Status(StatusCode::kInvalidArgument,
                    fmt::format("coordinator endpoint '{}' given twice", text));
    }
    endpoints.push_back(*hp);
  }
  Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  return std::unique_ptr<Client>(new Client(std::make_shared<Impl>(std::move(endpoints), options)));
}

Client::Client(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

StatusOr<Transaction> Client::Begin(const TransactionOptions& options) {
  if (options.protocol != Protocol::kTwoPhase && options.protocol != Protocol::kThreePhase) {
    return Status(StatusCode::kInvalidArgument, "Begin: unknown protocol");
  }
  if (options.timeout.count() < 0 || options.timeout.count() > INT32_MAX) {
    return Status(StatusCode::kInvalidArgument, fmt::format("Begin: timeout {} ms outside 0..{}",
                                                            options.timeout.count(), INT32_MAX));
  }
  api::BeginRequest req;
  req.options.protocol = options.protocol == Protocol::kTwoPhase ? api::Protocol::TWO_PHASE
                                                                 : api::Protocol::THREE_PHASE;
  req.options.timeout_ms = static_cast<int32_t>(options.timeout.count());
  req.directory_version = impl_->directory_version();
  api::BeginResponse resp;
  CallResult r = impl_->coordinators().Call(
      "Begin", [&](api::CoordinatorServiceClient& c) { c.Begin(resp, req); },
      DeadlineIn(impl_->options().call_deadline));
  impl_->CountRetries(static_cast<uint64_t>(std::max(0, r.attempts - 1)));
  if (!r.ok()) return FromCallResult(r, "Begin");
  if (resp.txid <= 0) {
    return Status(StatusCode::kInternal,
                  fmt::format("Begin: {} answered txid {}", ToString(r.server), resp.txid));
  }
  if (resp.__isset.participants) impl_->UpdateDirectory(resp.directory_version, resp.participants);
  auto t = std::make_unique<Transaction::Impl>(impl_, resp.txid, options.protocol,
                                               std::chrono::milliseconds(resp.timeout_ms));
  return Transaction(std::move(t));
}

StatusOr<std::vector<ParticipantInfo>> Client::ListParticipants() {
  api::GetDirectoryResponse resp;
  CallResult r = impl_->coordinators().Call(
      "GetDirectory",
      [&](api::CoordinatorServiceClient& c) { c.GetDirectory(resp, api::GetDirectoryRequest()); },
      DeadlineIn(impl_->options().call_deadline));
  if (!r.ok()) return FromCallResult(r, "GetDirectory");
  impl_->UpdateDirectory(resp.directory_version, resp.participants);
  std::vector<ParticipantInfo> out;
  for (const api::ParticipantRef& p : resp.participants) out.push_back({p.name, p.address});
  return out;
}

Status Client::RegisterParticipant(const std::string& name, const std::string& address) {
  api::RegisterParticipantRequest req;
  req.participant.name = name;
  req.participant.address = address;
  api::RegisterParticipantResponse resp;
  CallResult r = impl_->coordinators().Call(
      "RegisterParticipant",
      [&](api::CoordinatorServiceClient& c) { c.RegisterParticipant(resp, req); },
      DeadlineIn(impl_->options().call_deadline));
  if (!r.ok()) return FromCallResult(r, fmt::format("RegisterParticipant '{}'", name));
  impl_->InvalidateDirectory();
  return Status();
}

std::string Client::leader_guess() const { return ToString(impl_->coordinators().leader_guess()); }

ClientStats Client::stats() const { return impl_->stats(); }

const char* LibraryVersion() { return TXCLIENT_VERSION; }

}  // namespace tx::client
