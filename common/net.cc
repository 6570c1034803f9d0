#include "common/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>

namespace tx {
namespace {

// The longest DNS name (RFC 1035); an IPv6 literal with a zone id is shorter.
constexpr size_t kMaxHostBytes = 253;

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsHostNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

bool IsIpv6Char(char c) {
  return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') || c == ':' ||
         c == '.';  // '.' for v4-mapped addresses such as ::ffff:10.0.0.1
}

std::string DescribeChar(char c) {
  if (std::isprint(static_cast<unsigned char>(c))) return fmt::format("'{}'", c);
  return fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
}

// Parses an unsigned decimal with no sign, spaces or leading '+'. Returns false on overflow.
bool ParseDecimal(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// Splits on ',' and trims each item; an empty item is an error.
StatusOr<std::vector<std::string_view>> SplitList(std::string_view text, std::string_view what) {
  std::vector<std::string_view> items;
  if (TrimSpaces(text).empty()) {
    return Status::InvalidArgument(fmt::format("empty {} list", what));
  }
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string_view item =
        TrimSpaces(text.substr(start, comma == std::string_view::npos ? text.npos : comma - start));
    if (item.empty()) {
      return Status::InvalidArgument(
          fmt::format("empty item in {} list '{}' (stray comma?)", what, text));
    }
    if (items.size() == kMaxAddressListItems) {
      return Status::InvalidArgument(
          fmt::format("{} list has more than {} items", what, kMaxAddressListItems));
    }
    items.push_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

Status RejectPortZero(const HostPort& hp, std::string_view item) {
  if (hp.port == 0) {
    return Status::InvalidArgument(
        fmt::format("'{}': port 0 is only valid for a listen address", item));
  }
  return Status::OK();
}

}  // namespace

StatusOr<HostPort> ParseHostPort(std::string_view text) {
  HostPort hp;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::InvalidArgument(
          fmt::format("bad address '{}': want [ipv6-address]:port", text));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (host.empty() || host.find(':') == std::string_view::npos) {
      return Status::InvalidArgument(
          fmt::format("bad address '{}': brackets must hold an IPv6 address", text));
    }
    // After '%' comes a zone (interface) name, e.g. fe80::1%eth0.
    size_t percent = host.find('%');
    for (size_t i = 0; i < host.size(); ++i) {
      char c = host[i];
      bool ok = i < percent ? IsIpv6Char(c) : (i == percent || IsHostNameChar(c));
      if (!ok) {
        return Status::InvalidArgument(fmt::format(
            "bad address '{}': invalid character {} in IPv6 address", text, DescribeChar(c)));
      }
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("bad address '{}': want host:port", text));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Status::InvalidArgument(
          fmt::format("bad address '{}': an IPv6 address needs brackets, e.g. [::1]:7000", text));
    }
    if (host.empty()) {
      return Status::InvalidArgument(fmt::format("bad address '{}': empty host", text));
    }
    for (char c : host) {
      if (!IsHostNameChar(c)) {
        return Status::InvalidArgument(
            fmt::format("bad address '{}': invalid character {} in host", text, DescribeChar(c)));
      }
    }
  }
  if (host.size() > kMaxHostBytes) {
    return Status::InvalidArgument(fmt::format("bad address '{}...': host longer than {} bytes",
                                               text.substr(0, 32), kMaxHostBytes));
  }
  uint64_t port_value = 0;
  if (!ParseDecimal(port, &port_value) || port_value > 65535) {
    return Status::InvalidArgument(
        fmt::format("bad address '{}': port '{}' is not a number in 0..65535", text, port));
  }
  hp.host = std::string(host);
  hp.port = static_cast<uint16_t>(port_value);
  return hp;
}

StatusOr<std::vector<HostPort>> ParseHostPortList(std::string_view text) {
  TX_ASSIGN_OR_RETURN(std::vector<std::string_view> items, SplitList(text, "address"));
  std::vector<HostPort> result;
  std::set<HostPort> seen;
  for (std::string_view item : items) {
    TX_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(item));
    TX_RETURN_IF_ERROR(RejectPortZero(hp, item));
    if (!seen.insert(hp).second) {
      return Status::InvalidArgument(
          fmt::format("address {} appears twice in '{}'", ToString(hp), text));
    }
    result.push_back(std::move(hp));
  }
  return result;
}

StatusOr<std::map<PeerId, HostPort>> ParsePeers(std::string_view text) {
  TX_ASSIGN_OR_RETURN(std::vector<std::string_view> items, SplitList(text, "peer"));
  std::map<PeerId, HostPort> peers;
  std::map<HostPort, PeerId> by_address;
  for (std::string_view item : items) {
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("bad peer '{}': want id=host:port", item));
    }
    std::string_view id_text = TrimSpaces(item.substr(0, eq));
    PeerId id = 0;
    if (!ParseDecimal(id_text, &id) || id == 0) {
      return Status::InvalidArgument(
          fmt::format("bad peer '{}': id '{}' is not a positive integer", item, id_text));
    }
    TX_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(TrimSpaces(item.substr(eq + 1))));
    TX_RETURN_IF_ERROR(RejectPortZero(hp, item));
    if (peers.count(id) != 0) {
      return Status::InvalidArgument(fmt::format("peer id {} appears twice in '{}'", id, text));
    }
    if (auto it = by_address.find(hp); it != by_address.end()) {
      return Status::InvalidArgument(
          fmt::format("peers {} and {} have the same address {}", it->second, id, ToString(hp)));
    }
    by_address.emplace(hp, id);
    peers.emplace(id, std::move(hp));
  }
  return peers;
}

std::string ToString(const HostPort& hp) {
  if (hp.host.find(':') != std::string::npos) return fmt::format("[{}]:{}", hp.host, hp.port);
  return fmt::format("{}:{}", hp.host, hp.port);
}

StatusOr<int> ConnectTcp(const HostPort& to, std::chrono::milliseconds io_timeout) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, to.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(to.port);
    length = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, to.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(to.port);
    length = sizeof(sockaddr_in6);
  } else {
    return Status::InvalidArgument(
        fmt::format("cannot connect to {}: the host is not an IP address", to));
  }
  const int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Status::Unavailable(
        fmt::format("cannot connect to {}: socket: {}", to, std::strerror(errno)));
  }
  if (io_timeout.count() > 0) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(io_timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((io_timeout.count() % 1000) * 1000);
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    const int error = errno;
    ::close(fd);
    return Status::Unavailable(fmt::format("cannot connect to {}: {}", to, std::strerror(error)));
  }
  return fd;
}

}  // namespace tx
