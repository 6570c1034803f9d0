// The state of one Transaction. Internal to libtxclient.
//
// Not thread-safe (one thread at a time, as Transaction's contract says).

#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/client_impl.h"
#include "client/endpoint_call.h"
#include "common_types.h"
#include "txclient/client.h"

namespace tx::client {

// The coordinator refuses a Commit naming more (CommitTransactionRequest: at most 64); failing
// at the Execute that would add the 65th tells the application where the limit was crossed.
inline constexpr size_t kMaxParticipantsPerTransaction = 64;

// The longest a destructor blocks to abort an abandoned transaction: a destructor should not
// stall for the whole call deadline; the coordinator's timeout aborts it anyway.
inline constexpr std::chrono::milliseconds kDestructorAbortDeadline{2'000};

class TXCLIENT_INTERNAL Transaction::Impl {
 public:
  Impl(std::shared_ptr<Client::Impl> client, int64_t txid, Protocol protocol,
       std::chrono::milliseconds timeout)
      : client_(std::move(client)), txid_(txid), protocol_(protocol), timeout_(timeout) {}

  int64_t txid() const { return txid_; }
  State state() const { return state_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  const std::vector<std::string>& participants() const { return participants_; }
  std::chrono::milliseconds call_deadline() const { return client_->options().call_deadline; }

  StatusOr<std::vector<ResultSet>> Run(const std::string& participant,
                                       std::vector<api::Statement> statements);
  StatusOr<CommitResult> Commit();
  Status Abort(internal::SteadyTime deadline);
  // Called by ~Transaction.
  void AbandonIfActive();

 private:
  bool Touched(const std::string& participant) const;
  void AddParticipant(const std::string& participant);
  // Marks the transaction aborted by `why` (it can no longer commit) and returns `why`.
  Status Doom(Status why);
  StatusOr<CommitResult> Finish(const CommitResult& result);
  // Commit of a transaction that an error already aborted: tells the coordinator (so the other
  // participants release their locks) and answers ABORTED with the original reason.
  StatusOr<CommitResult> CommitDoomed();
  api::Protocol::type WireProtocol() const;

  const std::shared_ptr<Client::Impl> client_;
  const int64_t txid_;
  const Protocol protocol_;
  const std::chrono::milliseconds timeout_;

  State state_ = State::kActive;
  std::vector<std::string> participants_;  // in the order first used; each once
  // Executes each participant has taken, numbering the next request there
  // (ExecuteRequest.sequence): lets a participant that restarted, or got a duplicated request,
  // refuse it instead of committing part of the transaction.
  std::map<std::string, int32_t> executes_taken_;
  // Set when an error aborted the transaction: it can only end ABORTED.
  std::optional<Status> doomed_by_;
  // A Commit request may have reached a coordinator without its answer reaching us: from then
  // on the outcome is learned (GetOutcome) before anything else is done.
  bool commit_may_have_been_sent_ = false;
  std::optional<CommitResult> result_;  // once the outcome is known
};

}  // namespace tx::client
