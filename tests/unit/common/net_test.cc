#include "common/net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace tx {
namespace {

// Asserts that `result` is InvalidArgument and its message mentions `needle`.
template <typename T>
void ExpectInvalid(const StatusOr<T>& result, const std::string& needle) {
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(result.status().IsInvalidArgument()) << result.status().ToString();
  EXPECT_NE(std::string::npos, result.status().message().find(needle))
      << "message '" << result.status().message() << "' lacks '" << needle << "'";
}

TEST(ParseHostPort, Ipv4AndName) {
  auto hp = ParseHostPort("127.0.0.1:7000");
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ("127.0.0.1", hp->host);
  EXPECT_EQ(7000, hp->port);
  hp = ParseHostPort("coord-1.example_net:65535");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ((HostPort{"coord-1.example_net", 65535}), *hp);
}

TEST(ParseHostPort, PortZeroAllowedForListenAddress) {
  auto hp = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(0, hp->port);
}

TEST(ParseHostPort, BracketedIpv6) {
  auto hp = ParseHostPort("[::1]:7000");
  ASSERT_TRUE(hp.ok()) << hp.status().ToString();
  EXPECT_EQ("::1", hp->host);
  EXPECT_EQ(7000, hp->port);
  EXPECT_EQ("[::1]:7000", ToString(*hp));
}

TEST(ParseHostPort, RejectsMalformedInput) {
  ExpectInvalid(ParseHostPort(""), "want host:port");
  ExpectInvalid(ParseHostPort("localhost"), "want host:port");
  ExpectInvalid(ParseHostPort(":7000"), "empty host");
  ExpectInvalid(ParseHostPort("host:"), "port ''");
  ExpectInvalid(ParseHostPort("host:65536"), "0..65535");
  ExpectInvalid(ParseHostPort("host:99999999999999999999999"), "0..65535");
  ExpectInvalid(ParseHostPort("host:-1"), "port '-1'");
  ExpectInvalid(ParseHostPort("host:+80"), "port '+80'");
  ExpectInvalid(ParseHostPort("host:80 "), "port '80 '");
  ExpectInvalid(ParseHostPort("ho st:80"), "invalid character ' '");
  ExpectInvalid(ParseHostPort(std::string("ho\x01st:80")), "\\x01");
  ExpectInvalid(ParseHostPort("::1:7000"), "needs brackets");
  ExpectInvalid(ParseHostPort("[::1]7000"), "[ipv6-address]:port");
  ExpectInvalid(ParseHostPort("[::1]"), "[ipv6-address]:port");
  ExpectInvalid(ParseHostPort("[]:7000"), "brackets must hold");
  ExpectInvalid(ParseHostPort("[localhost]:7000"), "brackets must hold");
  ExpectInvalid(ParseHostPort("[::g]:7000"), "invalid character 'g' in IPv6");
  ExpectInvalid(ParseHostPort(std::string(300, 'a') + ":1"), "longer than 253");
}

TEST(ParseHostPort, ToStringRoundTrips) {
  for (const char* text : {"127.0.0.1:1", "a.b:65535", "[fe80::1%eth0]:9", "h:0"}) {
    auto hp = ParseHostPort(text);
    ASSERT_TRUE(hp.ok()) << text;
    EXPECT_EQ(text, ToString(*hp));
    EXPECT_EQ(text, fmt::format("{}", *hp));
  }
}

TEST(ParseHostPortList, KeepsOrderAndTrimsSpaces) {
  auto list = ParseHostPortList("b:2, a:1 ,c:3");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(3u, list->size());
  EXPECT_EQ((HostPort{"b", 2}), (*list)[0]);
  EXPECT_EQ((HostPort{"a", 1}), (*list)[1]);
  EXPECT_EQ((HostPort{"c", 3}), (*list)[2]);
}

TEST(ParseHostPortList, SingleItem) {
  auto list = ParseHostPortList("127.0.0.1:7000");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(1u, list->size());
}

TEST(ParseHostPortList, RejectsBadLists) {
  ExpectInvalid(ParseHostPortList(""), "empty address list");
  ExpectInvalid(ParseHostPortList("  "), "empty address list");
  ExpectInvalid(ParseHostPortList("a:1,,b:2"), "stray comma");
  ExpectInvalid(ParseHostPortList("a:1,"), "stray comma");
  ExpectInvalid(ParseHostPortList("a:1,b"), "'b'");
  ExpectInvalid(ParseHostPortList("a:1,b:0"), "port 0");
  ExpectInvalid(ParseHostPortList("a:1,b:2,a:1"), "a:1 appears twice");
}

TEST(ParseHostPortList, BoundsItemCount) {
  std::string text;
  for (size_t i = 0; i <= kMaxAddressListItems; ++i) {
    if (i > 0) text += ",";
    text += fmt::format("h{}:1", i);
  }
  ExpectInvalid(ParseHostPortList(text), "more than");
}

TEST(ParsePeers, ParsesIdToAddress) {
  auto peers = ParsePeers("1=127.0.0.1:7001, 2=127.0.0.1:7002,3 = [::1]:7003");
  ASSERT_TRUE(peers.ok()) << peers.status().ToString();
  ASSERT_EQ(3u, peers->size());
  EXPECT_EQ((HostPort{"127.0.0.1", 7001}), peers->at(1));
  EXPECT_EQ((HostPort{"127.0.0.1", 7002}), peers->at(2));
  EXPECT_EQ((HostPort{"::1", 7003}), peers->at(3));
}

TEST(ParsePeers, RejectsBadPeers) {
  ExpectInvalid(ParsePeers(""), "empty peer list");
  ExpectInvalid(ParsePeers("127.0.0.1:7001"), "want id=host:port");
  ExpectInvalid(ParsePeers("0=a:1"), "positive integer");
  ExpectInvalid(ParsePeers("x=a:1"), "positive integer");
  ExpectInvalid(ParsePeers("-1=a:1"), "positive integer");
  ExpectInvalid(ParsePeers("=a:1"), "positive integer");
  ExpectInvalid(ParsePeers("18446744073709551616=a:1"), "positive integer");
  ExpectInvalid(ParsePeers("1=a"), "want host:port");
  ExpectInvalid(ParsePeers("1=a:0"), "port 0");
  ExpectInvalid(ParsePeers("1=a:1,1=b:2"), "peer id 1 appears twice");
  ExpectInvalid(ParsePeers("1=a:1,2=a:1"), "peers 1 and 2 have the same address a:1");
}

}  // namespace
// A listening loopback socket on a kernel-chosen port.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(0, ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
    EXPECT_EQ(0, ::listen(fd_, 4));
    socklen_t len = sizeof(addr);
    EXPECT_EQ(0, ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len));
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

TEST(ConnectTcp, ConnectsAndTimesOutReadsFromASilentPeer) {
  Listener listener;
  StatusOr<int> fd = ConnectTcp({"127.0.0.1", listener.port()}, std::chrono::milliseconds(100));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  char byte;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(-1, ::recv(*fd, &byte, 1, 0));  // accepted by the kernel, never answered
  EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << errno;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ::close(*fd);
}

TEST(ConnectTcp, RefusedConnectionIsUnavailableNamingTheAddress) {
  Listener listener;
  const uint16_t port = listener.port();
  listener.Close();  // nothing listens there now
  StatusOr<int> fd = ConnectTcp({"127.0.0.1", port});
  ASSERT_FALSE(fd.ok());
  EXPECT_TRUE(fd.status().IsUnavailable()) << fd.status().ToString();
  EXPECT_NE(std::string::npos, fd.status().message().find(fmt::format("127.0.0.1:{}", port)))
      << fd.status().ToString();
}

TEST(ConnectTcp, RefusesAHostNameWithoutLookingItUp) {
  ExpectInvalid(ConnectTcp({"localhost", 80}), "not an IP address");
}

}  // namespace tx
