#include "client/coordinator_channel.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

namespace tx::client::internal {

namespace {

rpc::RpcClientOptions PoolOptions(const ChannelOptions& o) {
  rpc::RpcClientOptions r;
  r.connect_timeout = o.connect_timeout;
  r.recv_timeout = o.rpc_timeout;
  r.send_timeout = o.rpc_timeout;
  r.max_connections = o.max_connections_per_server;
  r.max_idle_connections = o.max_connections_per_server;
  r.acquire_timeout = o.rpc_timeout;
  // Reconnects to a replica that refused are paced by the channel's own back-off between
  // attempts (and the channel moves on to another replica meanwhile), so the pool's back-off
  // only needs to stop a tight loop of connects to a dead address.
  r.backoff.initial = std::chrono::milliseconds(5);
  r.backoff.max = std::chrono::milliseconds(200);
  return r;
}

bool LeaderMayBeElsewhere(const CallResult& r) {
  if (!r.status.ok()) return true;
  return r.error.has_value() && (r.error->code == api::ErrorCode::NOT_LEADER ||
                                 r.error->code == api::ErrorCode::UNAVAILABLE);
}

}  // namespace

std::string ErrorCodeName(api::ErrorCode::type code) {
  auto it = api::_ErrorCode_VALUES_TO_NAMES.find(static_cast<int>(code));
  if (it == api::_ErrorCode_VALUES_TO_NAMES.end()) return fmt::format("ERROR_{}", int{code});
  return it->second;
}

std::string CallResult::Describe() const {
  if (!status.ok()) return status.ToString();
  if (error.has_value()) {
    return fmt::format("{} from {}: {}", ErrorCodeName(error->code), ToString(server),
                       error->message);
  }
  return "ok";
}

CoordinatorChannel::CoordinatorChannel(std::vector<HostPort> endpoints, ChannelOptions options)
    : options_(options),
      pools_(PoolOptions(options)),
      endpoints_(std::move(endpoints)),
      rng_(std::random_device{}()) {
  TX_CHECK(!endpoints_.empty(), "a coordinator channel needs at least one endpoint");
}

CoordinatorChannel::~CoordinatorChannel() = default;

HostPort CoordinatorChannel::leader_guess() const {
  std::lock_guard<std::mutex> lock(mu_);
  return endpoints_[leader_];
}

std::vector<HostPort> CoordinatorChannel::endpoints() const {
  std::lock_guard<std::mutex> lock(mu_);
  return endpoints_;
}

CallResult CoordinatorChannel::CallReplica(const HostPort& replica, const CoordinatorFn& fn,
                                           Millis timeout) {
  CallResult r;
  r.server = replica;
  r.attempts = 1;
  attempts_.fetch_add(1);
  r.status = pools_.Call(
      replica, timeout,
      [&](api::CoordinatorServiceClient& c) {
        try {
          fn(c);
        } catch (const api::TxError& e) {
          r.error = e;
        }
      },
      &r.maybe_sent);
  return r;
}

CallResult CoordinatorChannel::Attempt(const CoordinatorFn& fn, SteadyTime deadline) {
  const HostPort target = leader_guess();
  Millis timeout = std::min(Remaining(deadline), options_.rpc_timeout);
  if (timeout <= Millis(0)) {
    CallResult r;
    r.server = target;
    r.status = tx::Status::TimedOut("the deadline passed before an attempt could be made");
    return r;
  }
  CallResult r = CallReplica(target, fn, timeout);
  Learn(target, r);
  return r;
}

bool CoordinatorChannel::Learn(const HostPort& tried, const CallResult& r) {
  if (!LeaderMayBeElsewhere(r)) return false;
  std::lock_guard<std::mutex> lock(mu_);
  const bool guess_unchanged = endpoints_[leader_] == tried;
  if (r.status.ok() && r.error->code == api::ErrorCode::NOT_LEADER &&
      r.error->__isset.leader_hint) {
    tx::StatusOr<HostPort> hint = ParseHostPort(r.error->leader_hint);
    if (hint.ok() && hint->port != 0 && *hint != tried) {
      auto it = std::find(endpoints_.begin(), endpoints_.end(), *hint);
      if (it == endpoints_.end()) {
        if (endpoints_.size() >= kMaxCoordinatorEndpoints) {
          spdlog::warn("txclient: ignoring leader hint {} from {}: already {} replicas known",
                       ToString(*hint), ToString(tried), endpoints_.size());
          if (guess_unchanged) leader_ = (leader_ + 1) % endpoints_.size();
          return false;
        }
        it = endpoints_.insert(endpoints_.end(), *hint);
      }
      redirects_.fetch_add(1);
      const size_t index = static_cast<size_t>(it - endpoints_.begin());
      const bool moved = leader_ != index;
      leader_ = index;
      return moved || !guess_unchanged;
    }
    if (!hint.ok()) {
      spdlog::debug("txclient: unparsable leader hint '{}' from {}", r.error->leader_hint,
                    ToString(tried));
    }
  }
  if (guess_unchanged) leader_ = (leader_ + 1) % endpoints_.size();
  return false;
}

void CoordinatorChannel::Pause(int failures, SteadyTime deadline) {
  int64_t d = options_.retry_initial.count();
  for (int i = 1; i < failures && d < options_.retry_max.count(); ++i) d *= 2;
  d = std::clamp<int64_t>(d, 1, std::max<int64_t>(1, options_.retry_max.count()));
  int64_t jittered;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jittered = d / 2 + static_cast<int64_t>(rng_() % static_cast<uint64_t>(d / 2 + 1));
  }
  Millis pause = std::min(Millis(jittered), Remaining(deadline));
  if (pause > Millis(0)) std::this_thread::sleep_for(pause);
}

CallResult CoordinatorChannel::Call(const char* what, const CoordinatorFn& fn,
                                    SteadyTime deadline) {
  int attempts = 0;
  int failures = 0;
  int immediate = 0;  // consecutive attempts made without a pause (after fresh hints)
  CallResult last;
  while (true) {
    const Millis timeout = std::min(Remaining(deadline), options_.rpc_timeout);
    if (timeout <= Millis(0)) {
      CallResult out = last;
      out.error.reset();
      out.attempts = attempts;
      out.status = tx::Status::TimedOut(
          fmt::format("{}: no answer from the coordinators within the deadline after {} "
                      "attempt(s); last: {}",
                      what, attempts, attempts == 0 ? "none made" : last.Describe()));
      return out;
    }
    const HostPort target = leader_guess();
    CallResult r = CallReplica(target, fn, timeout);
    r.attempts = ++attempts;
    const bool hinted = Learn(target, r);
    if (!LeaderMayBeElsewhere(r)) return r;
    last = std::move(r);
    // A fresh hint is worth following at once; but two replicas that point at each other
    // (stale hints during an election) must not make us spin.
    if (hinted && immediate < 2) {
      ++immediate;
      continue;
    }
    immediate = 0;
    Pause(++failures, deadline);
  }
}

}  // namespace tx::client::internal
