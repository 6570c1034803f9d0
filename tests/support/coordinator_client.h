// A minimal client of a txcoord cluster for tests and benchmarks (the product's client library is
// client/, libtxclient): finds the leader, follows NOT_LEADER hints, and retries calls that are
// safe to repeat until a deadline.
//
// Every call returns what finally happened: a response, the TxError the leader answered, or the
// transport failure of the last attempt. Retried on NOT_LEADER, UNAVAILABLE and transport errors
// (each of these calls is idempotent at the coordinator, Commit included: a repeated Commit never
// decides twice); other errors are answers and end the call.
//
// Thread-safe: each call takes a pooled connection; the leader guess is shared.

#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "CoordinatorService.h"
#include "common/net.h"
#include "common/rpc/client.h"
#include "common/status.h"

namespace tx::testing {

template <typename T>
struct CoordReply {
  Status transport;                   // the last attempt's transport failure, if it ended there
  std::optional<api::TxError> error;  // the coordinator's answer, if an error
  T value;
  int attempts = 0;
  bool ok() const { return transport.ok() && !error.has_value(); }
  std::string Describe() const;
};

class CoordinatorClient {
 public:
  explicit CoordinatorClient(std::vector<HostPort> endpoints,
                             std::chrono::milliseconds deadline = std::chrono::seconds(30));
  ~CoordinatorClient();

  CoordReply<api::BeginResponse> Begin(int32_t timeout_ms = 0);
  CoordReply<api::CommitTransactionResponse> Commit(int64_t txid,
                                                    const std::vector<std::string>& participants);
  CoordReply<api::AbortTransactionResponse> Abort(int64_t txid,
                                                  const std::vector<std::string>& participants);
  CoordReply<api::GetOutcomeResponse> GetOutcome(int64_t txid);
  CoordReply<api::ResolveResponse> Resolve(int64_t txid);
  CoordReply<api::RegisterParticipantResponse> Register(const std::string& name,
                                                        const std::string& address);
  // The participant directory, as the replica believed to lead knows it.
  CoordReply<api::GetDirectoryResponse> GetDirectory();
  CoordReply<api::ListTransactionsResponse> ListTransactions(bool include_begun = false);
  CoordReply<api::TransactionView> GetTransaction(int64_t txid);
  // From one replica (no retry, no redirect).
  CoordReply<api::ClusterStatusResponse> Status(const HostPort& replica);

  // The replica believed to lead now.
  HostPort leader_guess() const;

 private:
  using Pool = rpc::ClientPool<api::CoordinatorServiceClient>;
  template <typename T, typename Fn>
  CoordReply<T> Call(Fn fn);
  Pool* PoolFor(const HostPort& endpoint);

  const std::vector<HostPort> configured_;
  const std::chrono::milliseconds deadline_;

  mutable std::mutex mu_;
  std::vector<HostPort> endpoints_;                  // GUARDED_BY(mu_)
  std::map<HostPort, std::unique_ptr<Pool>> pools_;  // GUARDED_BY(mu_)
  size_t leader_ = 0;                                // GUARDED_BY(mu_): index into endpoints_
};

}  // namespace tx::testing
