#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "client/convert.h"
#include "client/transaction_impl.h"

namespace tx::client {

using internal::CallResult;
using internal::ErrorCodeName;
using internal::FromCallResult;
using internal::FromTxError;
using internal::Millis;
using internal::Remaining;
using internal::SteadyTime;

namespace {

SteadyTime DeadlineIn(Millis d) { return std::chrono::steady_clock::now() + d; }

const char* StateName(Transaction::State s) {
  switch (s) {
    case Transaction::State::kActive:
      return "active";
    case Transaction::State::kCommitted:
      return "committed";
    case Transaction::State::kAborted:
      return "aborted";
    case Transaction::State::kOutcomeUnknown:
      return "of unknown outcome";
  }
  return "?";
}

Status MovedFrom() {
  return Status(StatusCode::kFailedPrecondition, "use of a moved-from Transaction");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Transaction::Impl
// ---------------------------------------------------------------------------------------------

api::Protocol::type Transaction::Impl::WireProtocol() const {
  return protocol_ == Protocol::kTwoPhase ? api::Protocol::TWO_PHASE : api::Protocol::THREE_PHASE;
}

bool Transaction::Impl::Touched(const std::string& participant) const {
  return std::find(participants_.begin(), participants_.end(), participant) != participants_.end();
}

void Transaction::Impl::AddParticipant(const std::string& participant) {
  if (!Touched(participant)) participants_.push_back(participant);
}

Status Transaction::Impl::Doom(Status why) {
  if (!doomed_by_.has_value()) doomed_by_ = why;
  return why;
}

StatusOr<std::vector<ResultSet>> Transaction::Impl::Run(const std::string& participant,
                                                        std::vector<api::Statement> statements) {
  const std::string context = fmt::format("txid {}: Execute at '{}'", txid_, participant);
  if (state_ != State::kActive) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("{}: the transaction is {}", context, StateName(state_)));
  }
  if (doomed_by_.has_value()) {
    return Status(StatusCode::kAborted,
                  fmt::format("{}: the transaction was aborted by an earlier error: {}", context,
                              doomed_by_->ToString()),
                  /*transaction_aborted=*/true);
  }
  if (statements.empty()) {
    return Status(StatusCode::kInvalidArgument, context + ": no statements");
  }
  if (!Touched(participant) && participants_.size() >= kMaxParticipantsPerTransaction) {
    return Status(StatusCode::kTooLarge,
                  fmt::format("{}: a transaction spans at most {} participants", context,
                              kMaxParticipantsPerTransaction));
  }

  api::ExecuteRequest req;
  req.txid = txid_;
  req.statements = std::move(statements);
  int32_t& executes_taken = executes_taken_[participant];
  req.__set_sequence(executes_taken);
  const SteadyTime deadline = DeadlineIn(client_->options().call_deadline);
  int failures = 0;
  bool refreshed_for_unknown_name = false;
  std::string last_failure = "none";
  while (true) {
    std::optional<HostPort> address = client_->LookupParticipant(participant);
    if (!address.has_value() && !refreshed_for_unknown_name) {
      refreshed_for_unknown_name = true;
      Status s = client_->RefreshDirectory(deadline);
      if (!s.ok()) return Status(s.code(), context + ": " + s.message());
      address = client_->LookupParticipant(participant);
    }
    if (!address.has_value()) {
      return Status(
          StatusCode::kNotFound,
          fmt::format("{}: no participant of that name in the coordinators' directory", context));
    }
    const Millis timeout = std::min(Remaining(deadline), client_->options().rpc_timeout);
    if (timeout <= Millis(0)) {
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("{}: could not reach the participant within the deadline after "
                                "{} attempt(s); nothing ran there; last: {}",
                                context, failures, last_failure));
    }
    api::ExecuteResponse resp;
    std::optional<api::TxError> error;
    bool maybe_sent = false;
    client_->CountParticipantAttempt();
    if (failures > 0) client_->CountRetries(1);
    tx::Status transport = client_->participants().Call(
        *address, timeout,
        [&](api::ParticipantServiceClient& c) {
          try {
            c.Execute(resp, req);
          } catch (const api::TxError& e) {
            error = e;
          }
        },
        &maybe_sent);
    if (transport.ok() && !error.has_value()) {
      AddParticipant(participant);
      ++executes_taken;
      if (resp.results.size() != req.statements.size()) {
        return Doom(Status(StatusCode::kInternal,
                           fmt::format("{}: {} results for {} statements", context,
                                       resp.results.size(), req.statements.size()),
                           true));
      }
      std::vector<ResultSet> out;
      out.reserve(resp.results.size());
      for (const api::ResultSet& rs : resp.results) {
        tx::StatusOr<ResultSet> converted = internal::FromWire(rs, context);
        if (!converted.ok()) {
          // The statements ran, but what they returned is unreadable: do not let the
          // application commit on the strength of results it never saw.
          return Doom(Status(StatusCode::kInternal,
                             "malformed reply: " + converted.status().message(), true));
        }
        out.push_back(*std::move(converted));
      }
      return out;
    }
    if (transport.ok()) {
      // The participant answered. It has begun the transaction unless it refused it outright
      // (RESOURCE_EXHAUSTED: "not begun"), so it must take part in Commit or Abort; one that
      // had not begun it would vote NO, which aborts the transaction rather than lose work.
      if (error->code != api::ErrorCode::RESOURCE_EXHAUSTED) AddParticipant(participant);
      // Every answered request took its number there, except a first one refused before the
      // transaction began (RESOURCE_EXHAUSTED: too many transactions live).
      if (!(error->code == api::ErrorCode::RESOURCE_EXHAUSTED && executes_taken == 0)) {
        ++executes_taken;
      }
      Status s = FromTxError(*error, context);
      if (error->transaction_aborted) return Doom(s);
      return s;
    }
    if (maybe_sent) {
      // The statements may or may not have run: committing now would be a guess.
      AddParticipant(participant);
      return Doom(Status(StatusCode::kUnavailable,
                         fmt::format("{}: the reply was lost ({}); whether the statements ran is "
                                     "unknown, so the transaction is aborted",
                                     context, transport.ToString()),
                         true));
    }
    // Not sent: the participant is down or has moved. Ask the directory again and retry.
    last_failure = transport.ToString();
    ++failures;
    (void)client_->RefreshDirectory(deadline);  // best effort: the cached address still serves
    client_->coordinators().Pause(failures, deadline);
  }
}

StatusOr<CommitResult> Transaction::Impl::Finish(const CommitResult& result) {
  result_ = result;
  state_ = result.committed() ? State::kCommitted : State::kAborted;
  return result;
}

StatusOr<CommitResult> Transaction::Impl::CommitDoomed() {
  CommitResult aborted;
  aborted.outcome = Outcome::kAborted;
  aborted.reason_code = doomed_by_->code();
  aborted.reason = doomed_by_->message();
  Status told = Abort(DeadlineIn(client_->options().call_deadline));
  if (state_ == State::kCommitted) {
    // Impossible unless something else committed this txid: report what the coordinator says.
    return *result_;
  }
  if (!told.ok()) {
    spdlog::debug("txclient: txid {}: aborting after an error: {}", txid_, told.ToString());
  }
  // No Commit was ever sent, so nothing can commit it: ABORTED is a fact even if the
  // coordinators could not be told (they abort it at its timeout).
  return Finish(aborted);
}

StatusOr<CommitResult> Transaction::Impl::Commit() {
  if (result_.has_value()) return *result_;
  if (state_ == State::kAborted) {
    CommitResult aborted;
    aborted.reason_code = StatusCode::kAborted;
    aborted.reason = fmt::format("txid {} was aborted by the application", txid_);
    return Finish(aborted);
  }
  if (doomed_by_.has_value() && !commit_may_have_been_sent_) return CommitDoomed();

  const std::string context = fmt::format("txid {}: Commit", txid_);
  const SteadyTime deadline = DeadlineIn(client_->options().commit_deadline);
  internal::CoordinatorChannel& coordinators = client_->coordinators();
  api::CommitTransactionRequest req;
  req.txid = txid_;
  req.participants = participants_;
  req.protocol = WireProtocol();
  int failures = 0;
  int immediate = 0;
  std::string last_failure = "none";
  bool resolved_by_asking = false;
  while (true) {
    if (Remaining(deadline) <= Millis(0)) {
      if (commit_may_have_been_sent_) {
        state_ = State::kOutcomeUnknown;
        return Status(StatusCode::kOutcomeUnknown,
                      fmt::format("{}: the outcome could not be learned within the deadline "
                                  "(call Commit again to keep asking); last: {}",
                                  context, last_failure));
      }
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("{}: no coordinator could be reached within the deadline; the "
                                "transaction is not committed (it aborts at its timeout); last: "
                                "{}",
                                context, last_failure));
    }
    bool send_commit = true;
    bool hinted = false;
    const HostPort before = coordinators.leader_guess();
    if (commit_may_have_been_sent_) {
      // Ask the log before doing anything else: the lost Commit may have decided.
      api::GetOutcomeRequest q;
      q.txid = txid_;
      api::GetOutcomeResponse outcome;
      CallResult r = coordinators.Attempt(
          [&](api::CoordinatorServiceClient& c) { c.GetOutcome(outcome, q); }, deadline);
      hinted = !(coordinators.leader_guess() == before) && r.answered();
      if (r.ok()) {
        switch (outcome.decision) {
          case api::Decision::COMMITTED:
          case api::Decision::ABORTED: {
            client_->CountCommitResolved();
            CommitResult result;
            result.outcome = outcome.decision == api::Decision::COMMITTED ? Outcome::kCommitted
                                                                          : Outcome::kAborted;
            if (result.outcome == Outcome::kAborted) {
              result.reason_code = outcome.__isset.reason_code
                                       ? internal::FromWire(outcome.reason_code)
                                       : StatusCode::kAborted;
              result.reason = outcome.__isset.reason ? outcome.reason : "aborted";
            }
            return Finish(result);
          }
          case api::Decision::PENDING:    // being decided: a repeated Commit joins it
          case api::Decision::UNDECIDED:  // nothing logged: a repeated Commit completes it
            resolved_by_asking = true;
            break;
          default:
            last_failure = fmt::format("GetOutcome answered an unknown decision {}",
                                       static_cast<int>(outcome.decision));
            send_commit = false;
        }
      } else if (r.answered() && r.error->code != api::ErrorCode::NOT_LEADER &&
                 r.error->code != api::ErrorCode::UNAVAILABLE) {
        state_ = State::kOutcomeUnknown;
        return Status(r.error->code == api::ErrorCode::UNKNOWN_TRANSACTION
                          ? StatusCode::kUnknownTransaction
                          : StatusCode::kOutcomeUnknown,
                      fmt::format("{}: the answer was lost and asking for the outcome failed: {}",
                                  context, r.Describe()));
      } else {
        last_failure = "GetOutcome: " + r.Describe();
        send_commit = false;
      }
    }
    if (send_commit) {
      api::CommitTransactionResponse resp;
      CallResult r = coordinators.Attempt(
          [&](api::CoordinatorServiceClient& c) { c.Commit(resp, req); }, deadline);
      hinted = !(coordinators.leader_guess() == before) && r.answered();
      if (r.ok()) {
        if (resolved_by_asking) client_->CountCommitResolved();
        if (resp.decision != api::Decision::COMMITTED && resp.decision != api::Decision::ABORTED) {
          // Commit answers only the two; anything else is a broken server. Ask the log.
          commit_may_have_been_sent_ = true;
          last_failure =
              fmt::format("Commit answered decision {}", static_cast<int>(resp.decision));
        } else {
          CommitResult result;
          result.outcome =
              resp.decision == api::Decision::COMMITTED ? Outcome::kCommitted : Outcome::kAborted;
          if (result.outcome == Outcome::kAborted) {
            result.reason_code = resp.__isset.reason_code ? internal::FromWire(resp.reason_code)
                                                          : StatusCode::kAborted;
            result.reason = resp.__isset.reason ? resp.reason : "aborted";
          }
          return Finish(result);
        }
      } else if (r.answered()) {
        switch (r.error->code) {
          case api::ErrorCode::NOT_LEADER:
            // A follower never coordinates: this attempt did nothing.
            break;
          case api::ErrorCode::UNAVAILABLE:
            // "Outcome unknown": the leader may have stepped down mid-Commit.
            commit_may_have_been_sent_ = true;
            break;
          default:
            // An answer: the request is wrong (INVALID_ARGUMENT), the outcome is forgotten
            // (UNKNOWN_TRANSACTION), or the cluster is overloaded (RESOURCE_EXHAUSTED).
            if (r.error->code == api::ErrorCode::UNKNOWN_TRANSACTION) {
              state_ = State::kOutcomeUnknown;
            }
            return FromTxError(*r.error, context);
        }
        last_failure = "Commit: " + r.Describe();
      } else {
        if (r.maybe_sent) commit_may_have_been_sent_ = true;
        last_failure = "Commit: " + r.Describe();
      }
    }
    if (hinted && immediate < 2) {
      ++immediate;
      continue;
    }
    immediate = 0;
    ++failures;
    client_->CountRetries(1);
    coordinators.Pause(failures, deadline);
  }
}

Status Transaction::Impl::Abort(SteadyTime deadline) {
  const std::string context = fmt::format("txid {}: Abort", txid_);
  if (state_ == State::kCommitted) {
    return Status(StatusCode::kFailedPrecondition, context + ": the transaction had committed");
  }
  if (state_ == State::kAborted) return Status();
  api::AbortTransactionRequest req;
  req.txid = txid_;
  req.participants = participants_;
  api::AbortTransactionResponse resp;
  CallResult r = client_->coordinators().Call(
      "Abort", [&](api::CoordinatorServiceClient& c) { c.Abort(resp, req); }, deadline);
  client_->CountRetries(static_cast<uint64_t>(std::max(0, r.attempts - 1)));
  if (r.ok()) {
    CommitResult result;
    if (resp.decision == api::Decision::COMMITTED) {
      result.outcome = Outcome::kCommitted;
      (void)Finish(result);
      return Status(StatusCode::kFailedPrecondition,
                    context + ": the transaction had already committed");
    }
    result.outcome = Outcome::kAborted;
    result.reason_code = StatusCode::kAborted;
    result.reason = fmt::format("txid {} was aborted by the application", txid_);
    if (doomed_by_.has_value()) {
      result.reason_code = doomed_by_->code();
      result.reason = doomed_by_->message();
    }
    (void)Finish(result);
    return Status();
  }
  // Not told. Without a Commit ever sent nothing can commit it, so it is aborted for us (the
  // coordinator aborts it at its timeout, the participants at theirs); after a lost Commit the
  // outcome stays unknown.
  if (!commit_may_have_been_sent_) {
    CommitResult result;
    result.reason_code = doomed_by_.has_value() ? doomed_by_->code() : StatusCode::kAborted;
    result.reason = doomed_by_.has_value()
                        ? doomed_by_->message()
                        : fmt::format("txid {} was aborted by the application", txid_);
    (void)Finish(result);
  }
  return FromCallResult(r, context);
}

void Transaction::Impl::AbandonIfActive() {
  if (state_ != State::kActive || participants_.empty()) return;
  Millis d = std::min(client_->options().call_deadline, kDestructorAbortDeadline);
  Status s = Abort(DeadlineIn(d));
  if (!s.ok()) spdlog::debug("txclient: abandoning txid {}: {}", txid_, s.ToString());
}

// ---------------------------------------------------------------------------------------------
// Transaction
// ---------------------------------------------------------------------------------------------

Transaction::Transaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transaction::Transaction(Transaction&& other) noexcept = default;

Transaction& Transaction::operator=(Transaction&& other) noexcept {
  if (this != &other) {
    if (impl_ != nullptr) impl_->AbandonIfActive();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Transaction::~Transaction() {
  if (impl_ != nullptr) impl_->AbandonIfActive();
}

int64_t Transaction::txid() const { return impl_ ? impl_->txid() : 0; }

Transaction::State Transaction::state() const { return impl_ ? impl_->state() : State::kAborted; }

std::chrono::milliseconds Transaction::timeout() const {
  return impl_ ? impl_->timeout() : std::chrono::milliseconds(0);
}

std::vector<std::string> Transaction::participants() const {
  return impl_ ? impl_->participants() : std::vector<std::string>{};
}

StatusOr<ResultSet> Transaction::Execute(const std::string& participant, const std::string& sql,
                                         std::vector<Value> params) {
  Statement s;
  s.sql = sql;
  s.params = std::move(params);
  StatusOr<std::vector<ResultSet>> r = ExecuteBatch(participant, {std::move(s)});
  if (!r.ok()) return r.status();
  return std::move(r->front());
}

StatusOr<ResultSet> Transaction::ExecuteNamed(const std::string& participant,
                                              const std::string& sql,
                                              std::map<std::string, Value> named_params) {
  Statement s;
  s.sql = sql;
  s.named_params = std::move(named_params);
  StatusOr<std::vector<ResultSet>> r = ExecuteBatch(participant, {std::move(s)});
  if (!r.ok()) return r.status();
  return std::move(r->front());
}

StatusOr<std::vector<ResultSet>> Transaction::ExecuteBatch(const std::string& participant,
                                                           std::vector<Statement> statements) {
  if (impl_ == nullptr) return MovedFrom();
  std::vector<api::Statement> wire;
  wire.reserve(statements.size());
  for (const Statement& s : statements) wire.push_back(internal::ToWire(s));
  return impl_->Run(participant, std::move(wire));
}

StatusOr<CommitResult> Transaction::Commit() {
  if (impl_ == nullptr) return MovedFrom();
  return impl_->Commit();
}

Status Transaction::Abort() {
  if (impl_ == nullptr) return MovedFrom();
  return impl_->Abort(DeadlineIn(impl_->call_deadline()));
}

}  // namespace tx::client
