// The state a Client shares with its Transactions. Internal to libtxclient.
//
// Thread-safe: the channel and pools are; the directory cache is guarded by mu_.

#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ParticipantService.h"
#include "client/coordinator_channel.h"
#include "client/endpoint_call.h"
#include "common/net.h"
#include "txclient/client.h"

namespace tx::client {

class TXCLIENT_INTERNAL Client::Impl {
 public:
  Impl(std::vector<HostPort> coordinators, const ClientOptions& options);

  const ClientOptions& options() const { return options_; }
  internal::CoordinatorChannel& coordinators() { return coordinators_; }
  internal::ServerPools<api::ParticipantServiceClient>& participants() { return participants_; }

  // The cached address of participant `name`, if the directory names it.
  std::optional<HostPort> LookupParticipant(const std::string& name) const;
  int64_t directory_version() const;
  // Replaces the cache when `version` differs from the cached one. Entries whose address does
  // not parse are left out (and logged): they could never be called.
  void UpdateDirectory(int64_t version, const std::vector<api::ParticipantRef>& participants);
  // Forgets the cached version so that the next Begin brings the directory along.
  void InvalidateDirectory();
  // Fetches the directory from the coordinators (any replica answers from its own state).
  client::Status RefreshDirectory(internal::SteadyTime deadline);

  void CountRetries(uint64_t n) { retries_.fetch_add(n); }
  void CountParticipantAttempt() { participant_attempts_.fetch_add(1); }
  void CountCommitResolved() { commits_resolved_.fetch_add(1); }
  ClientStats stats() const;

 private:
  const ClientOptions options_;
  internal::CoordinatorChannel coordinators_;
  internal::ServerPools<api::ParticipantServiceClient> participants_;
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> participant_attempts_{0};
  std::atomic<uint64_t> commits_resolved_{0};
  std::atomic<uint64_t> directory_refreshes_{0};

  mutable std::mutex mu_;
  int64_t directory_version_ = 0;              // GUARDED_BY(mu_): 0 = none cached
  std::map<std::string, HostPort> directory_;  // GUARDED_BY(mu_)
};

}  // namespace tx::client
