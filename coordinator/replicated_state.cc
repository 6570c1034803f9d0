#include "coordinator/replicated_state.h"

#include <fmt/format.h>

#include "coordinator/codec.h"

namespace tx::coordinator {

StatusOr<std::string> ReplicatedState::Apply(uint64_t index, std::string_view data) {
  TX_ASSIGN_OR_RETURN(coordlog::Entry entry, DecodeEntry(data));
  std::lock_guard<std::mutex> lock(mu_);
  TX_ASSIGN_OR_RETURN(coordlog::EntryResult result, sm_.Apply(index, entry));
  return EncodeEntryResult(result);
}

std::string ReplicatedState::Snapshot() const {
  coordlog::Snapshot s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = sm_.ToSnapshot();
  }
  return EncodeSnapshot(s);
}

Status ReplicatedState::Restore(uint64_t index, std::string_view data) {
  TX_ASSIGN_OR_RETURN(coordlog::Snapshot s, DecodeSnapshot(data));
  // The state's own applied index counts only the entries it was shown; Raft's snapshot index
  // may be later (no-ops and configuration entries are not shown), never earlier.
  if (static_cast<uint64_t>(s.applied_index) > index) {
    return Status::Corruption(fmt::format(
        "coordinator snapshot holds the state at index {} but was installed at index {}",
        s.applied_index, index));
  }
  std::lock_guard<std::mutex> lock(mu_);
  return sm_.Restore(s);
}

}  // namespace tx::coordinator
