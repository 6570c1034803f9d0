// libtxclient: the C++ client of a txcoord cluster.
//
//   #include "txclient/client.h"
//   using namespace tx::client;
//
//   StatusOr<std::unique_ptr<Client>> client =
//       Client::Create({"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"});
//   StatusOr<Transaction> txn = (*client)->Begin();
//   StatusOr<ResultSet> rs = txn->Execute("accounts-a", "SELECT balance FROM accounts WHERE id =
//   ?",
//                                         {7});
//   ... txn->Execute("accounts-b", "UPDATE accounts SET balance = ? WHERE id = ?", {b, 8}) ...
//   StatusOr<CommitResult> result = txn->Commit();
//   if (result.ok() && result->committed()) { ... }
//
// A transaction runs its statements at participants (txpart agents, each owning one SQLite
// database) named as in the coordinator's directory; Commit makes the outcome atomic across all
// of them (two-phase commit, decided through the coordinators' replicated log).
//
// What the library does for the application:
//  - Leader discovery: calls go to the replica believed to lead; a follower's NOT_LEADER answer
//    names the leader, and the next attempt goes there. An unreachable replica is skipped.
//  - Retries with jittered exponential back-off until the call's deadline (ClientOptions), for
//    calls that are safe to repeat. Execute is not: a lost Execute reply aborts the transaction
//    (its statements may or may not have run), and the error says so.
//  - A Commit whose answer is lost (connection broken, leader crashed, timeout) is resolved by
//    asking the coordinators for the outcome recorded in their log (GetOutcome), again and again
//    until they answer from the log; an undecided transaction is then committed again by a
//    repeated Commit (never decided twice). It never guesses: if no answer comes before the
//    deadline, Commit fails with kOutcomeUnknown, and Commit() may be called again to resume.
//  - Participant addresses come from the coordinators' directory, cached and refreshed when a
//    participant name is unknown or a participant cannot be reached.
//
// Errors are values (txclient/status.h). Nothing here throws except std::bad_alloc.
//
// Thread-safety: a Client is thread-safe and meant to be shared by all of an application's
// threads (it pools connections per server). A Transaction is used by one thread at a time (it
// may move between threads); transactions are independent of each other. A Transaction keeps
// what it needs of its Client alive, so destroying the Client first is safe.

#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "txclient/export.h"
#include "txclient/status.h"
#include "txclient/value.h"

namespace tx::client {

enum class Protocol {
  kTwoPhase = 1,
  kThreePhase = 2,  // refused with kInvalidArgument by coordinators that do not implement it
};

struct ClientOptions {
  // Every call but Commit (Begin, Execute, Abort, directory calls) retries until it has an
  // answer or this long has passed since it started; then it fails with kDeadlineExceeded
  // naming the last failure.
  std::chrono::milliseconds call_deadline{30'000};
  // Commit: until the outcome is known, including resolving a lost answer. Longer than the
  // transaction timeout, so that a Commit waiting for row locks at a participant is not cut
  // short.
  std::chrono::milliseconds commit_deadline{60'000};
  // One attempt: connecting, and waiting for the reply. Both are also cut to what is left of
  // the call's deadline. rpc_timeout must exceed the longest an Execute may take at a
  // participant, its lock timeout plus its statement timeout (txpart --lock-timeout-ms,
  // --statement-timeout-ms: 5 s + 10 s by default); otherwise the reply of a slow Execute is
  // given up for lost and the transaction aborted.
  std::chrono::milliseconds connect_timeout{1'000};
  std::chrono::milliseconds rpc_timeout{20'000};
  // Pause between attempts: retry_initial doubling up to retry_max, each uniformly random in
  // [d/2, d] so that many clients do not retry in step.
  std::chrono::milliseconds retry_initial{10};
  std::chrono::milliseconds retry_max{500};
  // Open connections per server at most (each coordinator replica and participant): bounds the
  // sockets (and server threads) one Client holds; calls beyond it wait up to rpc_timeout.
  int max_connections_per_server = 64;
};

struct TransactionOptions {
  Protocol protocol = Protocol::kTwoPhase;
  // From Begin to the decision; past it the coordinator aborts the transaction if it is still
  // undecided. 0: the cluster's default (txcoord --txn-timeout-ms).
  std::chrono::milliseconds timeout{0};
};

enum class Outcome { kCommitted, kAborted };

struct CommitResult {
  Outcome outcome = Outcome::kAborted;
  // With kAborted: why. kConflict, kLockTimeout, kDeadlock, kConstraintViolation (a participant
  // voted NO for that reason), kAborted (timeout, Abort, an earlier error that aborted the
  // transaction), ... `reason` is the human-readable account, naming the participant.
  StatusCode reason_code = StatusCode::kOk;
  std::string reason;

  bool committed() const { return outcome == Outcome::kCommitted; }
};

struct ParticipantInfo {
  std::string name;
  std::string address;  // "host:port"
};

// Counters of what the library did behind the calls (for progress displays and tests).
struct ClientStats {
  uint64_t attempts = 0;             // RPC attempts to coordinators and participants
  uint64_t redirects = 0;            // NOT_LEADER answers followed
  uint64_t retries = 0;              // attempts after the first, within calls
  uint64_t commits_resolved = 0;     // Commit answers lost and then learned (GetOutcome/repeat)
  uint64_t directory_refreshes = 0;  // the participant directory fetched again
};

class Transaction;

class TXCLIENT_EXPORT Client {
 public:
  // `coordinators`: "host:port" of each replica (any subset that includes a live one works: the
  // others are learned from leader hints). kInvalidArgument for an empty list or a malformed
  // or duplicate address, or nonsensical options. Connects lazily: no call is made here.
  static StatusOr<std::unique_ptr<Client>> Create(const std::vector<std::string>& coordinators,
                                                  const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // A new transaction (a txid from the coordinator; no participant is contacted yet). Errors:
  // kInvalidArgument (bad options, e.g. a timeout above the cluster's maximum),
  // kResourceExhausted, kDeadlineExceeded (no leader answered in time).
  StatusOr<Transaction> Begin(const TransactionOptions& options = {});

  // The coordinators' participant directory, in name order.
  StatusOr<std::vector<ParticipantInfo>> ListParticipants();

  // Adds or replaces a participant in the directory (name: 1-128 bytes of [A-Za-z0-9_.-];
  // address "host:port"). txpart agents do not register themselves; an operator or a start-up
  // script does this (txctl register).
  Status RegisterParticipant(const std::string& name, const std::string& address);

  // The replica believed to lead now ("host:port"; a guess until a call confirms it).
  std::string leader_guess() const;

  ClientStats stats() const;

  class Impl;

 private:
  explicit Client(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// One transaction. Begin -> Execute at one or more participants -> Commit (or Abort).
//
// Not thread-safe: one thread at a time (see client.h's header comment). Movable.
//
// Destroying an active transaction that executed anywhere aborts it (one Abort call, bounded by
// ClientOptions::call_deadline but never longer than 2 s), so an early return does not leave
// locks held until the transaction times out.
class TXCLIENT_EXPORT Transaction {
 public:
  enum class State {
    kActive,          // statements may run
    kCommitted,       // Commit answered COMMITTED
    kAborted,         // Abort, Commit answered ABORTED, or an error aborted it
    kOutcomeUnknown,  // Commit could not learn the outcome before its deadline; call it again
  };

  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&& other) noexcept;
  ~Transaction();

  int64_t txid() const;
  State state() const;
  // The timeout in force (the cluster's default when none was asked for).
  std::chrono::milliseconds timeout() const;
  // The participants this transaction executed at, in the order first used.
  std::vector<std::string> participants() const;

  // Runs one statement at `participant` inside this transaction, with read-your-own-writes.
  // Errors:
  //  - the participant's answer (kInvalidSql, kConstraintViolation, ...): when
  //    status().transaction_aborted() is false the transaction continues, else it is aborted
  //    (kConflict, kLockTimeout, kDeadlock, kAborted) and only Commit (answering ABORTED) or
  //    Abort remain;
  //  - kUnavailable with transaction_aborted(): the reply was lost, so whether the statement
  //    ran is unknown; the transaction is aborted rather than committed on a guess;
  //  - kNotFound: no participant of that name in the directory;
  //  - kDeadlineExceeded: the participant could not be reached in time (nothing ran);
  //  - kFailedPrecondition: the transaction is no longer active;
  //  - kTooLarge: a 65th participant (a transaction spans at most 64).
  StatusOr<ResultSet> Execute(const std::string& participant, const std::string& sql,
                              std::vector<Value> params = {});
  // The same with named parameters (":id" or "id" both bind :id).
  StatusOr<ResultSet> ExecuteNamed(const std::string& participant, const std::string& sql,
                                   std::map<std::string, Value> named_params);
  // Several statements in one round trip, run in order; all or nothing (if one fails, none of
  // this call's changes are kept). One ResultSet per statement.
  StatusOr<std::vector<ResultSet>> ExecuteBatch(const std::string& participant,
                                                std::vector<Statement> statements);

  // Commits at every participant it executed at, or at none. Returns the outcome: COMMITTED,
  // or ABORTED with the reason (a NO vote, the timeout, an earlier error that aborted it).
  // Errors (the outcome is not known to the caller): kOutcomeUnknown when the deadline passed
  // before the coordinators could tell (call Commit() again to keep asking);
  // kInvalidArgument, kUnknownTransaction (outcome forgotten), kResourceExhausted as the
  // coordinator answered. Repeating Commit() after an outcome returns the same outcome.
  StatusOr<CommitResult> Commit();

  // Aborts at every participant it executed at. OK when the transaction is (now) aborted;
  // kFailedPrecondition if it had committed; other errors when the coordinators could not be
  // told (the transaction then aborts at its timeout anyway, unless a Commit decided it).
  Status Abort();

  class Impl;

 private:
  friend class Client;
  explicit Transaction(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// "0.1.0": the version of the library loaded at run time.
TXCLIENT_EXPORT const char* LibraryVersion();

}  // namespace tx::client
