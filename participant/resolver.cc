#include "participant/resolver.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "CoordinatorService.h"
#include "participant/service.h"

namespace tx::participant {
namespace {

// Bounds the endpoints learned from NOT_LEADER hints: a cluster has 3 or 5 replicas, so more
// than this means hints are wrong (and we keep only the configured ones plus a few).
constexpr size_t kMaxEndpoints = 16;

}  // namespace

CoordinatorOutcomeSource::CoordinatorOutcomeSource(std::vector<HostPort> coordinators,
                                                   std::string participant_name,
                                                   rpc::RpcClientOptions options)
    : participant_name_(std::move(participant_name)),
      options_(options),
      endpoints_(std::move(coordinators)) {
  TX_CHECK(!endpoints_.empty(), "no coordinator endpoints");
}

CoordinatorOutcomeSource::~CoordinatorOutcomeSource() = default;

CoordinatorOutcomeSource::Pool* CoordinatorOutcomeSource::PoolFor(const HostPort& endpoint) {
  auto it = pools_.find(endpoint);
  if (it == pools_.end()) {
    it = pools_.emplace(endpoint, std::make_unique<Pool>(endpoint, options_)).first;
  }
  return it->second.get();
}

Status CoordinatorOutcomeSource::CallLeader(
    const std::string& what, const std::function<void(api::CoordinatorServiceClient&)>& call) {
  Status last = Status::Unavailable("no coordinator tried");
  // Each replica once, plus room to follow a couple of leader hints.
  const size_t attempts = endpoints_.size() + 2;
  for (size_t i = 0; i < attempts; ++i) {
    const HostPort endpoint = endpoints_[leader_guess_ % endpoints_.size()];
    std::optional<api::TxError> error;
    Status s = PoolFor(endpoint)->Call([&](api::CoordinatorServiceClient& client) {
      try {
        call(client);
      } catch (const api::TxError& e) {
        error = e;
      }
    });
    if (!s.ok()) {
      last = s;
      leader_guess_ = (leader_guess_ + 1) % endpoints_.size();
      continue;
    }
    if (!error.has_value()) return Status::OK();
    if (error->code == api::ErrorCode::NOT_LEADER) {
      last = Status::Unavailable(fmt::format("{} is not the leader", endpoint));
      StatusOr<HostPort> hint = error->__isset.leader_hint
                                    ? ParseHostPort(error->leader_hint)
                                    : StatusOr<HostPort>(Status::NotFound("no hint"));
      if (hint.ok()) {
        auto found = std::find(endpoints_.begin(), endpoints_.end(), *hint);
        if (found == endpoints_.end() && endpoints_.size() < kMaxEndpoints) {
          endpoints_.push_back(*hint);
          found = endpoints_.end() - 1;
        }
        if (found != endpoints_.end()) {
          leader_guess_ = static_cast<size_t>(found - endpoints_.begin());
          continue;
        }
      }
      leader_guess_ = (leader_guess_ + 1) % endpoints_.size();
      continue;
    }
    if (error->code == api::ErrorCode::UNAVAILABLE) {
      last = Status::Unavailable(fmt::format("{}: {}", endpoint, error->message));
      leader_guess_ = (leader_guess_ + 1) % endpoints_.size();
      continue;
    }
    if (error->code == api::ErrorCode::INVALID_ARGUMENT) {
      return Status::InvalidArgument(fmt::format("{} at {}: {}", what, endpoint, error->message));
    }
    return Status::Internal(fmt::format("{} at {} failed: {} ({})", what, endpoint, error->message,
                                        static_cast<int>(error->code)));
  }
  return last;
}

StatusOr<OutcomeSource::Decision> CoordinatorOutcomeSource::Resolve(TxId txid) {
  api::ResolveResponse response;
  api::ResolveRequest request;
  request.txid = txid;
  request.participant = participant_name_;
  TX_RETURN_IF_ERROR(CallLeader(
      fmt::format("Resolve({})", txid),
      [&](api::CoordinatorServiceClient& client) { client.Resolve(response, request); }));
  const int32_t decision = RawEnum(response.decision);
  if (decision == api::Decision::COMMITTED) return Decision::kCommitted;
  if (decision == api::Decision::ABORTED) return Decision::kAborted;
  if (decision == api::Decision::PENDING) return Decision::kPending;
  if (decision == api::Decision::UNDECIDED) {
    // GetOutcome's answer, not Resolve's; if a coordinator says it anyway, it has not
    // decided, and the only safe course is to ask again later.
    spdlog::warn("Resolve({}) answered UNDECIDED; asking again later", txid);
    return Decision::kPending;
  }
  return Status::Internal(fmt::format("Resolve({}): unknown decision {}", txid, decision));
}

Status CoordinatorOutcomeSource::Register(const HostPort& advertised) {
  api::RegisterParticipantRequest request;
  request.participant.name = participant_name_;
  request.participant.address = ToString(advertised);
  api::RegisterParticipantResponse response;
  return CallLeader(fmt::format("RegisterParticipant({})", participant_name_),
                    [&](api::CoordinatorServiceClient& client) {
                      client.RegisterParticipant(response, request);
                    });
}

Resolver::Resolver(Participant* participant, OutcomeSource* source, ResolverOptions options,
                   Clock* clock)
    : participant_(participant),
      source_(source),
      options_(options),
      clock_(clock),
      waiter_(clock) {}

Resolver::~Resolver() { Stop(); }

void Resolver::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Clock::TimePoint now = clock_->Now();
    for (TxId txid : participant_->InDoubt(Clock::Duration::zero())) {
      pending_[txid].next_attempt = now;
    }
    if (!pending_.empty()) {
      spdlog::info("asking the coordinators for the outcome of {} prepared transactions",
                   pending_.size());
    }
  }
  thread_ = std::thread([this] { Loop(); });
}

void Resolver::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  waiter_.Notify();
  if (thread_.joinable()) thread_.join();
}

uint64_t Resolver::questions_asked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return questions_;
}

int Resolver::RunOnce() {
  const Clock::TimePoint now = clock_->Now();
  std::vector<TxId> due;
  {
    std::vector<TxId> overdue = participant_->InDoubt(options_.resolve_after);
    std::vector<TxId> all = participant_->InDoubt(Clock::Duration::zero());
    std::set<TxId> still(all.begin(), all.end());
    std::lock_guard<std::mutex> lock(mu_);
    for (TxId txid : overdue) {
      if (pending_.count(txid) == 0) pending_[txid].next_attempt = now;
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (still.count(it->first) == 0) {
        it = pending_.erase(it);  // its outcome arrived by other means
      } else {
        if (it->second.next_attempt <= now) due.push_back(it->first);
        ++it;
      }
    }
  }

  int applied = 0;
  for (TxId txid : due) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
      ++questions_;
    }
    StatusOr<OutcomeSource::Decision> decision = source_->Resolve(txid);
    bool done = false;
    if (decision.ok() && *decision != OutcomeSource::Decision::kPending) {
      const bool commit = *decision == OutcomeSource::Decision::kCommitted;
      Result<> r = commit ? participant_->Commit(txid) : participant_->Abort(txid);
      if (r.ok()) {
        spdlog::info("transaction {} resolved: {}", txid, commit ? "COMMITTED" : "ABORTED");
        ++applied;
        done = true;
      } else if (r.error().code == ErrorCode::kWrongState ||
                 r.error().code == ErrorCode::kUnknownTransaction) {
        // The outcome we were told contradicts the one recorded here: a coordinator bug that
        // breaks atomicity. Nothing here can repair it; stop asking and shout.
        spdlog::critical("coordinator says transaction {} {}, but here: {}", txid,
                         commit ? "COMMITTED" : "ABORTED", r.error().ToString());
        done = true;
      } else {
        spdlog::warn("applying the outcome of transaction {} failed (will retry): {}", txid,
                     r.error().ToString());
      }
    } else if (!decision.ok()) {
      spdlog::warn("cannot resolve transaction {} yet: {}", txid, decision.status().ToString());
    }

    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(txid);
    if (it == pending_.end()) continue;
    if (done) {
      pending_.erase(it);
      continue;
    }
    if (it->second.backoff == nullptr) {
      it->second.backoff = std::make_unique<rpc::Backoff>(
          rpc::BackoffOptions{options_.initial_backoff, options_.max_backoff, 0});
    }
    it->second.next_attempt = clock_->Now() + it->second.backoff->NextDelay();
  }
  return applied;
}

void Resolver::Loop() {
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    (void)RunOnce();
    Clock::TimePoint wake = clock_->Now() + options_.poll_interval;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [txid, p] : pending_) wake = std::min(wake, p.next_attempt);
    }
    waiter_.WaitUntil(wake);
  }
}

}  // namespace tx::participant
