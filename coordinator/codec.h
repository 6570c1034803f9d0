// Serialization of the coordinator's Thrift types to bytes and back: log entries, their
// results and snapshots (thrift/coordinator_log.thrift).
//
// Encoding: Thrift's compact protocol (varints keep the many small integers of a decision
// short). Decoding treats the bytes as untrusted: every failure, including a declared container
// larger than the input, is a Corruption status, never an exception or a crash.

#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "coordinator_log_types.h"

namespace tx::coordinator {

// The coordinator_log.thrift format this code writes and the highest it reads.
inline constexpr int32_t kLogFormatVersion = 1;

// Bounds what a decoder will read: a Raft entry is at most 8 MiB (RaftNode's
// max_proposal_bytes), a snapshot at most 1 GiB (the Raft core's max_snapshot_bytes).
inline constexpr size_t kMaxEncodedEntryBytes = 8 << 20;
inline constexpr size_t kMaxEncodedSnapshotBytes = size_t{1} << 30;

std::string EncodeEntry(const coordlog::Entry& entry);
// Corruption on malformed bytes, a format_version this build does not know, or a command with
// no field set (written by a newer version).
StatusOr<coordlog::Entry> DecodeEntry(std::string_view bytes);

std::string EncodeEntryResult(const coordlog::EntryResult& result);
StatusOr<coordlog::EntryResult> DecodeEntryResult(std::string_view bytes);

std::string EncodeSnapshot(const coordlog::Snapshot& snapshot);
// Corruption on malformed bytes or an unknown format_version.
StatusOr<coordlog::Snapshot> DecodeSnapshot(std::string_view bytes);

}  // namespace tx::coordinator
