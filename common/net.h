// Network addresses as they appear in flags and config files.
//
//   ParseHostPort("127.0.0.1:7000")            -> {"127.0.0.1", 7000}
//   ParseHostPort("[::1]:7000")                -> {"::1", 7000}
//   ParseHostPortList("a:1,b:2")               -> [{"a", 1}, {"b", 2}]
//   ParsePeers("1=127.0.0.1:7001,2=h:7002")    -> {1: {"127.0.0.1", 7001}, 2: {"h", 7002}}
//
// Parsing is strict, because a typo in a cluster's address list should stop a program at
// start-up with a message naming the bad item, not make it dial somewhere odd. Every parse
// error is InvalidArgument quoting the offending text. Spaces around list items are allowed;
// nothing else is trimmed. Host names are not resolved here.
//
// Port 0 ("let the kernel pick") is accepted by ParseHostPort, since it is useful for listen
// addresses, but rejected in lists and peer maps, which name addresses to connect to.

#pragma once

#include <fmt/format.h>

#include <chrono>
#include <compare>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tx {

struct HostPort {
  std::string host;  // a DNS name, an IPv4 address, or an IPv6 address without brackets
  uint16_t port = 0;

  friend auto operator<=>(const HostPort&, const HostPort&) = default;
};

// Raft replica ids are positive; 0 means "none" in Raft messages.
using PeerId = uint64_t;

// Bounds the size of address lists from config (a cluster has 3 or 5 replicas and a handful of
// participants); larger input is surely a mistake.
inline constexpr size_t kMaxAddressListItems = 1024;

// "host:port" or "[ipv6]:port". Port 0..65535.
StatusOr<HostPort> ParseHostPort(std::string_view text);

// Comma-separated "host:port" items, order kept. Rejects an empty list, port 0 and duplicates.
StatusOr<std::vector<HostPort>> ParseHostPortList(std::string_view text);

// Comma-separated "id=host:port" items. Rejects an empty list, id 0, port 0, a repeated id and
// two ids with the same address.
StatusOr<std::map<PeerId, HostPort>> ParsePeers(std::string_view text);

// "host:port", or "[host]:port" when host contains ':' (IPv6), so that the result parses back.
std::string ToString(const HostPort& hp);

// A blocking TCP connection to `to`, whose host must be an IPv4 or IPv6 address literal (no
// name lookup: tools and tests dial the addresses they were given). With a positive
// `io_timeout`, every send and receive on it gives up after that long (EAGAIN), so a silent
// peer cannot hang the caller. Returns the socket, which the caller closes; InvalidArgument for
// a host that is not an address, Unavailable naming the address and the error otherwise.
StatusOr<int> ConnectTcp(const HostPort& to,
                         std::chrono::milliseconds io_timeout = std::chrono::milliseconds(0));

}  // namespace tx

template <>
struct fmt::formatter<tx::HostPort> : fmt::formatter<std::string_view> {
  auto format(const tx::HostPort& hp, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(tx::ToString(hp), ctx);
  }
};
