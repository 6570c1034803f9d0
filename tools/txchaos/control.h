// The calls txchaos makes to set up and observe a cluster: straight to each process's real
// address, never through the fault-injecting proxy or the dial-rewrite table, because the
// observer must not be partitioned away with the clients it observes. One short-lived connection
// per call, with a timeout; no retries (callers poll with their own deadlines).
//
// Thread-safe (no shared state).

#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "CoordinatorService.h"
#include "ParticipantService.h"
#include "common/net.h"
#include "common/status.h"

namespace tx::chaos {

using Millis = std::chrono::milliseconds;

// GetClusterStatus from one replica.
StatusOr<api::ClusterStatusResponse> GetClusterStatus(const HostPort& replica, Millis timeout);

// The leader's transactions still in progress (undecided on it, or decided and not finished;
// with include_begun also those begun and not yet committing), first page of up to 1,000.
// FailedPrecondition if `replica` does not lead.
StatusOr<api::ListTransactionsResponse> ListTransactions(const HostPort& replica, Millis timeout,
                                                         bool include_begun = false);

Status RegisterParticipant(const HostPort& leader, const std::string& name, const HostPort& address,
                           Millis timeout);

StatusOr<api::GetInfoResponse> GetParticipantInfo(const HostPort& participant, Millis timeout);

// Transactions prepared at a participant, as it reports them (first page of up to 1,000).
StatusOr<api::ListPreparedResponse> ListPrepared(const HostPort& participant, Millis timeout);

// A plain HTTP/1.0 GET; the status code, and the body in *body if given.
StatusOr<int> HttpGet(const HostPort& at, const std::string& path, Millis timeout,
                      std::string* body = nullptr);

// "CODE: message" for a TxError (ErrorCode by name).
std::string DescribeTxError(const api::TxError& e);

}  // namespace tx::chaos
