// The Thrift face of the participant: ParticipantService (thrift/participant.thrift) over a
// Participant engine.
//
// The handler converts between the wire types and the engine's, validates what the engine
// cannot see (a Value with no field or several set, paging bounds), and turns every engine
// Error into api::TxError with the same code. It never lets anything else escape: an
// unexpected failure is TxError INTERNAL.
//
// Thread-safe (the engine is); the RPC server calls it from one thread per connection.

#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "ParticipantService.h"
#include "participant/participant.h"

namespace tx::participant {

// Bounds one ListPrepared page, so the reply stays far below the RPC frame limit (a status is
// ~100 bytes plus the participant list).
inline constexpr int32_t kMaxListPreparedPage = 10000;

class ParticipantServiceHandler final : public api::ParticipantServiceIf {
 public:
  // `participant` must outlive the handler.
  explicit ParticipantServiceHandler(Participant* participant);

  // Called with the txid of every TerminationState probe (join = false) that this participant
  // answered, so that its own termination protocol runs a round too (termination.h). Set before
  // the server starts.
  void set_termination_probe_hook(std::function<void(TxId)> hook) {
    termination_probe_hook_ = std::move(hook);
  }

  void Execute(api::ExecuteResponse& out, const api::ExecuteRequest& request) override;
  void Prepare(api::PrepareResponse& out, const api::PrepareRequest& request) override;
  void Commit(api::CommitResponse& out, const api::CommitRequest& request) override;
  void Abort(api::AbortResponse& out, const api::AbortRequest& request) override;
  void CommitOnePhase(api::CommitOnePhaseResponse& out,
                      const api::CommitOnePhaseRequest& request) override;
  void PreCommit(api::PreCommitResponse& out, const api::PreCommitRequest& request) override;
  void TerminationState(api::TerminationStateResponse& out,
                        const api::TerminationStateRequest& request) override;
  void Status(api::TransactionStatus& out, const api::StatusRequest& request) override;
  void ListPrepared(api::ListPreparedResponse& out,
                    const api::ListPreparedRequest& request) override;
  void GetInfo(api::GetInfoResponse& out, const api::GetInfoRequest& request) override;

 private:
  Participant* const participant_;
  std::function<void(TxId)> termination_probe_hook_;  // constant once serving
};

// The integer in an enum field of a Thrift struct, read without loading it as the enum type:
// a peer may send any i32, and loading a value outside the enum's range is undefined
// behaviour (UBSan stops the process on it).
template <typename Enum>
int32_t RawEnum(const Enum& e) {
  static_assert(sizeof(Enum) == sizeof(int32_t), "Thrift enums are 32-bit");
  int32_t v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Conversions between wire and engine types, exposed for tests and tools. The From* functions
// fail (INVALID_ARGUMENT) on malformed input.
Result<Value> FromApi(const api::Value& v);
api::Value ToApi(const Value& v);
Result<TxnInfo> FromApi(const api::TransactionInfo& info);
api::TransactionInfo ToApi(const TxnInfo& info);
api::TxError ToApi(const Error& e);
api::TransactionStatus ToApi(const TxnStatus& s);

}  // namespace tx::participant
