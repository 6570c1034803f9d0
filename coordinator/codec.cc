#include "coordinator/codec.h"

#include <fmt/format.h>
#include <thrift/TConfiguration.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <exception>
#include <memory>

namespace tx::coordinator {
namespace {

using apache::thrift::TConfiguration;
using apache::thrift::protocol::TCompactProtocol;
using apache::thrift::transport::TMemoryBuffer;

template <typename T>
std::string Encode(const T& value) {
  auto buffer = std::make_shared<TMemoryBuffer>();
  TCompactProtocol protocol(buffer);
  value.write(&protocol);
  return buffer->getBufferAsString();
}

template <typename T>
Status Decode(std::string_view bytes, size_t max_bytes, const char* what, T* out) {
  if (bytes.size() > max_bytes) {
    return Status::Corruption(
        fmt::format("{} of {} bytes exceeds the bound of {}", what, bytes.size(), max_bytes));
  }
  try {
    // The message-size bound makes the protocol refuse containers that claim more elements
    // than the remaining bytes could hold, so garbage cannot make it allocate gigabytes.
    auto config = std::make_shared<TConfiguration>(static_cast<int>(bytes.size()) + 1);
    auto buffer = std::make_shared<TMemoryBuffer>(
        reinterpret_cast<uint8_t*>(const_cast<char*>(bytes.data())),
        static_cast<uint32_t>(bytes.size()), TMemoryBuffer::OBSERVE, config);
    TCompactProtocol protocol(buffer);
    out->read(&protocol);
    if (buffer->available_read() != 0) {
      return Status::Corruption(
          fmt::format("{}: {} trailing bytes", what, buffer->available_read()));
    }
  } catch (const std::exception& e) {
    return Status::Corruption(fmt::format("{} does not decode: {}", what, e.what()));
  }
  return Status::OK();
}

}  // namespace

std::string EncodeEntry(const coordlog::Entry& entry) { return Encode(entry); }

StatusOr<coordlog::Entry> DecodeEntry(std::string_view bytes) {
  coordlog::Entry entry;
  TX_RETURN_IF_ERROR(Decode(bytes, kMaxEncodedEntryBytes, "coordinator log entry", &entry));
  if (entry.format_version < 1 || entry.format_version > kLogFormatVersion) {
    return Status::Corruption(
        fmt::format("coordinator log entry has format_version {}; this build reads 1..{}: "
                    "upgrade this replica",
                    entry.format_version, kLogFormatVersion));
  }
  for (size_t i = 0; i < entry.commands.size(); ++i) {
    const coordlog::Command& c = entry.commands[i];
    int set = int{c.__isset.register_participant} + int{c.__isset.reserve_txids} +
              int{c.__isset.decide} + int{c.__isset.end_transaction} + int{c.__isset.precommit};
    if (set != 1) {
      return Status::Corruption(fmt::format(
          "coordinator log entry: command {} has {} fields set (a command type this build does "
          "not know, or a malformed entry)",
          i, set));
    }
  }
  return entry;
}

std::string EncodeEntryResult(const coordlog::EntryResult& result) { return Encode(result); }

StatusOr<coordlog::EntryResult> DecodeEntryResult(std::string_view bytes) {
  coordlog::EntryResult result;
  TX_RETURN_IF_ERROR(Decode(bytes, kMaxEncodedEntryBytes, "coordinator entry result", &result));
  return result;
}

std::string EncodeSnapshot(const coordlog::Snapshot& snapshot) { return Encode(snapshot); }

StatusOr<coordlog::Snapshot> DecodeSnapshot(std::string_view bytes) {
  coordlog::Snapshot snapshot;
  TX_RETURN_IF_ERROR(Decode(bytes, kMaxEncodedSnapshotBytes, "coordinator snapshot", &snapshot));
  if (snapshot.format_version < 1 || snapshot.format_version > kLogFormatVersion) {
    return Status::Corruption(
        fmt::format("coordinator snapshot has format_version {}; this build reads 1..{}",
                    snapshot.format_version, kLogFormatVersion));
  }
  return snapshot;
}

}  // namespace tx::coordinator
