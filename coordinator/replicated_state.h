// tx::coordinator::ReplicatedState: the TxnStateMachine as the Raft runtime and the driver share
// it. The runtime applies encoded entries, takes and restores snapshots; the driver and the
// service read the state under the same mutex.
//
// Thread-safe. Read() runs the caller's function under the lock: keep it short, and do not call
// back into the coordinator from it.

#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"
#include "coordinator/state_machine.h"

namespace tx::coordinator {

class ReplicatedState {
 public:
  explicit ReplicatedState(const StateMachineLimits& limits = {}) : sm_(limits) {}

  // Decodes and applies the entry at `index`; the encoded EntryResult. Corruption (nothing
  // applied) when the entry does not decode or is of a newer format, FailedPrecondition when
  // `index` does not move forward: either way the replica must stop rather than diverge.
  StatusOr<std::string> Apply(uint64_t index, std::string_view data);

  // The encoded snapshot of the whole state.
  std::string Snapshot() const;
  // Replaces the state with a snapshot taken at Raft index `index`. Corruption (state
  // unchanged) when it does not decode, breaks an invariant, or holds entries beyond `index`.
  // (It may hold fewer: the entries after the last one it applied may be no-ops.)
  Status Restore(uint64_t index, std::string_view data);

  template <typename F>
  auto Read(F&& f) const {
    std::lock_guard<std::mutex> lock(mu_);
    return std::forward<F>(f)(static_cast<const TxnStateMachine&>(sm_));
  }

 private:
  mutable std::mutex mu_;
  TxnStateMachine sm_;  // GUARDED_BY(mu_)
};

}  // namespace tx::coordinator
