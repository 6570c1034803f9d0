// CoordinatorChannel: calls to a txcoord cluster with leader discovery, NOT_LEADER redirects,
// retries with back-off and a deadline per call. Internal to libtxclient; txctl uses it too.
//
// The channel keeps a guess of which replica leads (an index into its endpoint list, shared by
// every thread). Each attempt goes to the guess; the answer updates it:
//   reply, or an error that is an answer (INVALID_ARGUMENT, ...)  the guess was right
//   NOT_LEADER with leader_hint                                    the hint becomes the guess
//                                                                  (added to the list if new)
//   NOT_LEADER without a hint, UNAVAILABLE, transport failure      the next replica in the list
// A thread moves the guess on only if no other thread moved it meanwhile, so a burst of
// failures from many threads advances it once, not once per thread.
//
// Two ways to call:
//   Attempt(...)   one attempt at the guess; the caller decides what a failure means (Commit
//                  uses it: a lost Commit reply is resolved, not blindly repeated).
//   Call(...)      attempts until a reply, an error that is an answer, or the deadline; for
//                  calls that are safe to repeat. Between attempts it pauses (jittered
//                  exponential back-off), except right after following a fresh leader hint.
//
// Thread-safe.

#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "CoordinatorService.h"
#include "client/endpoint_call.h"
#include "common/net.h"
#include "common/status.h"

namespace tx::client::internal {

struct ChannelOptions {
  Millis connect_timeout{1'000};
  Millis rpc_timeout{20'000};
  Millis retry_initial{10};
  Millis retry_max{500};
  int max_connections_per_server = 64;
};

// What one attempt, or a whole call, came to.
struct CallResult {
  // OK when the server answered (a reply or `error`). Otherwise why no answer came: the
  // transport failure of the last attempt, or TimedOut when the deadline passed (its message
  // names the last failure).
  tx::Status status;
  // The server's answer when it was an error.
  std::optional<api::TxError> error;
  // With a transport failure: whether the request may have reached the server.
  bool maybe_sent = false;
  HostPort server;  // where the last attempt went
  int attempts = 0;

  bool ok() const { return status.ok() && !error.has_value(); }
  bool answered() const { return status.ok(); }
  // One line for messages: "ok", the transport failure, or "<CODE> from host:port: message".
  std::string Describe() const;
};

std::string ErrorCodeName(api::ErrorCode::type code);

// The Thrift call of one attempt: fills the reply from the client, may throw api::TxError.
using CoordinatorFn = std::function<void(api::CoordinatorServiceClient&)>;

class CoordinatorChannel {
 public:
  // `endpoints` must not be empty.
  CoordinatorChannel(std::vector<HostPort> endpoints, ChannelOptions options);
  ~CoordinatorChannel();
  CoordinatorChannel(const CoordinatorChannel&) = delete;
  CoordinatorChannel& operator=(const CoordinatorChannel&) = delete;

  // One attempt at the replica believed to lead, within `deadline`.
  CallResult Attempt(const CoordinatorFn& fn, SteadyTime deadline);

  // Attempts until the leader answers (a reply or a TxError other than NOT_LEADER and
  // UNAVAILABLE) or the deadline passes. `what` names the call in the deadline's message.
  CallResult Call(const char* what, const CoordinatorFn& fn, SteadyTime deadline);

  // One attempt at one replica, wherever the leader is (GetClusterStatus, GetDirectory).
  CallResult CallReplica(const HostPort& replica, const CoordinatorFn& fn, Millis timeout);

  // Sleeps before the next attempt of a call that has failed `failures` times (>= 1), at most
  // until `deadline`.
  void Pause(int failures, SteadyTime deadline);

  HostPort leader_guess() const;
  std::vector<HostPort> endpoints() const;

  uint64_t attempts() const { return attempts_.load(); }
  uint64_t redirects() const { return redirects_.load(); }

 private:
  // Moves the guess after an attempt at `tried` ended with `r`. True when a hint named a
  // replica other than `tried` (worth trying at once).
  bool Learn(const HostPort& tried, const CallResult& r);

  const ChannelOptions options_;
  ServerPools<api::CoordinatorServiceClient> pools_;
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> redirects_{0};

  mutable std::mutex mu_;
  std::vector<HostPort> endpoints_;  // GUARDED_BY(mu_): configured, then hinted ones
  size_t leader_ = 0;                // GUARDED_BY(mu_): index into endpoints_
  std::mt19937_64 rng_;              // GUARDED_BY(mu_): back-off jitter
};

// A Raft group has 3 or 5 replicas (7 at most in practice); hints naming more new addresses
// than this are ignored rather than growing the list without bound.
inline constexpr size_t kMaxCoordinatorEndpoints = 16;

}  // namespace tx::client::internal
