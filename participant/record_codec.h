// Encoding of the parts of a prepared record that SQLite stores as BLOBs: the transaction's
// info (protocol and participants) and the locks it holds. docs/participant.md shows the
// layout of the _txpart_prepared table these go into.
//
// Both start with a format version byte (kRecordFormatVersion); integers are big-endian.
//   info:  version | protocol (1 byte) | u32 n | n x (u32 len, name bytes, u32 len, address)
//   locks: version | u32 n | n x (mode (1 byte: 1 = S, 2 = X) | u32 len | key bytes)
// Decoding checks every length against the remaining bytes, so a damaged record is reported
// (Corruption), never read out of bounds.

#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "participant/lock_manager.h"
#include "participant/participant.h"

namespace tx::participant {

inline constexpr uint8_t kRecordFormatVersion = 1;

std::string EncodeTxnInfo(const TxnInfo& info);
StatusOr<TxnInfo> DecodeTxnInfo(std::string_view bytes);

std::string EncodeLocks(const std::vector<LockRequest>& locks);
StatusOr<std::vector<LockRequest>> DecodeLocks(std::string_view bytes);

}  // namespace tx::participant
