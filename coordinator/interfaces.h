// The side effects of the coordinator's logic, behind interfaces: calls to participants, the
// replicated log. txcoord implements them over Thrift and RaftNode (coordinator/server.h); the
// deterministic simulation (tests/sim/coordinator_sim.cc) and the unit tests implement them
// with fakes.
//
// Every asynchronous call takes a `done` callback that is called exactly once, on any thread,
// possibly before the call returns; implementations never hold a lock of their own while calling
// it, so a callback may call back into the implementation.

#pragma once

#include <functional>
#include <optional>
#include <string>

#include "ParticipantService.h"
#include "common/status.h"
#include "coordinator_log_types.h"

namespace tx::coordinator {

// What came back from one call to a participant.
template <typename T>
struct ParticipantReply {
  // Not OK: no answer arrived (no connection, timeout, broken connection). The request may have
  // been delivered and executed.
  Status transport;
  // The participant answered with an error (UNAVAILABLE, WRONG_STATE, ...).
  std::optional<api::TxError> error;
  T response;  // when transport is OK and there is no error

  bool answered() const { return transport.ok() && !error.has_value(); }
};

template <typename T>
using ReplyCallback = std::function<void(ParticipantReply<T>)>;

// Calls to participant agents (thrift/participant.thrift), by address ("host:port").
class ParticipantChannel {
 public:
  virtual ~ParticipantChannel() = default;
  virtual void Prepare(const std::string& address, api::PrepareRequest request,
                       ReplyCallback<api::PrepareResponse> done) = 0;
  virtual void Commit(const std::string& address, api::CommitRequest request,
                      ReplyCallback<api::CommitResponse> done) = 0;
  virtual void Abort(const std::string& address, api::AbortRequest request,
                     ReplyCallback<api::AbortResponse> done) = 0;
  virtual void CommitOnePhase(const std::string& address, api::CommitOnePhaseRequest request,
                              ReplyCallback<api::CommitOnePhaseResponse> done) = 0;
  // 3PC phase two.
  virtual void PreCommit(const std::string& address, api::PreCommitRequest request,
                         ReplyCallback<api::PreCommitResponse> done) = 0;
};

// The replicated log at the level of whole entries: what RaftNode (or the simulation's Raft
// core) offers.
class EntryLog {
 public:
  virtual ~EntryLog() = default;
  // Proposes one encoded coordlog::Entry. `done(status, result)`:
  //   OK            committed and applied on this replica; `result` is the encoded EntryResult.
  //   Unavailable   not accepted (not the leader, stopping, back-pressure): never in the log.
  //   anything else it may or may not have been applied (timed out, leadership changed,
  //                 covered by a snapshot): the caller must look at the state to know.
  virtual void ProposeEntry(std::string entry,
                            std::function<void(Status, std::string result)> done) = 0;
};

// The replicated log at the level of commands, as the driver uses it (coordinator/batcher.h
// packs commands from many transactions into shared entries).
class CommandLog {
 public:
  virtual ~CommandLog() = default;
  using ProposeCallback = std::function<void(StatusOr<coordlog::CommandResult>)>;
  // Proposes one command. `done` as EntryLog's: OK with the command's own result once applied
  // here; Unavailable when it never entered the log; any other error: unknown, re-read the
  // state.
  virtual void Propose(coordlog::Command command, ProposeCallback done) = 0;
  // OK once an entry proposed after this call has been committed and applied here, which
  // proves that this replica was still the leader after the call and that its state holds
  // every decision made before it (a linearizable read point).
  virtual void Barrier(std::function<void(Status)> done) = 0;
};

}  // namespace tx::coordinator
